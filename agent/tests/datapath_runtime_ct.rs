//! Conntrack on the real maps: the non-TCP flush when a backend leaves a
//! service, GC expiry per protocol and TCP state with fake timestamps, the
//! GC's clock against entries the datapath itself created, and rev-NAT
//! entries kept while flows still name them.
//! Needs root and a binary built with the eBPF object (`cargo xtask test`).
#![allow(clippy::unwrap_used)]

mod datapath_runtime_support;

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use datapath_runtime_support::*;
use weir_agent::{
    datapath::{
        Datapath,
        ct_gc::monotonic_now_ns,
        keys::{BackendKey, FrontendKey, addr_to_abi},
        netns::in_netns,
    },
    plan::Protocol,
};
use weir_common::{
    ct::{CT_DIR_FORWARD, Ct4Entry, Ct4Key, nat_flags, tcp_state},
    endpoint::{EndpointInfo, ep_flags},
    lb::{Lb4AffinityKey, Lb4AffinityValue},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const SEC: u64 = 1_000_000_000;

/// Inserts both entries of a flow from `client_port` to `vip:port` that
/// the datapath translated to backend `.last:bport`.
#[allow(clippy::too_many_arguments)]
fn insert_flow(
    dp: &mut Datapath,
    proto: u8,
    client_port: u16,
    port: u16,
    last: u8,
    bport: u16,
    last_seen_ns: u64,
    state: u8,
) -> Vec<Ct4Key> {
    let rev_nat_index = dp
        .writer()
        .rev_nat_index(&FrontendKey {
            address: VIP,
            port,
            proto,
            scope: 0,
        })
        .unwrap_or(0);
    let backend_address = Ipv4Addr::new(10, 244, 1, last);
    let backend_id = dp
        .writer()
        .backend_id(&BackendKey {
            address: backend_address,
            port: bport,
            proto,
        })
        .unwrap_or(0);
    let record = Ct4Entry {
        last_seen_ns,
        created_ns: last_seen_ns,
        orig_saddr: addr_to_abi(Ipv4Addr::new(10, 244, 2, 7)),
        orig_daddr: addr_to_abi(VIP),
        orig_sport: client_port.to_be(),
        orig_dport: port.to_be(),
        backend_addr: addr_to_abi(backend_address),
        backend_port: bport.to_be(),
        backend_id,
        rev_nat_index,
        nat_flags: nat_flags::DNAT,
        tcp_state: state,
        proto,
        ..Ct4Entry::default()
    };
    let keys = vec![record.forward_key(), record.reply_key()];
    for key in &keys {
        dp.maps_mut().ct.insert(key, record, 0).unwrap();
    }
    keys
}

fn present(dp: &Datapath, keys: &[Ct4Key]) -> Vec<bool> {
    keys.iter()
        .map(|k| dp.maps().ct.get(k, 0).is_ok())
        .collect()
}

fn services(backends_udp: Vec<u8>, backends_tcp: Vec<u8>) -> weir_agent::plan::DesiredState {
    let mut dns = frontend(
        "dns",
        VIP,
        53,
        Protocol::Udp,
        backends_udp.into_iter().map(|b| backend(b, 5353)).collect(),
    );
    dns.affinity_timeout = Some(30);
    plan(vec![
        dns,
        frontend(
            "web",
            VIP,
            80,
            Protocol::Tcp,
            backends_tcp.into_iter().map(|b| backend(b, 8080)).collect(),
        ),
    ])
}

#[test]
fn udp_flows_of_a_removed_backend_are_flushed_and_tcp_flows_kept() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&services(vec![2, 3], vec![2, 3]));
    let now = monotonic_now_ns();
    let udp_to_2 = insert_flow(&mut dp, 17, 1000, 53, 2, 5353, now, tcp_state::NONE);
    let udp_to_3 = insert_flow(&mut dp, 17, 1001, 53, 3, 5353, now, tcp_state::NONE);
    let tcp_to_2 = insert_flow(&mut dp, 6, 1002, 80, 2, 8080, now, tcp_state::ESTABLISHED);
    let dns_rev = dp
        .writer()
        .rev_nat_index(&FrontendKey {
            address: VIP,
            port: 53,
            proto: 17,
            scope: 0,
        })
        .unwrap();
    let id_2 = dp
        .writer()
        .backend_id(&BackendKey {
            address: Ipv4Addr::new(10, 244, 1, 2),
            port: 5353,
            proto: 17,
        })
        .unwrap();
    let affinity = |client| Lb4AffinityKey {
        client,
        rev_nat_index: dns_rev,
        pad: 0,
    };
    let pinned = Lb4AffinityValue {
        last_used_ns: now,
        backend_id: id_2,
        pad: 0,
    };
    dp.maps_mut()
        .affinity
        .insert(affinity(1), pinned, 0)
        .unwrap();
    dp.maps_mut()
        .affinity
        .insert(
            affinity(2),
            Lb4AffinityValue {
                backend_id: id_2 + 1,
                ..pinned
            },
            0,
        )
        .unwrap();

    // Backend .2 leaves both services.
    let stats = dp.apply(&services(vec![3], vec![3]));
    assert_eq!(stats.ct_flushed, 2, "{stats:?}");
    assert_eq!(stats.affinity_flushed, 1);
    assert_eq!(
        present(&dp, &udp_to_2),
        [false, false],
        "UDP to the removed backend: flushed"
    );
    assert_eq!(
        present(&dp, &udp_to_3),
        [true, true],
        "UDP to a kept backend stays"
    );
    assert_eq!(
        present(&dp, &tcp_to_2),
        [true, true],
        "TCP finishes on its own"
    );
    assert!(dp.maps().affinity.get(&affinity(1), 0).is_err());
    assert!(dp.maps().affinity.get(&affinity(2), 0).is_ok());

    // The whole UDP service goes: its remaining flows are flushed too.
    let stats = dp.apply(&plan(vec![frontend(
        "web",
        VIP,
        80,
        Protocol::Tcp,
        vec![backend(3, 8080)],
    )]));
    assert_eq!(stats.ct_flushed, 2);
    assert_eq!(present(&dp, &udp_to_3), [false, false]);
    assert_eq!(present(&dp, &tcp_to_2), [true, true]);
    let metrics = dp.metrics().unwrap();
    assert_eq!(metrics.ct_flushed_total, 4);
}

