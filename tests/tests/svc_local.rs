//! Node-local semantics of ClusterIP Services, with real traffic:
//!
//! - internalTrafficPolicy Local: pods and the node itself reach only the
//!   endpoints on their own node; with endpoints elsewhere but none here,
//!   the traffic is dropped (kube-proxy drops; it rejects only when the
//!   Service has no endpoints at all, and so do we);
//! - hairpin: a pod reaching itself through its own Service.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, Reply};
use weir_lab::{NetNs, Proto};

const ITP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const ITP_REMOTE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 31);
const SELF_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 32);
const PAIR_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 33);
const ITP_NONE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 34);

fn pod(name: &str, app: &str) -> PodSpec {
    PodSpec::new(name)
        .label("app", app)
        .label(&format!("{app}-{name}"), "yes")
        .port("p", 8080, Proto::Tcp)
        .port("p-udp", 8080, Proto::Udp)
}

fn ports() -> serde_json::Value {
    json!([
        port("p", Proto::Tcp, 80, json!("p")),
        port("p-udp", Proto::Udp, 80, json!("p-udp")),
    ])
}

#[test]
fn internal_traffic_policy_local_and_hairpin() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (a, _sa) = cluster.add_backend(1, pod("a", "itp")).unwrap();
    let (b, _sb) = cluster.add_backend(2, pod("b", "itp")).unwrap();
    let (h, _sh) = cluster.add_backend(1, pod("h", "hp")).unwrap();
    let (k, _sk) = cluster.add_backend(2, pod("k", "hp")).unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let c2 = cluster.add_pod(2, PodSpec::new("c2")).unwrap();
    cluster
        .apply(
            "services.yaml",
            &[
                service(
                    "itp",
                    ITP_VIP,
                    json!({"selector": {"app": "itp"}, "ports": ports(),
                           "internalTrafficPolicy": "Local"}),
                ),
                // Endpoints only on node2.
                service(
                    "itp-remote",
                    ITP_REMOTE_VIP,
                    json!({"selector": {"itp-b": "yes"}, "ports": ports(),
                           "internalTrafficPolicy": "Local"}),
                ),
                // No endpoints at all: rejected, as kube-proxy rejects
                // (it drops only when endpoints exist on other nodes).
                service(
                    "itp-none",
                    ITP_NONE_VIP,
                    json!({"selector": {"app": "nobody"}, "ports": ports(),
                           "internalTrafficPolicy": "Local"}),
                ),
                // A Service whose only endpoint is h.
                service(
                    "self",
                    SELF_VIP,
                    json!({"selector": {"hp-h": "yes"}, "ports": ports()}),
                ),
                // h and k: h reaches itself and its peer.
                service(
                    "pair",
                    PAIR_VIP,
                    json!({"selector": {"app": "hp"}, "ports": ports()}),
                ),
            ],
        )
        .unwrap();
    let at = |p: &weir_lab::Pod| SocketAddrV4::new(p.ip(), 8080);
    for proto in Proto::ALL {
        // Per node: only the local endpoint.
        cluster
            .wait_frontend(1, ITP_VIP, 80, proto, "a only", |fe| {
                fe.backends_for(true) == [at(&a)].into()
            })
            .unwrap();
        cluster
            .wait_frontend(2, ITP_VIP, 80, proto, "b only", |fe| {
                fe.backends_for(true) == [at(&b)].into()
            })
            .unwrap();
        cluster
            .wait_frontend(2, ITP_REMOTE_VIP, 80, proto, "b only", |fe| {
                fe.backends_for(true) == [at(&b)].into()
            })
            .unwrap();
        cluster
            .wait_frontend(1, ITP_REMOTE_VIP, 80, proto, "no local endpoint", |fe| {
                fe.exists() && fe.backends_for(true).is_empty()
            })
            .unwrap();
        for node in 1..=2 {
            cluster
                .wait_frontend(node, ITP_NONE_VIP, 80, proto, "a frontend", |fe| {
                    fe.exists()
                })
                .unwrap();
        }
        cluster
            .wait_backends(SELF_VIP, 80, proto, &[at(&h)])
            .unwrap();
        cluster
            .wait_backends(PAIR_VIP, 80, proto, &[at(&h), at(&k)])
            .unwrap();
    }

    // internalTrafficPolicy Local: each node's clients see their node's
    // endpoint only.
    let node1: [(&str, &NetNs); 2] = [("pod c1", c1.netns()), ("node1", cluster.node(1).netns())];
    let node2: [(&str, &NetNs); 2] = [("pod c2", c2.netns()), ("node2", cluster.node(2).netns())];
    for proto in Proto::ALL {
        for (from, ns) in node1 {
            let r = probes(ns, proto, ITP_VIP, 80, 30);
            let counts = assert_only(&format!("{from} → itp/{proto}"), &r, &["a"]);
            assert_eq!(counts["a"], 30);
        }
        for (from, ns) in node2 {
            let r = probes(ns, proto, ITP_VIP, 80, 30);
            let counts = assert_only(&format!("{from} → itp/{proto}"), &r, &["b"]);
            assert_eq!(counts["b"], 30);
            let r = probes(ns, proto, ITP_REMOTE_VIP, 80, 10);
            assert_only(&format!("{from} → itp-remote/{proto}"), &r, &["b"]);
        }
    }
    // No local endpoint but endpoints elsewhere: dropped, not rejected.
    let drops = |c: &Cluster| {
        c.agent(1)
            .metric_sum("weir_drops_total", &[("reason", "no_local_backend")])
            .unwrap()
    };
    let before = drops(&cluster);
    for (from, ns) in node1 {
        for proto in Proto::ALL {
            let r = probes_quick(ns, proto, ITP_REMOTE_VIP, 80, 3);
            assert_all(&format!("{from} → itp-remote/{proto}"), &r, "<timeout>");
        }
    }
    let after = wait_counter("node1's no_local_backend drops", before + 4.0, || {
        drops(&cluster)
    });
    println!("no_local_backend drops on node1: {before} → {after}");

    // Hairpin: h reaches itself through its Service, TCP and UDP, and does
    // not see its own address as the source (it could not answer that).
    for proto in Proto::ALL {
        let r = probes(h.netns(), proto, SELF_VIP, 80, 10);
        let counts = assert_only(&format!("h → self/{proto}"), &r, &["h"]);
        assert_eq!(counts["h"], 10, "{r:?}");
        for result in &r {
            let client = Reply::of(result).unwrap().client.unwrap();
            assert_ne!(*client.ip(), h.ip(), "hairpin source must not be h itself");
        }
        // Through a two-endpoint Service: both itself and the peer.
        let r = probes(h.netns(), proto, PAIR_VIP, 80, 40);
        let counts = assert_only(&format!("h → pair/{proto}"), &r, &["h", "k"]);
        assert_eq!(counts.len(), 2, "h → pair/{proto}: {counts:?}");
        let r = probes(k.netns(), proto, PAIR_VIP, 80, 40);
        let counts = assert_only(&format!("k → pair/{proto}"), &r, &["h", "k"]);
        assert_eq!(counts.len(), 2, "k → pair/{proto}: {counts:?}");
    }

    // internalTrafficPolicy Local and no endpoint anywhere: rejected, as
    // kube-proxy rejects (it drops only when endpoints exist elsewhere).
    let fe = cluster.frontend(1, ITP_NONE_VIP, 80, Proto::Tcp).unwrap();
    println!("itp-none on node1: {fe:?}");
    for (from, ns) in node1.iter().chain(&node2) {
        for proto in Proto::ALL {
            let r = probes(ns, proto, ITP_NONE_VIP, 80, 3);
            assert_all(
                &format!("{from} → itp-none/{proto} (no endpoints)"),
                &r,
                "<refused>",
            );
        }
    }
}
