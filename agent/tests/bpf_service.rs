//! BPF_PROG_TEST_RUN tests of ClusterIP service translation in
//! `weir_from_pod`: crafted packets in, translated packets out, checksums
//! recomputed byte by byte, conntrack and metrics read back.
//! Needs root and the real eBPF object (`cargo xtask test` sets WEIR_EBPF_OBJ).
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::net::Ipv4Addr;

use bpf_support::*;
use weir_common::{
    DropReason,
    ct::{CT_DIR_FORWARD, CT_DIR_REPLY, ct_flags, nat_flags, tcp_state},
    lb::{Lb4Backend, MAGLEV_TABLE_SIZE, flow_hash, maglev_index, svc_flags},
    metrics::Direction,
    programs::{self, FROM_POD},
};

const VIP: &str = "10.96.0.10";
const CLIENT: &str = "10.244.1.2";
const B1: &str = "10.244.2.5";
const B2: &str = "10.244.2.6";
const B3: &str = "10.244.3.7";

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn three_backends() -> Vec<Backend> {
    vec![
        Backend::new(1, B1, 8080),
        Backend::new(2, B2, 8080),
        Backend::new(3, B3, 8080),
    ]
}

fn backend_index(backends: &[Backend], dst: (Ipv4Addr, u16)) -> usize {
    backends
        .iter()
        .position(|b| (b.addr, b.port) == dst)
        .unwrap_or_else(|| panic!("{dst:?} is not a backend"))
}

#[test]
fn every_program_passes_the_verifier() {
    in_netns(|| {
        let mut dp = Datapath::load();
        for name in programs::TC {
            let program: &mut aya::programs::SchedClassifier =
                dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load().unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        }
        for name in programs::SOCK {
            let program: &mut aya::programs::CgroupSockAddr =
                dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load().unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        }
        for name in weir_common::maps::ALL {
            assert!(dp.ebpf.map(name).is_some(), "the object lacks map {name}");
        }
    });
}

#[test]
fn new_tcp_flow_is_dnated_with_valid_checksums_and_tracked() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 7).backends(&[Backend::new(1, B1, 8080)]));
        let syn = Builder::tcp((CLIENT, 40000), (VIP, 80), SYN).build();

        let run = dp.run(FROM_POD, &syn);

        assert_eq!(
            run.verdict, TC_ACT_OK,
            "a remote backend is left to the stack"
        );
        let out = run.view();
        assert_eq!(out.src(), (addr(CLIENT), 40000));
        assert_eq!(out.dst(), (addr(B1), 8080));
        out.assert_checksums();
        // Only addresses, ports and checksums changed.
        let mut expected = syn.clone();
        expected[30..34].copy_from_slice(&addr(B1).octets());
        expected[36..38].copy_from_slice(&8080u16.to_be_bytes());
        expected[24..26].copy_from_slice(&run.packet[24..26]);
        expected[50..52].copy_from_slice(&run.packet[50..52]);
        assert_eq!(run.packet, expected);

        let ct = dp.ct();
        assert_eq!(ct.len(), 2, "{ct:#?}");
        let forward = ct[&CtKey::new((CLIENT, 40000), (VIP, 80), TCP, CT_DIR_FORWARD)];
        let reply = ct[&CtKey::new((B1, 8080), (CLIENT, 40000), TCP, CT_DIR_REPLY)];
        assert_eq!(forward.backend_addr, be_addr(addr(B1)));
        assert_eq!(forward.backend_port, be_port(8080));
        assert_eq!(forward.backend_id, 1);
        assert_eq!(forward.rev_nat_index, 7);
        assert_eq!(forward.nat_flags, nat_flags::DNAT);
        assert_eq!(forward.flags & ct_flags::FROM_POD, ct_flags::FROM_POD);
        assert_eq!(forward.tcp_state, tcp_state::SYN);
        assert_eq!(forward.tcp_flags_seen, SYN);
        assert_eq!(reply.tcp_state, tcp_state::NONE, "no reply seen yet");
        assert_eq!(
            (reply.orig_daddr, reply.orig_dport),
            (be_addr(addr(VIP)), be_port(80))
        );
        assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 1);
    });
}

