//! The cgroup parent the runtimes put containers (and conmon) under.
//!
//! podman gets `--cgroup-parent=/<name>` and ctr `--cgroup /<name>/<id>`, so every
//! cgroup they create sits below one test-named directory in each hierarchy
//! (cgroup v1 controllers and the unified v2 tree). Dropping the guard kills
//! whatever still runs there and removes the directories, deepest first. The
//! machine's root cgroups are never written to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of every test cgroup parent: `weir-rt-<pid>-<n>`.
pub const PREFIX: &str = "weir-rt-";

/// Owns `/<name>` in every cgroup hierarchy; removes it on drop.
#[derive(Debug)]
pub struct CgroupParent {
    name: String,
}

impl CgroupParent {
    /// Claims `name` (nothing is created: the runtimes create what they need).
    pub fn new(name: &str) -> CgroupParent {
        CgroupParent {
            name: name.to_string(),
        }
    }

    /// The parent as the runtimes take it: `/<name>`.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directories of this parent that exist now, one per hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        hierarchy_roots()
            .into_iter()
            .map(|root| root.join(&self.name))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Kills processes left inside and removes the directories. Returns what
    /// could not be removed.
    pub fn remove(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for dir in self.dirs() {
            if let Err(err) = remove_cgroup_tree(&dir) {
                problems.push(format!("{}: {err}", dir.display()));
            }
        }
        problems
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for problem in self.remove() {
            eprintln!("weir-lab runtimes: cgroup cleanup: {problem}");
        }
    }
}

/// Mount points of every cgroup (v1) and cgroup2 hierarchy, from mountinfo.
pub fn hierarchy_roots() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Removes leftovers `weir-rt-<pid>-*` of processes that no longer run.
pub fn sweep_dead() {
    for root in hierarchy_roots() {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if !crate::sweep::pid_alive(pid)
                && let Err(err) = remove_cgroup_tree(&entry.path())
            {
                eprintln!(
                    "weir-lab runtimes: sweeping cgroup {}: {err}",
                    entry.path().display()
                );
            }
        }
    }
}

/// Kills every process in `dir` and below, then rmdirs the tree deepest first.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs)?;
    // Deepest first: a cgroup with children cannot be removed.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        kill_procs(d);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in &dirs {
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                // EBUSY while killed processes are still exiting.
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => {
                    kill_procs(d);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    out.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

fn kill_procs(dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
