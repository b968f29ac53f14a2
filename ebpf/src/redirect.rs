//! Delivery of translated packets: straight to a local pod's veth, or out
//! through the FIB for packets whose source is now a node address (the
//! stack would drop those as martians if they came back in through it).
//!
//! Local pods get `bpf_redirect` to the egress of their host-side veth,
//! not `bpf_redirect_peer`: the peer shortcut would skip that veth's TC
//! egress, where `weir_to_pod` (and the pod's ingress policy) runs.

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
