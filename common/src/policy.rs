//! NetworkPolicy ABI, in Cilium's shape: identities, an ipcache, per-endpoint
//! policy entries, per-endpoint isolation, a policy revision and a verdict
//! event. `docs/policy.md` explains the model; this module is the byte layout.
//!
//! * [`IPCACHE`]: LPM trie, IPv4 prefix → [`IpcacheEntry`]: who an address is
//!   (`identity`) and which ipBlock class it falls in (`cidr_identity`).
//! * [`POLICY`]: LPM trie, [`PolicyKey`] → [`PolicyEntry`]: what a local
//!   endpoint allows, per direction, peer identity, protocol and port prefix.
//! * [`POLICY_ENDPOINTS`]: hash, local pod IP → [`PolicyEndpoint`]:
//!   isolation per direction, audit.
//! * [`POLICY_CONFIG`]: array with one [`PolicyConfig`]: the revision that
//!   conntrack entries are compared with, node-wide audit.
//! * [`EVENTS`]: ring buffer of [`PolicyEvent`], rate-limited per CPU
//!   through [`EVENT_STATE`].
//! * [`POLICY_DROPS`]: drop counters per policy and direction.
//!
//! Addresses and ports are in network byte order, as they sit in packets;
//! identities and rule ids are native `u32`s.

/// Identities. 0 is never an identity: in a [`PolicyKey`] it means "any
/// peer", in [`IpcacheEntry::cidr_identity`] "in no ipBlock".
pub mod identity {
    /// Any peer (policy keys only).
    pub const ANY: u32 = 0;
    /// This node: its addresses and the host side of the pod veths.
    pub const HOST: u32 = 1;
    /// An address the ipcache knows nothing more specific about.
    pub const WORLD: u32 = 2;
    /// Another node's address.
    pub const REMOTE_NODE: u32 = 3;
    /// First identity of pods (one per namespace and label set).
    pub const POD_MIN: u32 = 256;
    /// First identity of ipBlock prefixes (one per distinct CIDR or except).
    pub const CIDR_MIN: u32 = 1 << 24;
    /// Last usable identity.
    pub const MAX: u32 = u32::MAX - 1;

    /// Reserved identities are the ones below [`POD_MIN`].
    pub const fn is_reserved(id: u32) -> bool {
        id < POD_MIN
    }

    pub const fn is_cidr(id: u32) -> bool {
        id >= CIDR_MIN
    }
}

/// Key of [`IPCACHE`] (`BPF_MAP_TYPE_LPM_TRIE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// Significant bits of `addr`, 0..=32.
    pub prefixlen: u32,
    /// Network byte order.
    pub addr: u32,
}

/// Value of [`IPCACHE`].
///
/// The datapath checks a peer against policy under `identity` and, when it
/// differs and is not 0, also under `cidr_identity`: a pod matched by an
/// ipBlock keeps its label identity, and an address behind an `except`
/// resolves to the except's own identity, which the rule does not allow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheEntry {
    /// Pod identity, [`identity::HOST`], [`identity::REMOTE_NODE`] or
    /// [`identity::WORLD`].
    pub identity: u32,
    /// Identity of the longest ipBlock prefix (CIDR or except) holding the
    /// address, 0 if none.
    pub cidr_identity: u32,
}

/// Values of [`PolicyKey::direction`] and [`PolicyEvent::direction`].
pub const POLICY_INGRESS: u8 = 0;
pub const POLICY_EGRESS: u8 = 1;

/// `prefixlen` of a [`PolicyKey`] matching any protocol and port: endpoint,
/// identity and direction are always exact.
pub const POLICY_PREFIX_ANY_PROTO: u32 = 32 + 32 + 8;
/// `prefixlen` of a key matching one protocol, any port.
pub const POLICY_PREFIX_ANY_PORT: u32 = POLICY_PREFIX_ANY_PROTO + 8;
/// `prefixlen` of a key matching one protocol and one port.
pub const POLICY_PREFIX_FULL: u32 = POLICY_PREFIX_ANY_PORT + 16;

