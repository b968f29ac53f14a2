//! Test cgroups for the socket-level LB: one per node, directly under the
//! machine's cgroup2 mount (never the root cgroup itself), named
//! `weir-lab-<lab id>-<node>` so a crashed run's leftovers are swept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::sweep;

/// Prefix of every cgroup the lab creates.
pub const CGROUP_PREFIX: &str = "weir-lab-";

/// The machine's cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .context("this machine has no cgroup2 mount (socket-level LB needs one)")
}

/// A cgroup of our own; processes left in it are killed and it is removed
/// on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 root>/weir-lab-<suffix>`; `suffix` starts with the
    /// lab id (`<pid>-<counter>`), which the sweep reads.
    pub fn create(suffix: &str) -> Result<TestCgroup> {
        let path = cgroup2_root()?.join(format!("{CGROUP_PREFIX}{suffix}"));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(TestCgroup { path })
    }

    /// The cgroup's directory (what `--cgroup` takes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `cgroup.procs` file: writing a pid there moves that process in.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(err) = remove(&self.path) {
            eprintln!("weir-lab: {err:#}");
        }
    }
}

/// Kills what is left inside, then removes the cgroup directory.
fn remove(path: &Path) -> Result<()> {
    for _ in 0..100 {
        let pids: Vec<i32> = std::fs::read_to_string(path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while killed processes are still on their way out.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    bail!("could not remove cgroup {}", path.display())
}

/// Removes the lab cgroups of dead processes (after a crash).
pub fn sweep_dead() -> Vec<PathBuf> {
    let Ok(root) = cgroup2_root() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
            continue;
        };
        let dead = sweep::owner_pid(rest).is_some_and(|pid| !sweep::pid_alive(pid));
        if dead && !sweep::is_kept(rest.rsplit_once('-').map_or(rest, |(id, _)| id)) {
            let path = entry.path();
            match remove(&path) {
                Ok(()) => removed.push(path),
                Err(err) => eprintln!("weir-lab sweep: {err:#}"),
            }
        }
    }
    removed
}
