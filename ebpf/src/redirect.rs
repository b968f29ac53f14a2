//! Delivery of translated packets: straight to a local pod's veth, or out
//! through the FIB for packets whose source is now a node address (the
//! stack would drop those as martians if they came back in through it).
//!
//! Local pods get `bpf_redirect` to the egress of their host-side veth,
//! not `bpf_redirect_peer`: the peer shortcut would skip that veth's TC
//! egress, where `weir_to_pod` (and the pod's ingress policy) runs.
//!
//! **Host routing** ([`host_route`], Cilium's "BPF host routing"): a pod's
//! translated packet for a backend on another node is forwarded by the
//! program itself, with a FIB lookup and a redirect to the egress of the
//! device the FIB names, instead of going up the node's IP stack
//! (`ip_rcv`, the input route, `ip_forward`, the neighbour output). The
//! replies already come back that way (reverse NAT on the uplink, then a
//! redirect to the pod's veth), so neither direction of a service flow
//! crosses the node's netfilter FORWARD/POSTROUTING hooks any more, as with
//! Cilium's host routing. It only takes packets the stack would forward
//! unchanged except for the TTL and MAC addresses, and leaves everything
//! else to the stack:
//! * the source is the sending pod's own address on its own veth (the
//!   stack's reverse-path filter is not consulted, so nothing else skips it);
//! * a frame to the gateway (`PACKET_HOST`; the stack drops other hosts');
//! * no IP options (`ip_forward` processes router alert and source routes);
//! * TOS 0 (`ip_forward` derives the skb priority from the TOS);
//! * the FIB lookup (input lookup on the veth, so forwarding must be on
//!   there, with the routes and rules the agent and the operator installed)
//!   succeeds or only lacks the neighbour, the route leaves through another
//!   device (the stack would send an ICMP redirect otherwise) and the
//!   packet fits the MTU (route MTU for single packets, device MTU for GSO
//!   ones, as `ip_forward` checks): on blackhole, unreachable, prohibit,
//!   local or broadcast destinations, disabled forwarding and "fragmentation
//!   needed" the stack answers as it always did;
//! * TTL > 1 (the stack sends the time-exceeded error); the TTL is
//!   decremented with the header checksum.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        TC_ACT_REDIRECT, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use weir_common::{
    DropReason,
    endpoint::{EndpointInfo, ep_flags},
};

use crate::{
    csum,
    maps::ENDPOINTS,
    parse::{Flow, ip_off},
    verdict::Action,
};

const AF_INET: u8 = 2;
/// `skb->pkt_type` of a frame addressed to this host's MAC.
const PACKET_HOST: u32 = 0;
/// Header length of an IPv4 header without options.
const IPV4_PLAIN_HLEN: u32 = 20;

/// The local pod `addr` belongs to, when the datapath may deliver to it.
#[inline(always)]
pub fn local_endpoint(addr: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is plain data copied out at once.
    let ep = unsafe { ENDPOINTS.get(&addr) }.copied()?;
    if ep.flags & ep_flags::LOCAL_POD == 0 || ep.ifindex == 0 || ep.mac == [0; 6] {
        return None;
    }
    Some(ep)
}

/// Routes a forwarded packet one hop: TTL - 1. Returns false when the TTL
/// is spent, so the caller leaves the packet to the stack (which answers
/// with ICMP time exceeded).
#[inline(always)]
fn hop(ctx: &TcContext, flow: &Flow) -> Result<bool, DropReason> {
    if flow.ttl <= 1 {
        return Ok(false);
    }
    let old: u16 = ctx
        .load(ip_off::TTL as usize)
        .map_err(|_| DropReason::Malformed)?;
    // In memory order the word is [ttl, protocol].
    let new = u16::from_ne_bytes([flow.ttl - 1, flow.proto]);
    csum::replace_ip_u16(ctx, ip_off::TTL, old, new)?;
    Ok(true)
}

