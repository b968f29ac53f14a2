//! State that survives the agent: `kill -9` of every agent during traffic.
//!
//! - established TCP connections (from pods on both nodes and from a
//!   node's host netns) keep working while no agent runs;
//! - new connections to existing Services keep being balanced;
//! - the restarted agents adopt the pinned state: no connection is reset,
//!   balancing goes on, and later changes apply again.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, EchoServer, PodSpec, PodState, TcpConn, UdpFlow};
use weir_lab::{NetNs, Pod, ProbeOutcome, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 5, 10);
const ECHO_PORT: u16 = 9000;
const NODE_PORT: u16 = 30200;
/// Distribution checks below, each at p = 0.001 / CHECKS.
const CHECKS: f64 = 8.0;

fn exchange_all(conns: &mut [(String, TcpConn, String)], tag: &str) {
    for (from, conn, backend) in conns.iter_mut() {
        let answer = conn
            .exchange(tag)
            .unwrap_or_else(|e| panic!("{from} ({backend}), {tag}: {e:#}"));
        assert_eq!(answer, format!("{backend} {tag}"), "{from}");
    }
}

#[test]
fn kill_9_keeps_connections_and_balancing_and_restart_adopts() {
    require_root();
    let mut cluster = Cluster::builder().nodes(2).build().unwrap();
    let spec = |name: &str| {
        PodSpec::new(name)
            .label("app", "keep")
            .port("http", 8080, Proto::Tcp)
            .port("http-udp", 8080, Proto::Udp)
            .port("echo", ECHO_PORT, Proto::Tcp)
    };
    let mut backends = Vec::new();
    for (node, name) in [(1, "k1"), (1, "k2"), (2, "k3")] {
        let pod = cluster.add_pod(node, spec(name)).unwrap();
        // weir-serve on 8080 for single requests, an echo server on 9000
        // for long connections.
        let server = weir_lab::cluster::Server::start(pod.netns(), name, &[8080], &[8080]).unwrap();
        let echo = EchoServer::start(pod.netns(), name, ECHO_PORT).unwrap();
        backends.push((pod, server, echo));
    }
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let c2 = cluster.add_pod(2, PodSpec::new("c2")).unwrap();
    cluster
        .apply(
            "keep.yaml",
            &[service(
                "keep",
                VIP,
                json!({"type": "NodePort", "selector": {"app": "keep"}, "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                     "nodePort": NODE_PORT},
                    port("http-udp", Proto::Udp, 80, json!("http-udp")),
                    port("echo", Proto::Tcp, ECHO_PORT, json!("echo")),
                ]}),
            )],
        )
        .unwrap();
    let pods: Vec<&Pod> = backends.iter().map(|(p, _, _)| p).collect();
    let at = |port: u16| -> Vec<SocketAddrV4> {
        pods.iter()
            .map(|p| SocketAddrV4::new(p.ip(), port))
            .collect()
    };
    cluster
        .wait_backends(VIP, 80, Proto::Tcp, &at(8080))
        .unwrap();
    cluster
        .wait_backends(VIP, 80, Proto::Udp, &at(8080))
        .unwrap();
    cluster
        .wait_backends(VIP, ECHO_PORT, Proto::Tcp, &at(ECHO_PORT))
        .unwrap();
    for index in 1..=2 {
        let ip = cluster.node(index).ip();
        let want: std::collections::BTreeSet<SocketAddrV4> = at(8080).into_iter().collect();
        cluster
            .wait_frontend(index, ip, NODE_PORT, Proto::Tcp, "NodePort", |fe| {
                fe.backends_for(false) == want
            })
            .unwrap();
    }

    // Two long connections from each source; a long UDP flow from c1.
    let sources: [(&str, &NetNs); 3] = [
        ("pod c1", c1.netns()),
        ("pod c2", c2.netns()),
        ("node2", cluster.node(2).netns()),
    ];
    let mut conns = Vec::new();
    for (from, ns) in sources {
        for i in 0..2 {
            let mut conn = TcpConn::connect(ns, VIP, ECHO_PORT).unwrap();
            let answer = conn.exchange("hello").unwrap();
            let backend = answer.split_whitespace().next().unwrap().to_string();
            conns.push((format!("{from} #{i}"), conn, backend));
        }
    }
    let udp = UdpFlow::open(
        c1.netns(),
        SocketAddrV4::new(VIP, 80),
        Duration::from_secs(1),
    )
    .unwrap();
    let (outcome, first) = udp.request();
    assert_eq!(outcome, ProbeOutcome::Connected);
    let udp_backend = first.split_whitespace().next().unwrap().to_string();
    println!(
        "long connections: {:?}; UDP flow on {udp_backend}",
        conns
            .iter()
            .map(|(f, _, b)| (f.as_str(), b.as_str()))
            .collect::<Vec<_>>()
    );

    // kill -9 every agent.
    for index in 1..=2 {
        cluster.agent_mut(index).kill().unwrap();
    }
    let p = 0.001 / CHECKS;
    for round in 0..3 {
        exchange_all(&mut conns, &format!("agents dead {round}"));
        let (outcome, line) = udp.request();
        assert_eq!(outcome, ProbeOutcome::Connected, "UDP flow without agents");
        assert!(
            line.starts_with(&udp_backend),
            "UDP flow stays on {udp_backend}: {line}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for (from, ns) in [("pod c1", c1.netns()), ("pod c2", c2.netns())] {
        let r = probes(ns, Proto::Tcp, VIP, 80, 300);
        assert_uniform3(
            &format!("{from} → {VIP}:80/tcp, no agent"),
            &r,
            ["k1", "k2", "k3"],
            p,
        );
    }
    let r = probes(cluster.node(1).netns(), Proto::Udp, VIP, 80, 300);
    assert_uniform3(
        &format!("node1 → {VIP}:80/udp, no agent"),
        &r,
        ["k1", "k2", "k3"],
        p,
    );

    // Restart: they adopt the pins; nothing is reset.
    for index in 1..=2 {
        let agent = cluster.agent_mut(index);
        agent.restart().unwrap();
        let took = agent.wait_ready().unwrap();
        println!("node{index}: agent ready again after {took:?}");
    }
    for round in 0..3 {
        exchange_all(&mut conns, &format!("agents back {round}"));
        let (outcome, line) = udp.request();
        assert_eq!(outcome, ProbeOutcome::Connected);
        assert!(
            line.starts_with(&udp_backend),
            "UDP flow stays on {udp_backend}: {line}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for (from, ns) in [("pod c1", c1.netns()), ("node2", cluster.node(2).netns())] {
        let r = probes(ns, Proto::Tcp, VIP, 80, 300);
        assert_uniform3(
            &format!("{from} → {VIP}:80/tcp, restarted"),
            &r,
            ["k1", "k2", "k3"],
            p,
        );
    }
    let r = probes(c2.netns(), Proto::Udp, VIP, 80, 300);
    assert_uniform3(
        &format!("pod c2 → {VIP}:80/udp, restarted"),
        &r,
        ["k1", "k2", "k3"],
        p,
    );

    // The restarted agents follow changes again.
    cluster.set_pod_state(pods[0], PodState::NotReady).unwrap();
    let rest: Vec<SocketAddrV4> = at(8080).into_iter().skip(1).collect();
    cluster.wait_backends(VIP, 80, Proto::Tcp, &rest).unwrap();
    let r = probes(c1.netns(), Proto::Tcp, VIP, 80, 40);
    let counts = assert_only("after the restart, k1 not ready", &r, &["k2", "k3"]);
    assert_eq!(counts.len(), 2, "{counts:?}");
    exchange_all(&mut conns, "after a change");
}
