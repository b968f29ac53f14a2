//! `cargo xtask setup`: installs what the build and the tests need, skipping what is present.

mod bpf_linker;
mod debian;
mod llvm;
mod rust_src;

use anyhow::Result;

/// What one setup step found or did.
pub enum Outcome {
    /// Already there; nothing was done.
    Present(String),
    /// Was missing and is now installed.
    Installed(String),
}

/// Runs every setup step in order and prints what each did or skipped.
pub fn run() -> Result<()> {
    report("rust-src", rust_src::ensure()?);
    report("bpf-linker", bpf_linker::ensure()?);
    report("debian packages", debian::ensure()?);
    Ok(())
}

fn report(item: &str, outcome: Outcome) {
    match outcome {
        Outcome::Present(detail) => println!("setup: {item}: present, skipped ({detail})"),
        Outcome::Installed(detail) => println!("setup: {item}: installed ({detail})"),
    }
}

/// The bpf-linker that `setup` provides, for `build` to put on `PATH`.
pub use bpf_linker::installed_version as bpf_linker_version;
