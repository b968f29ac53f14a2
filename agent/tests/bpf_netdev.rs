//! BPF_PROG_TEST_RUN tests of the uplink programs: NodePort DNAT from
//! outside, SNAT to the node for externalTrafficPolicy=Cluster with a
//! backend on another node and the reverse NAT of its replies (sent out
//! through the FIB), externalTrafficPolicy=Local, scopes and rejects.
//!
//! Each test builds a small node in its own network namespace: `eth0` (a
//! veth) with the node IP, static neighbours for another node and for an
//! outside client, a route to the other node's pod CIDR, and forwarding on.
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::net::Ipv4Addr;

use bpf_support::*;
use weir_common::{
    DropReason,
    config::DatapathConfig,
    ct::{CT_DIR_FORWARD, CT_DIR_REPLY, ct_flags, nat_flags},
    lb::{SCOPE_EXTERNAL, SCOPE_INTERNAL, svc_flags},
    metrics::Direction,
    programs::{FROM_NETDEV, FROM_POD, TO_NETDEV},
};

const NODE_IP: &str = "192.168.77.2";
const OTHER_NODE: &str = "192.168.77.3";
const OTHER_NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x03];
const OUTSIDE: &str = "192.168.77.100";
const OUTSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x64];
const REMOTE_POD: &str = "10.244.2.5";
const LOCAL_POD: &str = "10.244.1.9";
const NODE_PORT: u16 = 30080;

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The node's uplink; returns its ifindex and MAC.
fn node() -> (u32, [u8; 6]) {
    ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "fabric0",
    ]);
    ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]);
    ip(&["link", "set", "eth0", "up"]);
    ip(&["link", "set", "fabric0", "up"]);
    for (peer, mac) in [
        (OTHER_NODE, "02:00:00:00:77:03"),
        (OUTSIDE, "02:00:00:00:77:64"),
    ] {
        ip(&[
            "neigh",
            "replace",
            peer,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }
    ip(&["route", "add", "10.244.2.0/24", "via", OTHER_NODE]);
    sysctl("net/ipv4/conf/all/forwarding", "1");
    sysctl("net/ipv4/conf/eth0/forwarding", "1");
    (ifindex("eth0"), mac_of("eth0"))
}

/// A frame as it arrives on the node's eth0 from `from_mac`.
fn arriving(packet: Builder, from_mac: [u8; 6], eth0_mac: [u8; 6]) -> Vec<u8> {
    let mut frame = packet.build();
    frame[0..6].copy_from_slice(&eth0_mac);
    frame[6..12].copy_from_slice(&from_mac);
    frame
}

fn node_port(flags: u16) -> Service {
    Service::new(NODE_IP, NODE_PORT, TCP, 20).flags(svc_flags::NODE_PORT | flags)
}

fn config() -> DatapathConfig {
    DatapathConfig {
        node_ipv4: be_addr(addr(NODE_IP)),
        ..DatapathConfig::default()
    }
}

#[test]
fn nodeport_to_another_node_is_snated_and_its_replies_reverse_nated() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(0).backends(&[Backend::new(1, REMOTE_POD, 8080)]));

        let syn = Builder::tcp((OUTSIDE, 50000), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);

        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "forwarded by the datapath itself"
        );
        let out = run.view();
        assert_eq!(out.dst(), (addr(REMOTE_POD), 8080));
        let (snat_addr, snat_port) = out.src();
        assert_eq!(snat_addr, addr(NODE_IP), "SNAT to the node for ETP=Cluster");
        assert!((61_000..=65_535).contains(&snat_port), "port {snat_port}");
        assert_eq!(out.dst_mac(), OTHER_NODE_MAC, "next hop: the other node");
        assert_eq!(out.src_mac(), eth0_mac);
        assert_eq!(out.ttl(), 63);
        out.assert_checksums();

        let ct = dp.ct();
        assert_eq!(ct.len(), 2, "{ct:#?}");
        let forward = ct[&CtKey::new((OUTSIDE, 50000), (NODE_IP, NODE_PORT), TCP, CT_DIR_FORWARD)];
        assert_eq!(forward.nat_flags, nat_flags::DNAT | nat_flags::SNAT);
        assert_eq!(forward.snat_port, be_port(snat_port));
        assert_ne!(forward.flags & ct_flags::FROM_NETDEV, 0);
        assert!(ct.contains_key(&CtKey::new(
            (REMOTE_POD, 8080),
            (NODE_IP, snat_port),
            TCP,
            CT_DIR_REPLY
        )));

        // The other node's reply comes back to the SNAT port.
        let syn_ack = Builder::tcp((REMOTE_POD, 8080), (NODE_IP, snat_port), SYN | ACK);
        let run = dp.run_on(
            FROM_NETDEV,
            &arriving(syn_ack, OTHER_NODE_MAC, eth0_mac),
            eth0,
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(
            out.src(),
            (addr(NODE_IP), NODE_PORT),
            "the client sees its NodePort"
        );
        assert_eq!(out.dst(), (addr(OUTSIDE), 50000));
        assert_eq!(out.dst_mac(), OUTSIDE_MAC);
        out.assert_checksums();

        // Later client packets reuse the flow's SNAT port.
        let ack = Builder::tcp((OUTSIDE, 50000), (NODE_IP, NODE_PORT), ACK);
        let run = dp.run_on(FROM_NETDEV, &arriving(ack, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.view().src(), (addr(NODE_IP), snat_port));
        assert_eq!(dp.ct().len(), 2);
        assert_eq!(dp.count(Direction::FromNetdev, DropReason::Forwarded), 3);
    });
}

