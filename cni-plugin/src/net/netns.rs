//! Opening a container's netns and running code inside it.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use super::NetError;

/// An open network namespace file (a bind mount under /run/netns or a
/// /proc/PID/ns/net link).
#[derive(Debug)]
pub struct Netns {
    pub path: PathBuf,
    file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("netns {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is not a network namespace", .0.display())]
    NotANetns(PathBuf),
    #[error("netns {} is the plugin's own network namespace", .0.display())]
    OwnNetns(PathBuf),
    #[error("cannot open netns {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Netns {
    /// Opens `path`, checking it is a namespace file and not the namespace
    /// the plugin runs in (wiring a node into itself would break it).
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            ErrorKind::NotFound => OpenError::Missing(path.to_path_buf()),
            _ => OpenError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let fs_type = fstatfs(&file)
            .map_err(|errno| OpenError::Io {
                path: path.to_path_buf(),
                source: errno.into(),
            })?
            .filesystem_type();
        if fs_type != NSFS_MAGIC && fs_type != PROC_SUPER_MAGIC {
            return Err(OpenError::NotANetns(path.to_path_buf()));
        }
        let meta = file.metadata().map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let own =
            std::fs::metadata("/proc/thread-self/ns/net").map_err(|source| OpenError::Io {
                path: PathBuf::from("/proc/thread-self/ns/net"),
                source,
            })?;
        if (meta.dev(), meta.ino()) == (own.dev(), own.ino()) {
            return Err(OpenError::OwnNetns(path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a new OS thread that has entered this namespace; the
    /// thread ends with `f`, so no other code ever runs in the wrong netns.
    /// Spawned with `scope` so `f` can borrow from the caller.
    pub fn run_in<'scope, 'env, T, F>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        f: F,
    ) -> Result<std::thread::ScopedJoinHandle<'scope, Result<T, NetError>>, NetError>
    where
        F: FnOnce() -> Result<T, NetError> + Send + 'scope,
        T: Send + 'scope,
    {
        let path = &self.path;
        let file = &self.file;
        std::thread::Builder::new()
            .name("weir-cni-netns".to_string())
            .spawn_scoped(scope, move || {
                nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NetError::io(format!("enter netns {}", path.display()), errno.into())
                })?;
                f()
            })
            .map_err(|e| NetError::io("spawn the netns thread", e))
    }
}

/// Waits for a netns thread; a panic there becomes an error, not a crash.
pub fn join<T>(
    handle: std::thread::ScopedJoinHandle<'_, Result<T, NetError>>,
) -> Result<T, NetError> {
    handle.join().unwrap_or_else(|_| {
        Err(NetError::State(
            "the netns worker thread panicked".to_string(),
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_path_is_reported_as_missing() {
        let err = Netns::open(Path::new("/run/netns/weir-does-not-exist-4711")).unwrap_err();
        assert!(matches!(err, OpenError::Missing(_)), "{err}");
    }

    #[test]
    fn regular_file_is_not_a_netns() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let err = Netns::open(tmp.path()).unwrap_err();
        assert!(matches!(err, OpenError::NotANetns(_)), "{err}");
    }

    #[test]
    fn own_netns_is_refused() {
        let err = Netns::open(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(matches!(err, OpenError::OwnNetns(_)), "{err}");
    }
}
