//! Map names. They are prefixed and versioned: a changed layout gets a new
//! name, so an agent never misreads a map pinned by an older version.

/// Per-CPU counters of packets by [`crate::metrics::MetricKey`].
pub const METRICS: &str = "weir_metrics_v1";

/// Capacity of [`METRICS`]: one slot per (direction, reason) pair.
pub const METRICS_ENTRIES: u32 = crate::metrics::MetricKey::SLOTS;

/// Service frontends and backend slots: [`crate::lb::Lb4Key`] → [`crate::lb::Lb4Service`].
pub const LB4_SERVICES: &str = "weir_lb4_svc_v1";
/// Backends by id: `u32` → [`crate::lb::Lb4Backend`].
pub const LB4_BACKENDS: &str = "weir_lb4_backends_v1";
/// Reverse NAT by index: `u16` → [`crate::lb::Lb4RevNat`].
pub const LB4_REVNAT: &str = "weir_lb4_revnat_v1";
/// ClientIP session affinity: [`crate::lb::Lb4AffinityKey`] → [`crate::lb::Lb4AffinityValue`].
pub const LB4_AFFINITY: &str = "weir_lb4_affinity_v1";
/// Maglev lookup tables: [`crate::lb::Lb4MaglevKey`] → backend id (`u32`).
pub const LB4_MAGLEV: &str = "weir_lb4_maglev_v1";