/// Key of [`POLICY`] (`BPF_MAP_TYPE_LPM_TRIE`).
///
/// The trie compares the bytes after `prefixlen` in memory order, so the
/// fields that are always exact come first, then the protocol, then the
/// port in network order: a port range is a few port prefixes
/// ([`POLICY_PREFIX_ANY_PORT`] + 0..=16 bits). A lookup uses
/// [`POLICY_PREFIX_FULL`] and the packet's values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub prefixlen: u32,
    /// The local endpoint: its pod IP, network byte order.
    pub endpoint: u32,
    /// Peer identity, [`identity::ANY`] for "all peers".
    pub identity: u32,
    /// [`POLICY_INGRESS`] or [`POLICY_EGRESS`].
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// Destination port, network byte order (bytes, to keep the key packed).
    pub dport: [u8; 2],
}

impl PolicyKey {
    /// The lookup key for one packet.
    pub const fn lookup(
        endpoint: u32,
        identity: u32,
        direction: u8,
        proto: u8,
        dport_be: u16,
    ) -> Self {
        Self {
            prefixlen: POLICY_PREFIX_FULL,
            endpoint,
            identity,
            direction,
            proto,
            dport: dport_be.to_ne_bytes(),
        }
    }
}

/// Value of [`POLICY`]: the flow is allowed by this rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyEntry {
    /// Which rule allowed it (the agent maps ids to policy, direction and
    /// rule index). Several rules allowing the same key: the first policy by
    /// namespace/name, then rule index.
    pub rule_id: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// Bits of [`PolicyEndpoint::flags`].
pub mod ep_policy_flags {
    /// A would-be drop passes and its event is marked audit (the pod's
    /// namespace has `weir.io/policy-audit: "true"`).
    pub const AUDIT: u16 = 1 << 0;
    /// Some policy selecting the pod allows ingress traffic; without this
    /// bit an ingress drop is a default deny.
    pub const INGRESS_HAS_RULES: u16 = 1 << 1;
    /// The same for egress.
    pub const EGRESS_HAS_RULES: u16 = 1 << 2;
    /// Emit an event for every allowed new flow of this pod (`weirctl
    /// monitor --pod`), not only sampled ones.
    pub const EMIT_ALLOWS: u16 = 1 << 3;
}

/// Value of [`POLICY_ENDPOINTS`], keyed by local pod IP (`u32`, network
/// order). A local pod without an entry is not isolated in any direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyEndpoint {
    /// The pod's own identity.
    pub identity: u32,
    /// Non-zero: ingress is isolated, and this is the rule id of the first
    /// policy (by namespace/name) that isolates it, for drop events.
    pub ingress_isolated_by: u32,
    /// The same for egress.
    pub egress_isolated_by: u32,
    /// [`ep_policy_flags`] bits.
    pub flags: u16,
    pub pad: u16,
}

/// Bits of [`PolicyConfig::flags`].
pub mod policy_config_flags {
    /// Audit mode for the whole node (agent flag).
    pub const AUDIT_ALL: u32 = 1 << 0;
}

/// Value of [`POLICY_CONFIG`]`[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyConfig {
    /// Bumped by the agent after every change of the other policy maps. A
    /// conntrack entry admitted under another revision
    /// (`Ct4Entry::policy_revision`) is re-checked at its next packet.
    pub revision: u32,
    /// [`policy_config_flags`] bits.
    pub flags: u32,
    /// Policy events per second per CPU; more are counted as lost. 0: no
    /// limit.
    pub events_per_sec: u32,
    /// Emit one in this many allowed new flows as an event. 0: none
    /// (except for pods with [`ep_policy_flags::EMIT_ALLOWS`]).
    pub allow_sample: u32,
}