#[test]
fn udp_nodeport_to_another_node_round_trips() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(
            &Service::new(NODE_IP, NODE_PORT, UDP, 21)
                .flags(svc_flags::NODE_PORT)
                .backends(&[Backend::new(1, REMOTE_POD, 5353)]),
        );
        let query = Builder::udp((OUTSIDE, 50001), (NODE_IP, NODE_PORT));
        let run = dp.run_on(FROM_NETDEV, &arriving(query, OUTSIDE_MAC, eth0_mac), eth0);
        let out = run.view();
        assert_eq!(out.dst(), (addr(REMOTE_POD), 5353));
        out.assert_checksums();
        let snat_port = out.sport();
        let answer = Builder::udp((REMOTE_POD, 5353), (NODE_IP, snat_port));
        let run = dp.run_on(
            FROM_NETDEV,
            &arriving(answer, OTHER_NODE_MAC, eth0_mac),
            eth0,
        );
        let out = run.view();
        assert_eq!(out.src(), (addr(NODE_IP), NODE_PORT));
        assert_eq!(out.dst(), (addr(OUTSIDE), 50001));
        out.assert_checksums();
    });
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(
            &node_port(svc_flags::LOCAL_ONLY).backends(&[Backend::new(1, LOCAL_POD, 8080).local()]),
        );
        let pod_mac = [0x0a, 0, 0, 0, 0, 0x09];
        let veth_mac = [0x0e, 0, 0, 0, 0, 0x09];
        // On `lo`, where the reply below is run: from-pod accepts only the
        // pod's address from its own veth.
        dp.endpoint(LOCAL_POD, LO_IFINDEX, pod_mac, veth_mac);

        let syn = Builder::tcp((OUTSIDE, 50002), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "delivered to the pod's veth");
        let out = run.view();
        assert_eq!(
            out.src(),
            (addr(OUTSIDE), 50002),
            "the backend sees the client"
        );
        assert_eq!(out.dst(), (addr(LOCAL_POD), 8080));
        assert_eq!((out.dst_mac(), out.src_mac()), (pod_mac, veth_mac));
        out.assert_checksums();

        // The pod's reply leaves through the FIB with the NodePort source.
        let syn_ack = Builder::tcp((LOCAL_POD, 8080), (OUTSIDE, 50002), SYN | ACK).build();
        let run = dp.run(FROM_POD, &syn_ack);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(out.src(), (addr(NODE_IP), NODE_PORT));
        assert_eq!(out.dst(), (addr(OUTSIDE), 50002));
        assert_eq!(out.dst_mac(), OUTSIDE_MAC);
        out.assert_checksums();
    });
}