#[test]
fn gc_expires_by_protocol_and_tcp_state() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&services(vec![2], vec![2]));
    let t0 = 1_000_000 * SEC;
    let udp_idle_61 = insert_flow(&mut dp, 17, 1, 53, 2, 5353, t0 - 61 * SEC, tcp_state::NONE);
    let udp_idle_59 = insert_flow(&mut dp, 17, 2, 53, 2, 5353, t0 - 59 * SEC, tcp_state::NONE);
    let tcp_est_5h = insert_flow(
        &mut dp,
        6,
        3,
        80,
        2,
        8080,
        t0 - 5 * 3600 * SEC,
        tcp_state::ESTABLISHED,
    );
    let tcp_est_7h = insert_flow(
        &mut dp,
        6,
        4,
        80,
        2,
        8080,
        t0 - 7 * 3600 * SEC,
        tcp_state::ESTABLISHED,
    );
    let tcp_syn_61 = insert_flow(&mut dp, 6, 5, 80, 2, 8080, t0 - 61 * SEC, tcp_state::SYN);
    let tcp_fin_11 = insert_flow(&mut dp, 6, 6, 80, 2, 8080, t0 - 11 * SEC, tcp_state::FIN);
    let tcp_fin_9 = insert_flow(&mut dp, 6, 7, 80, 2, 8080, t0 - 9 * SEC, tcp_state::FIN);

    let stats = dp.ct_gc_at(t0).unwrap();
    assert_eq!(stats.entries, 14);
    assert_eq!(stats.entries_by_proto.get(&6), Some(&10));
    assert_eq!(stats.entries_by_proto.get(&17), Some(&4));
    assert_eq!(stats.expired_by_proto.get(&17), Some(&2));
    assert_eq!(stats.expired_by_proto.get(&6), Some(&6));
    assert_eq!(stats.deleted, 8);
    assert!(!stats.truncated);
    assert_eq!(present(&dp, &udp_idle_61), [false, false]);
    assert_eq!(present(&dp, &udp_idle_59), [true, true]);
    assert_eq!(present(&dp, &tcp_est_5h), [true, true]);
    assert_eq!(present(&dp, &tcp_est_7h), [false, false]);
    assert_eq!(present(&dp, &tcp_syn_61), [false, false]);
    assert_eq!(present(&dp, &tcp_fin_11), [false, false]);
    assert_eq!(present(&dp, &tcp_fin_9), [true, true]);
    let metrics = dp.metrics().unwrap();
    assert_eq!(metrics.ct_expired_total, 8);
    assert_eq!(metrics.ct_entries_by_proto.get(&6), Some(&10));
    let ct_fill = metrics
        .maps
        .iter()
        .find(|m| m.name == weir_common::maps::CT4)
        .unwrap();
    assert_eq!(ct_fill.entries, 6);
}

