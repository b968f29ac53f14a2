//! Which endpoints a Service uses, with real traffic from a pod on each
//! node and from each node's host netns:
//!
//! - only ready endpoints;
//! - serving+terminating endpoints only when no endpoint is ready;
//! - no usable endpoint: new connections are rejected (TCP RST, ICMP port
//!   unreachable: the probe says "refused"), never black-holed, and the
//!   agent's /metrics counts the rejects;
//! - explicit EndpointSlices for a Service without selector.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, PodState};
use weir_lab::{NetNs, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);
const MANUAL_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 22);
const EMPTY_NODE_PORT: u16 = 30100;
const EMPTY_LOCAL_NODE_PORT: u16 = 30101;

fn web_pod(name: &str, state: PodState) -> PodSpec {
    PodSpec::new(name)
        .label("app", "web")
        .port("http", 8080, Proto::Tcp)
        .port("http-udp", 8080, Proto::Udp)
        .state(state)
}

/// Every protocol from every source answers only from `backends`, each of
/// which shows up.
fn expect_backends(sources: &[(&str, &NetNs)], backends: &[&str]) {
    for (from, ns) in sources {
        for proto in Proto::ALL {
            let what = format!("{from} → {VIP}:80/{proto}");
            let results = probes(ns, proto, VIP, 80, 40);
            let counts = assert_only(&what, &results, backends);
            for b in backends {
                // With 40 uniform draws over at most 2 backends, a missing
                // one has probability 2^-39.
                assert!(
                    counts.contains_key(*b),
                    "{what}: {b} never answered: {counts:?}"
                );
            }
        }
    }
}

fn expect_refused(sources: &[(&str, &NetNs)], vip: Ipv4Addr) {
    for (from, ns) in sources {
        for proto in Proto::ALL {
            let results = probes(ns, proto, vip, 80, 5);
            assert_all(&format!("{from} → {vip}:80/{proto}"), &results, "<refused>");
        }
    }
}

fn no_backend_rejects(cluster: &Cluster) -> f64 {
    cluster
        .agents()
        .iter()
        .map(|a| {
            a.metric_sum("weir_drops_total", &[("reason", "no_backend")])
                .unwrap()
        })
        .sum()
}

#[test]
fn ready_then_terminating_serving_then_reject() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (ready, _s1) = cluster
        .add_backend(1, web_pod("ready", PodState::Ready))
        .unwrap();
    let (_not_ready, _s2) = cluster
        .add_backend(2, web_pod("not-ready", PodState::NotReady))
        .unwrap();
    let (serving, _s3) = cluster
        .add_backend(2, web_pod("term-serving", PodState::TerminatingServing))
        .unwrap();
    let (_gone, _s4) = cluster
        .add_backend(1, web_pod("term-gone", PodState::TerminatingNotServing))
        .unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let c2 = cluster.add_pod(2, PodSpec::new("c2")).unwrap();
    let ports = json!([
        port("http", Proto::Tcp, 80, json!("http")),
        port("http-udp", Proto::Udp, 80, json!("http-udp")),
    ]);
    cluster
        .apply(
            "services.yaml",
            &[
                service(
                    "web",
                    VIP,
                    json!({"selector": {"app": "web"}, "ports": ports}),
                ),
                // Selects nothing at all; also a NodePort, to be rejected
                // from outside too.
                service(
                    "empty",
                    EMPTY_VIP,
                    json!({"type": "NodePort", "selector": {"app": "nobody"}, "ports": [
                        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                         "nodePort": EMPTY_NODE_PORT},
                        {"name": "http-udp", "protocol": "UDP", "port": 80,
                         "targetPort": "http-udp", "nodePort": EMPTY_NODE_PORT},
                    ]}),
                ),
                // externalTrafficPolicy Local without any endpoint: still a
                // reject (drops are for "endpoints, but none here").
                service(
                    "empty-local",
                    Ipv4Addr::new(10, 96, 0, 23),
                    json!({"type": "NodePort", "selector": {"app": "nobody"},
                           "externalTrafficPolicy": "Local", "ports": [
                        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                         "nodePort": EMPTY_LOCAL_NODE_PORT},
                        {"name": "http-udp", "protocol": "UDP", "port": 80,
                         "targetPort": "http-udp", "nodePort": EMPTY_LOCAL_NODE_PORT},
                    ]}),
                ),
            ],
        )
        .unwrap();
    let sources: [(&str, &NetNs); 4] = [
        ("pod c1 on node1", c1.netns()),
        ("pod c2 on node2", c2.netns()),
        ("node1", cluster.node(1).netns()),
        ("node2", cluster.node(2).netns()),
    ];

    // 1. Only the ready endpoint, though a not-ready and a terminating
    //    serving one exist.
    let only = |pod: &weir_lab::Pod| [SocketAddrV4::new(pod.ip(), 8080)];
    for proto in Proto::ALL {
        cluster
            .wait_backends(VIP, 80, proto, &only(&ready))
            .unwrap();
    }
    expect_backends(&sources, &["ready"]);

    // A Service with no endpoints at all rejects, TCP and UDP, from
    // everywhere, and the rejects are counted.
    let before = no_backend_rejects(&cluster);
    expect_refused(&sources, EMPTY_VIP);
    for node in cluster.nodes() {
        for node_port in [EMPTY_NODE_PORT] {
            for proto in Proto::ALL {
                let results = probes(cluster.lab().outside(), proto, node.ip(), node_port, 5);
                let what = format!("outside → {}:{node_port}/{proto}", node.name());
                assert_all(&what, &results, "<refused>");
            }
        }
    }
    let after = wait_counter(
        "weir_drops_total{reason=\"no_backend\"} after 60 rejects",
        before + 8.0,
        || no_backend_rejects(&cluster),
    );
    println!("no_backend rejects counted by the agents: {before} → {after}");

    // 2. The ready pod turns unready: the serving+terminating one takes
    //    over (the not-ready one and the terminating non-serving one never).
    cluster.set_pod_state(&ready, PodState::NotReady).unwrap();
    for proto in Proto::ALL {
        let took = cluster
            .wait_backends(VIP, 80, proto, &only(&serving))
            .unwrap();
        println!("fallback to term-serving ({proto}) programmed after {took:?}");
    }
    for node in 1..=2 {
        let fe = cluster.frontend(node, VIP, 80, Proto::Tcp).unwrap();
        let entry = fe.entry_for(true).unwrap();
        assert!(
            entry.backends.iter().all(|b| b.terminating),
            "node{node}: the fallback backend is marked terminating: {fe:?}"
        );
    }
    expect_backends(&sources, &["term-serving"]);

    // 3. Nothing serving: rejected, never a timeout.
    cluster
        .set_pod_state(&serving, PodState::TerminatingNotServing)
        .unwrap();
    for proto in Proto::ALL {
        cluster.wait_backends(VIP, 80, proto, &[]).unwrap();
    }
    expect_refused(&sources, VIP);

    // 4. Ready again: back to the ready endpoint only.
    cluster.set_pod_state(&ready, PodState::Ready).unwrap();
    cluster
        .set_pod_state(&serving, PodState::TerminatingServing)
        .unwrap();
    for proto in Proto::ALL {
        cluster
            .wait_backends(VIP, 80, proto, &only(&ready))
            .unwrap();
    }
    expect_backends(&sources, &["ready"]);

    // externalTrafficPolicy Local and no endpoint anywhere: kube-proxy
    // rejects (it drops only when endpoints exist on other nodes).
    for node in cluster.nodes() {
        for proto in Proto::ALL {
            let results = probes(
                cluster.lab().outside(),
                proto,
                node.ip(),
                EMPTY_LOCAL_NODE_PORT,
                5,
            );
            let what = format!(
                "outside → {}:{EMPTY_LOCAL_NODE_PORT}/{proto} (xTP Local)",
                node.name()
            );
            assert_all(&what, &results, "<refused>");
        }
    }
}

