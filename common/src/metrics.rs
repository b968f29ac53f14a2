//! Keys of the per-CPU packet counters.

use crate::reason::DropReason;

/// Which program (attach point) saw a packet. Append only.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the pod (TC ingress of the host-side veth).
    FromPod = 0,
    /// Entering the pod (TC egress of the host-side veth).
    ToPod = 1,
    /// Arriving on the node's uplink (TC ingress).
    FromNetdev = 2,
    /// Leaving through the node's uplink (TC egress).
    ToNetdev = 3,
    /// Socket-level LB (cgroup sock_addr programs); counts translations.
    Sock = 4,
}

impl Direction {
    pub const ALL: [Direction; 5] = [
        Self::FromPod,
        Self::ToPod,
        Self::FromNetdev,
        Self::ToNetdev,
        Self::Sock,
    ];

    /// Room for directions in the metrics layout.
    pub const CAPACITY: u32 = 8;

    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "from_pod",
            Self::ToPod => "to_pod",
            Self::FromNetdev => "from_netdev",
            Self::ToNetdev => "to_netdev",
            Self::Sock => "sock",
        }
    }
}

/// Index into the metrics array: `direction * DropReason::CAPACITY + reason`.
/// Fixed capacities keep every index stable when reasons or directions are
/// appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricKey {
    pub direction: Direction,
    pub reason: DropReason,
}

impl MetricKey {
    /// Number of slots the metrics map needs.
    pub const SLOTS: u32 = Direction::CAPACITY * DropReason::CAPACITY;

    pub const fn new(direction: Direction, reason: DropReason) -> Self {
        Self { direction, reason }
    }

    /// The array index of this key; always `< SLOTS`.
    pub const fn index(self) -> u32 {
        self.direction as u32 * DropReason::CAPACITY + self.reason as u32
    }
}

// Appending past the capacities would change every index: grow them (and
// the map's version) deliberately instead.
const _: () = assert!(Direction::ALL.len() as u32 <= Direction::CAPACITY);
const _: () = assert!(DropReason::COUNT <= DropReason::CAPACITY);

/// One per-CPU counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricValue {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: MetricValue is repr(C), made of plain integers, with no padding.
unsafe impl aya::Pod for MetricValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_unique_and_in_range() {
        let mut seen = [false; MetricKey::SLOTS as usize];
        for direction in Direction::ALL {
            for reason in DropReason::ALL {
                let index = MetricKey::new(direction, reason).index() as usize;
                assert!(index < seen.len());
                assert!(!seen[index], "duplicate index {index}");
                seen[index] = true;
            }
        }
        assert_eq!(
            MetricKey::new(Direction::ToPod, DropReason::Malformed).index(),
            DropReason::CAPACITY + 1,
            "indices are stable ABI"
        );
    }
}
