//! `cargo xtask build`: the eBPF object first, then the host binaries that embed it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{paths, proc, setup};

const EBPF_PACKAGE: &str = "weir-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// Packages whose binaries `build` produces (weir-lab holds the lab's workload and bench bins).
const HOST_PACKAGES: &[&str] = &["weir-agent", "weir-cni", "weir-lab"];
/// rustc flags for the eBPF object: BTF (needs debug info) for CO-RE and readable verifier logs.
const EBPF_RUSTFLAGS: &[&str] = &["-Cdebuginfo=2", "-Clink-arg=--btf"];

/// What a build produced, for the commands that run it.
pub struct Built {
    pub ebpf_object: PathBuf,
    pub bin_dir: PathBuf,
}

/// What the host build covers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The binaries of weir-agent, weir-cni and weir-lab.
    Binaries,
    /// The binaries plus every test target of the workspace's default members, resolved the
    /// way `cargo test` resolves them (dev-dependencies active, all members). Binaries built
    /// for a narrower selection get other feature sets, so the following `cargo test` runs
    /// would rebuild a good part of the dependency tree and relink the binaries.
    BinariesAndTests,
}

pub fn run(debug: bool, scope: Scope) -> Result<Built> {
    let ebpf_object = build_ebpf()?;
    let bin_dir = build_host(&ebpf_object, debug, scope)?;
    println!("build: eBPF object: {}", ebpf_object.display());
    println!("build: binaries in {}:", bin_dir.display());
    for name in ["weir-agent", "weirctl", "weir-cni"] {
        println!("  {}", bin_dir.join(name).display());
    }
    Ok(Built {
        ebpf_object,
        bin_dir,
    })
}

/// The eBPF build's own target dir. `RUSTC_BOOTSTRAP=1` changes what build scripts such as
/// proc-macro2's detect, so sharing the host's dir would rebuild every proc-macro (and all that
/// depends on them) each time the two builds alternate.
fn ebpf_target_dir() -> Result<PathBuf> {
    Ok(paths::target_dir()?.join("ebpf"))
}

/// `cargo <subcommand> -p weir-ebpf` for the BPF target with a `core` built from source, in the
/// eBPF target dir; `subcommand` is `build` or `clippy` (arguments for rustc/clippy go after).
pub fn ebpf_cargo(subcommand: &str) -> Result<Command> {
    let mut cmd = proc::cargo();
    if let Some(path) = paths::path_with_cargo_bin()? {
        cmd.env("PATH", path);
    }
    cmd.current_dir(paths::workspace_root()?)
        .args([subcommand, "-p", EBPF_PACKAGE, "--release"])
        .args(["--target", EBPF_TARGET, "--target-dir"])
        .arg(ebpf_target_dir()?)
        .args(["-Z", "build-std=core"])
        // Host flags must not leak into the BPF build; ours are passed encoded (0x1f-separated).
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\u{1f}"))
        // -Z build-std on stable rustc; the toolchain recipe in DESIGN.md relies on it.
        .env("RUSTC_BOOTSTRAP", "1");
    Ok(cmd)
}

/// Builds the eBPF object and returns its path.
fn build_ebpf() -> Result<PathBuf> {
    if setup::bpf_linker_version().is_none() {
        bail!("bpf-linker not found (on PATH or in cargo's bin dir); run `cargo xtask setup`");
    }
    proc::run(&mut ebpf_cargo("build")?)
        .context("building the eBPF object failed (see the compiler output above)")?;
    let object = ebpf_target_dir()?
        .join(EBPF_TARGET)
        .join("release")
        .join(EBPF_PACKAGE);
    check_ebpf_object(&object)?;
    Ok(object)
}

/// The object must exist and be a little-endian BPF ELF (e_machine 247), or the agent would
/// embed garbage and fail only at load time.
fn check_ebpf_object(object: &Path) -> Result<()> {
    let bytes = std::fs::read(object).with_context(|| {
        format!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        )
    })?;
    const EM_BPF: u16 = 247;
    let is_elf = bytes.starts_with(b"\x7fELF");
    let machine = bytes
        .get(18..20)
        .map(|raw| u16::from_le_bytes([raw[0], raw[1]]));
    if !is_elf || machine != Some(EM_BPF) {
        bail!(
            "{} is not a BPF ELF object (ELF: {is_elf}, e_machine: {machine:?})",
            object.display()
        );
    }
    Ok(())
}

/// The host binaries, with `WEIR_EBPF_OBJ` telling agent/build.rs which object to embed.
fn build_host(ebpf_object: &Path, debug: bool, scope: Scope) -> Result<PathBuf> {
    let root = paths::workspace_root()?;
    let mut cmd = proc::cargo();
    cmd.current_dir(&root).arg("build");
    if !debug {
        cmd.arg("--release");
    }
    match scope {
        Scope::Binaries => {
            for package in HOST_PACKAGES {
                cmd.args(["-p", package]);
            }
            cmd.arg("--bins");
        }
        Scope::BinariesAndTests => {
            cmd.args(["--bins", "--tests"]);
        }
    }
    cmd.env("WEIR_EBPF_OBJ", ebpf_object);
    proc::run(&mut cmd).context("building the host binaries failed")?;
    Ok(paths::target_dir()?.join(if debug { "debug" } else { "release" }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn non_bpf_objects_are_rejected() {
        let dir = std::env::temp_dir().join(format!("xtask-obj-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");

        let x86 = dir.join("x86");
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        std::fs::write(&x86, &elf).unwrap();
        assert!(check_ebpf_object(&x86).is_err());

        let bpf = dir.join("bpf");
        elf[18..20].copy_from_slice(&247u16.to_le_bytes());
        std::fs::write(&bpf, &elf).unwrap();
        check_ebpf_object(&bpf).unwrap();

        assert!(check_ebpf_object(&dir.join("missing")).is_err());
        std::fs::write(dir.join("short"), b"\x7fEL").unwrap();
        assert!(check_ebpf_object(&dir.join("short")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
