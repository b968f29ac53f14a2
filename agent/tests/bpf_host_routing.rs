//! BPF_PROG_TEST_RUN tests of host routing: a pod's translated packet for a
//! backend on another node is forwarded by `weir_from_pod` itself (FIB
//! lookup, TTL - 1, MAC rewrite, redirect to the uplink), and every packet
//! the stack would treat differently from a plain forward is left to it
//! (`TC_ACT_OK`, translated but otherwise untouched).
//!
//! Each test builds a node in its own network namespace: `eth0` (a veth)
//! with the node IP and a permanent neighbour for another node, a route to
//! that node's pod CIDR, forwarding on, and a pod's host-side veth `lxc0`
//! registered as the pod's endpoint.
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::net::Ipv4Addr;

use bpf_support::*;
use weir_common::{DropReason, metrics::Direction, programs::FROM_POD};

const NODE_IP: &str = "192.168.77.2";
const OTHER_NODE: &str = "192.168.77.3";
const OTHER_NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x03];
const POD: &str = "10.244.1.9";
const REMOTE_POD: &str = "10.244.2.5";
const VIP: &str = "10.96.0.50";

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

struct Node {
    eth0: u32,
    eth0_mac: [u8; 6],
    lxc0: u32,
    lxc0_mac: [u8; 6],
}

