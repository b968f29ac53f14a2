//! Rejecting a new flow to a service without backends, as kube-proxy does:
//! the packet itself becomes the answer and goes back out the interface it
//! came in on (or back up into the node for `weir_to_netdev`).
//!
//! * **TCP → RST**, built in place by the RFC 793 rules, with the source
//!   being the service address the client asked for. Only fields are
//!   rewritten, each with an incremental checksum update, and nothing is
//!   trimmed (old options and payload become the RST's payload, which RFC
//!   1122 4.2.2.12 allows). That keeps the checksum right for every skb
//!   checksum state, `CHECKSUM_PARTIAL` from a pod's veth included, which a
//!   checksum computed from scratch would not be. An RST is never answered.
//! * **UDP → ICMP port unreachable** from the service address: 28 bytes are
//!   inserted after the Ethernet header for the new IP and ICMP headers, and
//!   the original IP header plus 8 bytes (RFC 792) are kept as the payload.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use weir_common::{DropReason, ct::tcp_flags};

use crate::{
    csum,
    parse::{ETH_HLEN, Flow, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ip_off},
    verdict::Action,
};

const REPLY_TTL: u8 = 64;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
/// New IPv4 header (20) + ICMP header (8).
const ICMP_PREFIX: u32 = 28;
/// Longest embedded original: a 60-byte IP header + 8 bytes, in words.
const MAX_EMBEDDED_WORDS: u32 = 17;

/// Answers `flow`'s packet with a reject. `from_ingress`: the program runs
/// on TC ingress, so the answer leaves through the same device's egress;
/// otherwise it is sent up the same device's ingress.
#[inline(always)]
pub fn reply(ctx: &TcContext, flow: &Flow, from_ingress: bool) -> Result<Action, DropReason> {
    match flow.proto {
        IPPROTO_TCP => tcp_rst(ctx, flow)?,
        IPPROTO_UDP => icmp_port_unreachable(ctx, flow)?,
        _ => return Err(DropReason::RejectFailed),
    }
    swap_macs(ctx)?;
    // SAFETY: the skb pointer is the program's context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flags = if from_ingress {
        0
    } else {
        u64::from(BPF_F_INGRESS)
    };
    // SAFETY: a helper taking plain integers.
    let ret = unsafe { bpf_redirect(ifindex, flags) };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Ok(Action::Rejected)
    } else {
        Err(DropReason::RejectFailed)
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: u32) -> Result<T, DropReason> {
    ctx.load(offset as usize)
        .map_err(|_| DropReason::RejectFailed)
}

#[inline(always)]
fn store<T>(ctx: &TcContext, offset: u32, value: &T) -> Result<(), DropReason> {
    ctx.store(offset as usize, value, 0)
        .map_err(|_| DropReason::RejectFailed)
}

#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), DropReason> {
    let macs: [u8; 12] = load(ctx, 0)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    store(ctx, 0, &swapped)
}

/// Swaps the addresses (IP and pseudo-header checksums are sums, so they do
/// not change) and sets a fresh TTL.
#[inline(always)]
fn turn_around_ip(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    store(ctx, ip_off::SADDR, &[flow.daddr, flow.saddr])?;
    let old: u16 = load(ctx, ip_off::TTL)?;
    let new = u16::from_ne_bytes([REPLY_TTL, flow.proto]);
    csum::replace_ip_u16(ctx, ip_off::TTL, old, new)
}

