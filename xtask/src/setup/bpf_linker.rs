//! bpf-linker 0.13, built against rustc's own libLLVM (see `llvm`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Outcome;
use super::llvm::{self, RustcInfo};
use crate::{paths, proc};

const WANTED_SERIES: &str = "0.13.";
const VERSION_REQ: &str = "^0.13";

/// Candidate bpf-linker executables: the one on PATH, then the one in cargo's bin dir.
fn candidates() -> Vec<PathBuf> {
    let mut list = vec![PathBuf::from("bpf-linker")];
    if let Ok(dir) = paths::cargo_bin_dir() {
        list.push(dir.join("bpf-linker"));
    }
    list
}

/// The version of the first bpf-linker that runs (running proves its libLLVM still loads).
pub fn installed_version() -> Option<String> {
    candidates().into_iter().find_map(|exe| {
        let out = Command::new(&exe).arg("--version").output().ok()?;
        if !out.status.success() {
            return None;
        }
        parse_version(&String::from_utf8_lossy(&out.stdout))
    })
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
fn parse_version(text: &str) -> Option<String> {
    let version = text.trim().strip_prefix("bpf-linker")?.trim();
    (!version.is_empty()).then(|| version.to_string())
}

pub fn ensure() -> Result<Outcome> {
    if let Some(version) = installed_version().filter(|v| v.starts_with(WANTED_SERIES)) {
        return Ok(Outcome::Present(format!("bpf-linker {version}")));
    }
    let rustc = RustcInfo::query()?;
    let lib = llvm::find_lib_llvm(&rustc.sysroot)?;
    let prefix = llvm::make_prefix(&rustc, &lib)?;
    println!(
        "setup: building bpf-linker {VERSION_REQ} against {} (soname {}, LLVM {}); \
         this takes a few minutes",
        lib.path.display(),
        lib.soname,
        rustc.llvm_major
    );
    proc::run(
        proc::cargo()
            .args(["install", "bpf-linker", "--version", VERSION_REQ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", rustc.llvm_major))
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed")?;
    match installed_version() {
        Some(version) if version.starts_with(WANTED_SERIES) => Ok(Outcome::Installed(format!(
            "bpf-linker {version}, LLVM_PREFIX={}",
            prefix.display()
        ))),
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` reports {other:?}; \
             is {} on PATH?",
            paths::cargo_bin_dir()?.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn version_is_parsed_from_the_banner() {
        assert_eq!(
            parse_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_version("bpf-linker\n"), None);
        assert_eq!(parse_version("something else 1.0"), None);
    }
}
