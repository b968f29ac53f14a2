//! Conntrack ABI: `weir_ct4_v1`, an LRU hash with one entry per direction of
//! a flow the datapath translated.
//!
//! A translated flow has two entries carrying the same [`Ct4Entry`] record:
//!
//! * the **forward** entry, keyed on the tuple of the client's packets as
//!   the datapath first sees them (client → frontend, before any NAT), with
//!   [`CT_DIR_FORWARD`];
//! * the **reply** entry, keyed on the tuple of the backend's replies as they
//!   arrive (backend → client, or backend → SNAT address), with
//!   [`CT_DIR_REPLY`].
//!
//! [`Ct4Entry::forward_key`] and [`Ct4Entry::reply_key`] derive both keys from
//! the record, so a GC that finds one entry can delete its partner too.
//!
//! Only `last_seen_ns`, `tcp_flags_seen` and `tcp_state` change after
//! creation, and each entry tracks its own direction: a GC judges a TCP flow
//! by both entries (see [`idle_timeout_secs`]).
//!
//! Addresses and ports are in network byte order, as they sit in packets.

/// Key direction: client → frontend, before translation.
pub const CT_DIR_FORWARD: u8 = 0;
/// Key direction: backend → client (or → SNAT address), as replies arrive.
pub const CT_DIR_REPLY: u8 = 1;

/// Key of `weir_ct4_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ct4Key {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// [`CT_DIR_FORWARD`] or [`CT_DIR_REPLY`].
    pub direction: u8,
    pub pad: [u8; 2],
}

/// Bits of [`Ct4Entry::nat_flags`]: which translations the flow carries.
pub mod nat_flags {
    /// The destination was translated from `orig_daddr:orig_dport` to
    /// `backend_addr:backend_port`.
    pub const DNAT: u8 = 1 << 0;
    /// The source was translated from `orig_saddr:orig_sport` to
    /// `snat_addr:snat_port` (externalTrafficPolicy=Cluster to a remote
    /// backend, or hairpin).
    pub const SNAT: u8 = 1 << 1;
    /// The SNAT is the hairpin case: a pod reached itself through a service.
    pub const HAIRPIN: u8 = 1 << 2;
}

/// Bits of [`Ct4Entry::flags`]: where the flow came from.
pub mod ct_flags {
    /// Created by `weir_from_netdev` (traffic from outside the node).
    pub const FROM_NETDEV: u8 = 1 << 0;
    /// Created by `weir_from_pod` (traffic from a local pod).
    pub const FROM_POD: u8 = 1 << 1;
    /// Created by `weir_to_netdev` (traffic from the node itself).
    pub const FROM_HOST: u8 = 1 << 2;
    /// The backend is a pod on this node.
    pub const LOCAL_BACKEND: u8 = 1 << 3;
    /// The frontend was looked up in [`crate::lb::SCOPE_INTERNAL`].
    pub const INTERNAL_SCOPE: u8 = 1 << 4;
}

/// Values of [`Ct4Entry::tcp_state`]: what this entry's direction has shown.
/// The datapath only ever raises the value (`max(old, new)`), so a late SYN
/// retransmit never reopens a closing flow.
pub mod tcp_state {
    /// Not TCP, or no packet seen in this direction yet.
    pub const NONE: u8 = 0;
    /// Only SYNs (with or without ACK) seen.
    pub const SYN: u8 = 1;
    /// A packet without SYN seen: the handshake completed in this direction.
    pub const ESTABLISHED: u8 = 2;
    /// A FIN seen.
    pub const FIN: u8 = 3;
    /// An RST seen: the flow is over.
    pub const RST: u8 = 4;
}

/// TCP flag bits as in the header's 13th byte, for [`Ct4Entry::tcp_flags_seen`].
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

// The datapath raises states with `max`, so progress must rank upwards.
const _: () = assert!(
    tcp_state::NONE < tcp_state::SYN
        && tcp_state::SYN < tcp_state::ESTABLISHED
        && tcp_state::ESTABLISHED < tcp_state::FIN
        && tcp_state::FIN < tcp_state::RST
);

