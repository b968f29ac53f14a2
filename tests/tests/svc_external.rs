//! Services reached from outside the cluster (the lab netns), from other
//! nodes and from pods, with real TCP and UDP traffic:
//!
//! - NodePort on every node IP;
//! - LoadBalancer `status.loadBalancer.ingress` IPs and `externalIPs` (the
//!   lab netns routes them via a node, as a router in front of a cluster
//!   would);
//! - externalTrafficPolicy Cluster: a backend on another node sees the
//!   node's IP (SNAT), and the replies find their way back (reverse NAT);
//! - externalTrafficPolicy Local: the backend sees the real client IP, only
//!   local endpoints are used, and a node without one drops the traffic,
//!   while pods still reach the NodePort through all endpoints.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::{Value, json};
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec};
use weir_lab::lab::{FABRIC, OUTSIDE_IP};
use weir_lab::{NetNs, Proto};

const NP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 10);
const NP_PORT: u16 = 30080;
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 10);
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 201, 10);
const REMOTE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 11);
const REMOTE_PORT: u16 = 30081;

const ETP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 20);
const ETP_PORT: u16 = 30090;
const ETP_LB_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 20);
const ETP_ONE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 21);
const ETP_ONE_PORT: u16 = 30091;

fn pod(name: &str, app: &str) -> PodSpec {
    PodSpec::new(name)
        .label("app", app)
        .label(&format!("only-{name}"), "yes")
        .port("p", 8080, Proto::Tcp)
        .port("p-udp", 8080, Proto::Udp)
}

/// TCP and UDP ports 80 → the named container ports, on `node_port`.
fn node_ports(node_port: u16) -> Value {
    let mut tcp = port("p", Proto::Tcp, 80, json!("p"));
    tcp["nodePort"] = json!(node_port);
    let mut udp = port("p-udp", Proto::Udp, 80, json!("p-udp"));
    udp["nodePort"] = json!(node_port);
    json!([tcp, udp])
}

/// Routes `ip` from the lab netns via node `via`.
fn route_outside(cluster: &Cluster, ip: Ipv4Addr, via: usize) {
    cluster
        .lab()
        .outside()
        .ip(&[
            "route",
            "replace",
            &format!("{ip}/32"),
            "via",
            &cluster.node(via).ip().to_string(),
            "dev",
            FABRIC,
        ])
        .unwrap();
}

/// 40 probes per protocol answered only by `backends`, all of them seen.
fn expect_spread(what: &str, ns: &NetNs, addr: Ipv4Addr, port: u16, backends: &[&str]) {
    for proto in Proto::ALL {
        let what = format!("{what} → {addr}:{port}/{proto}");
        let results = probes(ns, proto, addr, port, 40);
        let counts = assert_only(&what, &results, backends);
        assert_eq!(
            counts.len(),
            backends.len(),
            "{what}: every backend answers (40 uniform draws): {counts:?}"
        );
    }
}

#[test]
fn node_port_load_balancer_external_ips_and_cluster_policy_snat() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (a1, _s1) = cluster.add_backend(1, pod("a1", "np")).unwrap();
    let (b1, _s2) = cluster.add_backend(2, pod("b1", "np")).unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let mut lb = service(
        "np",
        NP_VIP,
        json!({"type": "LoadBalancer", "selector": {"app": "np"}, "ports": node_ports(NP_PORT),
               "externalIPs": [EXTERNAL_IP.to_string()]}),
    );
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": LB_IP.to_string()}]}});
    cluster
        .apply(
            "services.yaml",
            &[
                lb,
                // Its only endpoint is on node2.
                service(
                    "remote",
                    REMOTE_VIP,
                    json!({"type": "NodePort", "selector": {"only-b1": "yes"},
                           "ports": node_ports(REMOTE_PORT)}),
                ),
            ],
        )
        .unwrap();
    let both = [
        SocketAddrV4::new(a1.ip(), 8080),
        SocketAddrV4::new(b1.ip(), 8080),
    ];
    for proto in Proto::ALL {
        for (index, node) in cluster.nodes().iter().enumerate() {
            let took = cluster
                .wait_frontend(index + 1, node.ip(), NP_PORT, proto, "NodePort", |fe| {
                    fe.backends_for(false) == both.into()
                })
                .unwrap();
            println!(
                "{}: NodePort {NP_PORT}/{proto} programmed after {took:?}",
                node.name()
            );
            cluster
                .wait_frontend(index + 1, node.ip(), REMOTE_PORT, proto, "NodePort", |fe| {
                    fe.backends_for(false) == [SocketAddrV4::new(b1.ip(), 8080)].into()
                })
                .unwrap();
            for ip in [LB_IP, EXTERNAL_IP] {
                cluster
                    .wait_frontend(index + 1, ip, 80, proto, "LB/external IP", |fe| {
                        fe.backends_for(false) == both.into()
                    })
                    .unwrap();
            }
        }
    }
    let outside = cluster.lab().outside();
    let (n1, n2) = (cluster.node(1), cluster.node(2));

    // NodePort on every node IP: from outside, from the other node, from a pod.
    for node in [n1, n2] {
        expect_spread("outside", outside, node.ip(), NP_PORT, &["a1", "b1"]);
        expect_spread("pod c1", c1.netns(), node.ip(), NP_PORT, &["a1", "b1"]);
    }
    expect_spread("node2", n2.netns(), n1.ip(), NP_PORT, &["a1", "b1"]);
    expect_spread("node1", n1.netns(), n2.ip(), NP_PORT, &["a1", "b1"]);

    // LoadBalancer ingress IP and externalIP from outside, via either node.
    for via in [1, 2] {
        route_outside(&cluster, LB_IP, via);
        route_outside(&cluster, EXTERNAL_IP, 3 - via);
        expect_spread(
            &format!("outside via node{via}"),
            outside,
            LB_IP,
            80,
            &["a1", "b1"],
        );
        expect_spread(
            &format!("outside via node{}", 3 - via),
            outside,
            EXTERNAL_IP,
            80,
            &["a1", "b1"],
        );
    }

    // externalTrafficPolicy Cluster, backend on the other node: SNAT to the
    // receiving node's IP, and the reply reaches the outside client (it
    // would be dropped by the client's socket if its source were not the
    // NodePort address it asked for).
    for proto in Proto::ALL {
        let what = format!("outside → node1:{REMOTE_PORT}/{proto} (backend on node2)");
        let results = probes(outside, proto, n1.ip(), REMOTE_PORT, 20);
        assert_only(&what, &results, &["b1"]);
        assert_client_ip(&what, &results, n1.ip());
        // From node2's own NodePort the backend is local.
        let results = probes(outside, proto, n2.ip(), REMOTE_PORT, 5);
        assert_only(
            &format!("outside → node2:{REMOTE_PORT}/{proto}"),
            &results,
            &["b1"],
        );
    }
}