#[inline(always)]
fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), DropReason> {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(dst);
    macs[6..].copy_from_slice(src);
    ctx.store(0, &macs, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

#[inline(always)]
fn redirect(ifindex: u32, flags: u64) -> Result<Action, DropReason> {
    // SAFETY: a helper taking plain integers.
    let ret = unsafe { bpf_redirect(ifindex, flags) };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Ok(Action::Redirect)
    } else {
        Err(DropReason::RewriteFailed)
    }
}

/// Delivers to a local pod through the egress of its host-side veth.
#[inline(always)]
pub fn to_endpoint(
    ctx: &TcContext,
    flow: &Flow,
    ep: &EndpointInfo,
    routed: bool,
) -> Result<Action, DropReason> {
    if routed && !hop(ctx, flow)? {
        return Ok(Action::Pass);
    }
    set_macs(ctx, &ep.mac, &ep.node_mac)?;
    redirect(ep.ifindex, 0)
}

/// Sends a packet out the way the FIB routes its destination. `routed`: the
/// packet came in through `ctx`'s device (a forwarded hop); otherwise the
/// node sent it out through that device (an output route lookup).
#[inline(always)]
pub fn via_fib(ctx: &TcContext, flow: &Flow, routed: bool) -> Result<Action, DropReason> {
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = flow.proto;
    params.sport = flow.sport;
    params.dport = flow.dport;
    // tot_len stays 0: no MTU check (GSO packets exceed the MTU legitimately).
    // SAFETY: the skb pointer is the program's context.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = flow.saddr;
    params.__bindgen_anon_4.ipv4_dst = flow.daddr;
    let flags = if routed { 0 } else { BPF_FIB_LOOKUP_OUTPUT };
    // SAFETY: params is a valid, initialised bpf_fib_lookup on our stack.
    let ret = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        if routed && !hop(ctx, flow)? {
            return Ok(Action::Pass);
        }
        set_macs(ctx, &params.dmac, &params.smac)?;
        return redirect(params.ifindex, 0);
    }
    if ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        if routed && !hop(ctx, flow)? {
            return Ok(Action::Pass);
        }
        // The kernel resolves the neighbour (and routes again) itself.
        // SAFETY: a NULL params pointer with plen 0 is the documented form.
        let ret = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
        return if ret == i64::from(TC_ACT_REDIRECT) {
            Ok(Action::Redirect)
        } else {
            Err(DropReason::RewriteFailed)
        };
    }
    Err(DropReason::NoRoute)
}

/// Host routing of a pod's translated packet to a remote backend (see the
/// module docs for when it applies); `Action::Pass` leaves the packet to
/// the node's stack, as before.
#[inline(always)]
pub fn host_route(ctx: &TcContext, flow: &Flow) -> Result<Action, DropReason> {
    if flow.ip_hlen != IPV4_PLAIN_HLEN || flow.tos != 0 || flow.ttl <= 1 {
        return Ok(Action::Pass);
    }
    let skb = ctx.skb.skb;
    // SAFETY: the skb pointer is the program's context; these fields are
    // readable from TC programs.
    let (ingress, pkt_type, gso_size) =
        unsafe { ((*skb).ifindex, (*skb).pkt_type, (*skb).gso_size) };
    if pkt_type != PACKET_HOST {
        return Ok(Action::Pass);
    }
    // SAFETY: the value is plain data copied out at once.
    let from_own_pod = unsafe { ENDPOINTS.get(&flow.saddr) }
        .is_some_and(|ep| ep.flags & ep_flags::LOCAL_POD != 0 && ep.ifindex == ingress);
    if !from_own_pod {
        return Ok(Action::Pass);
    }
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = flow.proto;
    params.sport = flow.sport;
    params.dport = flow.dport;
    // A single packet is checked against the route's MTU (tot_len set); a
    // GSO packet, whose length is its segments' sum, against the device's
    // per segment (tot_len 0 makes the helper do that).
    if gso_size == 0 {
        params.__bindgen_anon_1.tot_len = flow.tot_len;
    }
    params.ifindex = ingress;
    params.__bindgen_anon_3.ipv4_src = flow.saddr;
    params.__bindgen_anon_4.ipv4_dst = flow.daddr;
    // SAFETY: params is a valid, initialised bpf_fib_lookup on our stack.
    let ret = unsafe {
        fib_lookup(
            skb.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && ret != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // Not forwardable as it is: the stack routes it and answers.
        return Ok(Action::Pass);
    }
    if params.ifindex == ingress {
        return Ok(Action::Pass);
    }
    if !hop(ctx, flow)? {
        return Ok(Action::Pass);
    }
    if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        set_macs(ctx, &params.dmac, &params.smac)?;
        return redirect(params.ifindex, 0);
    }
    // The kernel resolves the neighbour (and routes again) itself.
    // SAFETY: a NULL params pointer with plen 0 is the documented form.
    let ret = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Ok(Action::Redirect)
    } else {
        Err(DropReason::RewriteFailed)
    }
}