/// Value of [`EVENT_STATE`]`[0]`, per CPU: the rate limiter's window and
/// the events it refused. Datapath-written; the agent sums `lost` over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventState {
    /// `bpf_ktime_get_ns()` when the current one-second window began.
    pub window_start_ns: u64,
    /// Events sent in the current window.
    pub sent: u32,
    pub pad: u32,
    /// Events dropped by the rate limit or a full ring, ever.
    pub lost: u64,
}

/// Values of [`PolicyEvent::kind`].
pub const EVENT_POLICY_VERDICT: u8 = 1;

/// Bits of [`PolicyEvent::flags`].
pub mod event_flags {
    /// A would-be drop that passed in audit mode.
    pub const AUDIT: u8 = 1 << 0;
    /// The verdict of an existing flow re-checked after a revision change.
    pub const RECHECK: u8 = 1 << 1;
}

/// A verdict on [`EVENTS`]. Addresses are the packet's after DNAT (the
/// backend, not the VIP); `orig_daddr`/`orig_dport` keep the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyEvent {
    /// `bpf_ktime_get_ns()`.
    pub timestamp_ns: u64,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`POLICY_INGRESS`] or [`POLICY_EGRESS`].
    pub direction: u8,
    /// A [`crate::DropReason`]; `Forwarded` for an allow.
    pub reason: u8,
    /// [`event_flags`] bits.
    pub flags: u8,
    /// The local pod (its IP, network order).
    pub endpoint: u32,
    /// The allowing rule, or for a drop the isolating policy's rule id.
    pub rule_id: u32,
    /// The peer's identity as the ipcache gave it.
    pub peer_identity: u32,
    /// The interface the packet was seen on.
    pub ifindex: u32,
    /// The destination before DNAT (equal to `daddr` without a service).
    pub orig_daddr: u32,
    pub orig_dport: u16,
    /// [`EVENT_POLICY_VERDICT`].
    pub kind: u8,
    pub pad: u8,
}

/// IPv4 ipcache: every pod of the cluster, the node addresses, the ipBlock
/// prefixes and `0.0.0.0/0`.
pub const IPCACHE: &str = "weir_ipcache4_v1";
pub const IPCACHE_ENTRIES: u32 = 1 << 16;
/// Per-endpoint allow entries.
pub const POLICY: &str = "weir_policy_v1";
pub const POLICY_ENTRIES: u32 = 1 << 18;
/// Per-endpoint isolation.
pub const POLICY_ENDPOINTS: &str = "weir_policy_ep_v1";
pub const POLICY_ENDPOINTS_ENTRIES: u32 = 1 << 16;
/// Revision and node-wide settings.
pub const POLICY_CONFIG: &str = "weir_policy_cfg_v1";
pub const POLICY_CONFIG_ENTRIES: u32 = 1;
/// Verdict events (`BPF_MAP_TYPE_RINGBUF`); the size is in bytes.
pub const EVENTS: &str = "weir_events_v1";
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Per-CPU array with one [`EventState`].
pub const EVENT_STATE: &str = "weir_event_state_v1";
pub const EVENT_STATE_ENTRIES: u32 = 1;
/// Policy drops per isolation rule id (i.e. per policy and direction):
/// `u32` → `u64`, an LRU per-CPU hash the datapath counts into.
pub const POLICY_DROPS: &str = "weir_policy_drops_v1";
pub const POLICY_DROPS_ENTRIES: u32 = 1 << 14;

/// Policy conntrack: [`PolicyCtKey`] → [`PolicyCtEntry`], an LRU hash the
/// datapath writes for every flow of a policed endpoint; expired by the
/// agent's GC.
pub const POLICY_CT4: &str = "weir_polct4_v1";
pub const POLICY_CT4_ENTRIES: u32 = 1 << 17;

/// The policy maps (all part of `maps::ALL`).
pub const MAPS: [&str; 8] = [
    IPCACHE,
    POLICY,
    POLICY_ENDPOINTS,
    POLICY_CONFIG,
    EVENTS,
    EVENT_STATE,
    POLICY_DROPS,
    POLICY_CT4,
];

