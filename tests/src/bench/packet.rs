//! Ethernet + IPv4 + TCP frames with valid checksums, as a pod sends them, and the few fields the
//! bench reads back from a program's output.

use std::net::Ipv4Addr;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const TCP_LEN: usize = 20;

/// A TCP segment from `src` to `dst` with `flags` and `payload`.
pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = IP_LEN + TCP_LEN + payload.len();
    let mut p = Vec::with_capacity(ETH_LEN + total);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]); // to the gateway
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // from the pod
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4 header, no options.
    p.push(0x45);
    p.push(0);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&0x1234u16.to_be_bytes());
    p.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
    p.push(64);
    p.push(6);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.0.octets());
    p.extend_from_slice(&dst.0.octets());
    let ip_sum = checksum(&p[ETH_LEN..ETH_LEN + IP_LEN], 0);
    p[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP header.
    let l4 = p.len();
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&1000u32.to_be_bytes());
    p.extend_from_slice(&(if flags & ACK != 0 { 5000u32 } else { 0 }).to_be_bytes());
    p.push(((TCP_LEN / 4) as u8) << 4);
    p.push(flags);
    p.extend_from_slice(&64240u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((TCP_LEN + payload.len()) as u16).to_be_bytes());
    let tcp_sum = checksum(&p[l4..], sum(&pseudo, 0));
    p[l4 + 16..l4 + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The destination address and port of a frame built by [`tcp`] (or translated from one).
pub fn destination(frame: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let addr: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
    let port: [u8; 2] = frame.get(36..38)?.try_into().ok()?;
    Some((Ipv4Addr::from(addr), u16::from_be_bytes(port)))
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let hi = chunk.first().copied().unwrap_or(0);
        let lo = chunk.get(1).copied().unwrap_or(0);
        acc += u32::from(u16::from_be_bytes([hi, lo]));
    }
    acc
}

/// The Internet checksum (RFC 1071) of `data` on top of the partial sum `acc`.
fn checksum(data: &[u8], acc: u32) -> u16 {
    let mut acc = sum(data, acc);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let src = (Ipv4Addr::new(10, 244, 1, 2), 40000);
        let dst = (Ipv4Addr::new(10, 96, 0, 1), 80);
        let frame = tcp(src, dst, ACK | 0x08, b"odd");
        // A header summed with its checksum folds to 0xffff, i.e. checksum() == 0.
        assert_eq!(checksum(&frame[14..34], 0), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.0.octets());
        pseudo.extend_from_slice(&dst.0.octets());
        pseudo.extend_from_slice(&[0, 6, 0, 23]);
        assert_eq!(checksum(&frame[34..], sum(&pseudo, 0)), 0);
        assert_eq!(destination(&frame), Some(dst));
        assert_eq!(frame.len(), 14 + 20 + 20 + 3);
    }
}
