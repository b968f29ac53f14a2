//! `cargo xtask bench ...`: setup, build, then the benchmark binary (`weir-bench`, in weir-lab),
//! which prints the figures and updates docs/benchmarks.md.

use anyhow::Result;

use crate::{compile, paths, privilege, proc, setup};

/// Where the benchmark results are written, relative to the workspace root.
const REPORT: &str = "docs/benchmarks.md";

pub fn cni(pairs: u32) -> Result<()> {
    privilege::require_root("`cargo xtask bench cni` (it creates network namespaces)")?;
    proc::heading("setup");
    setup::run()?;
    proc::heading("build");
    let built = compile::run(false, compile::Scope::Binaries)?;
    proc::heading("bench cni");
    let root = paths::workspace_root()?;
    proc::run(
        std::process::Command::new(built.bin_dir.join("weir-bench"))
            .current_dir(&root)
            .args(["cni", "--pairs", &pairs.to_string(), "--out"])
            .arg(root.join(REPORT))
            .env("WEIR_BIN_DIR", &built.bin_dir),
    )?;
    println!("bench: results written to {}", root.join(REPORT).display());
    Ok(())
}

pub fn lb(args: &[String]) -> Result<()> {
    with_ebpf_object(
        "weir-bench-lb",
        "`cargo xtask bench lb` (it loads BPF programs and creates network namespaces)",
        args,
    )
}

pub fn policy(args: &[String]) -> Result<()> {
    with_ebpf_object(
        "weir-bench-policy",
        "`cargo xtask bench policy` (it loads BPF programs and mounts a scratch bpffs)",
        args,
    )
}

/// Setup, build, then `<bin> run --ebpf-object <object> --out docs/benchmarks.md <args>`.
fn with_ebpf_object(bin: &str, why_root: &str, args: &[String]) -> Result<()> {
    privilege::require_root(why_root)?;
    proc::heading("setup");
    setup::run()?;
    proc::heading("build");
    let built = compile::run(false, compile::Scope::Binaries)?;
    proc::heading(bin);
    let root = paths::workspace_root()?;
    proc::run(
        std::process::Command::new(built.bin_dir.join(bin))
            .current_dir(&root)
            .arg("run")
            .arg("--ebpf-object")
            .arg(&built.ebpf_object)
            .arg("--out")
            .arg(root.join(REPORT))
            .args(args)
            .env("WEIR_BIN_DIR", &built.bin_dir),
    )?;
    println!("bench: results written to {}", root.join(REPORT).display());
    Ok(())
}