#[test]
fn external_traffic_policy_local_keeps_the_client_ip_and_stays_local() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (a1, _s1) = cluster.add_backend(1, pod("a1", "etp")).unwrap();
    let (b1, _s2) = cluster.add_backend(2, pod("b1", "etp")).unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let mut etp = service(
        "etp",
        ETP_VIP,
        json!({"type": "LoadBalancer", "selector": {"app": "etp"}, "ports": node_ports(ETP_PORT),
               "externalTrafficPolicy": "Local"}),
    );
    etp["status"] = json!({"loadBalancer": {"ingress": [{"ip": ETP_LB_IP.to_string()}]}});
    cluster
        .apply(
            "services.yaml",
            &[
                etp,
                // Its only endpoint is on node2.
                service(
                    "etp-one",
                    ETP_ONE_VIP,
                    json!({"type": "NodePort", "selector": {"only-b1": "yes"},
                           "ports": node_ports(ETP_ONE_PORT), "externalTrafficPolicy": "Local"}),
                ),
            ],
        )
        .unwrap();
    let (n1, n2) = (cluster.node(1), cluster.node(2));
    let a = SocketAddrV4::new(a1.ip(), 8080);
    let b = SocketAddrV4::new(b1.ip(), 8080);
    for proto in Proto::ALL {
        cluster
            .wait_frontend(1, n1.ip(), ETP_PORT, proto, "a1 for outside", |fe| {
                fe.backends_for(false) == [a].into()
            })
            .unwrap();
        cluster
            .wait_frontend(2, n2.ip(), ETP_PORT, proto, "b1 for outside", |fe| {
                fe.backends_for(false) == [b].into()
            })
            .unwrap();
        cluster
            .wait_frontend(1, n1.ip(), ETP_ONE_PORT, proto, "none for outside", |fe| {
                fe.exists()
                    && fe.backends_for(false).is_empty()
                    && fe.backends_for(true) == [b].into()
            })
            .unwrap();
        cluster
            .wait_frontend(1, ETP_LB_IP, 80, proto, "a1 for outside", |fe| {
                fe.backends_for(false) == [a].into()
            })
            .unwrap();
    }
    let outside = cluster.lab().outside();
    route_outside(&cluster, ETP_LB_IP, 1);

    for proto in Proto::ALL {
        // Only the receiving node's endpoint, with the real client address.
        for (node, backend) in [(n1, "a1"), (n2, "b1")] {
            let what = format!("outside → {}:{ETP_PORT}/{proto}", node.name());
            let results = probes(outside, proto, node.ip(), ETP_PORT, 30);
            let counts = assert_only(&what, &results, &[backend]);
            assert_eq!(counts[backend], 30, "{what}: {counts:?}");
            assert_client_ip(&what, &results, OUTSIDE_IP);
        }
        let what = format!("outside → LB {ETP_LB_IP}:80/{proto} via node1");
        let results = probes(outside, proto, ETP_LB_IP, 80, 20);
        assert_only(&what, &results, &["a1"]);
        assert_client_ip(&what, &results, OUTSIDE_IP);

        // node2 has etp-one's endpoint: real client IP again.
        let what = format!("outside → node2:{ETP_ONE_PORT}/{proto}");
        let results = probes(outside, proto, n2.ip(), ETP_ONE_PORT, 10);
        assert_only(&what, &results, &["b1"]);
        assert_client_ip(&what, &results, OUTSIDE_IP);
    }

    // node1 has no endpoint of etp-one: dropped (not rejected), counted.
    let drops = || {
        cluster
            .agent(1)
            .metric_sum("weir_drops_total", &[("reason", "no_local_backend")])
            .unwrap()
    };
    let before = drops();
    for proto in Proto::ALL {
        let results = probes_quick(outside, proto, n1.ip(), ETP_ONE_PORT, 3);
        assert_all(
            &format!("outside → node1:{ETP_ONE_PORT}/{proto} (no local endpoint)"),
            &results,
            "<timeout>",
        );
    }
    let after = wait_counter("node1's no_local_backend drops", before + 4.0, drops);
    println!("no_local_backend drops on node1: {before} → {after}");
    // Pods and the node itself reach a NodePort through every endpoint, as
    // kube-proxy sends internal traffic to external destinations.
    for proto in Proto::ALL {
        let results = probes(c1.netns(), proto, n1.ip(), ETP_ONE_PORT, 10);
        assert_only(
            &format!("pod c1 → node1:{ETP_ONE_PORT}/{proto}"),
            &results,
            &["b1"],
        );
    }
}
