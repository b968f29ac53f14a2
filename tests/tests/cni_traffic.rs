//! Pods wired by weir-cni talk: pod to pod on one node and across nodes, node to
//! pod, outside (lab netns) to pod; TCP and UDP.
#![allow(clippy::unwrap_used)]

use weir_lab::{Lab, ProbeOutcome, Proto, require_root};

#[test]
fn pods_talk_on_one_node_and_across_nodes() {
    require_root();
    let lab = Lab::new().unwrap();
    let a = lab.node(1).add_pod("a").unwrap();
    let b = lab.node(1).add_pod("b").unwrap();
    let c = lab.node(2).add_pod("c").unwrap();
    let servers: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| p.serve(&[80, 8080]).unwrap())
        .collect();
    for proto in Proto::ALL {
        for (from, to) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a), (&c, &b)] {
            for port in [80, 8080] {
                let r = from.probe(proto, to.ip(), port).unwrap();
                assert!(
                    r.is_connected(),
                    "{} -> {}:{port} {proto}: {r:?}",
                    from.name(),
                    to.name()
                );
                assert_eq!(r.reply, to.name());
            }
        }
        // A pod reaches itself.
        let r = a.probe(proto, a.ip(), 80).unwrap();
        assert_eq!(r.reply, "a", "{proto}: {r:?}");
        // A port nobody serves is refused, not silently dropped.
        let r = a.probe(proto, c.ip(), 9).unwrap();
        assert_eq!(r.result, ProbeOutcome::Refused, "{proto}: {r:?}");
    }
    drop(servers);
}

#[test]
fn nodes_and_outside_reach_pods() {
    require_root();
    let lab = Lab::new().unwrap();
    let a = lab.node(1).add_pod("a").unwrap();
    let c = lab.node(2).add_pod("c").unwrap();
    let _sa = a.serve(&[80]).unwrap();
    let _sc = c.serve(&[80]).unwrap();
    for proto in Proto::ALL {
        for node in lab.nodes() {
            for pod in [&a, &c] {
                let r = node.probe(proto, pod.ip(), 80).unwrap();
                assert!(
                    r.is_connected(),
                    "{} -> {} {proto}: {r:?}",
                    node.name(),
                    pod.name()
                );
                assert_eq!(r.reply, pod.name());
            }
        }
        for pod in [&a, &c] {
            let r = lab.probe_outside(proto, pod.ip(), 80).unwrap();
            assert!(r.is_connected(), "outside -> {} {proto}: {r:?}", pod.name());
            assert_eq!(r.reply, pod.name());
        }
    }
    // Pods reach node IPs too (the way back for host-network clients).
    let _sn = lab.node(2).serve(&[10250]).unwrap();
    let r = a.probe(Proto::Tcp, lab.node(2).ip(), 10250).unwrap();
    assert_eq!(r.reply, "node2", "{r:?}");
}

#[test]
fn traffic_stops_when_the_pod_is_deleted() {
    require_root();
    let lab = Lab::new().unwrap();
    let a = lab.node(1).add_pod("a").unwrap();
    let b = lab.node(2).add_pod("b").unwrap();
    let srv = b.serve(&[80]).unwrap();
    assert!(a.probe(Proto::Tcp, b.ip(), 80).unwrap().is_connected());
    let ip = b.ip();
    drop(srv);
    assert!(b.delete().unwrap().success());
    let r = a.probe(Proto::Tcp, ip, 80).unwrap();
    assert!(!r.is_connected(), "deleted pod still answers: {r:?}");
}
