//! The maps, with their prefixed and versioned names and default capacities
//! from `weir_common::maps`. The `#[map]` attribute needs literal names; the
//! agent's tests check that the object carries every name in
//! `weir_common::maps::ALL`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
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
