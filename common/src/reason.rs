//! The one central table of verdict reasons.
//!
//! Every packet the datapath passes or drops is counted under one of these,
//! and every drop event names one. Values are stable ABI: append, never
//! renumber.

/// Why the datapath passed or dropped a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a drop: the packet was forwarded.
    Forwarded = 0,
    /// The Ethernet or IP header could not be read (truncated packet).
    Malformed = 1,
    /// An IPv4 header with IHL < 5 or a total length shorter than the header.
    InvalidIpHeader = 2,
    /// A new service flow whose conntrack entries could not be created (the
    /// map is full): the packet is dropped, the client retries.
    CtFull = 3,
    /// A service with no usable backend: the packet was answered with a TCP
    /// RST or an ICMP port unreachable, as kube-proxy rejects.
    NoBackend = 4,
    /// externalTrafficPolicy (or internalTrafficPolicy) Local with no
    /// backend on this node: dropped, as kube-proxy drops.
    NoLocalBackend = 5,
    /// A service slot names a backend id missing from the backends map.
    BackendMissing = 6,
    /// No free SNAT port for a flow that needs SNAT.
    SnatPortsExhausted = 7,
    /// A flow needs SNAT to the node's IP and none is configured.
    SnatNoAddress = 8,
    /// The FIB has no route for a packet the datapath forwards itself.
    NoRoute = 9,
    /// A packet rewrite helper (store, checksum, adjust, redirect) failed.
    RewriteFailed = 10,
    /// A reject reply (RST / ICMP) could not be built for a packet of a
    /// service with no backend; the packet was dropped instead.
    RejectFailed = 11,
    /// NetworkPolicy: the endpoint is isolated in this direction and no rule
    /// of the policies selecting it allows the flow.
    PolicyDenied = 12,
    /// NetworkPolicy: the endpoint is isolated in this direction and the
    /// policies selecting it allow nothing there (a default-deny policy).
    PolicyDefaultDeny = 13,
    /// A packet from a pod whose source IP is not the pod's own address.
    SpoofedSource = 14,
}

impl DropReason {
    /// All reasons, in numeric order, for iteration in userspace.
    pub const ALL: [DropReason; 15] = [
        Self::Forwarded,
        Self::Malformed,
        Self::InvalidIpHeader,
        Self::CtFull,
        Self::NoBackend,
        Self::NoLocalBackend,
        Self::BackendMissing,
        Self::SnatPortsExhausted,
        Self::SnatNoAddress,
        Self::NoRoute,
        Self::RewriteFailed,
        Self::RejectFailed,
        Self::PolicyDenied,
        Self::PolicyDefaultDeny,
        Self::SpoofedSource,
    ];

    /// Number of reasons; sizes the metrics map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Room for reasons in the metrics layout: indices stay stable when
    /// reasons are appended.
    pub const CAPACITY: u32 = 64;

    /// The reason for a raw value, if it is known.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Forwarded),
            1 => Some(Self::Malformed),
            2 => Some(Self::InvalidIpHeader),
            3 => Some(Self::CtFull),
            4 => Some(Self::NoBackend),
            5 => Some(Self::NoLocalBackend),
            6 => Some(Self::BackendMissing),
            7 => Some(Self::SnatPortsExhausted),
            8 => Some(Self::SnatNoAddress),
            9 => Some(Self::NoRoute),
            10 => Some(Self::RewriteFailed),
            11 => Some(Self::RejectFailed),
            12 => Some(Self::PolicyDenied),
            13 => Some(Self::PolicyDefaultDeny),
            14 => Some(Self::SpoofedSource),
            _ => None,
        }
    }

    /// A stable, metrics-friendly name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Malformed => "malformed",
            Self::InvalidIpHeader => "invalid_ip_header",
            Self::CtFull => "ct_full",
            Self::NoBackend => "no_backend",
            Self::NoLocalBackend => "no_local_backend",
            Self::BackendMissing => "backend_missing",
            Self::SnatPortsExhausted => "snat_ports_exhausted",
            Self::SnatNoAddress => "snat_no_address",
            Self::NoRoute => "no_route",
            Self::RewriteFailed => "rewrite_failed",
            Self::RejectFailed => "reject_failed",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyDefaultDeny => "policy_default_deny",
            Self::SpoofedSource => "spoofed_source",
        }
    }

    /// Whether packets with this reason were dropped.
    pub const fn is_drop(self) -> bool {
        !matches!(self, Self::Forwarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_dense_and_round_trips() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "ALL must be in numeric order");
            assert_eq!(DropReason::from_u8(i as u8), Some(*reason));
        }
        assert_eq!(DropReason::from_u8(DropReason::COUNT as u8), None);
    }

    #[test]
    fn only_forwarded_is_not_a_drop() {
        let drops = DropReason::ALL.iter().filter(|r| r.is_drop()).count();
        assert_eq!(drops, DropReason::ALL.len() - 1);
        assert!(!DropReason::Forwarded.is_drop());
    }
}
