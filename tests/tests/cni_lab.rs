//! The lab itself: topology, workloads, teardown and sweep (no CNI plugin needed
//! except where a pod is created).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use weir_lab::{Lab, NetNs, ProbeOutcome, Proto, require_root, sweep};

#[test]
fn nodes_reach_each_other_and_outside_reaches_nodes() {
    require_root();
    let lab = Lab::builder().nodes(3).build().unwrap();
    assert_eq!(lab.nodes().len(), 3);
    let n2 = lab.node(2);
    assert_eq!(n2.ip(), Ipv4Addr::new(192, 168, 100, 12));
    assert_eq!(n2.pod_cidr().to_string(), "10.244.2.0/24");
    assert_eq!(n2.gateway(), Ipv4Addr::new(10, 244, 2, 1));
    let _srv = n2.serve(&[8080]).unwrap();
    for proto in Proto::ALL {
        let r = lab.node(1).probe(proto, n2.ip(), 8080).unwrap();
        assert!(r.is_connected(), "node1 -> node2 {proto}: {r:?}");
        assert_eq!(r.reply, "node2");
        let r = lab.probe_outside(proto, n2.ip(), 8080).unwrap();
        assert!(r.is_connected(), "outside -> node2 {proto}: {r:?}");
        assert_eq!(r.reply, "node2");
        // A port nobody serves is refused, for both protocols.
        let r = lab.node(3).probe(proto, n2.ip(), 8081).unwrap();
        assert_eq!(r.result, ProbeOutcome::Refused, "{proto}: {r:?}");
    }
}

#[test]
fn nodes_have_forwarding_and_routes_to_other_pod_cidrs() {
    require_root();
    let mut lab = Lab::new().unwrap();
    let n1 = lab.node(1).clone();
    let fwd = n1
        .netns()
        .enter(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
        .unwrap();
    assert_eq!(fwd.trim(), "1");
    let routes = n1.netns().ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains("10.244.2.0/24 via 192.168.100.12"),
        "{routes}"
    );
    lab.set_native_routing(false).unwrap();
    let routes = n1.netns().ip(&["route", "show"]).unwrap();
    assert!(!routes.contains("10.244.2.0/24"), "{routes}");
    let outside = lab.outside().ip(&["route", "show"]).unwrap();
    assert!(
        outside.contains("10.244.1.0/24 via 192.168.100.11"),
        "{outside}"
    );
}

#[test]
fn netns_command_runs_inside_and_keeps_the_mount_namespace() {
    require_root();
    let ns = NetNs::create(&format!("wlab-{}-0-unit", std::process::id())).unwrap();
    let inside = ns.run("readlink", &["/proc/self/ns/net"]).unwrap();
    let outside = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        outside.display().to_string()
    );
    let mnt = ns.run("readlink", &["/proc/self/ns/mnt"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&mnt.stdout).trim(),
        std::fs::read_link("/proc/self/ns/mnt")
            .unwrap()
            .display()
            .to_string()
    );
    let links = ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let err = ns.run("false", &[] as &[&str]).unwrap_err();
    assert!(format!("{err:#}").contains("false"), "{err:#}");
    let path = ns.path().to_path_buf();
    drop(ns);
    assert!(!path.exists());
}

#[test]
fn drop_tears_down_everything_even_during_a_panic() {
    require_root();
    let captured = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new().unwrap();
        let srv = lab.node(1).serve(&[9000]).unwrap();
        *captured.lock().unwrap() = Some((
            lab.id().to_string(),
            lab.dir().to_path_buf(),
            srv.pid(),
            lab.nodes()
                .iter()
                .map(|n| n.netns().name().to_string())
                .collect::<Vec<_>>(),
        ));
        std::mem::forget(srv); // the lab must still kill it
        panic!("boom");
    }));
    assert!(result.is_err());
    let (id, dir, pid, names) = captured.into_inner().unwrap().unwrap();
    assert!(!dir.exists(), "state dir of lab {id} left behind");
    for name in names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
    assert!(
        !sweep::pid_alive(i32::try_from(pid).unwrap()),
        "weir-serve {pid} still running"
    );
}

