//! A private mount namespace that hides the machine's container and CNI
//! defaults from the runtimes under test.
//!
//! Some paths are hard-coded in the runtimes and cannot be configured away:
//! libcni's cache (`/var/lib/cni`), the image blob-info cache of podman 4.3
//! (`/var/lib/containers/cache`), ctr's CNI config and plugin dirs
//! (`/etc/cni/net.d`, `/opt/cni/bin`) and containerd's shim sockets
//! (`/run/containerd/s`). A holder process (`sleep infinity`) owns a mount
//! namespace where test directories are mounted over those paths; every
//! runtime command enters it together with a node's netns:
//!
//! ```text
//! nsenter --net=/run/netns/<node> --mount=/proc/<holder>/ns/mnt -- podman ...
//! ```
//!
//! The namespace is private: nothing mounted inside (test dirs, container
//! rootfs, podman's netns files) propagates to the machine, and all of it
//! disappears with the last process inside. A mount target that does not exist
//! on the machine gets an empty stub directory, removed again on drop. Stubs
//! carry the creating pid in an extended attribute, so after a crash the next
//! run ([`sweep_dead_stubs`]) removes them once that pid is gone.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

/// One mount made inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind `source` (a test dir) over `target` (a machine path).
    Bind { source: PathBuf, target: PathBuf },
    /// An empty tmpfs over `target`.
    Tmpfs { target: PathBuf },
}

impl Mount {
    pub fn target(&self) -> &Path {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target } => target,
        }
    }
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mount::Bind { source, target } => {
                write!(f, "bind {} on {}", source.display(), target.display())
            }
            Mount::Tmpfs { target } => write!(f, "tmpfs on {}", target.display()),
        }
    }
}

/// A mount syscall prepared before fork, so the child allocates nothing.
struct PreparedMount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
}

/// The holder process and its private mount namespace; see the module docs.
#[derive(Debug)]
pub struct MountSandbox {
    holder: Child,
    mounts: Vec<Mount>,
    /// Stub directories created on the machine for missing mount targets,
    /// outermost first.
    stubs: Vec<PathBuf>,
}

impl MountSandbox {
    /// Starts the holder with `mounts` made inside its new mount namespace.
    pub fn start(mounts: Vec<Mount>) -> Result<MountSandbox> {
        sweep_dead_stubs(mounts.iter().map(Mount::target));
        let mut stubs = Vec::new();
        for mount in &mounts {
            if let Mount::Bind { source, .. } = mount
                && !source.is_dir()
            {
                bail!(
                    "sandbox mount source {} is not a directory",
                    source.display()
                );
            }
            stubs.extend(create_stub(mount.target())?);
        }
        let prepared = match prepare(&mounts) {
            Ok(p) => p,
            Err(err) => {
                remove_stubs(&stubs);
                return Err(err);
            }
        };
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::exec::die_with_parent(&mut cmd);
        // SAFETY: the closure runs in the forked child before exec. It only makes
        // raw syscalls (unshare, mount) on C strings prepared before the fork and
        // builds io::Errors from errno, none of which allocates.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing below may propagate back to the machine's namespace.
                let root = c"/";
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for m in &prepared {
                    let fstype = m.fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr());
                    if libc::mount(
                        m.source.as_ptr(),
                        m.target.as_ptr(),
                        fstype,
                        m.flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let holder = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => {
                remove_stubs(&stubs);
                let list: Vec<String> = mounts.iter().map(ToString::to_string).collect();
                bail!(
                    "starting the mount sandbox ({}) failed: {err}",
                    list.join("; ")
                );
            }
        };
        Ok(MountSandbox {
            holder,
            mounts,
            stubs,
        })
    }

