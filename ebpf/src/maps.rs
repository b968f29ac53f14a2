//! The maps, with their prefixed and versioned names and default capacities
//! from `weir_common::maps`. The `#[map]` attribute needs literal names; the
//! agent's tests check that the object carries every name in
//! `weir_common::maps::ALL`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use weir_common::{
    config::DatapathConfig,
    ct::{Ct4Entry, Ct4Key, Frag4Key, Frag4Ports},
    endpoint::EndpointInfo,
    lb::{
        Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4MaglevKey, Lb4RevNat, Lb4Service,
        Lb4SockRevKey, Lb4SockRevValue,
    },
    maps as names,
    metrics::MetricValue,
    policy::{
        self as pnames, EventState, IpcacheEntry, PolicyConfig, PolicyCtEntry, PolicyCtKey,
        PolicyEndpoint, PolicyEntry,
    },
};

#[map(name = "weir_metrics_v2")]
pub static METRICS: PerCpuArray<MetricValue> =
    PerCpuArray::with_max_entries(names::METRICS_ENTRIES, 0);

#[map(name = "weir_lb4_svc_v1")]
pub static LB4_SERVICES: HashMap<Lb4Key, Lb4Service> =
    HashMap::with_max_entries(names::LB4_SERVICES_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_lb4_backends_v1")]
pub static LB4_BACKENDS: HashMap<u32, Lb4Backend> =
    HashMap::with_max_entries(names::LB4_BACKENDS_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_lb4_revnat_v1")]
pub static LB4_REVNAT: HashMap<u16, Lb4RevNat> =
    HashMap::with_max_entries(names::LB4_REVNAT_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_lb4_affinity_v1")]
pub static LB4_AFFINITY: LruHashMap<Lb4AffinityKey, Lb4AffinityValue> =
    LruHashMap::with_max_entries(names::LB4_AFFINITY_ENTRIES, 0);

#[map(name = "weir_lb4_maglev_v1")]
pub static LB4_MAGLEV: HashMap<Lb4MaglevKey, u32> =
    HashMap::with_max_entries(names::LB4_MAGLEV_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_lb4_sockrev_v1")]
pub static LB4_SOCK_REVNAT: LruHashMap<Lb4SockRevKey, Lb4SockRevValue> =
    LruHashMap::with_max_entries(names::LB4_SOCK_REVNAT_ENTRIES, 0);

#[map(name = "weir_ct4_v1")]
pub static CT4: LruHashMap<Ct4Key, Ct4Entry> = LruHashMap::with_max_entries(names::CT4_ENTRIES, 0);

#[map(name = "weir_frag4_v1")]
pub static FRAG4: LruHashMap<Frag4Key, Frag4Ports> =
    LruHashMap::with_max_entries(names::FRAG4_ENTRIES, 0);

#[map(name = "weir_endpoints_v1")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> =
    HashMap::with_max_entries(names::ENDPOINTS_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_config_v1")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(names::CONFIG_ENTRIES, 0);

// --- NetworkPolicy (see `weir_common::policy` and docs/policy.md) ---------

/// The bytes of a `weir_common::policy::PolicyKey` after its `prefixlen`
/// (aya's `lpm_trie::Key` carries the prefix length itself).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PolicyKeyData {
    pub endpoint: u32,
    pub identity: u32,
    pub direction: u8,
    pub proto: u8,
    pub dport: [u8; 2],
}

/// LPM tries are `BPF_F_NO_PREALLOC` (aya adds the flag).
#[map(name = "weir_ipcache4_v1")]
pub static IPCACHE: LpmTrie<u32, IpcacheEntry> =
    LpmTrie::with_max_entries(pnames::IPCACHE_ENTRIES, 0);

#[map(name = "weir_policy_v1")]
pub static POLICY: LpmTrie<PolicyKeyData, PolicyEntry> =
    LpmTrie::with_max_entries(pnames::POLICY_ENTRIES, 0);

#[map(name = "weir_policy_ep_v1")]
pub static POLICY_ENDPOINTS: HashMap<u32, PolicyEndpoint> =
    HashMap::with_max_entries(pnames::POLICY_ENDPOINTS_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "weir_policy_cfg_v1")]
pub static POLICY_CONFIG: Array<PolicyConfig> =
    Array::with_max_entries(pnames::POLICY_CONFIG_ENTRIES, 0);

#[map(name = "weir_events_v1")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(pnames::EVENTS_BYTES, 0);

#[map(name = "weir_event_state_v1")]
pub static EVENT_STATE: PerCpuArray<EventState> =
    PerCpuArray::with_max_entries(pnames::EVENT_STATE_ENTRIES, 0);

#[map(name = "weir_policy_drops_v1")]
pub static POLICY_DROPS: LruPerCpuHashMap<u32, u64> =
    LruPerCpuHashMap::with_max_entries(pnames::POLICY_DROPS_ENTRIES, 0);

#[map(name = "weir_polct4_v1")]
pub static POLICY_CT4: LruHashMap<PolicyCtKey, PolicyCtEntry> =
    LruHashMap::with_max_entries(pnames::POLICY_CT4_ENTRIES, 0);
