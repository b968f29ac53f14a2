//! Running child processes: the command line is echoed before it runs, and a failure says which
//! command failed and how.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A `cargo` command using the same cargo that runs xtask (cargo sets `CARGO` for `cargo run`).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A shell-like rendering of `cmd`, including the environment it overrides, for logs and errors.
pub fn describe(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => parts.push(format!("{}={}", render(key), render(value))),
            None => parts.push(format!("-u {}", render(key))),
        }
    }
    parts.push(render(cmd.get_program()));
    parts.extend(cmd.get_args().map(render));
    parts.join(" ")
}

/// Characters a shell would interpret; words holding them are shown quoted.
const SHELL_SPECIAL: &str = "\"'*?[]$`\\;&|<>(){}~#!";

/// Quotes a word when it holds whitespace, quotes or control characters (e.g. the 0x1f separator
/// of `CARGO_ENCODED_RUSTFLAGS`), so the log line stays readable and unambiguous.
fn render(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !SHELL_SPECIAL.contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("{text:?}")
    }
}

/// Prints a section heading, so long logs (CI) show where each stage starts.
pub fn heading(name: &str) {
    println!("\n== {name}");
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        // The full line was echoed above; the error names the command briefly.
        bail!("`{}` failed ({status})", brief(cmd));
    }
    Ok(())
}

/// The program's file name and its first argument, e.g. `cargo clippy`.
pub fn brief(cmd: &Command) -> String {
    let program = std::path::Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    match cmd.get_args().next() {
        Some(first) => format!("{program} {}", first.to_string_lossy()),
        None => program,
    }
}

/// Runs `cmd` quietly and returns its stdout; a failure carries the command's stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn describe_shows_env_overrides_and_quotes_odd_words() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "-p", "weir ebpf"])
            .env("FLAGS", "-Ca\u{1f}-Cb")
            .env_remove("RUSTFLAGS");
        let line = describe(&cmd);
        assert!(line.contains("FLAGS=\"-Ca\\u{1f}-Cb\""), "{line}");
        assert!(line.contains("-u RUSTFLAGS"), "{line}");
        assert!(line.ends_with("cargo build -p \"weir ebpf\""), "{line}");
        assert_eq!(brief(&cmd), "cargo build");
        let glob = describe(Command::new("cargo").args(["test", "--test", "*"]));
        assert_eq!(glob, "cargo test --test \"*\"");
    }

    #[test]
    fn output_reports_stderr_of_a_failing_command() {
        let err = output(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .expect_err("the command fails");
        let text = format!("{err:#}");
        assert!(text.contains("boom"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
    }
}