#[test]
fn rev_nat_of_a_removed_service_stays_while_flows_name_it() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    dp.apply(&services(vec![2], vec![2]));
    let now = monotonic_now_ns();
    let web_rev = dp
        .writer()
        .rev_nat_index(&FrontendKey {
            address: VIP,
            port: 80,
            proto: 6,
            scope: 0,
        })
        .unwrap();
    let tcp = insert_flow(&mut dp, 6, 9, 80, 2, 8080, now, tcp_state::ESTABLISHED);
    dp.apply(&plan(vec![]));
    assert_eq!(present(&dp, &tcp), [true, true]);
    dp.ct_gc_at(now + SEC).unwrap();
    assert!(
        dp.maps().revnat.get(&web_rev, 0).is_ok(),
        "an open flow still needs it"
    );
    assert_eq!(
        dp.maps().revnat.keys().count(),
        1,
        "the unreferenced one went"
    );
    dp.ct_gc_at(now + 7 * 3600 * SEC).unwrap();
    assert_eq!(present(&dp, &tcp), [false, false]);
    assert!(
        dp.maps().revnat.get(&web_rev, 0).is_err(),
        "released with its last flow"
    );
}

#[test]
fn gc_runs_on_the_datapath_clock_and_flushes_its_entries() {
    require_root_and_object();
    let root = TestBpffs::new();
    let net = TestNet::new();
    let mut dp = root.load();
    let ifindex = net.host_ifindex();
    in_netns(net.node.path(), || dp.attach_pod(ifindex).unwrap()).unwrap();
    let info = EndpointInfo {
        ifindex,
        flags: ep_flags::LOCAL_POD,
        ..EndpointInfo::default()
    };
    dp.upsert_endpoint(POD_IP.parse().unwrap(), &info).unwrap();
    net.pod
        .ip(&["route", "add", "default", "via", NODE_IP])
        .unwrap();

    // A UDP service whose backend is a socket on the node.
    let server = in_netns(net.node.path(), || UdpSocket::bind((NODE_IP, 0)))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let backend_port = server.local_addr().unwrap().port();
    let mut node_backend = backend(0, backend_port);
    node_backend.address = NODE_IP.parse().unwrap();
    let service = plan(vec![frontend(
        "echo",
        VIP,
        7,
        Protocol::Udp,
        vec![node_backend],
    )]);
    dp.apply(&service);

    let client = in_netns(net.pod.path(), || UdpSocket::bind((POD_IP, 0)))
        .unwrap()
        .unwrap();
    let client_port = client.local_addr().unwrap().port();
    client.send_to(b"hello", (VIP, 7)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello", "DNATed to the backend");
    assert_eq!(from.port(), client_port);

    // The datapath created the flow's entries, stamped with its clock.
    let forward = Ct4Key {
        saddr: addr_to_abi(POD_IP.parse().unwrap()),
        daddr: addr_to_abi(VIP),
        sport: client_port.to_be(),
        dport: 7u16.to_be(),
        proto: 17,
        direction: CT_DIR_FORWARD,
        pad: [0; 2],
    };
    let entry = dp.maps().ct.get(&forward, 0).unwrap();
    assert_eq!(entry.backend_addr, addr_to_abi(NODE_IP.parse().unwrap()));
    assert!(dp.maps().ct.get(&entry.reply_key(), 0).is_ok());
    let now = monotonic_now_ns();
    assert!(
        entry.last_seen_ns <= now && now - entry.last_seen_ns < 60 * SEC,
        "same clock"
    );

    // A real GC pass keeps the fresh flow; 61 s later it expires.
    let stats = dp.ct_gc().unwrap();
    assert_eq!(stats.expired(), 0);
    assert_eq!(stats.entries_by_proto.get(&17), Some(&2));
    let stats = dp.ct_gc_at(entry.last_seen_ns + 61 * SEC).unwrap();
    assert_eq!(stats.deleted, 2);
    assert!(dp.maps().ct.get(&forward, 0).is_err());

    // A new flow, then the backend leaves: its entries are flushed at once.
    client.send_to(b"again", (VIP, 7)).unwrap();
    server.recv_from(&mut buf).unwrap();
    assert!(dp.maps().ct.get(&forward, 0).is_ok());
    let stats = dp.apply(&plan(vec![frontend("echo", VIP, 7, Protocol::Udp, vec![])]));
    assert_eq!(stats.ct_flushed, 2);
    assert!(dp.maps().ct.get(&forward, 0).is_err());
}
