//! 50 ADDs started at once in one network: 50 distinct addresses, a consistent
//! store, and concurrent DELs that leave it empty.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};

use weir_lab::{CniCall, CniOutput, Lab, NetNs, Proto, require_root};

const PODS: usize = 50;

#[test]
fn fifty_parallel_adds_get_distinct_addresses_and_dels_empty_the_store() {
    require_root();
    let lab = Lab::builder().nodes(1).build().unwrap();
    let node = lab.node(1);
    let netns: Vec<Arc<NetNs>> = (0..PODS)
        .map(|i| node.create_netns(&format!("p{i}")).unwrap())
        .collect();
    let calls: Vec<CniCall> = netns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            CniCall::new("ADD", &format!("{}-par-{i}", lab.id()))
                .netns(ns.path_str())
                .config(&node.cni_config())
        })
        .collect();

    let run_all = |calls: &[CniCall]| -> Vec<CniOutput> {
        let start = Barrier::new(calls.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = calls
                .iter()
                .map(|call| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        node.cni_call(call).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };

    let outputs = run_all(&calls);
    let mut ips = Vec::new();
    let mut veths = HashSet::new();
    for (i, out) in outputs.iter().enumerate() {
        assert!(out.success(), "ADD {i} failed: {out}");
        let json = out.json.as_ref().unwrap();
        let addr = json["ips"][0]["address"].as_str().unwrap();
        let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
        ips.push(ip);
        let host = json["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i.get("sandbox").is_none())
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        veths.insert(host);
    }
    let distinct: HashSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), PODS, "duplicate addresses: {ips:?}");
    assert_eq!(veths.len(), PODS, "duplicate host veths: {veths:?}");
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(
        node.allocated_ips(),
        sorted,
        "store disagrees with the results"
    );
    for (i, ip) in ips.iter().enumerate() {
        let record = std::fs::read_to_string(node.ip_file(*ip)).unwrap();
        assert!(
            record.starts_with(&calls[i].container_id),
            "{ip}: {record:?}"
        );
        assert!(node.pod_cidr().contains(*ip) && *ip != node.gateway());
    }
    let links: HashSet<String> = node.links().unwrap().into_iter().collect();
    assert!(veths.is_subset(&links), "host veths missing");

    // Spot-check the data path: first and last pod talk.
    let srv = netns[PODS - 1].serve("last", &[80], &[80]).unwrap();
    for proto in Proto::ALL {
        let r = netns[0].probe(proto, ips[PODS - 1], 80).unwrap();
        assert_eq!(r.reply, "last", "{proto}: {r:?}");
    }
    drop(srv);

    let dels: Vec<CniCall> = calls
        .iter()
        .map(|c| CniCall {
            command: "DEL".to_string(),
            ..c.clone()
        })
        .collect();
    for (i, out) in run_all(&dels).iter().enumerate() {
        assert!(out.success(), "DEL {i} failed: {out}");
    }
    assert!(
        node.allocated_ips().is_empty(),
        "store not empty: {:?}",
        node.allocated_ips()
    );
    let left: Vec<String> = node
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l != "lo" && l != "eth0")
        .collect();
    assert!(left.is_empty(), "links left after DEL: {left:?}");
}