#[test]
fn external_traffic_policy_local_without_local_backends_drops() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(svc_flags::LOCAL_ONLY));
        let syn = Builder::tcp((OUTSIDE, 50003), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(
            dp.count(Direction::FromNetdev, DropReason::NoLocalBackend),
            1
        );
    });
}

#[test]
fn nodeport_without_backends_rejects_back_out_of_the_uplink() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.service(&node_port(0));
        let syn = Builder::tcp((OUTSIDE, 50004), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let rst = run.view();
        assert_eq!(rst.src(), (addr(NODE_IP), NODE_PORT));
        assert_eq!(rst.dst(), (addr(OUTSIDE), 50004));
        assert_eq!(rst.tcp_flags(), RST | ACK);
        assert_eq!((rst.dst_mac(), rst.src_mac()), (OUTSIDE_MAC, eth0_mac));
        rst.assert_checksums();
        assert_eq!(dp.count(Direction::FromNetdev, DropReason::NoBackend), 1);
    });
}

#[test]
fn internal_traffic_uses_the_internal_scope_of_a_two_scope_service() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        // ETP=Local with no local endpoint: external drops, internal (pods
        // and the node) uses every endpoint.
        dp.service(&node_port(svc_flags::LOCAL_ONLY | svc_flags::TWO_SCOPES).scope(SCOPE_EXTERNAL));
        let mut internal = node_port(svc_flags::TWO_SCOPES)
            .scope(SCOPE_INTERNAL)
            .backends(&[Backend::new(1, REMOTE_POD, 8080)]);
        internal.rev_nat_index = 22;
        dp.service(&internal);

        let syn = Builder::tcp((OUTSIDE, 50005), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(
            run.verdict, TC_ACT_SHOT,
            "outside never uses the internal scope"
        );
        assert_eq!(
            dp.count(Direction::FromNetdev, DropReason::NoLocalBackend),
            1
        );

        let syn = Builder::tcp(("10.244.1.3", 40000), (NODE_IP, NODE_PORT), SYN).build();
        let run = dp.run(FROM_POD, &syn);
        assert_eq!(run.verdict, TC_ACT_OK);
        let out = run.view();
        assert_eq!(out.dst(), (addr(REMOTE_POD), 8080));
        assert_eq!(out.src(), (addr("10.244.1.3"), 40000), "no SNAT for pods");
        out.assert_checksums();
    });
}

#[test]
fn a_single_scope_frontend_answers_both_kinds_of_traffic() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        // Written in the internal scope without TWO_SCOPES: found from
        // outside too.
        dp.service(
            &node_port(0)
                .scope(SCOPE_INTERNAL)
                .backends(&[Backend::new(1, REMOTE_POD, 8080)]),
        );
        let syn = Builder::tcp((OUTSIDE, 50006), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.view().dst(), (addr(REMOTE_POD), 8080));
        let syn = Builder::tcp(("10.244.1.3", 40001), (NODE_IP, NODE_PORT), SYN).build();
        assert_eq!(
            dp.run(FROM_POD, &syn).view().dst(),
            (addr(REMOTE_POD), 8080)
        );
    });
}

#[test]
fn load_balancer_ip_without_a_node_address_cannot_snat() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.service(
            &Service::new("203.0.113.10", 80, TCP, 23)
                .flags(svc_flags::LOAD_BALANCER)
                .backends(&[Backend::new(1, REMOTE_POD, 8080)]),
        );
        let syn = Builder::tcp((OUTSIDE, 50007), ("203.0.113.10", 80), SYN);
        let run = dp.run_on(
            FROM_NETDEV,
            &arriving(syn.clone(), OUTSIDE_MAC, eth0_mac),
            eth0,
        );
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(
            dp.count(Direction::FromNetdev, DropReason::SnatNoAddress),
            1
        );

        dp.config(config());
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        assert_eq!(run.view().src().0, addr(NODE_IP));
        run.view().assert_checksums();
    });
}

