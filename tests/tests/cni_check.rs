//! CHECK compares the live pod wiring with prevResult and reports drift.
#![allow(clippy::unwrap_used)]

use weir_lab::{Lab, Pod, require_root};

fn assert_check_fails(pod: &Pod, what: &str) {
    let out = pod.check().unwrap();
    assert!(!out.success(), "CHECK passed although {what}: {out}");
    let msg = out.error_msg().unwrap_or_default();
    assert!(
        !msg.is_empty(),
        "CHECK failed without a message ({what}): {out}"
    );
    eprintln!("CHECK after {what}: code {:?}: {msg}", out.error_code());
}

#[test]
fn check_passes_on_a_healthy_pod() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let out = pod.check().unwrap();
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.trim().is_empty(),
        "CHECK printed something: {out}"
    );
}

#[test]
fn check_detects_a_missing_pod_address() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    pod.netns()
        .ip(&["addr", "del", &format!("{}/32", pod.ip()), "dev", "eth0"])
        .unwrap();
    assert_check_fails(&pod, "the pod address was deleted");
}

#[test]
fn check_detects_a_missing_default_route() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    pod.netns().ip(&["route", "del", "default"]).unwrap();
    assert_check_fails(&pod, "the pod default route was deleted");
}

#[test]
fn check_detects_a_missing_host_route() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    pod.node()
        .netns()
        .ip(&["route", "del", &format!("{}/32", pod.ip())])
        .unwrap();
    assert_check_fails(&pod, "the host route to the pod was deleted");
}

#[test]
fn check_detects_a_missing_interface() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    pod.netns().ip(&["link", "del", "eth0"]).unwrap();
    assert_check_fails(&pod, "the pod interface was deleted");
}

#[test]
fn check_detects_a_changed_address() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let ns = pod.netns();
    ns.ip(&["addr", "del", &format!("{}/32", pod.ip()), "dev", "eth0"])
        .unwrap();
    ns.ip(&["addr", "add", "10.244.1.250/32", "dev", "eth0"])
        .unwrap();
    assert_check_fails(&pod, "the pod address was changed");
}

#[test]
fn del_still_cleans_up_after_drift() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let pod = node.add_pod("a").unwrap();
    pod.netns().ip(&["route", "del", "default"]).unwrap();
    let veth = pod.host_veth().to_string();
    let out = pod.delete().unwrap();
    assert!(out.success(), "{out}");
    assert!(node.allocated_ips().is_empty());
    assert!(!node.links().unwrap().contains(&veth));
}
