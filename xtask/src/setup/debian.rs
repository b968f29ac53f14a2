//! The Debian packages the tests, the demo and the benchmarks use.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Outcome;
use crate::{privilege, proc};

/// Everything the lab, the real CNI clients and the benchmarks need. One list, easy to change.
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "tcpdump",
    "conntrack",
    "iperf3",
    "sockperf",
    "wrk",
    "socat",
    "nftables",
    "iptables",
    "containernetworking-plugins",
    "podman",
    "containerd",
    "runc",
    "busybox-static",
    "procps",
    "psmisc",
    "fonts-dejavu-core",
];

/// Packages from `wanted` that dpkg does not report as installed.
fn missing(wanted: &[&str]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when some names are unknown to it, so read its stdout either way.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package}\t${db:Status-Status}\n")
        .args(wanted)
        .output()
        .context("cannot run dpkg-query; setup installs packages on Debian/Ubuntu only")?;
    let status = parse_status(&String::from_utf8_lossy(&out.stdout));
    Ok(wanted
        .iter()
        .filter(|name| status.get(**name).map(String::as_str) != Some("installed"))
        .map(|name| name.to_string())
        .collect())
}

/// `name\tstatus` lines -> map (multi-arch names like `foo:amd64` are reduced to `foo`).
fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, status)| {
            let name = name.split(':').next().unwrap_or(name);
            (name.to_string(), status.trim().to_string())
        })
        .collect()
}

pub fn ensure() -> Result<Outcome> {
    let todo = missing(PACKAGES)?;
    if todo.is_empty() {
        return Ok(Outcome::Present(format!(
            "all {} installed",
            PACKAGES.len()
        )));
    }
    println!("setup: missing Debian packages: {}", todo.join(" "));
    privilege::require_root(&format!("installing Debian packages ({})", todo.join(" ")))?;
    proc::run(apt().arg("update"))?;
    proc::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&todo),
    )?;
    let still = missing(PACKAGES)?;
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(Outcome::Installed(todo.join(" ")))
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null());
    cmd
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_lines_are_parsed() {
        let map = parse_status("iproute2\tinstalled\nrunc:amd64\tconfig-files\ngarbage\n");
        assert_eq!(map.get("iproute2").map(String::as_str), Some("installed"));
        assert_eq!(map.get("runc").map(String::as_str), Some("config-files"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn unknown_package_counts_as_missing() {
        let todo = missing(&["dpkg", "weir-no-such-package"]).unwrap();
        assert_eq!(todo, vec!["weir-no-such-package".to_string()]);
    }
}