#[test]
fn established_flow_keeps_its_backend_without_new_entries() {
    in_netns(|| {
        let mut dp = Datapath::load();
        let backends = three_backends();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&backends));
        let first = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40001), (VIP, 80), SYN).build(),
        );
        let chosen = first.view().dst();
        for i in 0..30 {
            let packet = Builder::tcp((CLIENT, 40001), (VIP, 80), ACK | PSH)
                .seq_ack(1001 + i * 10, 5000)
                .payload(b"0123456789")
                .build();
            let run = dp.run(FROM_POD, &packet);
            assert_eq!(run.verdict, TC_ACT_OK);
            assert_eq!(run.view().dst(), chosen, "packet {i} changed backend");
            run.view().assert_checksums();
        }
        let ct = dp.ct();
        assert_eq!(ct.len(), 2, "{ct:#?}");
        let forward = ct[&CtKey::new((CLIENT, 40001), (VIP, 80), TCP, CT_DIR_FORWARD)];
        assert_eq!(forward.tcp_state, tcp_state::ESTABLISHED);
        assert_eq!(forward.tcp_flags_seen, SYN | ACK | PSH);
        assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 31);
    });
}

#[test]
fn reply_is_reverse_nated_to_the_service_address() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 3).backends(&[Backend::new(1, B1, 8080)]));
        dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40002), (VIP, 80), SYN).build(),
        );

        let syn_ack = Builder::tcp((B1, 8080), (CLIENT, 40002), SYN | ACK)
            .seq_ack(7000, 1001)
            .build();
        let run = dp.run(FROM_POD, &syn_ack);

        assert_eq!(run.verdict, TC_ACT_OK);
        let out = run.view();
        assert_eq!(out.src(), (addr(VIP), 80), "the client must see the VIP");
        assert_eq!(out.dst(), (addr(CLIENT), 40002));
        out.assert_checksums();
        let ct = dp.ct();
        assert_eq!(ct.len(), 2);
        let reply = ct[&CtKey::new((B1, 8080), (CLIENT, 40002), TCP, CT_DIR_REPLY)];
        assert_eq!(reply.tcp_state, tcp_state::SYN);
        assert_eq!(reply.tcp_flags_seen, SYN | ACK);
    });
}

#[test]
fn udp_with_a_zero_checksum_keeps_it_zero_both_ways() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 53, UDP, 4).backends(&[Backend::new(9, B2, 5353)]));
        let mut query = Builder::udp((CLIENT, 41000), (VIP, 53));
        query.udp_zero_csum = true;

        let run = dp.run(FROM_POD, &query.build());
        let out = run.view();
        assert_eq!(out.dst(), (addr(B2), 5353));
        assert_eq!(out.l4_csum_field(), 0, "a zero UDP checksum must stay zero");
        out.assert_ip_csum();

        let mut answer = Builder::udp((B2, 5353), (CLIENT, 41000)).payload(b"pong");
        answer.udp_zero_csum = true;
        let run = dp.run(FROM_POD, &answer.build());
        let out = run.view();
        assert_eq!(out.src(), (addr(VIP), 53));
        assert_eq!(out.l4_csum_field(), 0);
        out.assert_ip_csum();
    });
}

#[test]
fn udp_with_a_checksum_is_translated_with_a_valid_one() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 53, UDP, 4).backends(&[Backend::new(9, B2, 5353)]));
        // Payload sizes with odd lengths exercise the checksum's padding.
        for (i, payload) in [&b"a"[..], b"abc", b"0123456789abcdef"].iter().enumerate() {
            let query = Builder::udp((CLIENT, 41100 + i as u16), (VIP, 53)).payload(payload);
            let run = dp.run(FROM_POD, &query.build());
            assert_ne!(run.view().l4_csum_field(), 0);
            run.view().assert_checksums();
            let answer = Builder::udp((B2, 5353), (CLIENT, 41100 + i as u16)).payload(payload);
            let run = dp.run(FROM_POD, &answer.build());
            assert_eq!(run.view().src(), (addr(VIP), 53));
            run.view().assert_checksums();
        }
    });
}

