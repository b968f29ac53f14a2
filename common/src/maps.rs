//! Map names. They are prefixed and versioned: a changed layout gets a new
//! name, so an agent never misreads a map pinned by an older version.

/// Per-CPU counters of packets by [`crate::metrics::MetricKey`].
pub const METRICS: &str = "weir_metrics_v1";

/// Capacity of [`METRICS`]: one slot per (direction, reason) pair.
pub const METRICS_ENTRIES: u32 = crate::metrics::MetricKey::SLOTS;
