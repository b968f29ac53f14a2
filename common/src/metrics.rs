//! Keys of the per-CPU packet counters.

use crate::reason::DropReason;

/// Which side of a pod's veth a packet was seen on.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the pod (TC ingress of the host-side veth).
    FromPod = 0,
    /// Entering the pod (TC egress of the host-side veth).
    ToPod = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Self::FromPod, Self::ToPod];

    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "from_pod",
            Self::ToPod => "to_pod",
        }
    }
}

/// Index into the metrics array: `direction * DropReason::COUNT + reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricKey {
    pub direction: Direction,
    pub reason: DropReason,
}

impl MetricKey {
    /// Number of slots the metrics map needs.
    pub const SLOTS: u32 = Direction::ALL.len() as u32 * DropReason::COUNT;

    pub const fn new(direction: Direction, reason: DropReason) -> Self {
        Self { direction, reason }
    }

    /// The array index of this key; always `< SLOTS`.
    pub const fn index(self) -> u32 {
        self.direction as u32 * DropReason::COUNT + self.reason as u32
    }
}

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
        assert!(seen.iter().all(|s| *s));
    }
}
