//! The pinned loader and the map writer against the real kernel: pins,
//! bpffs mounting, exact map contents, adoption after a restart, shrinking,
//! full maps, layout changes, endpoints, node config and metrics.
//! Needs root and a binary built with the eBPF object (`cargo xtask test`).
#![allow(clippy::unwrap_used)]

mod datapath_runtime_support;

use std::{collections::BTreeMap, net::Ipv4Addr};

use datapath_runtime_support::*;
use weir_agent::{
    datapath::{
        Datapath, bpffs,
        keys::{BackendKey, FrontendKey},
    },
    plan::Protocol,
};
use weir_common::{
    config::DatapathConfig,
    ct::{Ct4Entry, Ct4Key},
    endpoint::{EndpointInfo, ep_flags},
    lb::{Lb4Backend, Lb4RevNat, Lb4Service, svc_flags},
    maps as names,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 53);

fn two_services() -> weir_agent::plan::DesiredState {
    let mut dns = frontend(
        "dns",
        DNS_VIP,
        53,
        Protocol::Udp,
        vec![backend(4, 53), backend(5, 53)],
    );
    dns.affinity_timeout = Some(60);
    plan(vec![
        frontend(
            "web",
            VIP,
            80,
            Protocol::Tcp,
            vec![backend(2, 8080), backend(3, 8080), backend(4, 8080)],
        ),
        dns,
    ])
}

fn lb_state(dp: &Datapath) -> weir_agent::datapath::state::LbState {
    dp.maps().read_lb_state().unwrap()
}

#[test]
fn loader_mounts_a_bpffs_and_pins_every_map() {
    require_root_and_object();
    let root = TestBpffs::new();
    assert!(
        !bpffs::is_bpffs(root.path()).unwrap(),
        "starts as a plain directory"
    );
    let dp = root.load();
    assert!(dp.report().mounted_bpffs);
    assert!(bpffs::is_bpffs(root.path()).unwrap());
    for name in names::ALL {
        assert!(root.path().join(name).exists(), "{name} is pinned");
    }
    assert!(root.path().join("links").is_dir());
    drop(dp);
    // A second load finds the bpffs and does not mount another.
    let dp = root.load();
    assert!(!dp.report().mounted_bpffs);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = format!(" {} ", root.path().display());
    assert_eq!(mounts.lines().filter(|l| l.contains(&here)).count(), 1);
}

#[test]
fn subdirectory_of_an_existing_bpffs_is_created_not_mounted() {
    require_root_and_object();
    let root = TestBpffs::new();
    drop(root.load());
    let sub = root.path().join("node1/weir");
    let dp = Datapath::load(&weir_agent::datapath::LoadOptions::new(&sub)).unwrap();
    assert!(!dp.report().mounted_bpffs);
    assert!(bpffs::is_bpffs(&sub).unwrap());
    assert!(sub.join(names::LB4_SERVICES).exists());
}

