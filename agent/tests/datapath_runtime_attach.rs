//! Attachment with pinned bpf_links: idempotent attach and detach, atomic
//! program swap on restart, survival of `kill -9`, pruning of links whose
//! interface is gone, and cgroup socket-LB links on a cgroup of our own.
//! Needs root and a binary built with the eBPF object (`cargo xtask test`).
#![allow(clippy::unwrap_used)]

mod datapath_runtime_support;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType},
};
use datapath_runtime_support::*;
use weir_agent::datapath::{Attached, Datapath, LoadOptions, TcHook, netns::in_netns};
use weir_common::{
    DropReason,
    endpoint::{EndpointInfo, ep_flags},
    maps as names,
    metrics::{Direction, MetricKey, MetricValue},
    programs as progs,
};

/// Names of the tcx programs on `HOST_VETH` in the node netns.
fn tcx_programs(net: &TestNet, attach_type: TcAttachType) -> Vec<String> {
    in_netns(net.node.path(), move || {
        let (_, programs) = SchedClassifier::query_tcx(HOST_VETH, attach_type).unwrap();
        programs
            .iter()
            .map(|p| p.name_as_str().unwrap_or_default().to_string())
            .collect()
    })
    .unwrap()
}

/// (link id, program id) of a pinned link, via bpftool.
fn link_ids(pin: &Path) -> (u64, u64) {
    let out = bpftool(&["-j", "link", "show", "pinned", &pin.display().to_string()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["id"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap())
}

/// Packets the pinned metrics map counted for `direction`, over all reasons.
fn counted(bpffs: &Path, direction: Direction) -> u64 {
    let map = MapData::from_pin(bpffs.join(names::METRICS)).unwrap();
    let counters =
        PerCpuArray::<_, MetricValue>::try_from(aya::maps::Map::PerCpuArray(map)).unwrap();
    DropReason::ALL
        .iter()
        .map(|r| {
            counters
                .get(&MetricKey::new(direction, *r).index(), 0)
                .unwrap()
                .iter()
                .map(|v| v.packets)
                .sum::<u64>()
        })
        .sum()
}

fn kernel_name(name: &str) -> String {
    names::kernel_name(name).to_string()
}

#[test]
fn pod_programs_attach_idempotently_and_detach() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let mut dp = root.load();
    let ifindex = net.host_ifindex();

    let first = in_netns(net.node.path(), || dp.attach_pod(HOST_VETH).unwrap()).unwrap();
    assert_eq!(first, [Attached::Created, Attached::Created]);
    let again = in_netns(net.node.path(), || dp.attach_pod(ifindex).unwrap()).unwrap();
    assert_eq!(again, [Attached::Unchanged, Attached::Unchanged]);
    assert_eq!(
        tcx_programs(&net, TcAttachType::Ingress),
        vec![kernel_name(progs::FROM_POD)]
    );
    assert_eq!(
        tcx_programs(&net, TcAttachType::Egress),
        vec![kernel_name(progs::TO_POD)]
    );
    for hook in [TcHook::PodIngress, TcHook::PodEgress] {
        assert!(dp.pins().link(&hook.pin_name(ifindex)).exists());
    }
    assert!(
        !net.udp_echo(1),
        "an unregistered pod's packets are spoofed"
    );
    let pod = EndpointInfo {
        ifindex,
        flags: ep_flags::LOCAL_POD,
        ..EndpointInfo::default()
    };
    dp.upsert_endpoint(POD_IP.parse().unwrap(), &pod).unwrap();
    assert!(net.udp_echo(2), "traffic still flows through the programs");

    assert_eq!(dp.detach_pod(ifindex).unwrap(), 2);
    assert_eq!(dp.detach_pod(ifindex).unwrap(), 0, "idempotent");
    assert!(tcx_programs(&net, TcAttachType::Ingress).is_empty());
    assert!(tcx_programs(&net, TcAttachType::Egress).is_empty());
}

#[test]
fn restart_swaps_programs_into_the_same_links() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let ifindex = net.host_ifindex();
    let mut dp = root.load();
    in_netns(net.node.path(), || dp.attach_pod(ifindex).unwrap()).unwrap();
    let pin = dp.pins().link(&TcHook::PodIngress.pin_name(ifindex));
    let (link_before, prog_before) = link_ids(&pin);
    drop(dp);
    // With no agent the programs stay attached.
    assert_eq!(
        tcx_programs(&net, TcAttachType::Ingress),
        vec![kernel_name(progs::FROM_POD)]
    );

    let mut dp = root.load();
    assert_eq!(dp.report().links.updated, 2, "{:?}", dp.report().links);
    let (link_after, prog_after) = link_ids(&pin);
    assert_eq!(link_after, link_before, "the same link: never detached");
    assert_ne!(prog_after, prog_before, "running the new program");
    assert_eq!(
        tcx_programs(&net, TcAttachType::Ingress).len(),
        1,
        "no second attachment"
    );
    let again = in_netns(net.node.path(), || dp.attach_pod(ifindex).unwrap()).unwrap();
    assert_eq!(again, [Attached::Unchanged, Attached::Unchanged]);
}