#[test]
fn ip_options_shift_the_ports_and_are_kept() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        let mut syn = Builder::tcp((CLIENT, 40003), (VIP, 80), SYN);
        // Two NOPs and a 6-byte experimental option: IHL 7.
        syn.ip_options = vec![1, 1, 0x9e, 6, 1, 2, 3, 4];
        let run = dp.run(FROM_POD, &syn.build());
        let out = run.view();
        assert_eq!(out.ip_hlen(), 28);
        assert_eq!(out.dst(), (addr(B1), 8080));
        assert_eq!(&run.packet[34..42], &[1, 1, 0x9e, 6, 1, 2, 3, 4]);
        out.assert_checksums();
    });
}

#[test]
fn no_backend_answers_a_syn_with_a_valid_rst_from_the_vip() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 5));
        let mut syn = Builder::tcp((CLIENT, 40004), (VIP, 80), SYN).seq_ack(0x1000_0000, 0);
        // MSS, SACK-permitted, NOP, window scale: options must not survive
        // as options in the RST.
        syn.tcp_options = vec![2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7, 0, 0];
        let syn = syn.build();

        let run = dp.run(FROM_POD, &syn);

        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the RST goes back to the pod");
        let rst = run.view();
        assert_eq!(rst.src(), (addr(VIP), 80));
        assert_eq!(rst.dst(), (addr(CLIENT), 40004));
        assert_eq!(rst.proto(), TCP);
        assert_eq!(rst.tcp_flags(), RST | ACK);
        assert_eq!(
            rst.tcp_u32(4),
            0,
            "seq of an RST answering a segment without ACK"
        );
        assert_eq!(rst.tcp_u32(8), 0x1000_0001, "ack covers the SYN");
        assert_eq!(run.packet[rst.l4() + 12] >> 4, 5, "no options");
        assert_eq!(rst.dst_mac(), CLIENT_MAC);
        assert_eq!(rst.src_mac(), GATEWAY_MAC);
        rst.assert_checksums();
        assert!(dp.ct().is_empty(), "a rejected flow leaves no state");
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoBackend), 1);
        assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 0);
    });
}

#[test]
fn no_backend_answers_a_segment_with_ack_by_its_ack_number() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 5));
        let data = Builder::tcp((CLIENT, 40005), (VIP, 80), ACK | PSH)
            .seq_ack(555, 0xdead_beef)
            .payload(b"GET / HTTP/1.1\r\n\r\n")
            .build();
        let run = dp.run(FROM_POD, &data);
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let rst = run.view();
        assert_eq!(rst.tcp_flags(), RST);
        assert_eq!(rst.tcp_u32(4), 0xdead_beef);
        assert_eq!(rst.tcp_u32(8), 0);
        rst.assert_checksums();

        // An RST is never answered.
        let rst_in = Builder::tcp((CLIENT, 40005), (VIP, 80), RST).build();
        let run = dp.run(FROM_POD, &rst_in);
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoBackend), 2);
    });
}

#[test]
fn no_backend_answers_udp_with_icmp_port_unreachable() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 53, UDP, 6));
        let mut query = Builder::udp((CLIENT, 41001), (VIP, 53)).payload(&[7u8; 100]);
        query.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL: IHL 6
        let query = query.build();

        let run = dp.run(FROM_POD, &query);

        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let icmp = run.view();
        assert_eq!(icmp.proto(), ICMP);
        assert_eq!((icmp.saddr(), icmp.daddr()), (addr(VIP), addr(CLIENT)));
        assert_eq!(icmp.ip_hlen(), 20);
        let l4 = icmp.l4();
        assert_eq!(
            (run.packet[l4], run.packet[l4 + 1]),
            (3, 3),
            "port unreachable"
        );
        // The original IP header (with options) and 8 bytes follow.
        assert_eq!(&run.packet[l4 + 8..], &query[14..14 + 24 + 8]);
        assert_eq!(icmp.tot_len(), 20 + 8 + 24 + 8);
        assert_eq!(run.packet.len(), 14 + icmp.tot_len());
        assert_eq!(icmp.dst_mac(), CLIENT_MAC);
        icmp.assert_checksums();
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoBackend), 1);
    });
}

#[test]
fn local_only_frontend_without_local_backends_drops() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(
            &Service::new(VIP, 80, TCP, 5).flags(svc_flags::CLUSTER_IP | svc_flags::LOCAL_ONLY),
        );
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40006), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoLocalBackend), 1);
    });
}

