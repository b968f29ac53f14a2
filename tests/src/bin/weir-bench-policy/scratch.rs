//! A scratch pin root for a benchmark's datapath: a fresh directory the agent's loader mounts a
//! bpffs on, unmounted and removed on drop (also after a failed run).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct ScratchBpffs {
    dir: PathBuf,
}

impl ScratchBpffs {
    /// `/tmp/weir-bench-policy-<pid>-<name>`, empty.
    pub fn create(name: &str) -> Result<ScratchBpffs> {
        let dir =
            std::env::temp_dir().join(format!("weir-bench-policy-{}-{name}", std::process::id()));
        // A leftover of an earlier run with the same pid: unmount and remove it first.
        weir_lab::sweep::remove_state_dir(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchBpffs { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ScratchBpffs {
    fn drop(&mut self) {
        if let Err(err) = weir_lab::sweep::remove_state_dir(&self.dir) {
            eprintln!("weir-bench-policy: cleaning up: {err:#}");
        }
    }
}