/// The [`tcp_state`] a packet with these TCP flags shows.
pub const fn tcp_state_of(flags: u8) -> u8 {
    if flags & tcp_flags::RST != 0 {
        tcp_state::RST
    } else if flags & tcp_flags::FIN != 0 {
        tcp_state::FIN
    } else if flags & tcp_flags::SYN != 0 {
        tcp_state::SYN
    } else {
        tcp_state::ESTABLISHED
    }
}

/// Value of `weir_ct4_v1`: the same record under both keys of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ct4Entry {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet in this
    /// entry's direction.
    pub last_seen_ns: u64,
    /// `bpf_ktime_get_ns()` when the flow was created.
    pub created_ns: u64,
    /// The client, as it sent the first packet.
    pub orig_saddr: u32,
    /// The frontend the client addressed (ClusterIP, node IP, ...).
    pub orig_daddr: u32,
    pub orig_sport: u16,
    pub orig_dport: u16,
    /// The backend the flow was translated to. Established flows keep using
    /// it even after the backend left the service maps (as nf_conntrack does).
    pub backend_addr: u32,
    pub backend_port: u16,
    /// Source port after SNAT, with [`nat_flags::SNAT`].
    pub snat_port: u16,
    /// Source address after SNAT, with [`nat_flags::SNAT`].
    pub snat_addr: u32,
    /// The backend's id in `weir_lb4_backends_v1` (for flushing UDP flows of
    /// a removed backend).
    pub backend_id: u32,
    /// The interface the first packet came in on.
    pub ifindex: u32,
    /// Reserved for policy (next issue): the policy revision the flow was
    /// admitted under. 0 today.
    pub policy_revision: u32,
    /// The frontend's reverse-NAT index (`weir_lb4_revnat_v1`).
    pub rev_nat_index: u16,
    /// [`nat_flags`] bits.
    pub nat_flags: u8,
    /// [`tcp_state`] of this entry's direction.
    pub tcp_state: u8,
    /// OR of the [`tcp_flags`] seen in this entry's direction.
    pub tcp_flags_seen: u8,
    /// [`ct_flags`] bits.
    pub flags: u8,
    /// IP protocol number, as in the keys.
    pub proto: u8,
    pub pad: [u8; 5],
}

impl Ct4Entry {
    /// The key of the client's packets (before translation).
    pub const fn forward_key(&self) -> Ct4Key {
        Ct4Key {
            saddr: self.orig_saddr,
            daddr: self.orig_daddr,
            sport: self.orig_sport,
            dport: self.orig_dport,
            proto: self.proto,
            direction: CT_DIR_FORWARD,
            pad: [0; 2],
        }
    }

    /// The key of the backend's replies, as they arrive.
    pub const fn reply_key(&self) -> Ct4Key {
        let snat = self.nat_flags & nat_flags::SNAT != 0;
        Ct4Key {
            saddr: self.backend_addr,
            daddr: if snat {
                self.snat_addr
            } else {
                self.orig_saddr
            },
            sport: self.backend_port,
            dport: if snat {
                self.snat_port
            } else {
                self.orig_sport
            },
            proto: self.proto,
            direction: CT_DIR_REPLY,
            pad: [0; 2],
        }
    }
}

/// Idle timeouts, in seconds, in the spirit of Cilium's defaults (which
/// nf_conntrack's resemble): a flow whose newest `last_seen_ns` is older than
/// this is expired by the GC.
pub mod timeouts {
    /// Non-TCP flows (UDP).
    pub const NON_TCP: u64 = 60;
    /// TCP while only SYNs were seen.
    pub const TCP_SYN: u64 = 60;
    /// TCP once both directions are established.
    pub const TCP_ESTABLISHED: u64 = 21_600;
    /// TCP once a FIN or RST was seen.
    pub const TCP_CLOSING: u64 = 10;
}

/// The idle timeout of a flow, from its protocol and the [`tcp_state`] of its
/// forward and reply entries (use [`tcp_state::NONE`] for a missing entry).
pub const fn idle_timeout_secs(proto: u8, forward_state: u8, reply_state: u8) -> u64 {
    if proto != 6 {
        return timeouts::NON_TCP;
    }
    let highest = if forward_state > reply_state {
        forward_state
    } else {
        reply_state
    };
    let lowest = if forward_state < reply_state {
        forward_state
    } else {
        reply_state
    };
    if highest >= tcp_state::FIN {
        timeouts::TCP_CLOSING
    } else if lowest >= tcp_state::ESTABLISHED {
        timeouts::TCP_ESTABLISHED
    } else {
        timeouts::TCP_SYN
    }
}

