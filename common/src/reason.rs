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
}

impl DropReason {
    /// All reasons, in numeric order, for iteration in userspace.
    pub const ALL: [DropReason; 3] = [Self::Forwarded, Self::Malformed, Self::InvalidIpHeader];

    /// Number of reasons; sizes the metrics map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The reason for a raw value, if it is known.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Forwarded),
            1 => Some(Self::Malformed),
            2 => Some(Self::InvalidIpHeader),
            _ => None,
        }
    }

    /// A stable, metrics-friendly name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Malformed => "malformed",
            Self::InvalidIpHeader => "invalid_ip_header",
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