#[test]
fn client_ip_affinity_pins_each_client_to_one_backend() {
    in_netns(|| {
        let mut dp = Datapath::load();
        let backends: Vec<Backend> = (1..=5)
            .map(|i| Backend::new(i, &format!("10.244.2.{}", 10 + i), 8080))
            .collect();
        let mut svc = Service::new(VIP, 80, TCP, 8)
            .backends(&backends)
            .flags(svc_flags::CLUSTER_IP | svc_flags::AFFINITY);
        svc.affinity_timeout = 10_800;
        dp.service(&svc);

        let mut chosen = std::collections::BTreeSet::new();
        for client in 0..20u8 {
            let src = format!("10.244.1.{}", 100 + client);
            let mut first = None;
            for sport in 0..25u16 {
                let syn = Builder::tcp((&src, 30000 + sport), (VIP, 80), SYN).build();
                let dst = dp.run(FROM_POD, &syn).view().dst();
                let expected = *first.get_or_insert(dst);
                assert_eq!(dst, expected, "client {src} moved on flow {sport}");
            }
            chosen.insert(first.unwrap());
        }
        // 20 clients on one backend out of 5 by chance: 5^-19.
        assert!(
            chosen.len() > 1,
            "affinity must not pin everyone: {chosen:?}"
        );
        assert_eq!(dp.affinity().len(), 20);
    });
}

#[test]
fn an_expired_or_dangling_affinity_entry_is_not_followed() {
    in_netns(|| {
        let mut dp = Datapath::load();
        let backends: Vec<Backend> = (1..=5)
            .map(|i| Backend::new(i, &format!("10.244.2.{}", 10 + i), 8080))
            .collect();
        let mut svc = Service::new(VIP, 80, TCP, 8)
            .backends(&backends)
            .flags(svc_flags::CLUSTER_IP | svc_flags::AFFINITY);
        svc.affinity_timeout = 100;
        dp.service(&svc);
        let now = monotonic_ns();
        let mut stayed = 0;
        for round in 0..12u16 {
            // Last used 200 s ago with a 100 s timeout: expired.
            dp.set_affinity(CLIENT, 8, 1, now - 200_000_000_000);
            let syn = Builder::tcp((CLIENT, 31000 + round), (VIP, 80), SYN).build();
            if dp.run(FROM_POD, &syn).view().dst() == (backends[0].addr, 8080) {
                stayed += 1;
            }
        }
        // Following the expired entry every time: all 12; by chance: 5^-12.
        assert!(stayed < 12, "an expired affinity entry was followed");
        let (_, value) = dp.affinity().into_iter().next().unwrap();
        assert!(value.last_used_ns >= now, "the new choice is remembered");

        // A fresh entry naming a backend that no longer exists.
        dp.set_affinity(CLIENT, 8, 4242, monotonic_ns());
        let syn = Builder::tcp((CLIENT, 32000), (VIP, 80), SYN).build();
        let dst = dp.run(FROM_POD, &syn).view().dst();
        backend_index(&backends, dst);
        let (_, value) = dp.affinity().into_iter().next().unwrap();
        assert_ne!(value.backend_id, 4242);
    });
}

#[test]
fn maglev_picks_the_table_entry_of_the_flow_hash() {
    in_netns(|| {
        let mut dp = Datapath::load();
        let backends = three_backends();
        dp.service(
            &Service::new(VIP, 80, TCP, 11)
                .backends(&backends)
                .flags(svc_flags::CLUSTER_IP | svc_flags::MAGLEV),
        );
        // Any table will do: the datapath must follow it, entry by entry.
        let table: Vec<u32> = (0..MAGLEV_TABLE_SIZE)
            .map(|i| 1 + (i * 7 % 11) % 3)
            .collect();
        dp.maglev_table(11, &table);
        for sport in 0..200u16 {
            let syn = Builder::tcp((CLIENT, 20000 + sport), (VIP, 80), SYN).build();
            let dst = dp.run(FROM_POD, &syn).view().dst();
            let hash = flow_hash(
                be_addr(addr(CLIENT)),
                be_addr(addr(VIP)),
                be_port(20000 + sport),
                be_port(80),
                TCP,
            );
            let expected = table[maglev_index(hash) as usize];
            assert_eq!(
                backend_index(&backends, dst) as u32 + 1,
                expected,
                "flow from port {}",
                20000 + sport
            );
        }
    });
}

