//! Native routing by the agents: routes to other nodes' pod CIDRs follow
//! the Node objects, carry the agent's protocol number, and routes the
//! agent did not create are never touched.
#![allow(clippy::unwrap_used)]

mod daemon_support;

use daemon_support::*;
use weir_lab::{Node, Proto};

/// `ip route show proto 87` in the node: the agent's routes.
fn agent_routes(node: &Node) -> Vec<String> {
    node.netns()
        .ip(&["route", "show", "proto", "87"])
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn node_object(name: &str, cidr: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}}}\n\
         status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
    )
}

#[test]
fn agents_route_pod_cidrs_via_node_ips_and_leave_foreign_routes() {
    let lab = lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    let dir = manifests_dir(&lab);
    write_manifest(&dir, "nodes.yaml", &node_manifests(&lab));
    // A route someone else owns on a CIDR a Node object will claim.
    n1.netns()
        .ip(&[
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            "192.168.100.1",
            "proto",
            "static",
        ])
        .unwrap();
    let a1 = Agent::start(n1, &dir);
    let a2 = Agent::start(n2, &dir);
    a1.wait_ready();
    a2.wait_ready();

    assert_eq!(
        agent_routes(n1),
        ["10.244.2.0/24 via 192.168.100.12 dev eth0"]
    );
    assert_eq!(
        agent_routes(n2),
        ["10.244.1.0/24 via 192.168.100.11 dev eth0"]
    );
    assert_eq!(a1.metric("weir_routes_programmed"), Some(1.0));

    // Pods on different nodes reach each other through those routes.
    let p1 = n1
        .add_pod_with_config("p1", &n1.cni_config_with_agent())
        .unwrap();
    let p2 = n2
        .add_pod_with_config("p2", &n2.cni_config_with_agent())
        .unwrap();
    let _server = p2.serve(&[7000]).unwrap();
    let reply = p1.probe(Proto::Tcp, p2.ip(), 7000).unwrap();
    assert!(reply.is_connected() && reply.reply == "p2", "{reply:?}");

    // A third node whose CIDR carries the foreign route: a conflict,
    // reported and left alone.
    write_manifest(
        &dir,
        "node3.yaml",
        &node_object("node3", "10.244.99.0/24", "192.168.100.99"),
    );
    a1.wait_for("the conflict", |a| {
        a.metric("weir_route_conflicts") == Some(1.0)
    });
    let foreign = n1.netns().ip(&["route", "show", "10.244.99.0/24"]).unwrap();
    assert!(
        foreign.contains("via 192.168.100.1 ") && foreign.contains("proto static"),
        "{foreign}"
    );
    assert!(a1.log_text().contains("does not own"));
    a2.wait_for("node3's route on node2", |_| agent_routes(n2).len() == 2);
    assert!(agent_routes(n2).contains(&"10.244.99.0/24 via 192.168.100.99 dev eth0".to_string()));

    // A changed node IP replaces the route; a removed Node removes it.
    write_manifest(
        &dir,
        "node3.yaml",
        &node_object("node3", "10.244.99.0/24", "192.168.100.98"),
    );
    a2.wait_for("the replaced route", |_| {
        agent_routes(n2).contains(&"10.244.99.0/24 via 192.168.100.98 dev eth0".to_string())
    });
    std::fs::remove_file(dir.join("node3.yaml")).unwrap();
    a2.wait_for("the removed route", |_| agent_routes(n2).len() == 1);
    a1.wait_for("no conflict", |a| {
        a.metric("weir_route_conflicts") == Some(0.0)
    });
    let foreign = n1.netns().ip(&["route", "show", "10.244.99.0/24"]).unwrap();
    assert!(
        foreign.contains("proto static"),
        "the foreign route stays: {foreign}"
    );

    // Someone deletes an agent route: the next sync puts it back.
    n1.netns().ip(&["route", "del", "10.244.2.0/24"]).unwrap();
    write_manifest(&dir, "touch.yaml", "# any change triggers a sync\n");
    a1.wait_for("the route back", |_| agent_routes(n1).len() == 1);
}
