//! Header parsing: Ethernet, IPv4 (IHL-aware) and the TCP/UDP/SCTP ports.
//!
//! Reads go through `bpf_skb_load_bytes`, which bounds-checks for us: a short
//! packet is an error, never an out-of-bounds read.
//!
//! **Fragments.** A first fragment (MF set, offset 0) carries the L4 header:
//! it is parsed as usual and its ports are remembered in `weir_frag4_v1`
//! under (saddr, daddr, IP id, proto). A later fragment (offset > 0) carries
//! no L4 header, so its bytes at the L4 offset are payload and are never read
//! as ports: it takes the ports of its first fragment from that map and gets
//! the same conntrack and NAT treatment, rewriting only the IP header (the L4
//! checksum lives in the first fragment, which the first fragment's rewrite
//! already updated for the whole datagram). A later fragment whose first
//! fragment was not seen (reordered, or the map entry was evicted) passes
//! untranslated: it cannot be attributed to a flow, and guessing would
//! corrupt someone else's datagram. Later fragments never create flows.
//! This is Cilium's scheme (its `cilium_ipv4_frag_datagrams` map).

use aya_ebpf::programs::TcContext;
use weir_common::{
    DropReason,
    ct::{Frag4Key, Frag4Ports},
};

use crate::maps::FRAG4;

pub const ETH_HLEN: u32 = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_MIN_HLEN: u8 = 5;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// SCTP's common header starts with the ports, like UDP's: policy matches
/// them; the service LB ignores SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// Offsets of IPv4 header fields in the frame.
pub mod ip_off {
    use super::ETH_HLEN;
    pub const TTL: u32 = ETH_HLEN + 8;
    pub const CSUM: u32 = ETH_HLEN + 10;
    pub const SADDR: u32 = ETH_HLEN + 12;
    pub const DADDR: u32 = ETH_HLEN + 16;
}

const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The IPv4 header as it sits in the packet (multi-byte fields big-endian).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// An IPv4 packet's flow: addresses, protocol and, where known, ports.
/// Addresses and ports in network byte order, as in the packet.
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags (0 when not TCP or no L4 header).
    pub tcp_flags: u8,
    /// Whether this packet carries the L4 header (false for later fragments).
    pub has_l4: bool,
    /// Whether `sport`/`dport` are known (from the header or the first
    /// fragment); false for ICMP and unattributed later fragments.
    pub has_ports: bool,
    /// Offset of the L4 header in the frame.
    pub l4_off: u32,
    /// IHL * 4.
    pub ip_hlen: u32,
    pub tot_len: u16,
    pub ttl: u8,
    /// The IPv4 header's TOS byte.
    pub tos: u8,
}

/// What a packet turned out to be.
pub enum L3 {
    Ipv4(Flow),
    /// ARP, IPv6 and the rest: not ours to judge.
    Other,
}

/// Parses the Ethernet and IPv4 headers and the L4 ports.
#[inline(always)]
pub fn packet(ctx: &TcContext) -> Result<L3, DropReason> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).map_err(|_| DropReason::Malformed)?);
    if ethertype != ETH_P_IP {
        return Ok(L3::Other);
    }
    let ip: Ipv4Hdr = ctx
        .load(ETH_HLEN as usize)
        .map_err(|_| DropReason::Malformed)?;
    let ihl = ip.version_ihl & 0x0f;
    if ip.version_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(DropReason::InvalidIpHeader);
    }
    let ip_hlen = u32::from(ihl) * 4;
    let tot_len = u16::from_be(ip.tot_len);
    if u32::from(tot_len) < ip_hlen {
        return Err(DropReason::InvalidIpHeader);
    }
    let mut flow = Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: 0,
        dport: 0,
        proto: ip.protocol,
        tcp_flags: 0,
        has_l4: true,
        has_ports: false,
        l4_off: ETH_HLEN + ip_hlen,
        ip_hlen,
        tot_len,
        ttl: ip.ttl,
        tos: ip.tos,
    };
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP && flow.proto != IPPROTO_SCTP {
        flow.has_l4 = u16::from_be(ip.frag_off) & IP_OFFSET_MASK == 0;
        return Ok(L3::Ipv4(flow));
    }

    let frag_off = u16::from_be(ip.frag_off);
    let frag_key = Frag4Key {
        saddr: ip.saddr,
        daddr: ip.daddr,
        id: ip.id,
        proto: ip.protocol,
        pad: 0,
    };
    if frag_off & IP_OFFSET_MASK != 0 {
        // A later fragment: the bytes at l4_off are payload.
        flow.has_l4 = false;
        // SAFETY: the value is plain data copied out at once.
        if let Some(ports) = unsafe { FRAG4.get(&frag_key) } {
            flow.sport = ports.sport;
            flow.dport = ports.dport;
            flow.has_ports = true;
        }
        return Ok(L3::Ipv4(flow));
    }

    let ports: [u16; 2] = ctx
        .load(flow.l4_off as usize)
        .map_err(|_| DropReason::Malformed)?;
    flow.sport = ports[0];
    flow.dport = ports[1];
    flow.has_ports = true;
    if flow.proto == IPPROTO_TCP {
        flow.tcp_flags = ctx
            .load(flow.l4_off as usize + 13)
            .map_err(|_| DropReason::Malformed)?;
    }
    if frag_off & IP_MF != 0 {
        let ports = Frag4Ports {
            sport: flow.sport,
            dport: flow.dport,
        };
        // Losing this entry only costs the later fragments their
        // translation (they pass untranslated, see the module docs).
        let _lost_later_fragments = FRAG4.insert(&frag_key, &ports, 0);
    }
    Ok(L3::Ipv4(flow))
}