#[test]
fn random_choice_is_uniform_over_backends() {
    in_netns(|| {
        let mut dp = Datapath::load();
        let backends = three_backends();
        dp.service(&Service::new(VIP, 80, TCP, 12).backends(&backends));
        let mut counts = [0u64; 3];
        for sport in 0..3000u16 {
            let syn = Builder::tcp((CLIENT, 10000 + sport), (VIP, 80), SYN).build();
            counts[backend_index(&backends, dp.run(FROM_POD, &syn).view().dst())] += 1;
        }
        // Chi-square with 2 degrees of freedom: P(X > 27.63) = 1e-6.
        let chi2 = chi_square(&counts);
        assert!(chi2 < 27.63, "not uniform: {counts:?}, chi2 {chi2}");
    });
}

#[test]
fn first_fragment_is_translated_and_later_ones_follow_it() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 53, UDP, 13).backends(&[Backend::new(1, B1, 5353)]));
        // One 48-byte datagram: UDP header + 40 bytes, split at 24 bytes.
        // The later fragment's first bytes look like ports 53/53 on purpose.
        let mut payload = vec![0u8, 53, 0, 53];
        payload.extend((4..40).map(|i| i as u8));
        let whole = Builder::udp((CLIENT, 41002), (VIP, 53))
            .payload(&payload)
            .build();
        let datagram = &whole[34..]; // UDP header + payload, checksum filled

        let mut first = Builder::udp((CLIENT, 41002), (VIP, 53));
        first.id = 0x4242;
        first.frag = (true, 0);
        let mut first = first.payload(&[]).build();
        first.truncate(34);
        first.extend_from_slice(&datagram[..24]);
        fix_ip_header(&mut first);
        let mut later = Builder::udp((CLIENT, 41002), (VIP, 53));
        later.id = 0x4242;
        later.frag = (false, 3); // 24 bytes
        let mut later = later.build();
        later.truncate(34);
        later.extend_from_slice(&datagram[24..]);
        fix_ip_header(&mut later);

        let run = dp.run(FROM_POD, &first);
        let out = run.view();
        assert_eq!(out.dst(), (addr(B1), 5353));
        out.assert_ip_csum();
        // The UDP checksum covers the whole datagram: recompute it over the
        // translated datagram and compare with the first fragment's field.
        let mut translated = datagram.to_vec();
        translated[2..4].copy_from_slice(&5353u16.to_be_bytes());
        translated[6..8].copy_from_slice(&[0, 0]);
        let expected = l4_checksum(addr(CLIENT), addr(B1), UDP, &translated);
        assert_eq!(out.l4_csum_field(), expected);

        let run = dp.run(FROM_POD, &later);
        assert_eq!(run.verdict, TC_ACT_OK);
        let out = run.view();
        assert_eq!(out.daddr(), addr(B1), "the later fragment follows its flow");
        assert_eq!(&run.packet[34..], &later[34..], "its payload is untouched");
        out.assert_ip_csum();

        // A later fragment of a datagram whose first fragment was not seen
        // passes untouched.
        let mut orphan = later.clone();
        orphan[18..20].copy_from_slice(&0x7777u16.to_be_bytes());
        fix_ip_header(&mut orphan);
        let run = dp.run(FROM_POD, &orphan);
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(run.packet, orphan);
        assert_eq!(dp.ct().len(), 2, "fragments open no flows of their own");
    });
}

/// Sets the total length from the frame and recomputes the IP checksum.
fn fix_ip_header(frame: &mut [u8]) {
    let tot = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&tot.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let hlen = usize::from(frame[14] & 0x0f) * 4;
    let c = checksum(&frame[14..14 + hlen]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn non_service_traffic_passes_untouched() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        let packets = [
            Builder::tcp((CLIENT, 40007), (B2, 80), SYN).build(),
            Builder::tcp((CLIENT, 40007), (VIP, 81), SYN).build(),
            Builder::udp((CLIENT, 40007), (VIP, 80)).build(),
            Builder::icmp_echo(CLIENT, VIP).build(),
        ];
        for packet in &packets {
            let run = dp.run(FROM_POD, packet);
            assert_eq!(run.verdict, TC_ACT_OK);
            assert_eq!(&run.packet, packet);
        }
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let run = dp.run(FROM_POD, &arp);
        assert_eq!((run.verdict, &run.packet), (TC_ACT_OK, &arp));
        assert!(dp.ct().is_empty());
        assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 5);
    });
}

