//! Service load-balancing maps, in Cilium's shape.
//!
//! `weir_lb4_svc_v1` holds, per frontend `(vip, port, proto, scope)`, a
//! frontend entry in slot 0 (backend count, reverse-NAT index, flags) plus
//! one entry per backend slot `1..=count` naming a backend id. Backends live
//! in `weir_lb4_backends_v1` by id; replies are rewritten back to the
//! frontend through `weir_lb4_revnat_v1` by reverse-NAT index.
//!
//! Writers update backends first, then slots, then the slot-0 count, so a
//! reader never follows a slot to a missing backend.
//!
//! Addresses and ports are in network byte order, as they sit in packets.
//!
//! # How the datapath reads these maps (the writer's contract)
//!
//! * **Scope.** Traffic from a local pod or the node itself looks up slot 0
//!   in [`SCOPE_INTERNAL`] first, then in [`SCOPE_EXTERNAL`]; traffic from
//!   outside the node looks up [`SCOPE_EXTERNAL`] first, then
//!   [`SCOPE_INTERNAL`] but only if that entry lacks
//!   [`svc_flags::TWO_SCOPES`]. So a single-scope frontend may be written in
//!   either scope; a two-scope service writes both, each with `TWO_SCOPES`.
//! * **count == 0** rejects new flows (TCP RST / ICMP port unreachable),
//!   except with [`svc_flags::LOCAL_ONLY`], where they are dropped, as
//!   kube-proxy drops xTP=Local traffic that has endpoints but none on this
//!   node. A LOCAL_ONLY frontend of a service with no endpoints at all should
//!   therefore be written without LOCAL_ONLY, so it rejects.
//! * **Slot choice** for a new flow: a live ClientIP affinity entry (with
//!   [`svc_flags::AFFINITY`]) whose backend still exists, else the Maglev
//!   table entry [`maglev_index`] of the flow (with [`svc_flags::MAGLEV`]),
//!   else [`random_slot`]. The chosen backend is stored in conntrack, so
//!   established flows keep it after the service changes.
//! * **SNAT.** Traffic from outside the node to a frontend without
//!   LOCAL_ONLY whose chosen backend is not local (`Lb4Backend::local == 0`)
//!   is SNATed to the node IP from `weir_config_v1`.
//! * Only TCP and UDP frontends are translated; SCTP frontends are not.

/// Frontend scope: who is asking. Services whose internal and external
/// backend sets differ (externalTrafficPolicy or internalTrafficPolicy
/// Local) get one frontend per scope.
pub const SCOPE_EXTERNAL: u8 = 0;
pub const SCOPE_INTERNAL: u8 = 1;

/// Key of `weir_lb4_svc_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4Key {
    /// Frontend address (ClusterIP, node IP, LoadBalancer or external IP).
    pub address: u32,
    pub dport: u16,
    /// 0 for the frontend entry, `1..=count` for backend slots.
    pub backend_slot: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// [`SCOPE_EXTERNAL`] or [`SCOPE_INTERNAL`].
    pub scope: u8,
    pub pad: [u8; 2],
}

/// Service flags in [`Lb4Service::flags`].
pub mod svc_flags {
    /// A ClusterIP frontend.
    pub const CLUSTER_IP: u16 = 1 << 0;
    /// A NodePort frontend (one per node IP).
    pub const NODE_PORT: u16 = 1 << 1;
    /// A `status.loadBalancer.ingress` IP.
    pub const LOAD_BALANCER: u16 = 1 << 2;
    /// An `externalIPs` entry.
    pub const EXTERNAL_IP: u16 = 1 << 3;
    /// `sessionAffinity: ClientIP`; the timeout is in `affinity_timeout`.
    pub const AFFINITY: u16 = 1 << 4;
    /// Backends in this scope are node-local only (xTP Local): keep the
    /// client's source address, never SNAT.
    pub const LOCAL_ONLY: u16 = 1 << 5;
    /// Pick the slot through the Maglev table instead of at random.
    pub const MAGLEV: u16 = 1 << 6;
    /// The service has internal and external frontends with different
    /// backend sets; the datapath must pick the scope.
    pub const TWO_SCOPES: u16 = 1 << 7;
}

/// Value of `weir_lb4_svc_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4Service {
    /// Backend id, in backend slots. Unused in slot 0.
    pub backend_id: u32,
    /// Number of backend slots, in slot 0. 0 means "reject new flows".
    pub count: u16,
    /// Reverse-NAT index of this frontend (same value in every slot).
    pub rev_nat_index: u16,
    /// [`svc_flags`] bits, in slot 0.
    pub flags: u16,
    pub pad: u16,
    /// ClientIP affinity timeout in seconds, in slot 0.
    pub affinity_timeout: u32,
}

