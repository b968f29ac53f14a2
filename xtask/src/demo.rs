//! `cargo xtask demo`: setup, build, then the lab demo (`weir-demo`, written in weir-lab).

use anyhow::Result;

use crate::{compile, privilege, proc, setup};

pub fn run(keep: bool) -> Result<()> {
    privilege::require_root("`cargo xtask demo` (the lab creates network namespaces)")?;
    proc::heading("setup");
    setup::run()?;
    proc::heading("build");
    let built = compile::run(false, compile::Scope::Binaries)?;
    proc::heading("demo");
    let mut cmd = std::process::Command::new(built.bin_dir.join("weir-demo"));
    if keep {
        cmd.arg("--keep");
    }
    proc::run(cmd.env("WEIR_BIN_DIR", &built.bin_dir))
}
