//! Policy verdict events on the `weir_events_v1` ring buffer, rate-limited
//! per CPU through `weir_event_state_v1`, and the per-policy drop counters
//! in `weir_policy_drops_v1`.

use aya_ebpf::bindings::BPF_NOEXIST;
use weir_common::policy::{EVENT_POLICY_VERDICT, PolicyConfig, PolicyEvent};

use crate::maps::{EVENT_STATE, EVENTS, POLICY_DROPS};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Sends `event` unless this CPU already sent `events_per_sec` in the
/// current one-second window; refused events (limit or full ring) are
/// counted in `lost`.
#[inline(always)]
pub fn emit(event: &mut PolicyEvent, config: &PolicyConfig, now: u64) {
    event.kind = EVENT_POLICY_VERDICT;
    event.timestamp_ns = now;
    let Some(state) = EVENT_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot: only this CPU touches it, and the
    // pointer stays valid for the program run.
    unsafe {
        if config.events_per_sec != 0 {
            if now.wrapping_sub((*state).window_start_ns) >= NS_PER_SEC {
                (*state).window_start_ns = now;
                (*state).sent = 0;
            }
            if (*state).sent >= config.events_per_sec {
                (*state).lost += 1;
                return;
            }
        }
        if EVENTS.output::<PolicyEvent>(&*event, 0).is_ok() {
            (*state).sent += 1;
        } else {
            (*state).lost += 1;
        }
    }
}

/// Counts a policy drop under the isolating rule id.
#[inline(always)]
pub fn count_drop(rule_id: u32) {
    if let Some(count) = POLICY_DROPS.get_ptr_mut(&rule_id) {
        // SAFETY: a per-CPU hash value: only this CPU writes it.
        unsafe { *count += 1 };
        return;
    }
    // Another packet of this CPU cannot race us; a full LRU evicts the
    // coldest rule's counter, which the agent's totals then miss.
    let _evicted_counter_is_lost = POLICY_DROPS.insert(&rule_id, &1u64, u64::from(BPF_NOEXIST));
}
