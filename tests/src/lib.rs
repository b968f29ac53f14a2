//! # weir-lab: Weir's test lab
//!
//! A Kubernetes-like cluster on one machine, built from network namespaces, for
//! integration tests, benchmarks and the demo. Nothing here touches the machine's
//! own network namespace: every interface, address, route and sysctl lives in a
//! namespace the lab created, and all of it is removed on drop (also while a
//! panic unwinds) or, after a crash, by the [`sweep`] of the next lab.
//!
//! ## Topology
//!
//! ```text
//!  lab netns "wlab-<id>-lab"          bridge "fabric" 192.168.100.1/24, routes to every pod CIDR
//!   ├─ veth n1 ── eth0 in node netns "wlab-<id>-n1"   192.168.100.11/24, pods 10.244.1.0/24
//!   │               └─ pod netns "wlab-<id>-n1.<namespace>.<pod>"  eth0 10.244.1.x/32,
//!   │                  host side weirXXXX with 10.244.1.1/32 (the gateway), wired by the real weir-cni
//!   └─ veth n2 ── eth0 in node netns "wlab-<id>-n2"   192.168.100.12/24, pods 10.244.2.0/24
//! ```
//!
//! Nodes have `ip_forward=1` and (by default) "native routing": a route to every
//! other node's pod CIDR via that node's IP. The lab netns plays "outside the
//! cluster" and routes pod CIDRs the same way.
//!
//! `<id>` is `<pid>-<counter>`, so several labs in one process never collide, and
//! the [`sweep`] can tell a leftover of a dead process by its pid.
//! Per-lab state lives under `/run/weir-lab/<id>/`, one directory per node
//! (`node1/cni-data` = IPAM `dataDir`, `node1/cni-conf/10-weir.conf`, `node1/agent`
//! for `--state-dir`, `node1/bpffs` for `--bpffs`; the lab creates these dirs but
//! mounts nothing). Pod container ids are the pod netns name without `wlab-`.
//!
//! ## API at a glance
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weir_lab::{Lab, Proto};
//! weir_lab::require_root();
//! let lab = Lab::builder().nodes(2).build()?;     // Lab::new() == 2 nodes
//! let a = lab.node(1).add_pod("a")?;               // real weir-cni ADD, as a runtime does
//! let b = lab.node(2).add_pod("b")?;
//! let _srv = b.serve(&[80])?;                      // weir-serve on TCP+UDP 80, answers "b\n"
//! let r = a.probe(Proto::Tcp, b.ip(), 80)?;        // weir-probe inside pod a
//! assert!(r.is_connected() && r.reply == "b");
//! let r = lab.probe_outside(Proto::Udp, b.ip(), 80)?; // from the lab netns
//! let r = lab.node(1).probe(Proto::Tcp, b.ip(), 80)?; // from node1's own netns
//! let chk = a.check()?;                            // CNI CHECK with prevResult
//! assert!(chk.success());
//! drop(a);                                         // CNI DEL, then the pod netns is removed
//! # Ok(()) }
//! ```
//!
//! * [`bin_path`] / [`try_bin_path`] find `weir-cni`, `weir-agent`, `weir-serve`, ...
//!   (`$WEIR_BIN_DIR`, else `target/release`, else `target/debug`).
//! * [`write_atomic`] writes a manifest the way the agent's watcher expects.
//! * [`require_root`] panics loudly without root (tests never skip).
//! * [`netns::NetNs`]: RAII named netns; [`NetNs::command`] runs a program inside it
//!   (setns of the net namespace only, in `pre_exec`, never `ip netns exec`),
//!   [`NetNs::run`] / [`NetNs::ip`] return output or an error carrying stderr,
//!   [`NetNs::enter`] runs a closure on a dedicated thread inside it,
//!   [`NetNs::sysctl`], [`NetNs::pids`]. Drop kills every process inside, then deletes it.
//! * [`Lab`] ([`LabBuilder`]: `nodes(n)`, `native_routing(bool)`, `cni_plugin(path)`):
//!   [`Lab::node`] (1-based), [`Lab::outside`], [`Lab::set_native_routing`],
//!   [`Lab::keep`] (leave it up, for `weir-demo --keep`).
//! * [`Node`]: `ip()`, `pod_cidr()`, `gateway()`, dirs, [`Node::cni_config`] (the
//!   plugin JSON; edit `cniVersion` etc. on the value), [`Node::add_pod`] /
//!   [`Node::add_pod_in`] / [`Node::add_pod_with_config`], [`Node::create_netns`] (an
//!   unwired netns owned by the lab), the low-level [`Node::cni`] /
//!   [`Node::cni_call`] ([`CniCall`] builder, [`CniOutput`] with `success()`,
//!   `error_code()`, `error_msg()`), [`Node::cni_command`] for hand-made
//!   environments, and store/link inspection: [`Node::allocated_ips`],
//!   [`Node::ip_file`], [`Node::links`].
//! * [`Pod`]: `ip()`, `host_veth()`, `result()`, `container_id()`, [`Pod::check`],
//!   [`Pod::delete`] (explicit DEL, returns its output), [`Pod::cni_call`] (a
//!   pre-filled call to tweak). Drop = DEL + netns removal.
//! * Workloads ([`workload`]): `serve(ports)` and `probe(proto, addr, port)` /
//!   `probe_with(.., ProbeOptions{timeout_ms, count})` on [`Pod`], [`Node`], the lab
//!   netns ([`Lab::probe_outside`]) and any [`NetNs`] ([`NetNs::serve`] takes a
//!   name and separate TCP/UDP ports); [`ProbeResult`] (`result`, `reply`,
//!   `elapsed_ms`, `error`), [`ServeGuard`] (kills on drop, `detach()`).
//!   `weir-serve --report-client` answers `<name> <client ip>:<port>` to show the
//!   source address a backend sees.
//! * [`cluster::Cluster`]: a lab whose nodes run real `weir-agent`s in standalone
//!   mode on one shared manifests dir, with pods registered through `agentSocket`.
//! * [`stats`]: the chi-square check that traffic spreads uniformly over backends
//!   ([`stats::Uniformity`]), shared by the service tests and the demo.
//! * [`sweep::sweep_dead`] removes leftovers of dead processes (run by every
//!   [`LabBuilder::build`]; kept labs are spared); [`sweep::remove_lab`] removes one
//!   lab by id; [`sweep::remove_state_dir`] unmounts bpffs/cgroup mounts below a dir
//!   before deleting it.
//!
//! Tests that build labs share kernel state (the `/run/netns` names, CPU), so run
//! them with `--test-threads=1` (as `cargo xtask test` does).

