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
    }
}
