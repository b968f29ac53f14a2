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
//!   │               └─ pod netns "wlab-<id>-n1-<pod>" eth0 10.244.1.x/32, wired by the real weir-cni
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
//! (`node1/cni-data`, `node1/cni-conf`, `node1/agent`, `node1/bpffs`).
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
//! * [`bin_path`] finds `weir-cni`, `weir-agent`, `weir-serve`, ... ([`bin_path`] docs).
//! * [`require_root`] panics loudly without root (tests never skip).
//! * [`netns::NetNs`]: RAII named netns; [`netns::NetNs::command`] runs a program inside
//!   it (setns of the net namespace only, in `pre_exec`), [`netns::NetNs::run`] returns
//!   its output or an error carrying stderr, [`netns::NetNs::enter`] runs a closure on
//!   a dedicated thread inside it.
//! * [`Lab`], [`LabBuilder`], [`Node`]: the topology. [`Node::cni_config`],
//!   [`Node::add_pod`], [`Node::add_pod_with_config`], the low-level [`Node::cni`] /
//!   [`Node::cni_call`] ([`CniCall`], [`CniOutput`]) and [`Node::cni_command`] for
//!   hand-made environments.
//! * [`Pod`]: IP, host veth, CNI result, [`Pod::check`], [`Pod::delete`] (explicit DEL).
//! * Workloads ([`workload`]): `serve`/`probe` on [`Pod`], [`Node`], the lab netns
//!   ([`Lab::outside`]) and any [`netns::NetNs`]; [`ProbeResult`], [`ServeGuard`].
//! * [`sweep::sweep_dead`] removes leftovers of dead processes (run by every
//!   [`LabBuilder::build`]); [`sweep::remove_lab`] removes one lab by id.
//!
//! Tests that build labs share kernel state (the `/run/netns` names, CPU), so run
//! them with `--test-threads=1` (as `cargo xtask test` does).

pub mod cni;
pub mod lab;
pub mod netns;
pub mod pod;
mod process;
pub mod runtimes;
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
