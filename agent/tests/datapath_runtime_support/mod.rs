//! Shared fixtures of the datapath runtime tests: a pin root under /run
//! (not on a bpffs, so the loader mounts one), network namespaces with a
//! veth pair, and a test cgroup, all removed on drop (also while a panic
//! unwinds). Names follow the lab's `wlab-<pid>-<n>` scheme, so the lab's
//! sweep removes leftovers of a crashed run.
#![allow(clippy::unwrap_used, dead_code)]

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use weir_agent::{
    datapath::{self, Datapath, LoadOptions, netns::in_netns},
    plan::{
        Algorithm, Backend, DesiredState, Frontend, FrontendKind, Protocol, Scope, ServicePortRef,
    },
};
use weir_lab::NetNs;

/// Counters start high so they never meet the lab's own.
static NEXT: AtomicU32 = AtomicU32::new(9000);

pub fn next_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn require_root_and_object() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "datapath runtime tests need root (bpffs, netns, tcx); run them through `cargo xtask test` as root"
    );
    assert!(
        datapath::has_object(),
        "built without the eBPF object: run through `cargo xtask test` (sets WEIR_EBPF_OBJ)"
    );
}

/// `/run/weir-lab/<id>/bpffs`: a plain directory on tmpfs until the loader
/// mounts a bpffs on it. Unmounted and removed on drop.
pub struct TestBpffs {
    state_dir: PathBuf,
    path: PathBuf,
}

impl TestBpffs {
    pub fn new() -> Self {
        let state_dir = Path::new(weir_lab::sweep::STATE_ROOT).join(next_id());
        let path = state_dir.join("bpffs");
        std::fs::create_dir_all(&path).unwrap();
        Self { state_dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> LoadOptions {
        LoadOptions::new(&self.path)
    }

    pub fn load(&self) -> Datapath {
        Datapath::load(&self.options()).unwrap()
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Err(e) = weir_lab::sweep::remove_state_dir(&self.state_dir) {
            eprintln!("removing {}: {e:#}", self.state_dir.display());
        }
    }
}

/// A "node" netns whose `hveth` is the host side of a veth pair leading to
/// `eth0` in a "pod" netns: node 10.77.0.1/24, pod 10.77.0.2/24.
pub struct TestNet {
    pub pod: NetNs,
    pub node: NetNs,
}

pub const NODE_IP: &str = "10.77.0.1";
pub const POD_IP: &str = "10.77.0.2";
pub const HOST_VETH: &str = "hveth";

impl TestNet {
    pub fn new() -> Self {
        let id = next_id();
        let node = NetNs::create(&format!("wlab-{id}-node")).unwrap();
        let pod = NetNs::create(&format!("wlab-{id}-pod")).unwrap();
        node.ip(&[
            "link",
            "add",
            HOST_VETH,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ])
        .unwrap();
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", HOST_VETH])
            .unwrap();
        node.ip(&["link", "set", HOST_VETH, "up"]).unwrap();
        pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"])
            .unwrap();
        pod.ip(&["link", "set", "eth0", "up"]).unwrap();
        Self { pod, node }
    }

    /// The host veth's index in the node netns.
    pub fn host_ifindex(&self) -> u32 {
        in_netns(self.node.path(), || {
            nix::net::if_::if_nametoindex(HOST_VETH).unwrap()
        })
        .unwrap()
    }

    /// Sends `count` UDP datagrams from the pod to an echo socket on the
    /// node; returns whether every echo came back (so packets crossed the
    /// veth both ways: host ingress and host egress).
    pub fn udp_echo(&self, count: u32) -> bool {
        let timeout = Some(std::time::Duration::from_secs(2));
        let server = in_netns(self.node.path(), || UdpSocket::bind((NODE_IP, 0)))
            .unwrap()
            .unwrap();
        let client = in_netns(self.pod.path(), || UdpSocket::bind((POD_IP, 0)))
            .unwrap()
            .unwrap();
        server.set_read_timeout(timeout).unwrap();
        client.set_read_timeout(timeout).unwrap();
        let to = server.local_addr().unwrap();
        let mut buf = [0u8; 64];
        (0..count).all(|i| {
            let msg = i.to_be_bytes();
            client.send_to(&msg, to).is_ok()
                && server
                    .recv_from(&mut buf)
                    .is_ok_and(|(_, from)| server.send_to(&msg, from).is_ok())
                && client
                    .recv_from(&mut buf)
                    .is_ok_and(|(n, _)| buf[..n] == msg)
        })
    }
}

/// A cgroup v2 directory of our own under the machine's cgroup2 mount;
/// removed on drop (no process is ever moved into it).
pub struct TestCgroup {
    path: PathBuf,
}

pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

impl TestCgroup {
    pub fn new() -> Self {
        let path = Path::new(CGROUP2_ROOT).join(format!("weir-test-{}", next_id()));
        std::fs::create_dir(&path).unwrap();
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("removing cgroup {}: {e}", self.path.display());
        }
    }
}

pub fn backend(last: u8, port: u16) -> Backend {
    Backend {
        address: Ipv4Addr::new(10, 244, 1, last),
        port,
        terminating: false,
        local: true,
    }
}

pub fn frontend(
    name: &str,
    vip: Ipv4Addr,
    port: u16,
    proto: Protocol,
    backends: Vec<Backend>,
) -> Frontend {
    Frontend {
        service: ServicePortRef {
            namespace: "default".into(),
            name: name.into(),
            port_name: String::new(),
        },
        address: vip,
        port,
        proto,
        scope: Scope::External,
        kind: FrontendKind::ClusterIp,
        local_only: false,
        two_scopes: false,
        affinity_timeout: None,
        algorithm: Algorithm::Random,
        backends,
    }
}

pub fn plan(mut frontends: Vec<Frontend>) -> DesiredState {
    frontends.sort_by_key(|f| (f.address, f.port, f.proto, f.scope));
    DesiredState {
        frontends,
        routes: Vec::new(),
    }
}

/// Runs `bpftool` with `args`; panics with its stderr on failure.
pub fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