#[test]
fn apply_writes_exact_map_contents() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    let stats = dp.apply(&two_services());
    assert_eq!((stats.services, stats.frontends, stats.backends), (2, 2, 5));
    assert_eq!(stats.failed_writes(), 0);

    let web = FrontendKey {
        address: VIP,
        port: 80,
        proto: 6,
        scope: 0,
    };
    let dns = FrontendKey {
        address: DNS_VIP,
        port: 53,
        proto: 17,
        scope: 0,
    };
    let maps = dp.maps();
    let head = maps.services.get(&web.slot(0), 0).unwrap();
    let web_rev = dp.writer().rev_nat_index(&web).unwrap();
    assert_eq!(
        head,
        Lb4Service {
            backend_id: 0,
            count: 3,
            rev_nat_index: web_rev,
            flags: svc_flags::CLUSTER_IP,
            pad: 0,
            affinity_timeout: 0,
        }
    );
    let dns_head = maps.services.get(&dns.slot(0), 0).unwrap();
    assert_eq!(dns_head.count, 2);
    assert_eq!(dns_head.flags, svc_flags::CLUSTER_IP | svc_flags::AFFINITY);
    assert_eq!(dns_head.affinity_timeout, 60);
    assert_eq!(
        maps.revnat.get(&web_rev, 0).unwrap(),
        Lb4RevNat {
            address: u32::from_ne_bytes([10, 96, 0, 10]),
            port: 80u16.to_be(),
            pad: 0,
        }
    );
    let mut slot_backends = Vec::new();
    for slot in 1..=3 {
        let entry = maps.services.get(&web.slot(slot), 0).unwrap();
        assert_eq!(entry.rev_nat_index, web_rev);
        let b = maps.backends.get(&entry.backend_id, 0).unwrap();
        slot_backends.push((b.address.to_ne_bytes(), u16::from_be(b.port), b.proto));
    }
    slot_backends.sort();
    assert_eq!(
        slot_backends,
        vec![
            ([10, 244, 1, 2], 8080, 6),
            ([10, 244, 1, 3], 8080, 6),
            ([10, 244, 1, 4], 8080, 6)
        ]
    );
    // Exactly: 2 heads + 5 slots, 5 backends, 2 rev-NAT entries.
    let state = lb_state(&dp);
    assert_eq!(state.services.len(), 7);
    assert_eq!(state.backends.len(), 5);
    assert_eq!(state.revnat.len(), 2);
    assert_eq!(
        &state,
        dp.writer().state(),
        "the mirror equals the kernel maps"
    );
    let id = dp
        .writer()
        .backend_id(&BackendKey {
            address: Ipv4Addr::new(10, 244, 1, 4),
            port: 53,
            proto: 17,
        })
        .unwrap();
    assert_eq!(
        state.backends[&id],
        Lb4Backend {
            address: u32::from_ne_bytes([10, 244, 1, 4]),
            port: 53u16.to_be(),
            proto: 17,
            state: 0,
            local: 1,
            pad: [0; 3],
        }
    );
}

#[test]
fn restart_adopts_ids_and_state_without_flushing() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&two_services());
    let ct_key = Ct4Key {
        saddr: 1,
        daddr: 2,
        sport: 3,
        dport: 4,
        proto: 6,
        ..Ct4Key::default()
    };
    let ct_entry = Ct4Entry {
        last_seen_ns: 5,
        proto: 6,
        ..Ct4Entry::default()
    };
    dp.maps_mut().ct.insert(ct_key, ct_entry, 0).unwrap();
    let before = lb_state(&dp);
    let ids: Vec<_> = before.backends.keys().copied().collect();
    drop(dp);

    let mut dp = root.load();
    assert_eq!(dp.report().adopted_services, 7);
    assert_eq!(dp.report().adopted_backends, 5);
    assert_eq!(lb_state(&dp), before, "nothing flushed");
    assert_eq!(
        dp.maps().ct.get(&ct_key, 0).unwrap(),
        ct_entry,
        "conntrack kept"
    );
    let stats = dp.apply(&two_services());
    assert_eq!(
        (stats.writes, stats.deletes),
        (0, 0),
        "adopted, nothing rewritten"
    );
    assert_eq!(stats.frontends, 2);
    let after = lb_state(&dp);
    assert_eq!(after, before);
    let mut after_ids: Vec<_> = after.backends.keys().copied().collect();
    let mut ids = ids;
    ids.sort();
    after_ids.sort();
    assert_eq!(after_ids, ids);
}

