//! Packet translation from a conntrack record: the forward direction gets
//! DNAT to the backend (and SNAT where the flow has it), replies get the
//! reverse.

use aya_ebpf::programs::TcContext;
use weir_common::{
    DropReason,
    ct::{Ct4Entry, nat_flags},
};

use crate::{
    csum,
    parse::{Flow, ip_off},
};

#[inline(always)]
fn set_daddr(ctx: &TcContext, flow: &mut Flow, addr: u32, port: u16) -> Result<(), DropReason> {
    csum::replace_addr(ctx, flow, ip_off::DADDR, flow.daddr, addr)?;
    csum::replace_port(ctx, flow, flow.l4_off + 2, flow.dport, port)?;
    flow.daddr = addr;
    flow.dport = port;
    Ok(())
}

#[inline(always)]
fn set_saddr(ctx: &TcContext, flow: &mut Flow, addr: u32, port: u16) -> Result<(), DropReason> {
    csum::replace_addr(ctx, flow, ip_off::SADDR, flow.saddr, addr)?;
    csum::replace_port(ctx, flow, flow.l4_off, flow.sport, port)?;
    flow.saddr = addr;
    flow.sport = port;
    Ok(())
}

/// Translates a packet of the client's direction; `flow` follows the packet.
#[inline(always)]
pub fn forward(ctx: &TcContext, flow: &mut Flow, entry: &Ct4Entry) -> Result<(), DropReason> {
    if entry.nat_flags & nat_flags::DNAT != 0 {
        set_daddr(ctx, flow, entry.backend_addr, entry.backend_port)?;
    }
    if entry.nat_flags & nat_flags::SNAT != 0 {
        set_saddr(ctx, flow, entry.snat_addr, entry.snat_port)?;
    }
    Ok(())
}

/// Translates a reply back: its source becomes the frontend the client
/// addressed and, for SNATed flows, its destination the client again.
#[inline(always)]
pub fn reverse(ctx: &TcContext, flow: &mut Flow, entry: &Ct4Entry) -> Result<(), DropReason> {
    if entry.nat_flags & nat_flags::DNAT != 0 {
        set_saddr(ctx, flow, entry.orig_daddr, entry.orig_dport)?;
    }
    if entry.nat_flags & nat_flags::SNAT != 0 {
        set_daddr(ctx, flow, entry.orig_saddr, entry.orig_sport)?;
    }
    Ok(())
}