/// Backend states in [`Lb4Backend::state`].
pub const BACKEND_ACTIVE: u8 = 0;
/// Serving but terminating: only used when no active backend exists; the
/// agent then fills the slots with these.
pub const BACKEND_TERMINATING: u8 = 1;

/// Value of `weir_lb4_backends_v1`, keyed by backend id (u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4Backend {
    pub address: u32,
    pub port: u16,
    pub proto: u8,
    pub state: u8,
    /// 1 when the backend is a pod on this node.
    pub local: u8,
    pub pad: [u8; 3],
}

/// Value of `weir_lb4_revnat_v1`, keyed by reverse-NAT index (u16): what a
/// reply's source is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4RevNat {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// Key of `weir_lb4_affinity_v1`: one client of one frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4AffinityKey {
    pub client: u32,
    pub rev_nat_index: u16,
    pub pad: u16,
}

/// Value of `weir_lb4_affinity_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4AffinityValue {
    /// `bpf_ktime_get_ns()` of the last use.
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub pad: u32,
}

/// Size of every Maglev lookup table (a prime, as Maglev requires).
pub const MAGLEV_TABLE_SIZE: u32 = 1021;

/// Key of `weir_lb4_maglev_v1`: entry `index` of a frontend's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4MaglevKey {
    pub rev_nat_index: u16,
    pub pad: u16,
    /// `0..MAGLEV_TABLE_SIZE`.
    pub index: u32,
}

/// Key of `weir_lb4_sockrev_v1`: one socket's view of one backend, written
/// by the socket LB at connect/sendmsg time and read at recvmsg/getpeername.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4SockRevKey {
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    /// The backend the socket was sent to.
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// Value of `weir_lb4_sockrev_v1`: the frontend the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4SockRevValue {
    pub address: u32,
    pub port: u16,
    pub rev_nat_index: u16,
}

/// The backend slot (`1..=count`) for a random draw; `count` must be > 0.
pub const fn random_slot(random: u32, count: u16) -> u16 {
    if count == 0 {
        return 0;
    }
    (random % count as u32) as u16 + 1
}

/// A well-mixed hash of a flow's 5-tuple (fields as they sit in the packet).
/// Maglev picks the table entry with it, so the same flow always lands on
/// the same entry, on every node.
pub const fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = mix(0x9e37_79b9 ^ saddr);
    h = mix(h ^ daddr);
    h = mix(h ^ ((sport as u32) << 16 | dport as u32));
    mix(h ^ proto as u32)
}

/// The Maglev table entry of a flow hash: `0..MAGLEV_TABLE_SIZE`.
pub const fn maglev_index(hash: u32) -> u32 {
    hash % MAGLEV_TABLE_SIZE
}

/// The murmur3 finalizer: every input bit flips about half the output bits.
const fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all of these are repr(C), built from integers, with explicit
    // padding fields, so every byte pattern is valid and none is uninit.
    unsafe impl aya::Pod for Lb4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4RevNat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4AffinityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4MaglevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4SockRevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lb4SockRevValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Lb4Key>(), 12);
        assert_eq!(size_of::<Lb4Service>(), 16);
        assert_eq!(size_of::<Lb4Backend>(), 12);
        assert_eq!(size_of::<Lb4RevNat>(), 8);
        assert_eq!(size_of::<Lb4AffinityKey>(), 8);
        assert_eq!(size_of::<Lb4AffinityValue>(), 16);
        assert_eq!(size_of::<Lb4MaglevKey>(), 8);
        assert_eq!(size_of::<Lb4SockRevKey>(), 16);
        assert_eq!(size_of::<Lb4SockRevValue>(), 8);
    }

    #[test]
    fn random_slots_cover_one_to_count() {
        assert_eq!(random_slot(0, 3), 1);
        assert_eq!(random_slot(2, 3), 3);
        assert_eq!(random_slot(u32::MAX, 1), 1);
        assert_eq!(random_slot(7, 0), 0);
        let mut seen = [false; 5];
        for r in 0..100 {
            let slot = random_slot(r, 5);
            assert!((1..=5).contains(&slot));
            seen[usize::from(slot - 1)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn flow_hash_spreads_source_ports_over_the_maglev_table() {
        // Consecutive source ports of one client must not cluster: count
        // table entries hit in buckets of 1021/8.
        let mut buckets = [0u32; 8];
        for sport in 0..8000u16 {
            let index = maglev_index(flow_hash(0x0a00_0001, 0x0a60_0001, sport, 80, 6));
            assert!(index < MAGLEV_TABLE_SIZE);
            buckets[(index * 8 / MAGLEV_TABLE_SIZE) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
        assert_ne!(flow_hash(1, 2, 3, 4, 6), flow_hash(1, 2, 3, 4, 17));
        assert_ne!(flow_hash(1, 2, 3, 4, 6), flow_hash(2, 1, 4, 3, 6));
    }
}
