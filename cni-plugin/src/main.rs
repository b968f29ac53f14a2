//! The `weir-cni` binary: a thin shell around [`weir_cni::run`].

use std::io::Write;

fn main() {
    let outcome = weir_cni::run(|name| std::env::var_os(name), &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    let printed = stdout
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    let code = match printed {
        Ok(()) => outcome.exit_code,
        Err(_) => 1,
    };
    std::process::exit(code);
}