#[test]
fn shrunk_plan_after_restart_leaves_exactly_the_plan() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&two_services());
    let web = FrontendKey {
        address: VIP,
        port: 80,
        proto: 6,
        scope: 0,
    };
    let kept_id = dp
        .writer()
        .backend_id(&BackendKey {
            address: Ipv4Addr::new(10, 244, 1, 3),
            port: 8080,
            proto: 6,
        })
        .unwrap();
    drop(dp);
    let mut dp = root.load();
    let shrunk = plan(vec![frontend(
        "web",
        VIP,
        80,
        Protocol::Tcp,
        vec![backend(3, 8080)],
    )]);
    let stats = dp.apply(&shrunk);
    assert_eq!(stats.failed_writes(), 0);
    assert_eq!(
        stats.removed_pairs, 4,
        "two web backends and the two of dns"
    );
    let state = lb_state(&dp);
    assert_eq!(state.services.len(), 2);
    assert_eq!(state.services[&web.slot(0)].count, 1);
    assert_eq!(
        state.services[&web.slot(1)].backend_id,
        kept_id,
        "kept its id"
    );
    assert_eq!(
        state.backends.keys().copied().collect::<Vec<_>>(),
        vec![kept_id]
    );
    // dns's rev-NAT entry waits for the conntrack GC; nothing names it.
    assert_eq!(state.revnat.len(), 2);
    dp.ct_gc().unwrap();
    assert_eq!(lb_state(&dp).revnat.len(), 1);
}

#[test]
fn full_maps_count_failures_and_apply_the_rest() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut opts = root.options();
    opts.max_entries = BTreeMap::from([(names::LB4_BACKENDS.to_string(), 4)]);
    let mut dp = Datapath::load(&opts).unwrap();
    let stats = dp.apply(&two_services());
    assert_eq!(
        stats.failures.get(names::LB4_BACKENDS),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.frontends, 2);
    assert_eq!(stats.backends, 4);
    let state = lb_state(&dp);
    assert_eq!(state.backends.len(), 4);
    let heads: u16 = state
        .services
        .iter()
        .filter(|(k, _)| k.backend_slot == 0)
        .map(|(_, v)| v.count)
        .sum();
    assert_eq!(heads, 4, "slots only for backends that made it");
    let fill: Vec<_> = dp
        .map_fill()
        .unwrap()
        .into_iter()
        .filter(|m| m.name == names::LB4_BACKENDS)
        .collect();
    assert_eq!((fill[0].entries, fill[0].max_entries), (4, 4));
    let metrics = dp.metrics().unwrap();
    assert_eq!(metrics.writer.failures.get(names::LB4_BACKENDS), Some(&1));
}

