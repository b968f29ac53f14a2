//! Where things live: the workspace, cargo's target dir, cargo's bin dir, and our cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest dir has no parent; expected <workspace>/xtask")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
pub fn target_dir() -> Result<PathBuf> {
    let root = workspace_root()?;
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    })
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set; cannot locate ~/.cargo and ~/.cache")
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(".cargo"),
    };
    Ok(cargo_home.join("bin"))
}

/// Weir's cache: `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(".cache"),
    };
    Ok(base.join("weir"))
}

/// `PATH` with cargo's bin dir in front when it is not on `PATH` yet, so freshly installed tools
/// (bpf-linker) are found even when the caller's shell never sourced `~/.cargo/env`.
pub fn path_with_cargo_bin() -> Result<Option<std::ffi::OsString>> {
    let bin = cargo_bin_dir()?;
    let current: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if current.contains(&bin) {
        return Ok(None);
    }
    let dirs = std::iter::once(bin).chain(current);
    std::env::join_paths(dirs)
        .map(Some)
        .context("cannot build PATH with cargo's bin dir")
}
