//! Removing what crashed lab processes left behind.
//!
//! Every lab object carries its lab id `<pid>-<counter>`: netns names are
//! `wlab-<pid>-<counter>-...` and state dirs `/run/weir-lab/<pid>-<counter>/`.
//! When `<pid>` is no longer alive, nobody owns them: [`sweep_dead`] deletes them
//! (killing processes still inside, unmounting anything mounted below the dir).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::netns;

/// Prefix of every lab netns name.
pub const NETNS_PREFIX: &str = "wlab-";

/// Root of the per-lab state dirs.
pub const STATE_ROOT: &str = "/run/weir-lab";

/// A file in a lab's state dir that makes [`sweep_dead`] spare the lab
/// (written by `Lab::keep`).
pub const KEEP_MARKER: &str = "keep";

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Namespaces deleted.
    pub netns: Vec<String>,
    /// State dirs removed.
    pub dirs: Vec<PathBuf>,
}

/// The pid a lab id (`<pid>-<counter>`) or lab netns name belongs to.
pub fn owner_pid(id_or_netns: &str) -> Option<i32> {
    let id = id_or_netns
        .strip_prefix(NETNS_PREFIX)
        .unwrap_or(id_or_netns);
    id.split('-').next()?.parse().ok()
}

/// Whether `pid` is a live process (zombies count as dead).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
        Err(_) => false,
    }
}

/// Removes the netns and state dirs of every lab whose process is dead, except
/// labs kept on purpose (with a [`KEEP_MARKER`]).
pub fn sweep_dead() -> SweepReport {
    sweep_matching(|id| owner_pid(id).is_some_and(|pid| !pid_alive(pid)) && !is_kept(id))
}

/// Whether the lab `id` was kept on purpose (see [`KEEP_MARKER`]).
pub fn is_kept(id: &str) -> bool {
    Path::new(STATE_ROOT).join(id).join(KEEP_MARKER).exists()
}

/// Removes one lab by id (`<pid>-<counter>`), whether its process lives or not.
/// For `weir-demo --cleanup <id>`.
pub fn remove_lab(id: &str) -> Result<SweepReport> {
    if owner_pid(id).is_none() || id.contains('/') {
        bail!("{id:?} is not a lab id (expected <pid>-<counter>, e.g. 1234-1)");
    }
    Ok(sweep_matching(|lab| lab == id))
}

/// Lab ids that exist now (from netns names and state dirs).
pub fn list_labs() -> Vec<String> {
    let mut ids: Vec<String> = netns::list_names()
        .iter()
        .filter_map(|name| lab_id_of_netns(name))
        .chain(
            state_dirs()
                .into_iter()
                .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string)),
        )
        .filter(|id| owner_pid(id).is_some())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `wlab-<pid>-<counter>-rest` → `<pid>-<counter>`.
fn lab_id_of_netns(name: &str) -> Option<String> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let counter = parts.next()?;
    let counter = counter.split('.').next()?;
    (pid.parse::<i32>().is_ok() && counter.parse::<u32>().is_ok())
        .then(|| format!("{pid}-{counter}"))
}

fn state_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

fn sweep_matching(matches: impl Fn(&str) -> bool) -> SweepReport {
    let mut report = SweepReport::default();
    // Pods first (longest names), then nodes, then the lab netns.
    let mut names: Vec<String> = netns::list_names()
        .into_iter()
        .filter(|name| lab_id_of_netns(name).is_some_and(|id| matches(&id)))
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        netns::delete_by_name(&name);
        report.netns.push(name);
    }
    for dir in state_dirs() {
        let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if owner_pid(id).is_some() && matches(id) {
            if let Err(err) = remove_state_dir(&dir) {
                eprintln!("weir-lab sweep: {err:#}");
            }
            report.dirs.push(dir);
        }
    }
    report
}

/// Unmounts everything mounted at or below `dir` (bpffs, cgroup2), deepest
/// first, then removes the tree. Refuses to recurse into a dir that is still a
/// mount point, so pins on a live bpffs are never deleted file by file.
pub fn remove_state_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut mounts = mounts_below(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in &mounts {
        let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        bail!(
            "not removing {}: still mounted below it: {:?}",
            dir.display(),
            left
        );
    }
    std::fs::remove_dir_all(dir).map_err(|e| anyhow::anyhow!("removing {}: {e}", dir.display()))
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_lab_ids() {
        assert_eq!(owner_pid("1234-7"), Some(1234));
        assert_eq!(owner_pid("wlab-1234-7-n1"), Some(1234));
        assert_eq!(owner_pid("weir-x"), None);
        assert_eq!(
            lab_id_of_netns("wlab-1234-7-n1.default.a").as_deref(),
            Some("1234-7")
        );
        assert_eq!(
            lab_id_of_netns("wlab-1234-7-lab").as_deref(),
            Some("1234-7")
        );
        assert_eq!(lab_id_of_netns("wlab-x-7-lab"), None);
        assert_eq!(lab_id_of_netns("other-1-2"), None);
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn own_pid_is_alive_and_bogus_is_not() {
        assert!(pid_alive(i32::try_from(std::process::id()).unwrap()));
        assert!(!pid_alive(i32::MAX));
    }
}