#[test]
fn changed_layouts_are_replaced_or_migrated_and_old_versions_removed() {
    require_root_and_object();
    let root = TestBpffs::new();
    drop(root.load());
    let pin = |name: &str| root.path().join(name).display().to_string();
    // The backends map with another value size: must be replaced.
    std::fs::remove_file(pin(names::LB4_BACKENDS)).unwrap();
    bpftool(&[
        "map",
        "create",
        &pin(names::LB4_BACKENDS),
        "type",
        "hash",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "weir_lb4_backe",
        "flags",
        "1",
    ]);
    // The rev-NAT map with a smaller capacity and one entry: migrated.
    std::fs::remove_file(pin(names::LB4_REVNAT)).unwrap();
    bpftool(&[
        "map",
        "create",
        &pin(names::LB4_REVNAT),
        "type",
        "hash",
        "key",
        "2",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "weir_lb4_revna",
        "flags",
        "1",
    ]);
    bpftool(&[
        "map",
        "update",
        "pinned",
        &pin(names::LB4_REVNAT),
        "key",
        "7",
        "0",
        "value",
        "10",
        "96",
        "0",
        "7",
        "0",
        "80",
        "0",
        "0",
    ]);
    // A map of an older version.
    bpftool(&[
        "map",
        "create",
        &pin("weir_lb4_svc_v0"),
        "type",
        "hash",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "4",
        "name",
        "weir_lb4_svc_v0",
        "flags",
        "1",
    ]);

    let dp = root.load();
    let mut replaced = dp.report().replaced_maps.clone();
    replaced.sort();
    assert_eq!(
        replaced,
        vec![
            names::LB4_BACKENDS.to_string(),
            names::LB4_REVNAT.to_string()
        ]
    );
    assert_eq!(
        dp.report().removed_stale_maps,
        vec!["weir_lb4_svc_v0".to_string()]
    );
    assert!(!root.path().join("weir_lb4_svc_v0").exists());
    let specs = dp.map_specs();
    let info = |name: &str| {
        let out = bpftool(&["-j", "map", "show", "pinned", &pin(name)]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            v["bytes_value"].as_u64().unwrap(),
            v["max_entries"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        info(names::LB4_BACKENDS),
        (12, u64::from(specs[names::LB4_BACKENDS].max_entries))
    );
    assert_eq!(
        info(names::LB4_REVNAT),
        (8, u64::from(specs[names::LB4_REVNAT].max_entries))
    );
    assert_eq!(
        dp.maps().revnat.get(&7, 0).unwrap(),
        Lb4RevNat {
            address: u32::from_ne_bytes([10, 96, 0, 7]),
            port: 80u16.to_be(),
            pad: 0,
        },
        "the entry survived the resize"
    );
}

#[test]
fn endpoints_and_node_config_round_trip() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    let ip = Ipv4Addr::new(10, 244, 1, 9);
    let info = EndpointInfo {
        ifindex: 42,
        flags: ep_flags::LOCAL_POD,
        mac: [2, 0, 0, 0, 0, 9],
        node_mac: [2, 0, 0, 0, 0, 1],
        ..EndpointInfo::default()
    };
    dp.upsert_endpoint(ip, &info).unwrap();
    dp.upsert_endpoint(ip, &info).unwrap();
    assert_eq!(dp.endpoints().unwrap(), vec![(ip, info)]);
    let raw = dp
        .maps()
        .endpoints
        .get(&u32::from_ne_bytes([10, 244, 1, 9]), 0)
        .unwrap();
    assert_eq!(raw, info);
    assert!(dp.remove_endpoint(ip).unwrap());
    assert!(!dp.remove_endpoint(ip).unwrap());
    assert!(dp.endpoints().unwrap().is_empty());

    let config = DatapathConfig {
        node_ipv4: u32::from_ne_bytes([192, 168, 100, 11]),
        ..DatapathConfig::default()
    };
    dp.set_node_config(&config).unwrap();
    drop(dp);
    let dp = root.load();
    assert_eq!(dp.node_config().unwrap(), config, "survives a restart");
}

#[test]
fn metrics_cover_every_map_and_reason() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&two_services());
    let metrics = dp.metrics().unwrap();
    let names_seen: Vec<&str> = metrics.maps.iter().map(|m| m.name.as_str()).collect();
    for name in names::ALL {
        assert!(names_seen.contains(&name), "{name}");
    }
    let fill = |name: &str| {
        metrics
            .maps
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .entries
    };
    assert_eq!(fill(names::LB4_SERVICES), 7);
    assert_eq!(fill(names::LB4_BACKENDS), 5);
    assert_eq!(fill(names::LB4_REVNAT), 2);
    assert_eq!(fill(names::CT4), 0);
    assert_eq!(
        metrics.verdicts.len(),
        weir_common::metrics::Direction::ALL.len() * weir_common::DropReason::ALL.len()
    );
    assert!(metrics.verdicts.iter().all(|(_, v)| v.packets == 0));
    assert_eq!(metrics.writer.applies, 1);
    assert_eq!(metrics.writer.writes, 5 + 2 + 7);
}

#[test]
fn a_second_agent_on_the_same_pins_is_refused() {
    require_root_and_object();
    let root = TestBpffs::new();
    let first = root.load();
    let second = Datapath::load(&root.options());
    let err = second.err().expect("the pin root is locked").to_string();
    assert!(err.contains("another agent"), "{err}");
    drop(first);
    root.load();
}