#[test]
fn a_local_backend_gets_the_packet_on_its_veth() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080).local()]));
        let pod_mac = [0x0a, 0, 0, 0, 0, 0x05];
        let veth_mac = [0x0e, 0, 0, 0, 0, 0x05];
        dp.endpoint(B1, 1, pod_mac, veth_mac);
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40008), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        let out = run.view();
        assert_eq!(out.dst(), (addr(B1), 8080));
        assert_eq!((out.dst_mac(), out.src_mac()), (pod_mac, veth_mac));
        assert_eq!(out.ttl(), 63, "a routed hop");
        out.assert_checksums();
        let ct = dp.ct();
        let forward = ct[&CtKey::new((CLIENT, 40008), (VIP, 80), TCP, CT_DIR_FORWARD)];
        assert_ne!(forward.flags & ct_flags::LOCAL_BACKEND, 0);
    });
}

#[test]
fn a_pod_reaches_itself_through_its_service() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 2).backends(&[Backend::new(1, CLIENT, 8080)]));
        let syn = Builder::tcp((CLIENT, 40009), (VIP, 80), SYN).build();
        let run = dp.run(FROM_POD, &syn);
        let out = run.view();
        assert_eq!(out.dst(), (addr(CLIENT), 8080));
        assert_eq!(
            out.src(),
            (addr("169.254.42.1"), 40009),
            "hairpin: the pod must not see its own address as the source"
        );
        out.assert_checksums();
        let ct = dp.ct();
        let forward = ct[&CtKey::new((CLIENT, 40009), (VIP, 80), TCP, CT_DIR_FORWARD)];
        assert_eq!(
            forward.nat_flags,
            nat_flags::DNAT | nat_flags::SNAT | nat_flags::HAIRPIN
        );
        assert!(ct.contains_key(&CtKey::new(
            (CLIENT, 8080),
            ("169.254.42.1", 40009),
            TCP,
            CT_DIR_REPLY
        )));

        let syn_ack = Builder::tcp((CLIENT, 8080), ("169.254.42.1", 40009), SYN | ACK).build();
        let run = dp.run(FROM_POD, &syn_ack);
        let out = run.view();
        assert_eq!(out.src(), (addr(VIP), 80));
        assert_eq!(out.dst(), (addr(CLIENT), 40009));
        out.assert_checksums();
    });
}

#[test]
fn established_flows_survive_their_backends_removal() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40010), (VIP, 80), SYN).build(),
        );
        // The backend leaves the service and the backends map.
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(2, B2, 8080)]));
        dp.remove_backend(1);
        let ack = Builder::tcp((CLIENT, 40010), (VIP, 80), ACK).build();
        let run = dp.run(FROM_POD, &ack);
        assert_eq!(run.view().dst(), (addr(B1), 8080), "kept until it closes");
        // A new flow uses the new backend.
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40011), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.view().dst(), (addr(B2), 8080));
    });
}

#[test]
fn a_syn_on_a_closed_tuple_opens_a_new_flow() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40012), (VIP, 80), SYN).build(),
        );
        dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40012), (VIP, 80), RST | ACK).build(),
        );
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(2, B2, 8080)]));
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40012), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.view().dst(), (addr(B2), 8080));
        let ct = dp.ct();
        let forward = ct[&CtKey::new((CLIENT, 40012), (VIP, 80), TCP, CT_DIR_FORWARD)];
        assert_eq!(forward.tcp_state, tcp_state::SYN);
        assert_eq!(forward.backend_id, 2);

        // A SYN retransmitted on an open flow keeps its backend.
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40012), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.view().dst(), (addr(B2), 8080));
    });
}

