//! Every DEL case: DEL is idempotent and releases the address and the host veth
//! whatever state the pod netns is in.
#![allow(clippy::unwrap_used)]

use weir_lab::{CniCall, Lab, Node, Pod, require_root};

/// What DEL must release for `pod`.
struct Attachment {
    node: Node,
    ip: std::net::Ipv4Addr,
    veth: String,
}

impl Attachment {
    fn of(pod: &Pod) -> Attachment {
        let node = pod.node().clone();
        assert!(node.ip_file(pod.ip()).exists());
        assert!(node.links().unwrap().contains(&pod.host_veth().to_string()));
        Attachment {
            node,
            ip: pod.ip(),
            veth: pod.host_veth().to_string(),
        }
    }

    fn assert_released(&self) {
        assert!(
            !self.node.ip_file(self.ip).exists(),
            "IP file of {} left",
            self.ip
        );
        assert!(
            !self.node.links().unwrap().contains(&self.veth),
            "host veth {} left",
            self.veth
        );
        let route = self
            .node
            .netns()
            .ip(&["route", "show", &format!("{}/32", self.ip)])
            .unwrap();
        assert!(route.trim().is_empty(), "host route left: {route}");
    }
}

fn del(pod: &Pod, call: CniCall) {
    let out = pod.node().cni_call(&call).unwrap();
    assert!(out.success(), "DEL failed: {out}");
    assert!(out.stdout.trim().is_empty(), "DEL printed a result: {out}");
}

#[test]
fn del_after_the_netns_is_gone() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let att = Attachment::of(&pod);
    let call = pod.cni_call("DEL");
    pod.netns().delete();
    assert!(!pod.netns().path().exists());
    del(&pod, call);
    att.assert_released();
}

#[test]
fn del_with_empty_cni_netns_as_containerd_sends_it() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let att = Attachment::of(&pod);
    // containerd: no netns, and no prevResult either.
    del(&pod, pod.cni_call("DEL").netns("").config(pod.config()));
    att.assert_released();
    // The pod's end of the pair died with the host end.
    let links = pod.netns().ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains("eth0"), "pod eth0 left: {links}");
}

#[test]
fn del_of_an_unknown_container_succeeds_and_touches_nothing() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let pod = node.add_pod("a").unwrap();
    let call = CniCall::new("DEL", "never-added-0123456789")
        .netns("/run/netns/does-not-exist")
        .config(&node.cni_config());
    del(&pod, call);
    assert_eq!(node.allocated_ips(), vec![pod.ip()]);
    assert!(pod.check().unwrap().success());
}

#[test]
fn del_twice_succeeds() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let att = Attachment::of(&pod);
    del(&pod, pod.cni_call("DEL"));
    att.assert_released();
    del(&pod, pod.cni_call("DEL"));
    del(&pod, pod.cni_call("DEL").netns(""));
    att.assert_released();
}

#[test]
fn del_with_the_netns_alive_removes_the_pod_interface() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let pod = lab.node(1).add_pod("a").unwrap();
    let att = Attachment::of(&pod);
    del(&pod, pod.cni_call("DEL"));
    att.assert_released();
    let links = pod.netns().ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains("eth0"), "pod eth0 left: {links}");
    // The address is free again: a new pod can get it back eventually, and the
    // store holds nothing.
    assert!(lab.node(1).allocated_ips().is_empty());
}

#[test]
fn del_releases_only_its_own_attachment() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let a = node.add_pod("a").unwrap();
    let b = node.add_pod("b").unwrap();
    // Same container id, other ifname: not a's attachment.
    del(&a, a.cni_call("DEL").ifname("eth1"));
    assert_eq!(node.allocated_ips().len(), 2);
    let att = Attachment::of(&a);
    del(&a, a.cni_call("DEL"));
    att.assert_released();
    assert_eq!(node.allocated_ips(), vec![b.ip()]);
    assert!(b.check().unwrap().success());
}
