//! The full ADD → traffic → CHECK → DEL cycle through the real weir-cni binary,
//! once per supported cniVersion, plus VERSION and STATUS.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use weir_lab::{Lab, Node, Pod, Proto, require_root};

const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

fn config(node: &Node, version: &str) -> Value {
    let mut c = node.cni_config();
    c["cniVersion"] = version.into();
    c
}

/// Checks the live wiring of `pod` against the routed ptp-like contract.
fn assert_wired(pod: &Pod) {
    let node = pod.node();
    let ip = pod.ip();
    let gw = node.gateway();
    assert!(
        node.pod_cidr().contains(ip),
        "{ip} not in {}",
        node.pod_cidr()
    );

    let addrs = pod
        .netns()
        .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(
        addrs.contains(&format!("inet {ip}/32")),
        "pod eth0: {addrs}"
    );
    let default = pod.netns().ip(&["route", "show", "default"]).unwrap();
    assert!(
        default.contains(&format!("via {gw}")) && default.contains("dev eth0"),
        "pod default route: {default}"
    );

    let veth = pod.host_veth();
    let host_addrs = node
        .netns()
        .ip(&["-o", "-4", "addr", "show", "dev", veth])
        .unwrap();
    assert!(
        host_addrs.contains(&format!("inet {gw}/32")),
        "host veth {veth}: {host_addrs}"
    );
    let host_route = node
        .netns()
        .ip(&["route", "show", &format!("{ip}/32")])
        .unwrap();
    assert!(
        host_route.contains(&format!("dev {veth}")),
        "host route: {host_route:?}"
    );

    let record = std::fs::read_to_string(node.ip_file(ip)).unwrap();
    assert_eq!(
        record.trim_end_matches(['\r', '\n']),
        format!("{}\r\n{}", pod.container_id(), pod.ifname()),
        "IP file of {ip}"
    );
}

fn assert_result_shape(pod: &Pod, version: &str) {
    let result = pod.result();
    assert_eq!(result["cniVersion"], version, "{result}");
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1, "{result}");
    assert_eq!(
        ips[0]["gateway"],
        pod.node().gateway().to_string(),
        "{result}"
    );
    if version == "0.4.0" {
        assert_eq!(
            ips[0]["version"], "4",
            "0.4.0 results carry ips[].version: {result}"
        );
    }
    let ifaces = result["interfaces"].as_array().unwrap();
    let idx = usize::try_from(ips[0]["interface"].as_u64().unwrap()).unwrap();
    assert_eq!(ifaces[idx]["name"], "eth0", "{result}");
    assert_eq!(ifaces[idx]["sandbox"], pod.netns().path_str(), "{result}");
}

fn cycle(version: &str) {
    require_root();
    let lab = Lab::new().unwrap();
    let (n1, n2) = (lab.node(1), lab.node(2));
    let a = n1.add_pod_with_config("a", &config(n1, version)).unwrap();
    let b = n1.add_pod_with_config("b", &config(n1, version)).unwrap();
    let c = n2.add_pod_with_config("c", &config(n2, version)).unwrap();
    for pod in [&a, &b, &c] {
        assert_result_shape(pod, version);
        assert_wired(pod);
    }
    assert_ne!(a.ip(), b.ip());

    let _sb = b.serve(&[80, 81]).unwrap();
    let _sc = c.serve(&[80]).unwrap();
    for proto in Proto::ALL {
        for (target, port, name) in [(&b, 80, "b"), (&b, 81, "b"), (&c, 80, "c")] {
            let r = a.probe(proto, target.ip(), port).unwrap();
            assert!(
                r.is_connected(),
                "{version} a -> {name}:{port} {proto}: {r:?}"
            );
            assert_eq!(r.reply, name);
        }
    }

    for pod in [&a, &b, &c] {
        let out = pod.check().unwrap();
        assert!(out.success(), "{version} CHECK of {}: {out}", pod.name());
    }

    let (ip, veth, node) = (a.ip(), a.host_veth().to_string(), a.node().clone());
    let out = a.delete().unwrap();
    assert!(out.success(), "{version} DEL: {out}");
    assert!(!node.ip_file(ip).exists(), "IP file of {ip} left after DEL");
    assert!(
        !node.links().unwrap().contains(&veth),
        "host veth {veth} left after DEL"
    );
    let route = node
        .netns()
        .ip(&["route", "show", &format!("{ip}/32")])
        .unwrap();
    assert!(
        route.trim().is_empty(),
        "host route left after DEL: {route}"
    );
    // The others are untouched.
    let r = c.probe(Proto::Tcp, b.ip(), 80).unwrap();
    assert!(r.is_connected(), "{r:?}");
}

#[test]
fn cycle_cni_0_4_0() {
    cycle("0.4.0");
}

#[test]
fn cycle_cni_1_0_0() {
    cycle("1.0.0");
}

#[test]
fn cycle_cni_1_1_0() {
    cycle("1.1.0");
}

#[test]
fn version_lists_the_supported_versions() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let out = lab
        .node(1)
        .cni_call(&weir_lab::CniCall::new("VERSION", "").stdin(r#"{"cniVersion":"1.1.0"}"#))
        .unwrap();
    assert!(out.success(), "{out}");
    let json = out.json.unwrap();
    let supported: Vec<&str> = json["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for v in VERSIONS {
        assert!(supported.contains(&v), "{v} missing in {supported:?}");
    }
}

#[test]
fn status_succeeds_while_addresses_are_left() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let out = node
        .cni_call(&weir_lab::CniCall::new("STATUS", "").config(&node.cni_config()))
        .unwrap();
    assert!(out.success(), "{out}");
}

#[test]
fn second_add_for_the_same_attachment_fails_and_keeps_the_first() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let a = node.add_pod("a").unwrap();
    let out = node
        .cni_call(&a.cni_call("ADD").config(a.config()))
        .unwrap();
    assert!(
        !out.success(),
        "a second ADD of the same attachment succeeded: {out}"
    );
    assert!(out.error_code().is_some(), "no spec error object: {out}");
    assert_eq!(node.allocated_ips(), vec![a.ip()]);
    assert_wired(&a);
    assert!(a.check().unwrap().success());
}

#[test]
fn requested_ip_via_args_is_honoured() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let mut config = node.cni_config();
    config["args"] = serde_json::json!({"cni": {"ips": ["10.244.1.77"]}});
    let pod = node.add_pod_with_config("a", &config).unwrap();
    assert_eq!(pod.ip().to_string(), "10.244.1.77");
    assert_wired(&pod);
}
