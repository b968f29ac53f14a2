//! Checksums: incremental updates through the kernel's csum helpers (which
//! know about `CHECKSUM_PARTIAL` skbs), and a one's-complement sum for
//! headers the datapath writes from scratch.
//!
//! Address changes are part of the TCP/UDP pseudo-header and go with
//! `BPF_F_PSEUDO_HDR`; port and other L4 field changes do not. UDP updates
//! carry `BPF_F_MARK_MANGLED_0`: a zero UDP checksum ("none") stays zero, and
//! a computed zero is written as 0xffff.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use weir_common::DropReason;

use crate::parse::{Flow, IPPROTO_TCP, IPPROTO_UDP, ip_off};

/// Where the L4 checksum of `flow` sits and the flags its updates need; None
/// when the packet carries no L4 checksum we maintain.
#[inline(always)]
fn l4_csum(flow: &Flow) -> Option<(u32, u64)> {
    if !flow.has_l4 {
        return None;
    }
    match flow.proto {
        IPPROTO_TCP => Some((flow.l4_off + 16, 0)),
        IPPROTO_UDP => Some((flow.l4_off + 6, u64::from(BPF_F_MARK_MANGLED_0))),
        _ => None,
    }
}

/// Replaces a 4-byte IP header field (an address) at `offset`, fixing the IP
/// checksum and, as a pseudo-header field, the L4 checksum.
#[inline(always)]
pub fn replace_addr(
    ctx: &TcContext,
    flow: &Flow,
    offset: u32,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    if let Some((csum_off, flags)) = l4_csum(flow) {
        ctx.l4_csum_replace(
            csum_off as usize,
            u64::from(old),
            u64::from(new),
            flags | u64::from(BPF_F_PSEUDO_HDR) | 4,
        )
        .map_err(|_| DropReason::RewriteFailed)?;
    }
    ctx.l3_csum_replace(ip_off::CSUM as usize, u64::from(old), u64::from(new), 4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(offset as usize, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// Replaces a 2-byte L4 header field (a port) at `offset`, fixing the L4
/// checksum. A no-op for packets without an L4 header.
#[inline(always)]
pub fn replace_port(
    ctx: &TcContext,
    flow: &Flow,
    offset: u32,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new || !flow.has_l4 {
        return Ok(());
    }
    if let Some((csum_off, flags)) = l4_csum(flow) {
        ctx.l4_csum_replace(csum_off as usize, u64::from(old), u64::from(new), flags | 2)
            .map_err(|_| DropReason::RewriteFailed)?;
    }
    ctx.store(offset as usize, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// Replaces a 2- or 4-byte field covered by the L4 checksum at `csum_off`
/// but not part of a pseudo-header (TCP fields, or anything inside an ICMP
/// message).
#[inline(always)]
pub fn replace_l4_field<T: Into<u64> + Copy + PartialEq>(
    ctx: &TcContext,
    csum_off: u32,
    offset: u32,
    old: T,
    new: T,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.l4_csum_replace(
        csum_off as usize,
        old.into(),
        new.into(),
        core::mem::size_of::<T>() as u64,
    )
    .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(offset as usize, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// Replaces the 16-bit IP header word at `offset` (e.g. TTL + protocol),
/// fixing the IP checksum.
#[inline(always)]
pub fn replace_ip_u16(ctx: &TcContext, offset: u32, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(ip_off::CSUM as usize, u64::from(old), u64::from(new), 2)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(offset as usize, &new, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// A header checksum after one of the words it covers changed from `old` to
/// `new` (RFC 1624), all in memory order.
#[inline(always)]
pub const fn updated(check: u16, old: u32, new: u32) -> u16 {
    let mut sum = (!check) as u32;
    sum = add_u32(sum, !old);
    sum = add_u32(sum, new);
    finish(sum)
}

/// Adds the 16-bit halves of a raw (memory-order) word to a running sum.
#[inline(always)]
pub const fn add_u32(sum: u32, word: u32) -> u32 {
    sum + (word & 0xffff) + (word >> 16)
}

/// Folds a running sum into the checksum to store (memory order).
#[inline(always)]
pub const fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