#[inline(always)]
fn tcp_rst(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    if flow.tcp_flags & tcp_flags::RST != 0 || !flow.has_l4 {
        // Never answer an RST (RFC 793), nor a fragment without a header.
        return Err(DropReason::NoBackend);
    }
    let l4 = flow.l4_off;
    let csum_off = l4 + 16;
    let seq: u32 = load(ctx, l4 + 4)?;
    let ack: u32 = load(ctx, l4 + 8)?;
    let doff_flags: u16 = load(ctx, l4 + 12)?;
    let window: u16 = load(ctx, l4 + 14)?;
    let urgent: u16 = load(ctx, l4 + 18)?;
    let doff = u32::from(doff_flags.to_ne_bytes()[0] >> 4) * 4;

    let (new_seq, new_ack, new_flags) = if flow.tcp_flags & tcp_flags::ACK != 0 {
        (ack, 0u32, tcp_flags::RST)
    } else {
        let mut seg_len = u32::from(flow.tot_len)
            .saturating_sub(flow.ip_hlen)
            .saturating_sub(doff);
        if flow.tcp_flags & tcp_flags::SYN != 0 {
            seg_len += 1;
        }
        if flow.tcp_flags & tcp_flags::FIN != 0 {
            seg_len += 1;
        }
        let acked = u32::from_be(seq).wrapping_add(seg_len).to_be();
        (0u32, acked, tcp_flags::RST | tcp_flags::ACK)
    };
    // Data offset 5: the old options become payload, nothing is trimmed.
    let new_doff_flags = u16::from_ne_bytes([5 << 4, new_flags]);

    csum::replace_l4_field(ctx, csum_off, l4 + 4, seq, new_seq)?;
    csum::replace_l4_field(ctx, csum_off, l4 + 8, ack, new_ack)?;
    csum::replace_l4_field(ctx, csum_off, l4 + 12, doff_flags, new_doff_flags)?;
    csum::replace_l4_field(ctx, csum_off, l4 + 14, window, 0u16)?;
    csum::replace_l4_field(ctx, csum_off, l4 + 18, urgent, 0u16)?;
    // Swapping the ports keeps the checksum's sum.
    store(ctx, l4, &[flow.dport, flow.sport])?;
    turn_around_ip(ctx, flow)
}

#[inline(always)]
fn icmp_port_unreachable(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    if !flow.has_l4 {
        return Err(DropReason::NoBackend);
    }
    let embedded = flow.ip_hlen + 8;
    if ctx.len() < ETH_HLEN + embedded {
        return Err(DropReason::RejectFailed);
    }
    ctx.adjust_room(ICMP_PREFIX as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| DropReason::RejectFailed)?;
    let new_len = ETH_HLEN + ICMP_PREFIX + embedded;
    // SAFETY: the skb pointer is the program's context.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, new_len, 0) } != 0 {
        return Err(DropReason::RejectFailed);
    }

    let tot_len = (ICMP_PREFIX + embedded) as u16;
    let mut ip: [u32; 5] = [
        u32::from_ne_bytes([0x45, 0, tot_len.to_be_bytes()[0], tot_len.to_be_bytes()[1]]),
        0, // id, flags, fragment offset
        u32::from_ne_bytes([REPLY_TTL, IPPROTO_ICMP, 0, 0]),
        flow.daddr,
        flow.saddr,
    ];
    let mut sum = 0;
    for word in ip {
        sum = csum::add_u32(sum, word);
    }
    let ip_check = csum::finish(sum);
    let check = ip_check.to_ne_bytes();
    ip[2] = u32::from_ne_bytes([REPLY_TTL, IPPROTO_ICMP, check[0], check[1]]);

    let icmp_type_code = u32::from_ne_bytes([ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0, 0]);
    let mut sum = csum::add_u32(0, icmp_type_code);
    let start = ETH_HLEN + ICMP_PREFIX;
    for i in 0..MAX_EMBEDDED_WORDS {
        if i * 4 >= embedded {
            break;
        }
        let word: u32 = load(ctx, start + i * 4)?;
        sum = csum::add_u32(sum, word);
    }
    let icmp_check = csum::finish(sum).to_ne_bytes();
    let icmp: [u32; 2] = [
        u32::from_ne_bytes([
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
            icmp_check[0],
            icmp_check[1],
        ]),
        0,
    ];
    store(ctx, ETH_HLEN, &ip)?;
    store(ctx, ETH_HLEN + 20, &icmp)
}