#[test]
fn explicit_endpoint_slices_serve_a_service_without_selector() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    // Pods not selected by anything: only the slice names them.
    let (x1, _s1) = cluster
        .add_backend(
            1,
            PodSpec::new("x1")
                .port("p", 7000, Proto::Tcp)
                .port("p-udp", 7000, Proto::Udp),
        )
        .unwrap();
    let (x2, _s2) = cluster
        .add_backend(
            2,
            PodSpec::new("x2")
                .port("p", 7000, Proto::Tcp)
                .port("p-udp", 7000, Proto::Udp),
        )
        .unwrap();
    let (x3, _s3) = cluster
        .add_backend(
            2,
            PodSpec::new("x3")
                .port("p", 7000, Proto::Tcp)
                .port("p-udp", 7000, Proto::Udp),
        )
        .unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let endpoint = |ip: Ipv4Addr, node: &str, ready: bool, terminating: bool| {
        json!({"addresses": [ip.to_string()], "nodeName": node,
               "conditions": {"ready": ready, "serving": ready, "terminating": terminating}})
    };
    cluster
        .apply(
            "manual.yaml",
            &[
                service(
                    "manual",
                    MANUAL_VIP,
                    json!({"ports": [
                        port("p", Proto::Tcp, 80, json!(7000)),
                        port("p-udp", Proto::Udp, 80, json!(7000)),
                    ]}),
                ),
                json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": "manual-1", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "manual"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "p", "protocol": "TCP", "port": 7000},
                              {"name": "p-udp", "protocol": "UDP", "port": 7000}],
                    "endpoints": [
                        endpoint(x1.ip(), "node1", true, false),
                        endpoint(x2.ip(), "node2", true, false),
                        // Not ready: never used while others are ready.
                        endpoint(x3.ip(), "node2", false, false),
                    ],
                }),
            ],
        )
        .unwrap();
    let want = [
        SocketAddrV4::new(x1.ip(), 7000),
        SocketAddrV4::new(x2.ip(), 7000),
    ];
    for proto in Proto::ALL {
        cluster.wait_backends(MANUAL_VIP, 80, proto, &want).unwrap();
        let results = probes(c1.netns(), proto, MANUAL_VIP, 80, 40);
        let counts = assert_only(&format!("c1 → manual/{proto}"), &results, &["x1", "x2"]);
        assert_eq!(counts.len(), 2, "both slice endpoints answer: {counts:?}");
        let results = probes(cluster.node(2).netns(), proto, MANUAL_VIP, 80, 20);
        assert_only(&format!("node2 → manual/{proto}"), &results, &["x1", "x2"]);
    }
    drop(x3);
}
