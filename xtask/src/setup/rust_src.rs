//! The `rust-src` component, needed by `-Z build-std=core` for the eBPF target.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use super::Outcome;
use crate::proc;

/// Where rust-src puts the `core` sources in the sysroot.
fn core_sources() -> Result<PathBuf> {
    let sysroot = proc::output(Command::new("rustc").args(["--print", "sysroot"]))?;
    Ok(PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust/library/core"))
}

pub fn ensure() -> Result<Outcome> {
    // Checking the sources themselves also works for toolchains not managed by rustup.
    let core = core_sources()?;
    if core.is_dir() {
        return Ok(Outcome::Present(format!("{}", core.display())));
    }
    proc::run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    if !core.is_dir() {
        anyhow::bail!(
            "`rustup component add rust-src` succeeded but {} is still missing; \
             is `rustc` on PATH the rustup-managed toolchain?",
            core.display()
        );
    }
    Ok(Outcome::Installed("rustup component add rust-src".into()))
}
