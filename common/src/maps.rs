//! Map names and default capacities. Names are prefixed and versioned: a
//! changed layout gets a new name, so an agent never misreads a map pinned by
//! an older version.
//!
//! Pinning: the object declares no pinning; the agent pins each map under
//! `--bpffs` by its full name here (aya's `EbpfLoader::map_pin_path(name,
//! dir.join(name))`, which reuses an existing pin without checking its
//! layout, hence the versions). The kernel keeps only the first 15 bytes of a
//! map's name ([`kernel_name`]), which stay unique (tested below).
//!
//! Capacities are the object's defaults; the agent may raise them at load
//! with `EbpfLoader::set_max_entries` (e.g. for 100k services). Maps the
//! agent writes are `BPF_F_NO_PREALLOC` hashes, so a large capacity costs
//! only its bucket array; conntrack, affinity and the socket reverse map are
//! preallocated LRU hashes.

/// Per-CPU packet counters by [`crate::metrics::MetricKey`] (an array).
pub const METRICS: &str = "weir_metrics_v2";
/// Capacity of [`METRICS`]: one slot per (direction, reason) pair.
pub const METRICS_ENTRIES: u32 = crate::metrics::MetricKey::SLOTS;

/// Service frontends and backend slots: [`crate::lb::Lb4Key`] → [`crate::lb::Lb4Service`].
pub const LB4_SERVICES: &str = "weir_lb4_svc_v1";
pub const LB4_SERVICES_ENTRIES: u32 = 1 << 20;
/// Backends by id: `u32` → [`crate::lb::Lb4Backend`].
pub const LB4_BACKENDS: &str = "weir_lb4_backends_v1";
pub const LB4_BACKENDS_ENTRIES: u32 = 1 << 18;
/// Reverse NAT by index: `u16` → [`crate::lb::Lb4RevNat`].
pub const LB4_REVNAT: &str = "weir_lb4_revnat_v1";
pub const LB4_REVNAT_ENTRIES: u32 = 1 << 16;
/// ClientIP session affinity: [`crate::lb::Lb4AffinityKey`] →
/// [`crate::lb::Lb4AffinityValue`]. LRU; written by the datapath.
pub const LB4_AFFINITY: &str = "weir_lb4_affinity_v1";
pub const LB4_AFFINITY_ENTRIES: u32 = 1 << 16;
/// Maglev lookup tables: [`crate::lb::Lb4MaglevKey`] → backend id (`u32`).
pub const LB4_MAGLEV: &str = "weir_lb4_maglev_v1";
pub const LB4_MAGLEV_ENTRIES: u32 = 1 << 20;
/// Socket LB reverse translation: [`crate::lb::Lb4SockRevKey`] →
/// [`crate::lb::Lb4SockRevValue`]. LRU; written by the datapath.
pub const LB4_SOCK_REVNAT: &str = "weir_lb4_sockrev_v1";
pub const LB4_SOCK_REVNAT_ENTRIES: u32 = 1 << 16;

/// Conntrack: [`crate::ct::Ct4Key`] → [`crate::ct::Ct4Entry`]. LRU; written
/// by the datapath, expired by the agent's GC.
pub const CT4: &str = "weir_ct4_v1";
pub const CT4_ENTRIES: u32 = 1 << 17;

/// First-fragment ports: [`crate::ct::Frag4Key`] → [`crate::ct::Frag4Ports`].
/// LRU; datapath-internal.
pub const FRAG4: &str = "weir_frag4_v1";
pub const FRAG4_ENTRIES: u32 = 1 << 13;

/// Local endpoints: pod IP `u32` → [`crate::endpoint::EndpointInfo`].
pub const ENDPOINTS: &str = "weir_endpoints_v1";
pub const ENDPOINTS_ENTRIES: u32 = 1 << 16;

/// Node settings: an array with one [`crate::config::DatapathConfig`].
pub const CONFIG: &str = "weir_config_v1";
pub const CONFIG_ENTRIES: u32 = 1;

/// Every map in the object: the service maps above and the policy maps
/// ([`crate::policy::MAPS`]).
pub const ALL: [&str; 19] = [
    METRICS,
    LB4_SERVICES,
    LB4_BACKENDS,
    LB4_REVNAT,
    LB4_AFFINITY,
    LB4_MAGLEV,
    LB4_SOCK_REVNAT,
    CT4,
    FRAG4,
    ENDPOINTS,
    CONFIG,
    crate::policy::IPCACHE,
    crate::policy::POLICY,
    crate::policy::POLICY_ENDPOINTS,
    crate::policy::POLICY_CONFIG,
    crate::policy::EVENTS,
    crate::policy::EVENT_STATE,
    crate::policy::POLICY_DROPS,
    crate::policy::POLICY_CT4,
];

/// The name the kernel shows for an object named `name` (`BPF_OBJ_NAME_LEN`
/// is 16 including the NUL).
pub fn kernel_name(name: &str) -> &str {
    name.get(..15).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_unique_when_the_kernel_truncates_them() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.starts_with("weir_"), "{a}");
            for b in &ALL[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(kernel_name(a), kernel_name(b), "{a} vs {b}");
            }
        }
    }
}