fn node() -> Node {
    ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "fabric0",
    ]);
    ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]);
    ip(&["link", "set", "eth0", "up"]);
    ip(&["link", "set", "fabric0", "up"]);
    ip(&[
        "neigh",
        "replace",
        OTHER_NODE,
        "lladdr",
        "02:00:00:00:77:03",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    ip(&["route", "add", "10.244.2.0/24", "via", OTHER_NODE]);
    ip(&[
        "link", "add", "lxc0", "type", "veth", "peer", "name", "peer0",
    ]);
    ip(&["link", "set", "lxc0", "up"]);
    ip(&["link", "set", "peer0", "up"]);
    ip(&["route", "add", &format!("{POD}/32"), "dev", "lxc0"]);
    sysctl("net/ipv4/conf/all/forwarding", "1");
    sysctl("net/ipv4/conf/eth0/forwarding", "1");
    sysctl("net/ipv4/conf/lxc0/forwarding", "1");
    Node {
        eth0: ifindex("eth0"),
        eth0_mac: mac_of("eth0"),
        lxc0: ifindex("lxc0"),
        lxc0_mac: mac_of("lxc0"),
    }
}

/// A datapath with the pod registered on `lxc0` and a ClusterIP whose only
/// backend is on the other node.
fn datapath(node: &Node) -> Datapath {
    let mut dp = Datapath::load();
    dp.endpoint(POD, node.lxc0, CLIENT_MAC, node.lxc0_mac);
    dp.service(&Service::new(VIP, 80, TCP, 30).backends(&[Backend::new(1, REMOTE_POD, 8080)]));
    dp
}

/// The frame as the pod sends it to its gateway (the host side of its veth).
fn sent(packet: &Builder, node: &Node) -> Vec<u8> {
    let mut frame = packet.build();
    frame[0..6].copy_from_slice(&node.lxc0_mac);
    frame
}

/// Rewrites a header byte of a built frame and fixes the IP checksum.
fn with_ip_byte(mut frame: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    frame[14 + at] = value;
    let hlen = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let check = checksum(&frame[14..14 + hlen]);
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    frame
}

fn syn(port: u16) -> Builder {
    Builder::tcp((POD, port), (VIP, 80), SYN)
}

/// The stack's path: translated, TTL and MACs untouched.
fn assert_left_to_the_stack(run: &Run, node: &Node, ttl: u8) {
    assert_eq!(run.verdict, TC_ACT_OK, "left to the stack");
    let out = run.view();
    assert_eq!(out.dst(), (addr(REMOTE_POD), 8080), "still translated");
    assert_eq!(out.ttl(), ttl, "the stack decrements the TTL");
    assert_eq!(out.dst_mac(), node.lxc0_mac);
    out.assert_checksums();
}

#[test]
fn a_new_flow_to_a_remote_backend_is_routed_to_the_uplink() {
    in_netns(|| {
        let node = node();
        let mut dp = datapath(&node);

        let run = dp.run_on(FROM_POD, &sent(&syn(40000), &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "forwarded by the program");
        let out = run.view();
        assert_eq!(out.src(), (addr(POD), 40000));
        assert_eq!(out.dst(), (addr(REMOTE_POD), 8080));
        assert_eq!(out.dst_mac(), OTHER_NODE_MAC, "next hop: the other node");
        assert_eq!(out.src_mac(), node.eth0_mac, "from the uplink");
        assert_eq!(out.ttl(), 63);
        out.assert_checksums();

        // Later packets of the flow take the same way.
        let ack = Builder::tcp((POD, 40000), (VIP, 80), ACK).seq_ack(1001, 5001);
        let run = dp.run_on(FROM_POD, &sent(&ack, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(out.dst(), (addr(REMOTE_POD), 8080));
        assert_eq!(out.ttl(), 63);
        out.assert_checksums();
        assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 2);
    });
}

#[test]
fn an_unresolved_next_hop_goes_through_redirect_neigh() {
    in_netns(|| {
        let node = node();
        ip(&["route", "add", "10.244.3.0/24", "via", "192.168.77.4"]);
        let mut dp = datapath(&node);
        dp.service(&Service::new(VIP, 81, TCP, 31).backends(&[Backend::new(
            2,
            "10.244.3.5",
            8080,
        )]));
        let syn = Builder::tcp((POD, 40001), (VIP, 81), SYN);
        let run = dp.run_on(FROM_POD, &sent(&syn, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "bpf_redirect_neigh");
        let out = run.view();
        assert_eq!(out.dst(), (addr("10.244.3.5"), 8080));
        assert_eq!(out.ttl(), 63);
        out.assert_checksums();
    });
}

#[test]
fn a_source_other_than_the_pods_own_address_is_dropped_as_spoofed() {
    in_netns(|| {
        let node = node();
        let mut dp = datapath(&node);
        dp.auto_pods = false;
        // Another address behind the same veth.
        let spoofed = Builder::tcp(("10.244.1.77", 40002), (VIP, 80), SYN);
        let run = dp.run_on(FROM_POD, &sent(&spoofed, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_SHOT);
        // The pod's address, arriving on another device.
        let run = dp.run_on(FROM_POD, &sent(&syn(40003), &node), node.eth0);
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(dp.count(Direction::FromPod, DropReason::SpoofedSource), 2);
        assert!(dp.ct().is_empty(), "a spoofed packet opens no flow");
    });
}

#[test]
fn a_frame_not_addressed_to_the_gateway_is_left_to_the_stack() {
    in_netns(|| {
        let node = node();
        let mut dp = datapath(&node);
        let mut frame = syn(40004).build();
        frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0x55, 0x55]);
        let run = dp.run_on(FROM_POD, &frame, node.lxc0);
        assert_eq!(
            run.verdict, TC_ACT_OK,
            "PACKET_OTHERHOST: the stack drops it"
        );
        assert_eq!(run.view().ttl(), 64);
    });
}

#[test]
fn ip_options_a_tos_and_an_expiring_ttl_are_left_to_the_stack() {
    in_netns(|| {
        let node = node();
        let mut dp = datapath(&node);

        let mut with_options = syn(40005);
        // Router alert (RFC 2113), which ip_forward handles itself.
        with_options.ip_options = vec![0x94, 0x04, 0x00, 0x00];
        let run = dp.run_on(FROM_POD, &sent(&with_options, &node), node.lxc0);
        assert_left_to_the_stack(&run, &node, 64);

        let tos = with_ip_byte(sent(&syn(40006), &node), 1, 0x10);
        let run = dp.run_on(FROM_POD, &tos, node.lxc0);
        assert_left_to_the_stack(&run, &node, 64);

        let mut last_hop = syn(40007);
        last_hop.ttl = 1;
        let run = dp.run_on(FROM_POD, &sent(&last_hop, &node), node.lxc0);
        assert_left_to_the_stack(&run, &node, 1);
    });
}

#[test]
fn routes_the_fib_does_not_forward_are_left_to_the_stack() {
    in_netns(|| {
        let node = node();
        ip(&["route", "add", "blackhole", "10.244.4.0/24"]);
        ip(&["route", "add", "unreachable", "10.244.5.0/24"]);
        let mut dp = datapath(&node);
        for (port, backend) in [(82, "10.244.4.5"), (83, "10.244.5.5"), (84, "10.250.0.1")] {
            dp.service(&Service::new(VIP, port, TCP, port).backends(&[Backend::new(
                u32::from(port),
                backend,
                8080,
            )]));
            let syn = Builder::tcp((POD, 40010 + port), (VIP, port), SYN);
            let run = dp.run_on(FROM_POD, &sent(&syn, &node), node.lxc0);
            assert_eq!(run.verdict, TC_ACT_OK, "{backend}: the stack answers");
            assert_eq!(run.view().dst(), (addr(backend), 8080));
            assert_eq!(run.view().ttl(), 64);
        }
        // The node's own address: delivered locally by the stack.
        dp.service(&Service::new(VIP, 85, TCP, 85).backends(&[Backend::new(85, NODE_IP, 8080)]));
        let syn = Builder::tcp((POD, 40100), (VIP, 85), SYN);
        let run = dp.run_on(FROM_POD, &sent(&syn, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoRoute), 0);
    });
}

#[test]
fn forwarding_off_on_the_pods_veth_is_left_to_the_stack() {
    in_netns(|| {
        let node = node();
        sysctl("net/ipv4/conf/lxc0/forwarding", "0");
        let mut dp = datapath(&node);
        let run = dp.run_on(FROM_POD, &sent(&syn(40020), &node), node.lxc0);
        assert_left_to_the_stack(&run, &node, 64);
    });
}

#[test]
fn a_packet_over_the_route_mtu_is_left_to_the_stack() {
    in_netns(|| {
        let node = node();
        ip(&[
            "route",
            "add",
            "10.244.6.0/24",
            "via",
            OTHER_NODE,
            "mtu",
            "lock",
            "1000",
        ]);
        let mut dp = datapath(&node);
        dp.service(&Service::new(VIP, 86, TCP, 86).backends(&[Backend::new(
            86,
            "10.244.6.5",
            8080,
        )]));
        let small = Builder::tcp((POD, 40030), (VIP, 86), ACK).payload(&[7; 900]);
        let run = dp.run_on(FROM_POD, &sent(&small, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "fits the route's MTU");

        let big = Builder::tcp((POD, 40031), (VIP, 86), ACK).payload(&[7; 1200]);
        let run = dp.run_on(FROM_POD, &sent(&big, &node), node.lxc0);
        assert_eq!(run.verdict, TC_ACT_OK, "fragmentation or ICMP: the stack's");
        assert_eq!(run.view().ttl(), 64);
    });
}
