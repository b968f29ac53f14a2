//! A snapshot of the machine's own container and CNI directories, to prove the
//! runtimes under test left them exactly as they were.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The default locations podman, containerd, ctr, runc and libcni use on the
/// machine. None of them may change while a runtime test runs.
pub const WATCHED: &[&str] = &[
    "/etc/containers",
    "/etc/cni",
    "/etc/containerd",
    "/opt/cni",
    "/opt/containerd",
    "/var/lib/containers",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/run/containers",
    "/run/containerd",
    "/run/libpod",
    "/run/runc",
    "/run/crun",
    "/run/cni",
];

/// Entry kind, size and mtime for every path below the watched roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    entries: BTreeMap<PathBuf, String>,
}

impl Footprint {
    /// Walks [`WATCHED`] now.
    pub fn take() -> Footprint {
        let mut entries = BTreeMap::new();
        for root in WATCHED {
            walk(Path::new(root), &mut entries, 0);
        }
        Footprint { entries }
    }

    /// Human-readable differences from `before` (empty when equal).
    pub fn diff_from(&self, before: &Footprint) -> Vec<String> {
        let mut out = Vec::new();
        for (path, desc) in &self.entries {
            match before.entries.get(path) {
                None => out.push(format!("created {} ({desc})", path.display())),
                Some(old) if old != desc => {
                    out.push(format!("changed {} ({old} -> {desc})", path.display()));
                }
                Some(_) => {}
            }
        }
        for path in before.entries.keys() {
            if !self.entries.contains_key(path) {
                out.push(format!("removed {}", path.display()));
            }
        }
        out
    }
}

fn walk(path: &Path, out: &mut BTreeMap<PathBuf, String>, depth: usize) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let kind = if meta.is_dir() {
        "dir"
    } else if meta.is_symlink() {
        "symlink"
    } else {
        "file"
    };
    out.insert(
        path.to_path_buf(),
        format!(
            "{kind}, {} bytes, mtime {}.{}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        ),
    );
    if meta.is_dir()
        && depth < 8
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for entry in entries.filter_map(|e| e.ok()) {
            walk(&entry.path(), out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reports_created_changed_and_removed() {
        let mut a = Footprint {
            entries: BTreeMap::new(),
        };
        a.entries.insert("/x".into(), "file, 1 bytes".into());
        a.entries.insert("/y".into(), "dir".into());
        let mut b = a.clone();
        assert!(b.diff_from(&a).is_empty());
        b.entries.insert("/x".into(), "file, 2 bytes".into());
        b.entries.remove(Path::new("/y"));
        b.entries.insert("/z".into(), "dir".into());
        let diff = b.diff_from(&a);
        assert_eq!(diff.len(), 3, "{diff:?}");
    }
}