#[test]
fn links_of_deleted_interfaces_are_pruned() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let ifindex = net.host_ifindex();
    let mut dp = root.load();
    in_netns(net.node.path(), || dp.attach_pod(ifindex).unwrap()).unwrap();
    net.node.ip(&["link", "del", HOST_VETH]).unwrap();
    assert_eq!(dp.prune_links().unwrap(), 2);
    assert!(
        !dp.pins()
            .link(&TcHook::PodIngress.pin_name(ifindex))
            .exists()
    );
    assert_eq!(dp.prune_links().unwrap(), 0);
    assert_eq!(
        dp.detach_pod(ifindex).unwrap(),
        0,
        "detaching a gone pod is fine"
    );
}

#[test]
fn netdev_programs_attach_to_the_uplink() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let mut dp = root.load();
    let attached = in_netns(net.node.path(), || dp.attach_netdev(HOST_VETH).unwrap()).unwrap();
    assert_eq!(attached, [Attached::Created, Attached::Created]);
    assert_eq!(
        tcx_programs(&net, TcAttachType::Ingress),
        vec![kernel_name(progs::FROM_NETDEV)]
    );
    assert_eq!(
        tcx_programs(&net, TcAttachType::Egress),
        vec![kernel_name(progs::TO_NETDEV)]
    );
    let again = in_netns(net.node.path(), || dp.attach_netdev(HOST_VETH).unwrap()).unwrap();
    assert_eq!(again, [Attached::Unchanged, Attached::Unchanged]);
    assert_eq!(dp.detach_netdev(net.host_ifindex()).unwrap(), 2);
    assert!(tcx_programs(&net, TcAttachType::Ingress).is_empty());
}

#[test]
fn socket_lb_attaches_to_a_test_cgroup_only() {
    require_root_and_object();
    let root = TestBpffs::new();
    let cgroup = TestCgroup::new();
    let mut dp = root.load();
    let attached = dp.attach_cgroup(cgroup.path()).unwrap();
    assert_eq!(attached.len(), progs::SOCK.len());
    assert!(attached.iter().all(|(_, a)| *a == Attached::Created));
    let out = bpftool(&["-j", "cgroup", "show", &cgroup.path().display().to_string()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut shown: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    shown.sort();
    // bpftool shows the full names (from BTF).
    let mut want: Vec<String> = progs::SOCK.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(shown, want);
    let again = dp.attach_cgroup(cgroup.path()).unwrap();
    assert!(again.iter().all(|(_, a)| *a == Attached::Unchanged));
    drop(dp);
    let dp = root.load();
    assert_eq!(dp.report().links.updated, progs::SOCK.len());
    let mut dp = dp;
    assert_eq!(dp.detach_cgroup(cgroup.path()).unwrap(), progs::SOCK.len());
    let out = bpftool(&["-j", "cgroup", "show", &cgroup.path().display().to_string()]);
    assert!(matches!(out.trim(), "" | "[]"), "nothing attached: {out}");
}

const CHILD_BPFFS: &str = "WEIR_DP_CHILD_BPFFS";
const CHILD_NETNS: &str = "WEIR_DP_CHILD_NETNS";
const CHILD_READY: &str = "WEIR_DP_CHILD_READY";

/// Plays a killed agent: loads, attaches, registers the pod, says ready,
/// then waits to be killed. Run only by `killed_agent_leaves_the_datapath_working`.
#[test]
#[ignore = "helper process of killed_agent_leaves_the_datapath_working, which runs it"]
fn agent_process_to_be_killed() {
    let bpffs =
        std::env::var(CHILD_BPFFS).expect("run by killed_agent_leaves_the_datapath_working");
    let netns = std::env::var(CHILD_NETNS).unwrap();
    let ready = std::env::var(CHILD_READY).unwrap();
    let mut dp = Datapath::load(&LoadOptions::new(bpffs)).unwrap();
    let ifindex = in_netns(Path::new(&netns), || {
        let ifindex = nix::net::if_::if_nametoindex(HOST_VETH).unwrap();
        dp.attach_pod(ifindex).unwrap();
        ifindex
    })
    .unwrap();
    let info = EndpointInfo {
        ifindex,
        flags: ep_flags::LOCAL_POD,
        ..EndpointInfo::default()
    };
    dp.upsert_endpoint(POD_IP.parse().unwrap(), &info).unwrap();
    std::fs::write(&ready, b"ready").unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn killed_agent_leaves_the_datapath_working() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let ready = root.path().parent().unwrap().join("child-ready");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "agent_process_to_be_killed",
            "--nocapture",
        ])
        .env(CHILD_BPFFS, root.path())
        .env(CHILD_NETNS, net.node.path())
        .env(CHILD_READY, &ready)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent process died early"
        );
        assert!(
            Instant::now() < deadline,
            "the agent process never got ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed");

    // No process holds the datapath now: only the pins do.
    assert_eq!(
        tcx_programs(&net, TcAttachType::Ingress),
        vec![kernel_name(progs::FROM_POD)]
    );
    assert_eq!(
        tcx_programs(&net, TcAttachType::Egress),
        vec![kernel_name(progs::TO_POD)]
    );
    let before = counted(root.path(), Direction::FromPod);
    assert!(net.udp_echo(3), "traffic flows with the agent dead");
    let after = counted(root.path(), Direction::FromPod);
    assert!(
        after >= before + 3,
        "the programs still run: {before} -> {after}"
    );
    assert!(counted(root.path(), Direction::ToPod) >= 3);

    // The restarted agent adopts the links and the endpoint.
    let dp = root.load();
    assert_eq!(dp.report().links.updated, 2);
    let endpoints = dp.endpoints().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].0.to_string(), POD_IP);
    assert!(net.udp_echo(1));
}
