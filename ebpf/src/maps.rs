//! The maps, with their prefixed and versioned names from `weir_common::maps`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use weir_common::{maps::METRICS_ENTRIES, metrics::MetricValue};

// The attribute needs a literal; `weir_common::maps::METRICS` holds the same name
// and the agent's tests check that the object carries it.
#[map(name = "weir_metrics_v1")]
pub static METRICS: PerCpuArray<MetricValue> = PerCpuArray::with_max_entries(METRICS_ENTRIES, 0);