#[test]
fn sweep_removes_leftovers_of_dead_pids_only() {
    require_root();
    // A pid that cannot be alive (above the kernel's pid_max limit).
    let dead = 4_194_304 + 17;
    let leftover = NetNs::create(&format!("wlab-{dead}-1-n1")).unwrap();
    let dir = Path::new(sweep::STATE_ROOT).join(format!("{dead}-1"));
    std::fs::create_dir_all(dir.join("node1")).unwrap();
    let mine = NetNs::create(&format!("wlab-{}-999-n1", std::process::id())).unwrap();
    let report = sweep::sweep_dead();
    assert!(
        report.netns.contains(&leftover.name().to_string()),
        "{report:?}"
    );
    assert!(!leftover.path().exists());
    assert!(!dir.exists());
    assert!(mine.path().exists(), "the sweep removed a live lab's netns");
    std::mem::forget(leftover); // already gone
}

/// The lab's runtime side (env, stdin, result parsing, DEL on drop) checked
/// against Debian's reference plugins, independent of weir-cni.
#[test]
fn pods_wired_by_the_reference_ptp_plugin_talk_across_nodes() {
    require_root();
    let ptp = Path::new("/usr/lib/cni/ptp");
    assert!(
        ptp.is_file(),
        "{} missing: install containernetworking-plugins (cargo xtask setup)",
        ptp.display()
    );
    let lab = Lab::builder().cni_plugin(ptp).build().unwrap();
    let config = |node: &weir_lab::Node| {
        let mut c = node.cni_config();
        c["type"] = "ptp".into();
        c["cniVersion"] = "1.0.0".into();
        c["ipam"]["type"] = "host-local".into();
        c["ipam"]["routes"] = serde_json::json!([{"dst": "0.0.0.0/0"}]);
        c
    };
    let a = lab
        .node(1)
        .add_pod_with_config("a", &config(lab.node(1)))
        .unwrap();
    let b = lab
        .node(2)
        .add_pod_with_config("b", &config(lab.node(2)))
        .unwrap();
    assert!(lab.node(2).pod_cidr().contains(b.ip()));
    assert_eq!(lab.node(2).allocated_ips(), vec![b.ip()]);
    let veth = b.host_veth().to_string();
    assert!(lab.node(2).links().unwrap().contains(&veth));
    let _srv = b.serve(&[80]).unwrap();
    for proto in Proto::ALL {
        let r = a.probe(proto, b.ip(), 80).unwrap();
        assert!(r.is_connected(), "a -> b {proto}: {r:?}");
        assert_eq!(r.reply, "b");
    }
    assert!(b.check().unwrap().success());
    let out = b.delete().unwrap();
    assert!(out.success(), "{out}");
    assert!(lab.node(2).allocated_ips().is_empty());
    assert!(!lab.node(2).links().unwrap().contains(&veth));
}

#[test]
fn probe_reports_timeout_and_error_outcomes() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    // A UDP socket that never answers: the probe must time out.
    let sink = node
        .netns()
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:5353").unwrap())
        .unwrap();
    let opts = weir_lab::ProbeOptions {
        timeout_ms: 200,
        count: 2,
    };
    let results = lab
        .probe_outside_with(Proto::Udp, node.ip(), 5353, opts)
        .unwrap();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.result, ProbeOutcome::Timeout, "{r:?}");
    }
    drop(sink);
    // An unreachable route: an error with the reason, for both protocols.
    lab.outside()
        .ip(&["route", "add", "unreachable", "10.99.0.0/16"])
        .unwrap();
    for proto in Proto::ALL {
        let r = lab
            .probe_outside(proto, Ipv4Addr::new(10, 99, 0, 1), 80)
            .unwrap();
        assert_eq!(r.result, ProbeOutcome::Error, "{proto}: {r:?}");
        assert!(r.error.is_some(), "{proto}: {r:?}");
    }
}
