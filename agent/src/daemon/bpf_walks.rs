//! The real datapath's periodic walks ([`Walks`]) on handles of their own,
//! opened from the pins: counters and fill levels of every map, and the
//! conntrack GC pass (scan, expire idle flows, in the service and the
//! policy conntrack). The rev-NAT follow-up of a pass stays with the map
//! writer on the main loop.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use tracing::debug;
use weir_common::ct::{Ct4Entry, Ct4Key};
use weir_common::maps as names;
use weir_common::metrics::MetricValue;
use weir_common::policy::{POLICY_CT4, POLICY_CT4_ENTRIES, PolicyCtEntry, PolicyCtKey};

use super::seams::{DatapathStats, GcStats, MapFill, PacketCount};
use super::walker::{GcPass, Walks};
use crate::datapath::object::MapSpec;
use crate::datapath::pin::PinLayout;
use crate::datapath::{CtTimeouts, ct_gc, stats};

pub struct PinnedWalks {
    pins: PinLayout,
    specs: BTreeMap<String, MapSpec>,
    ct: BpfHashMap<MapData, Ct4Key, Ct4Entry>,
    /// The policy conntrack (flows of policed endpoints).
    polct: BpfHashMap<MapData, PolicyCtKey, PolicyCtEntry>,
    verdicts: PerCpuArray<MapData, MetricValue>,
    timeouts: CtTimeouts,
    /// Maps the writer mirrors: the loop counts those from its mirror.
    mirrored: Vec<String>,
    /// Conntrack entries seen by the last GC pass.
    ct_entries: Option<u64>,
}

impl PinnedWalks {
    pub fn open(
        pins: &PinLayout,
        specs: &BTreeMap<String, MapSpec>,
        mirrored: Vec<String>,
    ) -> anyhow::Result<Self> {
        let open = |name: &str| -> anyhow::Result<Map> {
            let path = pins.map(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening the pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("map {name}"))
        };
        Ok(Self {
            pins: pins.clone(),
            specs: specs.clone(),
            ct: BpfHashMap::try_from(open(names::CT4)?)?,
            polct: BpfHashMap::try_from(open(POLICY_CT4)?)?,
            verdicts: PerCpuArray::try_from(open(names::METRICS)?)?,
            timeouts: CtTimeouts::default(),
            mirrored,
            ct_entries: None,
        })
    }
}

impl Walks for PinnedWalks {
    fn stats(&mut self) -> anyhow::Result<DatapathStats> {
        let mut maps = Vec::with_capacity(self.specs.len());
        for (name, spec) in &self.specs {
            if self.mirrored.contains(name) {
                continue;
            }
            let limit = 2 * u64::from(spec.max_entries);
            maps.push(MapFill {
                name: name.clone(),
                entries: stats::count_entries(&self.pins, spec, limit)?,
                capacity: u64::from(spec.max_entries),
            });
        }
        let packets = stats::sum_verdicts(&self.verdicts, names::METRICS)?
            .into_iter()
            .map(|(key, value)| PacketCount {
                direction: key.direction,
                reason: key.reason,
                packets: value.packets,
                bytes: value.bytes,
            })
            .collect();
        Ok(DatapathStats {
            maps,
            packets,
            ct_entries: self.ct_entries,
        })
    }

    fn gc(&mut self) -> anyhow::Result<GcPass> {
        let limit = 2 * self
            .specs
            .get(names::CT4)
            .map_or(1 << 20, |s| u64::from(s.max_entries));
        let (entries, truncated) = ct_gc::scan(&self.ct, limit)?;
        let (expired, stats) =
            ct_gc::plan_expiry(&entries, ct_gc::monotonic_now_ns(), &self.timeouts);
        let (deleted, _) = ct_gc::delete_keys(&mut self.ct, &expired);
        self.ct_entries = Some(stats.entries);
        let polct_limit = 2 * self
            .specs
            .get(POLICY_CT4)
            .map_or(u64::from(POLICY_CT4_ENTRIES), |s| u64::from(s.max_entries));
        let polct = ct_gc::polct_pass(
            &mut self.polct,
            ct_gc::monotonic_now_ns(),
            &self.timeouts,
            polct_limit,
        )?;
        debug!(
            entries = polct.entries,
            expired = polct.deleted,
            delete_failed = polct.delete_failed,
            truncated = polct.truncated,
            "policy conntrack GC"
        );
        Ok(GcPass {
            stats: GcStats {
                scanned: stats.entries + polct.entries,
                expired: deleted + polct.deleted,
            },
            referenced_rev_nat: (!truncated).then_some(stats.referenced_rev_nat),
        })
    }
}
