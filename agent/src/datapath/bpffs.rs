//! The pin root: a directory on a bpffs.
//!
//! `--bpffs DIR` may be a subdirectory of an existing bpffs mount (created
//! there when missing) or any other directory, on which we then mount a
//! bpffs of our own. We never unmount it: the pins must outlive the agent.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

use super::error::{DatapathError, DatapathResult};

/// Whether `path` (which must exist) lives on a bpffs.
pub fn is_bpffs(path: &Path) -> DatapathResult<bool> {
    let stat =
        statfs(path).map_err(|e| DatapathError::io("statfs", path, std::io::Error::from(e)))?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}

/// What [`ensure`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// `dir` already was on a bpffs.
    Existing,
    /// `dir` was created inside an existing bpffs.
    Created,
    /// A bpffs was mounted on `dir`.
    Mounted,
}

/// Makes `dir` a directory on a bpffs.
pub fn ensure(dir: &Path) -> DatapathResult<Prepared> {
    if dir.is_dir() {
        if is_bpffs(dir)? {
            return Ok(Prepared::Existing);
        }
        mount_bpffs(dir)?;
        return Ok(Prepared::Mounted);
    }
    let ancestor = nearest_existing_ancestor(dir);
    std::fs::create_dir_all(dir).map_err(|e| DatapathError::io("creating", dir, e))?;
    if is_bpffs(&ancestor)? {
        info!(dir = %dir.display(), "created the pin directory on the existing bpffs");
        return Ok(Prepared::Created);
    }
    mount_bpffs(dir)?;
    Ok(Prepared::Mounted)
}

fn nearest_existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.exists())
        .unwrap_or_else(|| Path::new("/"))
        .to_path_buf()
}

fn mount_bpffs(dir: &Path) -> DatapathResult<()> {
    // mode=0700: pins give full control of the datapath, keep them root's.
    mount(
        Some("bpffs"),
        dir,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| DatapathError::io("mounting a bpffs on", dir, std::io::Error::from(e)))?;
    info!(dir = %dir.display(), "mounted a bpffs for the pins");
    Ok(())
}