/// Key of [`POLICY_CT4`]: one direction of a flow at one local endpoint.
///
/// * [`POLICY_EGRESS`]: the pod's own flow as it leaves the pod, **before**
///   service DNAT (pod → VIP for a service flow), so the pod's replies, which
///   arrive reverse-NATed (VIP → pod), find it with the reversed tuple.
///   The entry keeps the judged peer (the backend) for re-checks.
/// * [`POLICY_INGRESS`]: a flow entering the pod as it arrives (after DNAT,
///   and after SNAT for hairpin flows), i.e. peer → pod.
///
/// A packet looks up its reversed tuple in the other direction first (it may
/// be a reply), then its own tuple. For ICMP echo both ports hold the echo
/// id, so a reply's reversed tuple is the request's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyCtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`POLICY_INGRESS`] or [`POLICY_EGRESS`].
    pub direction: u8,
    pub pad: [u8; 2],
}

/// Bits of [`PolicyCtEntry::flags`].
pub mod polct_flags {
    /// A hairpin flow (a pod reaching itself through a service): judged
    /// with the pod's own identity, not its (hairpin) source address.
    pub const HAIRPIN: u8 = 1 << 0;
    /// Admitted only because of audit mode.
    pub const AUDIT: u8 = 1 << 1;
    /// Denied by a re-check: a tombstone, so that neither side's packets
    /// (e.g. the server's retransmissions) can open the flow again in the
    /// other direction. Re-judged, like any entry, when the revision moves.
    pub const DENIED: u8 = 1 << 2;
    /// With [`DENIED`]: the endpoint had no rule in that direction
    /// (`policy_default_deny`), else `policy_denied`.
    pub const DEFAULT_DENY: u8 = 1 << 3;
}

/// Value of [`POLICY_CT4`]: the verdict a flow was admitted with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyCtEntry {
    /// `bpf_ktime_get_ns()` of the last packet (either direction).
    pub last_seen_ns: u64,
    /// [`PolicyConfig::revision`] the flow was last judged under; another
    /// revision makes the next packet re-judge it.
    pub revision: u32,
    /// The allowing rule (0 when the endpoint was not isolated).
    pub rule_id: u32,
    /// The peer as judged: the destination after DNAT for egress, the
    /// source for ingress. Network order.
    pub peer_addr: u32,
    /// The peer's identity at the last verdict.
    pub peer_identity: u32,
    /// The destination port as judged (after DNAT), network order.
    pub judged_dport: u16,
    /// [`polct_flags`] bits.
    pub flags: u8,
    /// Highest `ct::tcp_state` seen in either direction (for the GC).
    pub tcp_state: u8,
    pub pad: u32,
}

