//! Numbers for `/metrics`: map fill levels, verdict counters by reason,
//! conntrack counts and the writer's failures.

use std::{borrow::Borrow, collections::BTreeMap, os::fd::AsFd};

use aya::maps::{MapData, PerCpuArray};
use weir_common::{
    DropReason,
    metrics::{Direction, MetricKey, MetricValue},
};

use super::{
    ct_gc::CtGcStats,
    error::{DatapathError, DatapathResult},
    object::MapSpec,
    pin::PinLayout,
    sys,
    writer::WriterTotals,
};

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u32,
}

/// Everything the daemon exports about the datapath.
#[derive(Clone, Debug, Default)]
pub struct DatapathMetrics {
    /// Per map, sorted by name.
    pub maps: Vec<MapFill>,
    /// Packets and bytes per (program direction, verdict reason), summed
    /// over CPUs; [`DropReason::Forwarded`] is not a drop.
    pub verdicts: Vec<(MetricKey, MetricValue)>,
    /// Conntrack entries per IP protocol number, from the last GC pass.
    pub ct_entries_by_proto: BTreeMap<u8, u64>,
    /// The last conntrack GC pass, if one ran.
    pub last_gc: Option<CtGcStats>,
    /// Conntrack entries expired and flushed since start.
    pub ct_expired_total: u64,
    pub ct_flushed_total: u64,
    /// The map writer's counters since start (writes, failures per map).
    pub writer: WriterTotals,
    /// NetworkPolicy drops per isolation rule id (policy and direction).
    pub policy_drops: Vec<(u32, u64)>,
    /// Policy events lost to the rate limit or a full ring.
    pub policy_events_lost: u64,
}

/// Sums the per-CPU verdict counters for every (direction, reason).
pub fn sum_verdicts<T: Borrow<MapData>>(
    counters: &PerCpuArray<T, MetricValue>,
    map_name: &str,
) -> DatapathResult<Vec<(MetricKey, MetricValue)>> {
    let mut out = Vec::new();
    for direction in Direction::ALL {
        for reason in DropReason::ALL {
            let key = MetricKey::new(direction, reason);
            let per_cpu = counters
                .get(&key.index(), 0)
                .map_err(|e| DatapathError::map(map_name, e))?;
            let total = per_cpu
                .iter()
                .fold(MetricValue::default(), |acc, v| MetricValue {
                    packets: acc.packets + v.packets,
                    bytes: acc.bytes + v.bytes,
                });
            out.push((key, total));
        }
    }
    Ok(out)
}

/// Counts the keys of the map pinned for `spec` by walking them (hashes
/// and LPM tries). Arrays count as full, ring buffers as empty (they hold
/// bytes, not entries). `limit` bounds the walk (an LRU map under churn can make
/// the kernel restart it).
pub fn count_entries(pins: &PinLayout, spec: &MapSpec, limit: u64) -> DatapathResult<u64> {
    if spec.map_type == sys::BPF_MAP_TYPE_RINGBUF {
        return Ok(0);
    }
    if !matches!(
        spec.map_type,
        sys::BPF_MAP_TYPE_HASH
            | sys::BPF_MAP_TYPE_LRU_HASH
            | sys::BPF_MAP_TYPE_PERCPU_HASH
            | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
            | sys::BPF_MAP_TYPE_LPM_TRIE
    ) {
        return Ok(u64::from(spec.max_entries));
    }
    let path = pins.map(&spec.name);
    let fd = sys::obj_get(&path).map_err(|e| DatapathError::sys("BPF_OBJ_GET", &spec.name, e))?;
    let mut key = vec![0u8; spec.key_size as usize];
    let mut next = vec![0u8; spec.key_size as usize];
    let mut count = 0u64;
    let mut first = true;
    while count < limit {
        let more = sys::map_next_key(fd.as_fd(), (!first).then_some(&key[..]), &mut next)
            .map_err(|e| DatapathError::sys("BPF_MAP_GET_NEXT_KEY", &spec.name, e))?;
        if !more {
            break;
        }
        first = false;
        count += 1;
        key.copy_from_slice(&next);
    }
    Ok(count)
}