    /// `/proc/<holder>/ns/mnt`. The holder is our unreaped child, so its pid
    /// cannot be reused while this sandbox lives.
    pub fn mount_ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.id()))
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Directories created on the machine as mount points (removed on drop).
    pub fn stubs(&self) -> &[PathBuf] {
        &self.stubs
    }

    /// `nsenter --net=<netns> --mount=<sandbox> -- prog`: a command that runs
    /// `prog` inside `netns` (network) and this sandbox (mounts). nsenter opens
    /// both namespace files before entering either, so `/run/netns/<node>`
    /// resolves on the machine.
    pub fn command(&self, netns: &NetNs, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        let mut net = std::ffi::OsString::from("--net=");
        net.push(netns.path());
        let mut mnt = std::ffi::OsString::from("--mount=");
        mnt.push(self.mount_ns_path());
        cmd.arg(net).arg(mnt).arg("--").arg(prog).current_dir("/");
        cmd
    }

    /// Whether the holder still runs (the namespace is alive).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.holder.try_wait(), Ok(None))
    }
}

impl Drop for MountSandbox {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        remove_stubs(&self.stubs);
    }
}

fn prepare(mounts: &[Mount]) -> Result<Vec<PreparedMount>> {
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .with_context(|| format!("path {} contains a NUL byte", p.display()))
    };
    mounts
        .iter()
        .map(|m| {
            Ok(match m {
                Mount::Bind { source, target } => PreparedMount {
                    source: cstr(source)?,
                    target: cstr(target)?,
                    fstype: None,
                    flags: libc::MS_BIND,
                },
                Mount::Tmpfs { target } => PreparedMount {
                    source: CString::from(c"tmpfs"),
                    target: cstr(target)?,
                    fstype: Some(CString::from(c"tmpfs")),
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                },
            })
        })
        .collect()
}

/// Creates the missing directories up to `target`; returns the outermost one
/// created (the one to remove later), if any.
fn create_stub(target: &Path) -> Result<Option<PathBuf>> {
    if target.is_dir() {
        return Ok(None);
    }
    if target.exists() {
        bail!(
            "mount target {} exists but is not a directory",
            target.display()
        );
    }
    let mut outermost = target.to_path_buf();
    while let Some(parent) = outermost.parent() {
        if parent.exists() {
            break;
        }
        outermost = parent.to_path_buf();
    }
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating stub mount point {}", target.display()))?;
    if let Err(err) = mark_stub(&outermost) {
        // Without the mark only a crash sweep is lost; the drop still removes it.
        eprintln!(
            "weir-lab runtimes: cannot mark stub {}: {err}",
            outermost.display()
        );
    }
    Ok(Some(outermost))
}

/// Extended attribute naming the pid that created a stub mount point.
const STUB_XATTR: &std::ffi::CStr = c"user.weir-lab-stub";

fn mark_stub(dir: &Path) -> std::io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    let value = std::process::id().to_string();
    // SAFETY: `path` and the attribute name are NUL-terminated C strings and
    // `value` is a live buffer of the given length, all valid for the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            STUB_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid recorded on a stub mount point, if `dir` is one.
fn stub_owner(dir: &Path) -> Option<i32> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: `path` and the attribute name are NUL-terminated C strings and
    // `buf` is a writable buffer of the given length.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            STUB_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(buf.get(..len)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes stub mount points (at `targets` or one of their ancestors) left by
/// processes that no longer run, as long as they hold only empty directories.
pub fn sweep_dead_stubs<'a>(targets: impl IntoIterator<Item = &'a Path>) {
    for target in targets {
        for dir in target.ancestors() {
            if let Some(pid) = stub_owner(dir)
                && !crate::sweep::pid_alive(pid)
            {
                eprintln!(
                    "weir-lab runtimes: removing stub mount point {} of dead pid {pid}",
                    dir.display()
                );
                remove_stubs(&[dir.to_path_buf()]);
            }
        }
    }
}

/// Removes stub trees, but only while they hold nothing but empty directories.
fn remove_stubs(stubs: &[PathBuf]) {
    for stub in stubs {
        if let Err(err) = remove_empty_tree(stub) {
            eprintln!(
                "weir-lab runtimes: leaving stub mount point {}: {err}",
                stub.display()
            );
        }
    }
}

fn remove_empty_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_tree(&entry.path())?;
        }
    }
    // Fails (and keeps the dir) when a file is left inside: not ours to delete.
    std::fs::remove_dir(dir)
}
