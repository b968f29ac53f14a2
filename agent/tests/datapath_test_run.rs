//! BPF_PROG_TEST_RUN tests of the pod programs with crafted packets.
//! Needs root and a binary built by `cargo xtask build` (real eBPF object).
#![allow(clippy::unwrap_used)]

use aya::programs::{TestRun, TestRunOptions};
use weir_agent::datapath::{self, PROG_FROM_POD, PROG_TO_POD};
use weir_common::{
    DropReason,
    metrics::{Direction, MetricKey},
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn require_root_and_object() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "BPF_PROG_TEST_RUN tests need root; run them through `cargo xtask test` as root"
    );
    assert!(
        datapath::has_object(),
        "built without the eBPF object: run through `cargo xtask test` (sets WEIR_EBPF_OBJ)"
    );
}

/// Ethernet + IPv4 (+ options) + a TCP header, checksums left zero.
fn tcp_packet(ihl: u8, total_len_override: Option<u16>) -> Vec<u8> {
    let ip_hlen = usize::from(ihl) * 4;
    let mut p = vec![0u8; 14 + ip_hlen.max(20) + 20];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x40 | ihl;
    let total = total_len_override.unwrap_or((ip_hlen + 20) as u16);
    p[16..18].copy_from_slice(&total.to_be_bytes());
    p[22] = 64; // TTL
    p[23] = 6; // TCP
    p[26..30].copy_from_slice(&[10, 244, 1, 2]);
    p[30..34].copy_from_slice(&[10, 244, 2, 3]);
    p
}

fn run(name: &'static str, packet: &[u8]) -> (u32, aya::Ebpf) {
    let mut ebpf = datapath::open().unwrap();
    let program = datapath::load_classifier(&mut ebpf, name).unwrap();
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    let result = program.test_run(opts).unwrap();
    (result.return_value, ebpf)
}

fn count(ebpf: &aya::Ebpf, direction: Direction, reason: DropReason) -> u64 {
    let key = MetricKey::new(direction, reason);
    datapath::read_metrics(ebpf)
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.packets)
        .unwrap()
}

#[test]
fn well_formed_ipv4_passes_and_is_counted_forwarded() {
    require_root_and_object();
    for (name, direction) in [
        (PROG_FROM_POD, Direction::FromPod),
        (PROG_TO_POD, Direction::ToPod),
    ] {
        let (verdict, ebpf) = run(name, &tcp_packet(5, None));
        assert_eq!(verdict, TC_ACT_OK, "{name}");
        assert_eq!(count(&ebpf, direction, DropReason::Forwarded), 1, "{name}");
        assert_eq!(
            count(&ebpf, direction, DropReason::InvalidIpHeader),
            0,
            "{name}"
        );
    }
}

#[test]
fn ip_options_are_accepted() {
    require_root_and_object();
    let (verdict, _) = run(PROG_FROM_POD, &tcp_packet(8, None));
    assert_eq!(verdict, TC_ACT_OK);
}

#[test]
fn ihl_below_five_is_dropped_with_its_reason() {
    require_root_and_object();
    let (verdict, ebpf) = run(PROG_FROM_POD, &tcp_packet(4, None));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(
        count(&ebpf, Direction::FromPod, DropReason::InvalidIpHeader),
        1
    );
    assert_eq!(count(&ebpf, Direction::FromPod, DropReason::Forwarded), 0);
}

#[test]
fn total_length_shorter_than_header_is_dropped() {
    require_root_and_object();
    let (verdict, ebpf) = run(PROG_TO_POD, &tcp_packet(5, Some(19)));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(
        count(&ebpf, Direction::ToPod, DropReason::InvalidIpHeader),
        1
    );
}

#[test]
fn non_ip_frames_pass_untouched() {
    require_root_and_object();
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let (verdict, ebpf) = run(PROG_FROM_POD, &arp);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(count(&ebpf, Direction::FromPod, DropReason::Forwarded), 1);
}
