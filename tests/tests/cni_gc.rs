//! GC with `cni.dev/valid-attachments` releases exactly the attachments that are
//! not listed: their IP files, host veths and host routes.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use weir_lab::{CniCall, Lab, Node, Pod, Proto, require_root};

fn gc(node: &Node, valid: &[&Pod]) {
    let mut config = node.cni_config();
    config["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|p| json!({"containerID": p.container_id(), "ifname": p.ifname()}))
        .collect();
    // GC gets no container id, netns, ifname or args (CNI spec 1.1).
    let call = CniCall::new("GC", "")
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_NETNS")
        .env_remove("CNI_IFNAME")
        .env_remove("CNI_ARGS")
        .config(&config);
    let out = node.cni_call(&call).unwrap();
    assert!(out.success(), "GC failed: {out}");
}

fn assert_present(pod: &Pod) {
    let node = pod.node();
    assert!(
        node.ip_file(pod.ip()).exists(),
        "IP file of {} was released",
        pod.name()
    );
    assert!(
        node.links().unwrap().contains(&pod.host_veth().to_string()),
        "host veth of {} was removed",
        pod.name()
    );
    assert!(
        pod.check().unwrap().success(),
        "CHECK of {} fails after GC",
        pod.name()
    );
}

fn assert_released(pod: &Pod) {
    let node = pod.node();
    assert!(
        !node.ip_file(pod.ip()).exists(),
        "IP file of {} kept",
        pod.name()
    );
    assert!(
        !node.links().unwrap().contains(&pod.host_veth().to_string()),
        "host veth {} of {} kept",
        pod.host_veth(),
        pod.name()
    );
    let route = node
        .netns()
        .ip(&["route", "show", &format!("{}/32", pod.ip())])
        .unwrap();
    assert!(
        route.trim().is_empty(),
        "host route of {} kept: {route}",
        pod.name()
    );
}

#[test]
fn gc_releases_only_attachments_missing_from_the_list() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let pods: Vec<Pod> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| node.add_pod(n).unwrap())
        .collect();
    let (a, b, c, d) = (&pods[0], &pods[1], &pods[2], &pods[3]);
    gc(node, &[a, c]);
    assert_present(a);
    assert_present(c);
    assert_released(b);
    assert_released(d);
    assert_eq!(node.allocated_ips().len(), 2);
    let _srv = c.serve(&[80]).unwrap();
    let r = a.probe(Proto::Tcp, c.ip(), 80).unwrap();
    assert_eq!(r.reply, "c", "{r:?}");
    // GC is idempotent, and DEL of a collected attachment still succeeds.
    gc(node, &[a, c]);
    assert_present(a);
    for pod in pods {
        let out = pod.delete().unwrap();
        assert!(out.success(), "{out}");
    }
    assert!(node.allocated_ips().is_empty());
}

#[test]
fn gc_with_an_empty_list_releases_everything() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let a = node.add_pod("a").unwrap();
    let b = node.add_pod("b").unwrap();
    gc(node, &[]);
    assert_released(&a);
    assert_released(&b);
    assert!(node.allocated_ips().is_empty());
}

#[test]
fn gc_keeps_an_attachment_listed_under_another_ifname_apart() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let a = node.add_pod("a").unwrap();
    let mut config = node.cni_config();
    // a's container id with another ifname does not keep a's eth0.
    config["cni.dev/valid-attachments"] =
        json!([{"containerID": a.container_id(), "ifname": "eth1"}]);
    let call = CniCall::new("GC", "")
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_NETNS")
        .env_remove("CNI_IFNAME")
        .config(&config);
    let out = node.cni_call(&call).unwrap();
    assert!(out.success(), "{out}");
    assert_released(&a);
}
