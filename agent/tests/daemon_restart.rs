//! Stopping and restarting the agent: SIGTERM is graceful and leaves the
//! datapath in place; a restart (also after kill -9) adopts the pinned
//! state and rebuilds the endpoint list from the records and live links.
#![allow(clippy::unwrap_used)]

mod daemon_support;

use std::net::Ipv4Addr;

use daemon_support::*;
use weir_lab::{ProbeOptions, Proto};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// Service "echo" selecting app=echo; pods "a" and "b" carry the label
/// and get their addresses from the CNI registration.
fn manifests(lab: &weir_lab::Lab) -> String {
    let mut out = node_manifests(lab);
    out.push_str(
        "---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
",
    );
    for pod in ["a", "b"] {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default, labels: {{app: echo}}}}
spec: {{nodeName: node1, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, conditions: [{{type: Ready, status: 'True'}}]}}
"
        ));
    }
    out
}

#[test]
fn sigterm_exits_0_and_leaves_pins_and_attachments() {
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(&dir, "cluster.yaml", &manifests(&lab));
    let mut agent = Agent::start(node, &dir);
    agent.wait_ready();
    let a = node
        .add_pod_with_config("a", &node.cni_config_with_agent())
        .unwrap();
    let _server = a.serve(&[8080]).unwrap();
    let client = node
        .add_pod_with_config("client", &node.cni_config_with_agent())
        .unwrap();
    let reply = client.probe(Proto::Tcp, CLUSTER_IP, 80).unwrap();
    assert!(reply.is_connected() && reply.reply == "a", "{reply:?}");

    let status = agent.terminate();
    assert!(status.success(), "exit {status}\n{}", agent.log_text());
    assert!(
        agent
            .log_text()
            .contains("pins and program attachments stay in place")
    );
    assert!(!node.agent_socket().exists(), "the socket is closed");
    for map in [
        "weir_lb4_svc_v1",
        "weir_lb4_backends_v1",
        "weir_ct4_v1",
        "weir_endpoints_v1",
    ] {
        assert!(node.bpffs_dir().join(map).exists(), "pin {map} is gone");
    }
    let links = std::fs::read_dir(node.bpffs_dir().join("links"))
        .unwrap()
        .count();
    assert!(
        links >= 4,
        "pinned links of eth0 and the pod veths: {links}"
    );
    assert_eq!(
        tc_programs(node, a.host_veth()),
        ["weir_from_pod", "weir_to_pod"]
    );
    assert!(record_path(&a).exists(), "records outlive the agent");

    // The Service keeps working while no agent runs.
    let reply = client.probe(Proto::Tcp, CLUSTER_IP, 80).unwrap();
    assert!(
        reply.is_connected() && reply.reply == "a",
        "without agent: {reply:?}"
    );

    // A restart adopts everything.
    agent.restart();
    agent.wait_ready();
    let log = agent.log_text();
    assert!(log.contains("adopting endpoint record"), "{log}");
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(2.0));
    assert_eq!(
        agent.metric("weir_endpoint_records_dropped_total"),
        Some(0.0)
    );
    assert_eq!(agent.metric("weir_backends_programmed"), Some(1.0));
    let reply = client.probe(Proto::Tcp, CLUSTER_IP, 80).unwrap();
    assert!(
        reply.is_connected() && reply.reply == "a",
        "after restart: {reply:?}"
    );
}

#[test]
fn restart_after_kill_drops_records_of_vanished_pods() {
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(&dir, "cluster.yaml", &manifests(&lab));
    let mut agent = Agent::start(node, &dir);
    agent.wait_ready();
    let a = node
        .add_pod_with_config("a", &node.cni_config_with_agent())
        .unwrap();
    let b = node
        .add_pod_with_config("b", &node.cni_config_with_agent())
        .unwrap();
    let _server_a = a.serve(&[8080]).unwrap();
    let _server_b = b.serve(&[8080]).unwrap();
    assert_eq!(agent.metric("weir_backends_programmed"), Some(2.0));

    agent.kill();
    assert!(
        node.agent_socket().exists(),
        "kill -9 leaves the socket file"
    );
    // Pod b dies with the agent down and no DEL reaches anyone: its veth
    // goes away with its netns.
    let b_record = record_path(&b);
    let b_container = b.container_id().to_string();
    b.netns().delete();
    agent.wait_for("b's veth to vanish", |_| {
        !node.links().unwrap().contains(&b.host_veth().to_string())
    });

    agent.restart();
    agent.wait_ready();
    assert!(record_path(&a).exists());
    assert!(!b_record.exists(), "b's record is dropped");
    let log = agent.log_text();
    let dropped = log
        .lines()
        .find(|l| l.contains("dropping endpoint record"))
        .unwrap_or_else(|| panic!("no drop decision logged:\n{log}"));
    assert!(
        dropped.contains(&b_container) && dropped.contains("is gone"),
        "{dropped}"
    );
    assert_eq!(
        agent.metric("weir_endpoint_records_dropped_total"),
        Some(1.0)
    );
    assert_eq!(agent.metric("weir_endpoints_registered"), Some(1.0));

    // Only a serves the Service now: b's registered address is gone with
    // its record (its Pod object has no status.podIP).
    let client = node
        .add_pod_with_config("client", &node.cni_config_with_agent())
        .unwrap();
    let replies = client
        .probe_with(
            Proto::Tcp,
            CLUSTER_IP,
            80,
            ProbeOptions {
                count: 10,
                ..ProbeOptions::default()
            },
        )
        .unwrap();
    assert!(
        replies.iter().all(|r| r.is_connected() && r.reply == "a"),
        "{replies:?}"
    );
    drop(b);
}
