//! Per-CPU packet counters, one slot per (direction, reason).

use weir_common::DropReason;
use weir_common::metrics::{Direction, MetricKey};

use crate::maps::METRICS;

#[inline(always)]
pub fn count(direction: Direction, reason: DropReason, bytes: u32) {
    let index = MetricKey::new(direction, reason).index();
    if let Some(slot) = METRICS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU array lookup, so no other
        // CPU writes it and it stays valid for the whole program run.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(bytes);
        }
    }
}
