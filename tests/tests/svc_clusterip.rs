//! ClusterIP Services with real traffic, through agents in standalone mode:
//! multi-port TCP+UDP with named target ports resolved per endpoint, the
//! spread over three backends on two nodes, reachable from pods on the same
//! and on the other node and from the nodes themselves.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, Reply, tally};
use weir_lab::{NetNs, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Distribution checks in this test; each runs at p = 0.001 / CHECKS
/// (Bonferroni), so a correct datapath fails the whole test with
/// probability at most 0.001.
const CHECKS: f64 = 12.0;
const REQUESTS: u32 = 300;

/// Backend `name` with its own port numbers under the shared names:
/// `http` (TCP) and `http-udp` (UDP) on `http`, `dns` (UDP) on `dns`.
fn backend(name: &str, http: u16, dns: u16) -> PodSpec {
    PodSpec::new(name)
        .label("app", "web")
        .port("http", http, Proto::Tcp)
        .port("http-udp", http, Proto::Udp)
        .port("dns", dns, Proto::Udp)
}

#[test]
fn multi_port_named_target_ports_spread_uniformly_from_everywhere() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (a1, _s1) = cluster
        .add_backend(
            1,
            backend("a1", 8080, 5353)
                // Only a1 declares "metrics": the other pods do not serve that port.
                .port("metrics", 9100, Proto::Tcp),
        )
        .unwrap();
    let (a2, _s2) = cluster.add_backend(1, backend("a2", 8081, 5354)).unwrap();
    let (b1, _s3) = cluster.add_backend(2, backend("b1", 8082, 5355)).unwrap();
    let c1 = cluster.add_pod(1, PodSpec::new("c1")).unwrap();
    let c2 = cluster.add_pod(2, PodSpec::new("c2")).unwrap();
    cluster
        .apply(
            "web.yaml",
            &[service(
                "web",
                VIP,
                json!({
                    "selector": {"app": "web"},
                    "ports": [
                        port("http", Proto::Tcp, 80, json!("http")),
                        port("http-udp", Proto::Udp, 80, json!("http-udp")),
                        port("dns", Proto::Udp, 53, json!("dns")),
                        port("metrics", Proto::Tcp, 9100, json!("metrics")),
                    ],
                }),
            )],
        )
        .unwrap();

    // Named ports resolve per endpoint: each backend under its own number.
    let at = |pod: &weir_lab::Pod, port| SocketAddrV4::new(pod.ip(), port);
    let took = cluster
        .wait_backends(
            VIP,
            80,
            Proto::Tcp,
            &[at(&a1, 8080), at(&a2, 8081), at(&b1, 8082)],
        )
        .unwrap();
    println!("web:80/tcp programmed on both nodes after {took:?}");
    cluster
        .wait_backends(
            VIP,
            80,
            Proto::Udp,
            &[at(&a1, 8080), at(&a2, 8081), at(&b1, 8082)],
        )
        .unwrap();
    cluster
        .wait_backends(
            VIP,
            53,
            Proto::Udp,
            &[at(&a1, 5353), at(&a2, 5354), at(&b1, 5355)],
        )
        .unwrap();
    cluster
        .wait_backends(VIP, 9100, Proto::Tcp, &[at(&a1, 9100)])
        .unwrap();
    assert!(
        !cluster.frontend(1, VIP, 53, Proto::Tcp).unwrap().exists(),
        "no TCP frontend on the UDP-only port 53"
    );

    let p = 0.001 / CHECKS;
    let backends = ["a1", "a2", "b1"];
    let sources: [(&str, &NetNs, Ipv4Addr); 4] = [
        ("pod c1 on node1 (with a1, a2)", c1.netns(), c1.ip()),
        ("pod c2 on node2 (with b1)", c2.netns(), c2.ip()),
        (
            "node1's host netns",
            cluster.node(1).netns(),
            cluster.node(1).ip(),
        ),
        (
            "node2's host netns",
            cluster.node(2).netns(),
            cluster.node(2).ip(),
        ),
    ];
    for (from, ns, client_ip) in sources {
        for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 80), (Proto::Udp, 53)] {
            let what = format!("{from} → {VIP}:{port}/{proto}");
            let results = probes(ns, proto, VIP, port, REQUESTS);
            assert_uniform3(&what, &results, backends, p);
            // In-cluster traffic is not SNATed: the backend sees the client.
            assert_client_ip(&what, &results, client_ip);
        }
        // The port only a1 declares goes to a1 alone.
        let results = probes(ns, Proto::Tcp, VIP, 9100, 20);
        assert_only(&format!("{from} → {VIP}:9100/tcp"), &results, &["a1"]);
        assert_eq!(tally(&results)["a1"], 20);
    }

    // The agents count what they programmed.
    for agent in cluster.agents() {
        assert_eq!(agent.metric("weir_services_programmed"), Some(1.0));
        assert!(agent.metric("weir_backends_programmed").unwrap() >= 3.0);
    }
    // The backend answered on the port its own name resolved to (a wrong
    // port would have been refused, as only those ports listen).
    let r = c1.probe(Proto::Tcp, VIP, 80).unwrap();
    assert!(Reply::of(&r).is_some(), "{r:?}");
}