#[test]
fn a_backend_without_a_route_is_dropped_with_its_reason() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(0).backends(&[Backend::new(1, "10.250.0.1", 8080)]));
        let syn = Builder::tcp((OUTSIDE, 50008), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(dp.count(Direction::FromNetdev, DropReason::NoRoute), 1);
    });
}

#[test]
fn an_unresolved_next_hop_is_left_to_the_neighbour_subsystem() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        ip(&["route", "add", "10.244.3.0/24", "via", "192.168.77.4"]);
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(0).backends(&[Backend::new(1, "10.244.3.5", 8080)]));
        let syn = Builder::tcp((OUTSIDE, 50009), (NODE_IP, NODE_PORT), SYN);
        let run = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "bpf_redirect_neigh");
        let out = run.view();
        assert_eq!(out.dst(), (addr("10.244.3.5"), 8080));
        out.assert_checksums();
    });
}

#[test]
fn the_nodes_own_traffic_to_a_cluster_ip_is_translated_on_egress() {
    in_netns(|| {
        let (eth0, _) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(
            &Service::new("10.96.0.20", 80, TCP, 24).backends(&[Backend::new(1, REMOTE_POD, 8080)]),
        );
        let syn = Builder::tcp((NODE_IP, 45000), ("10.96.0.20", 80), SYN).build();
        let run = dp.run_on(TO_NETDEV, &syn, eth0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(out.src(), (addr(NODE_IP), 45000));
        assert_eq!(out.dst(), (addr(REMOTE_POD), 8080));
        assert_eq!(out.dst_mac(), OTHER_NODE_MAC);
        assert_eq!(out.ttl(), 64, "not a forwarded hop");
        out.assert_checksums();

        // The reply from the other node is reverse-NATed for the host stack.
        let syn_ack = Builder::tcp((REMOTE_POD, 8080), (NODE_IP, 45000), SYN | ACK).build();
        let run = dp.run_on(FROM_NETDEV, &syn_ack, eth0);
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(run.view().src(), (addr("10.96.0.20"), 80));
        run.view().assert_checksums();
        assert_eq!(dp.count(Direction::ToNetdev, DropReason::Forwarded), 1);
    });
}

#[test]
fn forwarded_and_already_translated_traffic_is_not_translated_again() {
    in_netns(|| {
        let (eth0, _) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(0).backends(&[Backend::new(1, REMOTE_POD, 8080)]));
        // A pod's packet to a backend on another node, leaving eth0.
        let packet = Builder::tcp(("10.244.1.3", 40002), (REMOTE_POD, 8080), ACK).build();
        let run = dp.run_on(TO_NETDEV, &packet, eth0);
        assert_eq!((run.verdict, &run.packet), (TC_ACT_OK, &packet));
        assert!(dp.ct().is_empty());
    });
}

#[test]
fn a_routers_icmp_error_about_a_snated_flow_reaches_the_client() {
    in_netns(|| {
        let (eth0, eth0_mac) = node();
        let mut dp = Datapath::load();
        dp.config(config());
        dp.service(&node_port(0).backends(&[Backend::new(1, REMOTE_POD, 8080)]));
        let syn = Builder::tcp((OUTSIDE, 50010), (NODE_IP, NODE_PORT), SYN);
        let sent = dp.run_on(FROM_NETDEV, &arriving(syn, OUTSIDE_MAC, eth0_mac), eth0);
        // The other node cannot forward it as is: fragmentation needed.
        let error = Builder::icmp_error(OTHER_NODE, NODE_IP, 3, 4, &sent.packet[14..]);

        let run = dp.run_on(
            FROM_NETDEV,
            &arriving(error, OTHER_NODE_MAC, eth0_mac),
            eth0,
        );

        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(out.saddr(), addr(OTHER_NODE), "a router speaks for itself");
        assert_eq!(out.daddr(), addr(OUTSIDE));
        assert_eq!(out.dst_mac(), OUTSIDE_MAC);
        out.assert_checksums();
        let quoted = out.quoted();
        let quoted = View(&quoted);
        assert_eq!(quoted.src(), (addr(OUTSIDE), 50010));
        assert_eq!(quoted.dst(), (addr(NODE_IP), NODE_PORT));
        quoted.assert_ip_csum();
    });
}