pub mod bench;
pub mod bench_report;
pub mod cluster;
pub mod cni;
pub mod lab;
pub mod netns;
pub mod netpol;
pub mod pod;
mod process;
pub mod runtimes;
pub mod stats;
pub mod sweep;
pub mod workload;

use std::path::{Path, PathBuf};

pub use cni::{CniCall, CniOutput};
pub use lab::{Lab, LabBuilder, Node};
pub use netns::NetNs;
pub use pod::Pod;
pub use workload::{ProbeOptions, ProbeOutcome, ProbeResult, Proto, ServeGuard};

/// The workspace root (the parent of this crate's directory), fixed at compile time.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where a binary of the workspace lives, or an error naming the command to build it.
///
/// Order: `$WEIR_BIN_DIR/<name>` if `WEIR_BIN_DIR` is set (then only there), else
/// `<workspace>/target/release/<name>`, else `<workspace>/target/debug/<name>`.
pub fn try_bin_path(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
        anyhow::bail!(
            "binary {name:?} not found at {} (WEIR_BIN_DIR is set); build it with `cargo xtask build` \
             or `cargo build -p <package>` and point WEIR_BIN_DIR at that target directory",
            path.display()
        );
    }
    let target = workspace_root().join("target");
    for profile in ["release", "debug"] {
        let path = target.join(profile).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    anyhow::bail!(
        "binary {name:?} not found in {}/release nor {}/debug; build it with `cargo xtask build` \
         (or e.g. `cargo build -p weir-cni -p weir-lab --bins` and set WEIR_BIN_DIR={}/debug)",
        target.display(),
        target.display(),
        target.display()
    )
}

/// Like [`try_bin_path`], but panics with the same message; meant for tests.
pub fn bin_path(name: &str) -> PathBuf {
    match try_bin_path(name) {
        Ok(path) => path,
        Err(err) => panic!("{err:#}"),
    }
}

/// Writes `body` to `dir/name` atomically: a temporary dot-file (which the
/// agent's manifest reader skips), then a rename over the target, so a
/// watcher never reads half a file.
pub fn write_atomic(dir: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// Whether the current process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics with a clear message when not running as root. Lab tests call this
/// first: they need root and must fail loudly, never skip.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (it creates network namespaces); run it as root, e.g. \
         `sudo -E cargo test -p weir-lab -- --test-threads=1` or `cargo xtask test`"
    );
}
