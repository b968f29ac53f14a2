//! Bad input gets the spec's JSON error object with the right code, never a
//! panic, and a failed ADD leaves nothing behind.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use weir_lab::{CniCall, CniOutput, Lab, Node, require_root};

fn assert_error(out: &CniOutput, code: u64, what: &str) {
    assert!(!out.success(), "{what}: succeeded: {out}");
    assert!(
        !out.stderr.contains("panicked"),
        "{what}: the plugin panicked: {out}"
    );
    let json = out
        .json
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no JSON error on stdout: {out}"));
    assert!(
        json.get("msg")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{what}: no msg: {out}"
    );
    assert_eq!(out.error_code(), Some(code), "{what}: wrong code: {out}");
}

/// Asserts the node holds no IP file and no link beyond lo and eth0.
fn assert_nothing_left(node: &Node, what: &str) {
    assert!(
        node.allocated_ips().is_empty(),
        "{what}: IP files left: {:?}",
        node.allocated_ips()
    );
    let links: Vec<String> = node
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l != "lo" && l != "eth0")
        .collect();
    assert!(links.is_empty(), "{what}: links left: {links:?}");
}

fn add(node: &Node, id: &str) -> CniCall {
    CniCall::new("ADD", id).netns(node.create_netns(id).unwrap().path_str())
}

#[test]
fn garbage_config_is_a_decoding_failure() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    for (i, garbage) in ["{not json", "", "[1,2,3]", "\u{0}\u{1}binary"]
        .iter()
        .enumerate()
    {
        let out = node
            .cni_call(&add(node, &format!("g{i}")).stdin(*garbage))
            .unwrap();
        assert_error(&out, 6, &format!("stdin {garbage:?}"));
    }
    assert_nothing_left(node, "garbage config");
}

#[test]
fn bad_environment_is_code_4() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let config = node.cni_config();
    let cases: Vec<(&str, CniCall)> = vec![
        (
            "no CNI_COMMAND",
            add(node, "e1").config(&config).env_remove("CNI_COMMAND"),
        ),
        (
            "unknown CNI_COMMAND",
            add(node, "e2").config(&config).env("CNI_COMMAND", "FROB"),
        ),
        (
            "ADD without CNI_CONTAINERID",
            add(node, "e3")
                .config(&config)
                .env_remove("CNI_CONTAINERID"),
        ),
        (
            "ADD without CNI_IFNAME",
            add(node, "e4").config(&config).env_remove("CNI_IFNAME"),
        ),
        (
            "ADD without CNI_NETNS",
            add(node, "e5").config(&config).env_remove("CNI_NETNS"),
        ),
    ];
    for (what, call) in cases {
        let out = node.cni_call(&call).unwrap();
        assert_error(&out, 4, what);
    }
    assert_nothing_left(node, "bad environment");
}

#[test]
fn unsupported_cni_version_is_code_1() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    for (i, version) in ["9.9.9", "0.2.0", "banana"].iter().enumerate() {
        let mut config = node.cni_config();
        config["cniVersion"] = (*version).into();
        let out = node
            .cni_call(&add(node, &format!("v{i}")).config(&config))
            .unwrap();
        assert_error(&out, 1, &format!("cniVersion {version}"));
    }
    assert_nothing_left(node, "unsupported version");
}

#[test]
fn bad_ipam_config_is_code_7() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let data = node.cni_data_dir().display().to_string();
    let bad_ipams = [
        (
            "subnet is not a CIDR",
            json!({"ranges": [[{"subnet": "banana"}]], "dataDir": data}),
        ),
        ("no ranges", json!({"dataDir": data})),
        ("empty range set", json!({"ranges": [[]], "dataDir": data})),
        (
            "rangeStart outside the subnet",
            json!({"ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.9.9.9"}]], "dataDir": data}),
        ),
        (
            "rangeEnd before rangeStart",
            json!({"ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.50", "rangeEnd": "10.244.1.40"}]], "dataDir": data}),
        ),
        (
            "ranges is a string",
            json!({"ranges": "10.244.1.0/24", "dataDir": data}),
        ),
    ];
    for (i, (what, ipam)) in bad_ipams.iter().enumerate() {
        let mut config = node.cni_config();
        config["ipam"] = ipam.clone();
        let out = node
            .cni_call(&add(node, &format!("i{i}")).config(&config))
            .unwrap();
        assert_error(&out, 7, what);
    }
    let mut config = node.cni_config();
    config.as_object_mut().unwrap().remove("ipam");
    let out = node.cni_call(&add(node, "noipam").config(&config)).unwrap();
    assert_error(&out, 7, "no ipam section");
    assert_nothing_left(node, "bad ipam");
}

#[test]
fn failed_add_leaves_no_ip_file_and_no_link() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let not_a_netns = node.dir().join("not-a-netns");
    std::fs::write(&not_a_netns, b"plain file").unwrap();
    let cases = [
        (
            "CNI_NETNS is a plain file",
            not_a_netns.display().to_string(),
        ),
        (
            "CNI_NETNS does not exist",
            "/run/netns/wlab-does-not-exist".to_string(),
        ),
    ];
    for (i, (what, netns)) in cases.iter().enumerate() {
        let call = CniCall::new("ADD", &format!("f{i}"))
            .netns(netns.clone())
            .config(&node.cni_config());
        let out = node.cni_call(&call).unwrap();
        assert!(!out.success(), "{what}: ADD succeeded: {out}");
        assert!(out.error_code().is_some(), "{what}: no error object: {out}");
        assert!(!out.stderr.contains("panicked"), "{what}: {out}");
        assert_nothing_left(node, what);
    }
    // The failed attempts did not poison the store: a normal pod still works.
    let pod = node.add_pod("a").unwrap();
    assert!(pod.check().unwrap().success());
}

#[test]
fn add_with_an_ifname_taken_in_the_pod_leaves_nothing_behind() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let ns = node.create_netns("busy").unwrap();
    // "eth0" already exists in the pod netns, so the pod side cannot be created.
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ])
    .unwrap();
    let call = CniCall::new("ADD", "busy")
        .netns(ns.path_str())
        .config(&node.cni_config());
    let out = node.cni_call(&call).unwrap();
    assert!(
        !out.success(),
        "ADD into a netns with eth0 taken succeeded: {out}"
    );
    assert!(out.error_code().is_some(), "{out}");
    assert_nothing_left(node, "ifname taken");
}

#[test]
fn exhausted_range_fails_add_cleanly_and_status_reports_50() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let mut config = node.cni_config();
    // .0 network, .1 gateway, .3 broadcast: exactly one address to hand out.
    config["ipam"]["ranges"] = json!([[{"subnet": "10.244.1.0/30"}]]);
    let pod = node.add_pod_with_config("a", &config).unwrap();
    assert_eq!(pod.ip().to_string(), "10.244.1.2");
    let out = node.cni_call(&add(node, "second").config(&config)).unwrap();
    assert!(!out.success(), "ADD into a full range succeeded: {out}");
    assert!(out.error_code().is_some(), "{out}");
    assert_eq!(node.allocated_ips(), vec![pod.ip()]);
    let status = node
        .cni_call(&CniCall::new("STATUS", "").config(&config))
        .unwrap();
    assert_error(&status, 50, "STATUS with no address left");
    let veth = pod.host_veth().to_string();
    drop(pod);
    assert!(!node.links().unwrap().contains(&veth));
    let status = node
        .cni_call(&CniCall::new("STATUS", "").config(&config))
        .unwrap();
    assert!(
        status.success(),
        "STATUS after the address was freed: {status}"
    );
}