/// Key of `weir_frag4_v1`: one fragmented datagram. The datapath records
/// the L4 ports of a first fragment here, so later fragments (which carry no
/// L4 header) get the same conntrack and NAT treatment. Datapath-internal.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Frag4Key {
    pub saddr: u32,
    pub daddr: u32,
    /// The IP identification field.
    pub id: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of `weir_frag4_v1`: the first fragment's ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frag4Ports {
    pub sport: u16,
    pub dport: u16,
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: repr(C), built from integers, with explicit padding fields, so
    // every byte pattern is valid and none is uninit.
    unsafe impl aya::Pod for Ct4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Ct4Entry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Frag4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Frag4Ports {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Ct4Key>(), 16);
        assert_eq!(size_of::<Ct4Entry>(), 64);
        assert_eq!(size_of::<Frag4Key>(), 12);
        assert_eq!(size_of::<Frag4Ports>(), 4);
        assert_eq!(offset_of!(Ct4Entry, orig_saddr), 16);
        assert_eq!(offset_of!(Ct4Entry, backend_addr), 28);
        assert_eq!(offset_of!(Ct4Entry, snat_addr), 36);
        assert_eq!(offset_of!(Ct4Entry, policy_revision), 48);
        assert_eq!(offset_of!(Ct4Entry, rev_nat_index), 52);
        assert_eq!(offset_of!(Ct4Entry, proto), 58);
    }

    fn entry(nat: u8) -> Ct4Entry {
        Ct4Entry {
            orig_saddr: 1,
            orig_daddr: 2,
            orig_sport: 3,
            orig_dport: 4,
            backend_addr: 5,
            backend_port: 6,
            snat_addr: 7,
            snat_port: 8,
            nat_flags: nat,
            proto: 17,
            ..Ct4Entry::default()
        }
    }

    #[test]
    fn keys_follow_the_translation() {
        let dnat = entry(nat_flags::DNAT);
        let forward = dnat.forward_key();
        assert_eq!(
            (forward.saddr, forward.daddr, forward.sport, forward.dport),
            (1, 2, 3, 4)
        );
        assert_eq!((forward.proto, forward.direction), (17, CT_DIR_FORWARD));
        let reply = dnat.reply_key();
        assert_eq!(
            (reply.saddr, reply.daddr, reply.sport, reply.dport),
            (5, 1, 6, 3)
        );
        assert_eq!(reply.direction, CT_DIR_REPLY);

        let snat = entry(nat_flags::DNAT | nat_flags::SNAT).reply_key();
        assert_eq!(
            (snat.saddr, snat.daddr, snat.sport, snat.dport),
            (5, 7, 6, 8)
        );
    }

    #[test]
    fn tcp_states_rank_by_progress() {
        use tcp_flags::*;
        assert_eq!(tcp_state_of(SYN), tcp_state::SYN);
        assert_eq!(tcp_state_of(SYN | ACK), tcp_state::SYN);
        assert_eq!(tcp_state_of(ACK), tcp_state::ESTABLISHED);
        assert_eq!(tcp_state_of(ACK | PSH), tcp_state::ESTABLISHED);
        assert_eq!(tcp_state_of(FIN | ACK), tcp_state::FIN);
        assert_eq!(tcp_state_of(RST | ACK), tcp_state::RST);
    }

    #[test]
    fn timeouts_follow_the_weaker_and_the_stronger_direction() {
        use tcp_state::*;
        assert_eq!(idle_timeout_secs(17, NONE, NONE), timeouts::NON_TCP);
        assert_eq!(idle_timeout_secs(6, SYN, NONE), timeouts::TCP_SYN);
        assert_eq!(idle_timeout_secs(6, ESTABLISHED, SYN), timeouts::TCP_SYN);
        assert_eq!(
            idle_timeout_secs(6, ESTABLISHED, ESTABLISHED),
            timeouts::TCP_ESTABLISHED
        );
        assert_eq!(
            idle_timeout_secs(6, FIN, ESTABLISHED),
            timeouts::TCP_CLOSING
        );
        assert_eq!(
            idle_timeout_secs(6, ESTABLISHED, RST),
            timeouts::TCP_CLOSING
        );
    }
}
