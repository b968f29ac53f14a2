//! Named network namespaces with RAII teardown.
//!
//! A [`NetNs`] is a namespace bind-mounted at `/run/netns/<name>` (created with
//! `ip netns add`, so `ip netns exec <name> ...` works for humans too), with `lo` up.
//! Dropping it (or [`NetNs::delete`]) kills every process that still has a thread
//! in it, then removes it.
//!
//! Programs run inside with [`NetNs::command`]: the child calls `setns(2)` for the
//! net namespace only, in `pre_exec`. Unlike `ip netns exec`, this keeps the
//! machine's mount namespace and `/sys`, so bpffs and cgroup mounts made by the
//! child stay visible and alive.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// Directory where `ip netns` keeps its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    deleted: AtomicBool,
}

impl NetNs {
    /// Creates the namespace `name` (must not exist yet) and brings `lo` up.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .context("running `ip netns add` (is iproute2 installed?)")?;
        if !out.status.success() {
            bail!(
                "`ip netns add {name}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let ns = NetNs {
            name: name.to_string(),
            path: Path::new(NETNS_DIR).join(name),
            deleted: AtomicBool::new(false),
        };
        // On error `ns` drops here and removes the namespace again.
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the path a CNI runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a string, for environment variables and JSON.
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// A [`Command`] that runs `prog` inside this namespace (net namespace only).
    ///
    /// When the namespace cannot be opened, the returned command fails at spawn
    /// instead of running in the machine's own namespace.
    pub fn command(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(prog);
        match File::open(&self.path) {
            Ok(file) => {
                let fd: OwnedFd = file.into();
                // SAFETY: the closure runs in the forked child before exec and only
                // calls setns(2), which is async-signal-safe; `fd` is owned by the
                // closure, stays open until exec and is closed there (O_CLOEXEC).
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            Err(err) => {
                let errno = err.raw_os_error().unwrap_or(libc::ENOENT);
                // SAFETY: the closure only builds an io::Error from an integer, which
                // allocates nothing; it makes the spawn fail so the program never runs
                // in the machine's namespace.
                unsafe {
                    cmd.pre_exec(move || Err(std::io::Error::from_raw_os_error(errno)));
                }
            }
        }
        cmd
    }

    /// Runs `prog args...` inside the namespace and returns its output; an error
    /// (with the command line, exit status and stderr) when it fails.
    pub fn run<S: AsRef<OsStr>>(&self, prog: &str, args: &[S]) -> Result<Output> {
        let out = self
            .command(prog)
            .args(args)
            .output()
            .with_context(|| format!("spawning `{prog}` in netns {}", self.name))?;
        if !out.status.success() {
            let line: Vec<String> = args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect();
            bail!(
                "`{prog} {}` in netns {} failed ({}): {}",
                line.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Runs `ip args...` inside the namespace; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = self.run("ip", args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl of this namespace, e.g. `("net/ipv4/ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let file = Path::new("/proc/sys").join(key);
        let value = value.to_string();
        self.enter(move || {
            std::fs::write(&file, &value)
                .with_context(|| format!("writing {value:?} to {}", file.display()))
        })?
        .with_context(|| format!("setting sysctl {key} in netns {}", self.name))
    }

    /// Runs `f` on a fresh thread that has entered this namespace (net only) and
    /// returns its result. The thread ends afterwards, so no other thread of the
    /// process ever changes namespace. Sockets created inside `f` stay in this
    /// namespace when returned.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let file = File::open(&self.path)
            .with_context(|| format!("opening netns {}", self.path.display()))?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into netns {}", self.name))?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Pids of processes (other than this one) with any thread inside this namespace.
    pub fn pids(&self) -> Vec<i32> {
        match ns_id(&self.path) {
            Some(id) => pids_in_netns(id),
            None => Vec::new(),
        }
    }

    /// Whether the namespace is still mounted at its path.
    pub fn exists(&self) -> bool {
        !self.deleted.load(Ordering::SeqCst) && ns_id(&self.path).is_some()
    }

    /// Makes drop and [`NetNs::delete`] leave the namespace alone (it outlives
    /// this handle, e.g. for a kept demo lab).
    pub fn disarm(&self) {
        self.deleted.store(true, Ordering::SeqCst);
    }

    /// Kills the processes inside, then removes the namespace. Idempotent; errors
    /// are printed to stderr, since this runs from `Drop`.
    pub fn delete(&self) {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return;
        }
        delete_by_name(&self.name);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Kills processes in the namespace `name` and removes it, without a [`NetNs`]
/// handle (used by the sweep). Missing namespaces are fine.
pub fn delete_by_name(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    if let Some(id) = ns_id(&path) {
        kill_pids(&pids_in_netns(id));
    }
    if !path.exists() {
        return;
    }
    let ok = Command::new("ip")
        .args(["netns", "delete", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        // Fall back to what `ip netns delete` does.
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        if let Err(err) = std::fs::remove_file(&path) {
            eprintln!("weir-lab: could not remove netns {}: {err}", path.display());
        }
    }
}

/// Names of all namespaces under [`NETNS_DIR`].
pub fn list_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        bail!("invalid netns name {name:?}: use [A-Za-z0-9._-], not starting with '.'");
    }
    Ok(())
}

/// Identity (device, inode) of a namespace file or `/proc/.../ns/net` link.
type NsId = (u64, u64);

fn ns_id(path: &Path) -> Option<NsId> {
    let meta = std::fs::metadata(path).ok()?;
    // An unmounted file in /run/netns is a plain empty file on tmpfs, not an nsfs inode.
    let nsfs = std::fs::metadata("/proc/self/ns/net").ok()?.dev();
    (meta.dev() == nsfs).then_some((meta.dev(), meta.ino()))
}

fn pids_in_netns(id: NsId) -> Vec<i32> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in procs.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        let inside = tasks
            .filter_map(|t| t.ok())
            .any(|t| ns_id(&t.path().join("ns/net")) == Some(id));
        if inside && let Ok(pid) = i32::try_from(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn kill_pids(pids: &[i32]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // Wait (briefly) until they are gone, so their sockets and links go with them.
    for _ in 0..200 {
        let alive = pids.iter().any(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !stat_is_zombie(&s))
                .unwrap_or(false)
        });
        if !alive {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn stat_is_zombie(stat: &str) -> bool {
    // Field 3, after the parenthesised command name, is the state.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}