#[test]
fn a_slot_naming_a_missing_backend_is_dropped_with_its_reason() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));
        dp.remove_backend(1);
        let run = dp.run(
            FROM_POD,
            &Builder::tcp((CLIENT, 40013), (VIP, 80), SYN).build(),
        );
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(dp.count(Direction::FromPod, DropReason::BackendMissing), 1);
        let _ = Lb4Backend::default();
    });
}

#[test]
fn a_full_conntrack_map_drops_new_flows_with_their_reason() {
    in_netns(|| {
        with_private_bpffs(|bpffs| {
            // A plain hash of one entry stands in for the LRU map: its
            // inserts fail once it is full, as an LRU's do under pressure.
            let pin = bpffs.join(weir_common::maps::CT4);
            let status = std::process::Command::new("bpftool")
                .args(["map", "create"])
                .arg(&pin)
                .args(["type", "hash", "key", "16", "value", "64", "entries", "1"])
                .args(["name", "weir_ct4_v1"])
                .status()
                .expect("run bpftool");
            assert!(status.success(), "bpftool map create");
            let mut dp = Datapath::load_with(
                aya::EbpfLoader::new().map_pin_path(weir_common::maps::CT4, pin.as_path()),
            );
            dp.service(&Service::new(VIP, 80, TCP, 1).backends(&[Backend::new(1, B1, 8080)]));

            // The first flow's reply entry fills the map, its forward entry
            // fails: dropped, and the reply entry is taken back.
            let syn = Builder::tcp((CLIENT, 40020), (VIP, 80), SYN).build();
            let run = dp.run(FROM_POD, &syn);
            assert_eq!(run.verdict, TC_ACT_SHOT);
            assert_eq!(run.packet, syn, "a dropped packet is not half-translated");
            assert!(dp.ct().is_empty(), "no orphan entry: {:#?}", dp.ct());
            assert_eq!(dp.count(Direction::FromPod, DropReason::CtFull), 1);

            // Full from the start: the reply entry cannot be created either.
            dp.fill_ct();
            let run = dp.run(FROM_POD, &syn);
            assert_eq!(run.verdict, TC_ACT_SHOT);
            assert_eq!(dp.count(Direction::FromPod, DropReason::CtFull), 2);

            // Hairpin flows claim their SNAT port with the reply entry.
            dp.service(&Service::new(VIP, 81, TCP, 2).backends(&[Backend::new(2, CLIENT, 8080)]));
            let run = dp.run(
                FROM_POD,
                &Builder::tcp((CLIENT, 40021), (VIP, 81), SYN).build(),
            );
            assert_eq!(run.verdict, TC_ACT_SHOT);
            assert_eq!(dp.count(Direction::FromPod, DropReason::CtFull), 3);
            assert_eq!(dp.count(Direction::FromPod, DropReason::Forwarded), 0);
        });
    });
}

#[test]
fn icmp_errors_about_a_translated_flow_are_translated_back() {
    in_netns(|| {
        let mut dp = Datapath::load();
        dp.service(&Service::new(VIP, 53, UDP, 14).backends(&[Backend::new(1, B1, 5353)]));
        let query = dp.run(FROM_POD, &Builder::udp((CLIENT, 41003), (VIP, 53)).build());
        // The backend's stack answers the translated datagram with
        // "port unreachable", quoting it as it arrived.
        let error = Builder::icmp_error(B1, CLIENT, 3, 3, &query.packet[14..]).build();

        let run = dp.run(FROM_POD, &error);

        assert_eq!(run.verdict, TC_ACT_OK);
        let out = run.view();
        assert_eq!((out.saddr(), out.daddr()), (addr(VIP), addr(CLIENT)));
        out.assert_checksums();
        let quoted = out.quoted();
        let quoted = View(&quoted);
        assert_eq!(quoted.src(), (addr(CLIENT), 41003));
        assert_eq!(
            quoted.dst(),
            (addr(VIP), 53),
            "the quote shows what the client sent"
        );
        quoted.assert_ip_csum();

        // Errors about flows we did not translate pass untouched.
        let other = Builder::udp((CLIENT, 41004), (B2, 53)).build();
        let error = Builder::icmp_error(B2, CLIENT, 3, 3, &other[14..]).build();
        let run = dp.run(FROM_POD, &error);
        assert_eq!((run.verdict, &run.packet), (TC_ACT_OK, &error));
    });
}