/// The `prefixlen` and first port of each aligned block covering
/// `first..=last`, at most 30 blocks (the LPM form of an `endPort` range).
/// Yields nothing for an empty range.
pub fn port_prefixes(first: u16, last: u16) -> impl Iterator<Item = (u16, u8)> {
    let mut next = u32::from(first);
    let end = u32::from(last) + 1;
    core::iter::from_fn(move || {
        if next >= end {
            return None;
        }
        // The largest block aligned at `next` that stays within the range.
        let mut bits = if next == 0 {
            16
        } else {
            next.trailing_zeros().min(16)
        };
        while next + (1 << bits) > end {
            bits -= 1;
        }
        let start = next as u16;
        next += 1 << bits;
        Some((start, 16 - bits as u8))
    })
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all of these are repr(C), built from integers and byte arrays,
    // with explicit padding fields, so every byte pattern is valid and none
    // is uninit.
    unsafe impl aya::Pod for IpcacheKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpcacheEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyEndpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EventState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyCtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyCtEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<IpcacheKey>(), 8);
        assert_eq!(size_of::<IpcacheEntry>(), 8);
        assert_eq!(size_of::<PolicyKey>(), 16);
        assert_eq!(offset_of!(PolicyKey, endpoint), 4);
        assert_eq!(offset_of!(PolicyKey, identity), 8);
        assert_eq!(offset_of!(PolicyKey, direction), 12);
        assert_eq!(offset_of!(PolicyKey, proto), 13);
        assert_eq!(offset_of!(PolicyKey, dport), 14);
        assert_eq!(size_of::<PolicyEntry>(), 8);
        assert_eq!(size_of::<PolicyEndpoint>(), 16);
        assert_eq!(offset_of!(PolicyEndpoint, flags), 12);
        assert_eq!(size_of::<PolicyConfig>(), 16);
        assert_eq!(size_of::<PolicyEvent>(), 48);
        assert_eq!(offset_of!(PolicyEvent, saddr), 8);
        assert_eq!(offset_of!(PolicyEvent, proto), 20);
        assert_eq!(offset_of!(PolicyEvent, flags), 23);
        assert_eq!(offset_of!(PolicyEvent, endpoint), 24);
        assert_eq!(offset_of!(PolicyEvent, orig_daddr), 40);
        assert_eq!(offset_of!(PolicyEvent, kind), 46);
        assert_eq!(size_of::<EventState>(), 24);
        assert_eq!(offset_of!(EventState, lost), 16);
        assert_eq!(size_of::<PolicyCtKey>(), 16);
        assert_eq!(offset_of!(PolicyCtKey, proto), 12);
        assert_eq!(offset_of!(PolicyCtKey, direction), 13);
        assert_eq!(size_of::<PolicyCtEntry>(), 32);
        assert_eq!(offset_of!(PolicyCtEntry, peer_addr), 16);
        assert_eq!(offset_of!(PolicyCtEntry, judged_dport), 24);
        assert_eq!(offset_of!(PolicyCtEntry, tcp_state), 27);
    }

    #[test]
    fn prefix_lengths_cover_the_key_after_prefixlen() {
        let data_bits = (size_of::<PolicyKey>() - 4) * 8;
        assert_eq!(POLICY_PREFIX_FULL as usize, data_bits);
        assert_eq!(
            POLICY_PREFIX_ANY_PROTO as usize,
            offset_of!(PolicyKey, proto) * 8 - 32
        );
        assert_eq!(
            POLICY_PREFIX_ANY_PORT as usize,
            offset_of!(PolicyKey, dport) * 8 - 32
        );
    }

    #[test]
    fn lookup_keys_hold_the_port_as_it_sits_in_the_packet() {
        let key = PolicyKey::lookup(1, 2, POLICY_EGRESS, 6, 8080u16.to_be());
        assert_eq!(key.dport, [0x1f, 0x90]);
        assert_eq!(key.prefixlen, POLICY_PREFIX_FULL);
    }

    fn covered(first: u16, last: u16) -> (u32, u32) {
        let mut count = 0;
        let mut blocks = 0;
        let mut expect = u32::from(first);
        for (start, len) in port_prefixes(first, last) {
            assert_eq!(u32::from(start), expect, "blocks are contiguous");
            let size = 1u32 << (16 - len);
            assert_eq!(u32::from(start) % size, 0, "blocks are aligned");
            expect += size;
            count += size;
            blocks += 1;
        }
        assert_eq!(expect, u32::from(last) + 1);
        (count, blocks)
    }

    #[test]
    fn port_ranges_become_few_aligned_prefixes() {
        assert_eq!(covered(80, 80), (1, 1));
        assert_eq!(covered(0, 65535), (65536, 1));
        assert_eq!(covered(1, 65535), (65535, 16));
        assert_eq!(covered(8080, 8090).0, 11);
        assert_eq!(covered(1024, 2047), (1024, 1));
        let mut worst = 0;
        for (a, b) in [(1, 65534), (3, 65532), (32767, 32768), (1000, 60000)] {
            worst = worst.max(covered(a, b).1);
        }
        assert!(worst <= 30, "{worst}");
        assert_eq!(port_prefixes(10, 9).count(), 0);
    }

    #[test]
    fn policy_maps_are_in_the_object_list() {
        for name in MAPS {
            assert!(crate::maps::ALL.contains(&name), "{name}");
        }
    }
}
