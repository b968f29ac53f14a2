//! Backend removal with flows in flight:
//!
//! - UDP: a client that keeps sending from one source port (its conntrack
//!   entry never idles out) is moved to another backend as soon as its
//!   backend leaves the Service: the agent flushes UDP conntrack entries of
//!   removed backends, so nobody is black-holed (kube-proxy's long-standing
//!   bug). Shown for a backend that keeps running (it would otherwise keep
//!   answering) and for one whose pod is gone (a black hole otherwise);
//! - TCP: an established connection to a backend that left the Service but
//!   still runs keeps working until it is closed; new connections avoid it.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, EchoServer, PodSpec, PodState, Reply, TcpConn, UdpFlow};
use weir_lab::{Pod, ProbeOutcome, Proto};

const UDP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 10);
const TCP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 20);
const ECHO_PORT: u16 = 9000;

/// Sends on `flow` every 20 ms until an answer comes from a backend other
/// than `old`; returns (the new backend, datagrams sent meanwhile, answers
/// still from `old`, time). Fails after 15 s: the UDP conntrack timeout is
/// 60 s and the flow refreshes it with every datagram, so a stale entry
/// would never let go.
fn until_moved(flow: &UdpFlow, old: &str) -> (String, usize, usize, Duration) {
    let start = Instant::now();
    let (mut sent, mut from_old) = (0, 0);
    while start.elapsed() < Duration::from_secs(15) {
        let (outcome, line) = flow.request();
        sent += 1;
        if outcome == ProbeOutcome::Connected {
            let backend = Reply::parse(&line).unwrap().backend;
            if backend != old {
                return (backend, sent, from_old, start.elapsed());
            }
            from_old += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the UDP flow stayed on {old} (or got no answer) for 15 s: black-holed");
}

/// The backend answering `flow` now; every one of `n` requests must agree.
fn steady(flow: &UdpFlow, n: usize) -> String {
    let mut seen = None;
    for _ in 0..n {
        let (outcome, line) = flow.request();
        assert_eq!(
            outcome,
            ProbeOutcome::Connected,
            "the UDP flow gets answers"
        );
        let b = Reply::parse(&line).unwrap().backend;
        if let Some(prev) = &seen {
            assert_eq!(prev, &b, "one UDP flow stays on one backend");
        }
        seen = Some(b);
    }
    seen.unwrap()
}

#[test]
fn udp_flows_leave_removed_backends_at_once() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let spec = |name: &str| {
        PodSpec::new(name)
            .label("app", "dns")
            .port("dns", 5353, Proto::Udp)
    };
    let mut pods: Vec<(Pod, weir_lab::cluster::Server)> = Vec::new();
    for (node, name) in [(1, "u1"), (2, "u2"), (2, "u3")] {
        pods.push(cluster.add_backend(node, spec(name)).unwrap());
    }
    let client = cluster.add_pod(1, PodSpec::new("client")).unwrap();
    cluster
        .apply(
            "udp.yaml",
            &[service(
                "dns",
                UDP_VIP,
                json!({"selector": {"app": "dns"}, "ports": [port("dns", Proto::Udp, 53, json!("dns"))]}),
            )],
        )
        .unwrap();
    let at = |p: &Pod| SocketAddrV4::new(p.ip(), 5353);
    let want: Vec<SocketAddrV4> = pods.iter().map(|(p, _)| at(p)).collect();
    cluster
        .wait_backends(UDP_VIP, 53, Proto::Udp, &want)
        .unwrap();
    let dst = SocketAddrV4::new(UDP_VIP, 53);

    // 1. The flow's backend leaves the Service but keeps running.
    let flow = UdpFlow::open(client.netns(), dst, Duration::from_millis(300)).unwrap();
    let first = steady(&flow, 10);
    let (pod, _) = pods.iter().find(|(p, _)| p.name() == first).unwrap();
    cluster.set_pod_state(pod, PodState::NotReady).unwrap();
    let rest: Vec<SocketAddrV4> = want.iter().copied().filter(|a| *a != at(pod)).collect();
    let programmed = Instant::now();
    cluster
        .wait_backends(UDP_VIP, 53, Proto::Udp, &rest)
        .unwrap();
    let (next, sent, from_old, took) = until_moved(&flow, &first);
    println!(
        "UDP flow {} moved from running-but-removed {first} to {next}: {sent} datagrams \
         ({from_old} still answered by {first}) and {took:?} after the map update \
         ({:?} after the manifest change)",
        flow.local_addr().unwrap(),
        programmed.elapsed()
    );
    assert_eq!(steady(&flow, 20), next, "and it stays there");

    // 2. The flow's (new) backend's pod is deleted: without the flush the
    //    flow would send into the void for as long as it keeps sending.
    let index = pods.iter().position(|(p, _)| p.name() == next).unwrap();
    let (gone, server) = pods.remove(index);
    let gone_addr = at(&gone);
    drop(server);
    cluster.remove_pod_object(&gone).unwrap();
    gone.delete().unwrap();
    let rest: Vec<SocketAddrV4> = rest.into_iter().filter(|a| *a != gone_addr).collect();
    cluster
        .wait_backends(UDP_VIP, 53, Proto::Udp, &rest)
        .unwrap();
    let (last, sent, _, took) = until_moved(&flow, &next);
    println!(
        "UDP flow moved from deleted {next} to {last}: {sent} datagrams, {took:?} after the map update"
    );
    assert_eq!(steady(&flow, 20), last);
}

#[test]
fn tcp_connection_to_a_removed_running_backend_lives_until_closed() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let spec = |name: &str| {
        PodSpec::new(name)
            .label("app", "echo")
            .port("echo", ECHO_PORT, Proto::Tcp)
    };
    let e1 = cluster.add_pod(1, spec("e1")).unwrap();
    let e2 = cluster.add_pod(2, spec("e2")).unwrap();
    let _echo1 = EchoServer::start(e1.netns(), "e1", ECHO_PORT).unwrap();
    let _echo2 = EchoServer::start(e2.netns(), "e2", ECHO_PORT).unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let c2 = cluster.add_pod(2, PodSpec::new("c2")).unwrap();
    cluster
        .apply(
            "tcp.yaml",
            &[service(
                "echo",
                TCP_VIP,
                json!({"selector": {"app": "echo"}, "ports": [port("echo", Proto::Tcp, 80, json!("echo"))]}),
            )],
        )
        .unwrap();
    let at = |p: &Pod| SocketAddrV4::new(p.ip(), ECHO_PORT);
    cluster
        .wait_backends(TCP_VIP, 80, Proto::Tcp, &[at(&e1), at(&e2)])
        .unwrap();

    // Connections from both nodes and from a node's host netns, until one
    // of each lands on e1 (the backend that will leave).
    let sources = [
        ("pod c1", c1.netns()),
        ("pod c2", c2.netns()),
        ("node2", cluster.node(2).netns()),
    ];
    let mut conns = Vec::new();
    for (from, ns) in sources {
        let conn = (0..64)
            .find_map(|i| {
                let mut conn = TcpConn::connect(ns, TCP_VIP, 80).unwrap();
                let answer = conn.exchange(&format!("hello {i}")).unwrap();
                answer.starts_with("e1 ").then_some(conn)
            })
            .unwrap_or_else(|| panic!("{from}: 64 connections never reached e1"));
        conns.push((from, conn));
    }

    // e1 leaves the Service (not ready), its server keeps running.
    cluster.set_pod_state(&e1, PodState::NotReady).unwrap();
    cluster
        .wait_backends(TCP_VIP, 80, Proto::Tcp, &[at(&e2)])
        .unwrap();

    for round in 0..5 {
        for (from, conn) in &mut conns {
            let answer = conn.exchange(&format!("still there {round}")).unwrap();
            assert_eq!(
                answer,
                format!("e1 still there {round}"),
                "{from}: the established connection to the removed backend"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // New connections avoid e1.
    for (from, ns) in sources {
        for i in 0..10 {
            let mut conn = TcpConn::connect(ns, TCP_VIP, 80).unwrap();
            let answer = conn.exchange(&format!("new {i}")).unwrap();
            assert!(
                answer.starts_with("e2 "),
                "{from}: a new connection went to {answer:?}"
            );
        }
    }
    // Closing is the end of it: the connection closes cleanly.
    drop(conns);
}
