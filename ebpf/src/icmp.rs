//! ICMP errors about translated flows (destination unreachable, time
//! exceeded, parameter problem), as nf_conntrack handles "related" packets:
//! an error a backend (or a router on its path) sends about a packet of a
//! translated flow quotes the packet as translated (client → backend). The
//! client only matches the error to its socket if the quote shows what it
//! sent (client → service), so the quoted header is translated back, and
//! the outer header like any reply. A UDP client of a service whose backend
//! does not listen thus gets ECONNREFUSED, and PMTU discovery works
//! through services.
//!
//! The quoted L4 checksum is left alone: it covers a datagram the error no
//! longer carries, and receivers do not check it.

use aya_ebpf::programs::TcContext;
use weir_common::{
    DropReason,
    ct::{CT_DIR_REPLY, Ct4Entry, Ct4Key, nat_flags},
};

use crate::{
    csum,
    maps::CT4,
    parse::{Flow, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, ip_off},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
/// type, code, checksum, 4 bytes of type-specific data.
const ICMP_HLEN: u32 = 8;

/// Translates an ICMP error about a translated flow back, outer and quoted
/// headers. Returns the flow's record when it did; `flow` follows the packet.
#[inline(always)]
pub fn reverse_error(ctx: &TcContext, flow: &mut Flow) -> Result<Option<Ct4Entry>, DropReason> {
    if !flow.has_l4 {
        return Ok(None);
    }
    let Ok(icmp_type) = ctx.load::<u8>(flow.l4_off as usize) else {
        return Ok(None);
    };
    if !matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
    ) {
        return Ok(None);
    }
    let quote = flow.l4_off + ICMP_HLEN;
    // A quote too short to name its flow is not ours to translate.
    let Ok(inner) = ctx.load::<Ipv4Hdr>(quote as usize) else {
        return Ok(None);
    };
    let ihl = u32::from(inner.version_ihl & 0x0f);
    if ihl < 5 || (inner.protocol != IPPROTO_TCP && inner.protocol != IPPROTO_UDP) {
        return Ok(None);
    }
    let inner_l4 = quote + ihl * 4;
    let Ok(ports) = ctx.load::<[u16; 2]>(inner_l4 as usize) else {
        return Ok(None);
    };
    // The quoted packet went client → backend: its flow's reply key.
    let key = Ct4Key {
        saddr: inner.daddr,
        daddr: inner.saddr,
        sport: ports[1],
        dport: ports[0],
        proto: inner.protocol,
        direction: CT_DIR_REPLY,
        pad: [0; 2],
    };
    // SAFETY: the value is plain data copied out at once.
    let Some(entry) = unsafe { CT4.get(&key) }.copied() else {
        return Ok(None);
    };

    let icmp_csum = flow.l4_off + 2;
    let mut check = inner.check;
    if entry.nat_flags & nat_flags::DNAT != 0 {
        let daddr = quote + 16;
        csum::replace_l4_field(ctx, icmp_csum, daddr, inner.daddr, entry.orig_daddr)?;
        check = csum::updated(check, inner.daddr, entry.orig_daddr);
        csum::replace_l4_field(ctx, icmp_csum, inner_l4 + 2, ports[1], entry.orig_dport)?;
        if flow.saddr == entry.backend_addr {
            // The backend itself reports: it speaks as the service.
            csum::replace_addr(ctx, flow, ip_off::SADDR, flow.saddr, entry.orig_daddr)?;
            flow.saddr = entry.orig_daddr;
        }
    }
    if entry.nat_flags & nat_flags::SNAT != 0 {
        let saddr = quote + 12;
        csum::replace_l4_field(ctx, icmp_csum, saddr, inner.saddr, entry.orig_saddr)?;
        check = csum::updated(check, inner.saddr, entry.orig_saddr);
        csum::replace_l4_field(ctx, icmp_csum, inner_l4, ports[0], entry.orig_sport)?;
        csum::replace_addr(ctx, flow, ip_off::DADDR, flow.daddr, entry.orig_saddr)?;
        flow.daddr = entry.orig_saddr;
    }
    csum::replace_l4_field(ctx, icmp_csum, quote + 10, inner.check, check)?;
    Ok(Some(entry))
}
