//! Header parsing. Reads go through `bpf_skb_load_bytes`, which bounds-checks
//! for us; a short packet is an error, never an out-of-bounds read.

use aya_ebpf::programs::TcContext;
use weir_common::DropReason;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_MIN_HLEN: u8 = 5;

/// The IPv4 fields the datapath decides on.
#[derive(Clone, Copy)]
#[expect(
    dead_code,
    reason = "read by the service and policy modules built on this parser"
)]
pub struct Ipv4 {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    pub protocol: u8,
    /// Header length in bytes (IHL * 4).
    pub header_len: u8,
}

/// What a packet turned out to be.
pub enum L3 {
    #[expect(
        dead_code,
        reason = "read by the service and policy modules built on this parser"
    )]
    Ipv4(Ipv4),
    /// ARP, IPv6 and the rest: not ours to judge yet.
    Other,
}

/// Parses the Ethernet and IPv4 headers, IHL-aware.
#[inline(always)]
pub fn l3(ctx: &TcContext) -> Result<L3, DropReason> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).map_err(|_| DropReason::Malformed)?);
    if ethertype != ETH_P_IP {
        return Ok(L3::Other);
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    let ihl = version_ihl & 0x0f;
    if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(DropReason::InvalidIpHeader);
    }
    let header_len = ihl * 4;
    let total_len = u16::from_be(
        ctx.load::<u16>(ETH_HLEN + 2)
            .map_err(|_| DropReason::Malformed)?,
    );
    if total_len < u16::from(header_len) {
        return Err(DropReason::InvalidIpHeader);
    }
    let protocol: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| DropReason::Malformed)?;
    let saddr: u32 = ctx.load(ETH_HLEN + 12).map_err(|_| DropReason::Malformed)?;
    let daddr: u32 = ctx.load(ETH_HLEN + 16).map_err(|_| DropReason::Malformed)?;
    Ok(L3::Ipv4(Ipv4 {
        saddr,
        daddr,
        protocol,
        header_len,
    }))
}
