//! Pod registration end to end: the real weir-cni (with `agentSocket`)
//! registering pods with the real weir-agent in a lab node.
#![allow(clippy::unwrap_used)]

mod daemon_support;

use std::net::Ipv4Addr;

use daemon_support::*;
use weir_lab::{CniCall, Proto};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Service "web" (ClusterIP 10.96.0.10:80 → 8080) selecting app=web, and
/// the Pod object of pod "a" without `status.podIP`: only the CNI
/// registration knows its address.
const WEB: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: 'True'}]}
";

#[test]
fn add_returns_after_the_pod_is_programmed() {
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(
        &dir,
        "cluster.yaml",
        &format!("{}{WEB}", node_manifests(&lab)),
    );
    let agent = Agent::start(node, &dir);
    agent.wait_ready();
    assert_eq!(agent.get("/healthz").unwrap().0, 200);

    let a = node
        .add_pod_with_config("a", &node.cni_config_with_agent())
        .unwrap();
    // Right after ADD returned: record, programs, endpoint, service backend.
    let record = read_json(&record_path(&a));
    assert_eq!(record["v"], 1);
    assert_eq!(record["container_id"], a.container_id());
    assert_eq!(record["host_ifname"], a.host_veth());
    assert_eq!(record["ips"][0], a.ip().to_string());
    assert_eq!(record["pod_namespace"], "default");
    assert_eq!(record["pod_name"], "a");
    let programs = tc_programs(node, a.host_veth());
    assert_eq!(
        programs,
        ["weir_from_pod", "weir_to_pod"],
        "ingress, egress"
    );
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(1.0));
    assert_eq!(
        agent.metric("weir_registrations_total{op=\"register\",result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(agent.metric("weir_services_programmed"), Some(1.0));
    assert_eq!(
        agent.metric("weir_backends_programmed"),
        Some(1.0),
        "the registered address made pod a the Service's backend"
    );

    // The Service works from another registered pod.
    let _server = a.serve(&[8080]).unwrap();
    let b = node
        .add_pod_with_config("b", &node.cni_config_with_agent())
        .unwrap();
    let reply = b.probe(Proto::Tcp, CLUSTER_IP, 80).unwrap();
    assert!(reply.is_connected() && reply.reply == "a", "{reply:?}");
    let reply = b.probe(Proto::Udp, CLUSTER_IP, 80).unwrap();
    assert!(
        !reply.is_connected(),
        "the Service has no UDP port: {reply:?}"
    );

    // The datapath counters reach /metrics (refreshed every few seconds).
    agent.wait_for("map fill levels", |a| {
        a.metric("weir_map_entries{map=\"weir_lb4_svc_v1\"}")
            .is_some_and(|n| n >= 2.0)
    });
    let (_, metrics) = agent.get("/metrics").unwrap();
    for family in [
        "weir_sync_duration_seconds_bucket",
        "weir_drops_total{direction=\"from_pod\",reason=\"no_backend\"}",
        "weir_map_capacity{map=\"weir_ct4_v1\"}",
        "weir_objects{kind=\"Service\"} 1",
        "weir_ct_entries ",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }

    // DEL deregisters.
    let record = record_path(&a);
    let out = a.delete().unwrap();
    assert!(out.success(), "{out}");
    assert!(!record.exists(), "DEL removes the record");
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(1.0));
    assert_eq!(agent.metric("weir_backends_programmed"), Some(0.0));
    assert_eq!(
        agent.metric("weir_registrations_total{op=\"deregister\",result=\"ok\"}"),
        Some(1.0)
    );
    drop(b);
}

#[test]
fn add_fails_with_code_11_and_leaves_nothing_when_the_agent_is_down() {
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(&dir, "cluster.yaml", &node_manifests(&lab));
    let config = node.cni_config_with_agent();
    let assert_nothing_left = |what: &str| {
        assert!(node.allocated_ips().is_empty(), "{what}: IP file left");
        let links = node.links().unwrap();
        assert!(
            !links.iter().any(|l| l.starts_with("weir")),
            "{what}: host veth left: {links:?}"
        );
    };

    // No agent has ever run: no socket.
    let (call, out) = add_call(node, "x", &config);
    assert!(!out.success());
    assert_eq!(out.error_code(), Some(11), "{out}");
    assert!(out.error_msg().unwrap().contains("unreachable"), "{out}");
    assert_nothing_left("no agent");
    // DEL stays idempotent and succeeds without the agent.
    let del = node
        .cni_call(&CniCall {
            command: "DEL".into(),
            ..call
        })
        .unwrap();
    assert!(del.success(), "{del}");

    // An agent that ran and stopped: its socket is gone too.
    let mut agent = Agent::start(node, &dir);
    agent.wait_ready();
    assert!(node.agent_socket().exists());
    let status = agent.terminate();
    assert!(status.success(), "{status}\n{}", agent.log_text());
    assert!(
        !node.agent_socket().exists(),
        "the socket closes with the agent"
    );
    let (_, out) = add_call(node, "y", &config);
    assert_eq!(out.error_code(), Some(11), "{out}");
    assert_nothing_left("stopped agent");

    // And the same ADD succeeds once the agent is back.
    agent.restart();
    agent.wait_ready();
    let pod = node.add_pod_with_config("z", &config).unwrap();
    assert!(record_path(&pod).exists());
}

#[test]
fn parallel_adds_and_dels_all_register_and_deregister() {
    const PODS: usize = 30;
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(&dir, "cluster.yaml", &node_manifests(&lab));
    let agent = Agent::start(node, &dir);
    agent.wait_ready();
    let config = node.cni_config_with_agent();
    let calls: Vec<CniCall> = (0..PODS)
        .map(|i| {
            let ns = node.create_netns(&format!("default.par{i}")).unwrap();
            CniCall::new("ADD", &format!("{}-par-{i}", lab.id()))
                .netns(ns.path_str())
                .args(Some(weir_lab::cni::default_cni_args(
                    "default",
                    &format!("par{i}"),
                )))
                .config(&config)
        })
        .collect();
    let run_all = |command: &str| {
        let start = std::sync::Barrier::new(PODS);
        std::thread::scope(|s| {
            let handles: Vec<_> = calls
                .iter()
                .map(|call| {
                    let start = &start;
                    let call = CniCall {
                        command: command.to_string(),
                        ..call.clone()
                    };
                    s.spawn(move || {
                        start.wait();
                        node.cni_call(&call).unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };

    for (i, out) in run_all("ADD").iter().enumerate() {
        assert!(out.success(), "ADD {i}: {out}");
    }
    let records = node.agent_dir().join("endpoints");
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), PODS);
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(PODS as f64));
    assert_eq!(
        agent.metric("weir_registrations_total{op=\"register\",result=\"ok\"}"),
        Some(PODS as f64)
    );

    for (i, out) in run_all("DEL").iter().enumerate() {
        assert!(out.success(), "DEL {i}: {out}");
    }
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(0.0));
    assert!(node.allocated_ips().is_empty());
}
