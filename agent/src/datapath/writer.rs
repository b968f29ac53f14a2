//! The map writer: makes the service maps equal to a [`DesiredState`] with
//! the fewest writes, in an order a concurrent reader can follow (see
//! [`super::diff`]), and survives full maps: a failed write is counted per
//! map, never fatal, and nothing that depends on it is written.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io,
};

use tracing::warn;
use weir_common::lb::Lb4Backend;

use super::{
    diff::{self, BackendRefs, FrontendOps, MaglevFn, RemovedPair, RevNatIds},
    ids::IdAllocator,
    keys::{BackendKey, FrontendKey},
    state::{LbState, LbStore, Op},
};
use crate::plan::{DesiredState, Frontend};

#[path = "writer_incremental.rs"]
mod incremental;

/// Highest backend id (ids are `u32` keys; 0 means "none").
const BACKEND_ID_MAX: u32 = u32::MAX - 1;

/// What one [`Writer::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Services (namespace/name) with at least one frontend programmed.
    pub services: usize,
    /// Frontends whose entries match the plan after this apply.
    pub frontends: usize,
    /// Frontends left as they were (or absent) because a write failed.
    pub frontends_failed: usize,
    /// Backends of the plan present in the backends map.
    pub backends: usize,
    /// Successful puts and deletes.
    pub writes: u64,
    pub deletes: u64,
    /// Failed writes per map name (a full map, an exhausted id space).
    pub failures: BTreeMap<String, u64>,
    /// Backends that left a frontend (their non-TCP conntrack and affinity
    /// entries are flushed by the caller).
    pub removed_pairs: usize,
    /// Non-TCP conntrack entries and affinity entries flushed because their
    /// backend left the frontend (filled in by `Datapath::apply`).
    pub ct_flushed: u64,
    pub affinity_flushed: u64,
}

impl ApplyStats {
    pub fn failed_writes(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Counters over the writer's lifetime, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterTotals {
    pub applies: u64,
    pub writes: u64,
    pub deletes: u64,
    pub failures: BTreeMap<String, u64>,
}

/// The writer's memory: the mirror of the maps and the id allocators.
#[derive(Clone, Debug)]
pub struct Writer {
    state: LbState,
    backend_ids: IdAllocator<BackendKey>,
    rev_nat: RevNatIds,
    totals: WriterTotals,
    /// When `clean`, the maps hold exactly these frontends (the last plan),
    /// and `backend_refs` counts their backends: the next apply only needs
    /// to look at what changed. Otherwise (after a restart or a failed
    /// write) the next apply diffs everything against the mirror.
    applied: HashMap<FrontendKey, Frontend>,
    backend_refs: BackendRefs,
    clean: bool,
}

/// The result of [`Writer::apply`]: stats, and the backends that left
/// frontends, for the conntrack and affinity flush.
#[derive(Clone, Debug, Default)]
pub struct ApplyOutcome {
    pub stats: ApplyStats,
    pub removed: Vec<RemovedPair>,
}

impl Writer {
    /// Adopts the maps' current contents: backend ids by (address, port,
    /// protocol) from the backends map, reverse-NAT indices by frontend from
    /// the slot-0 entries. Nothing is written here.
    pub fn adopt(state: LbState) -> Self {
        let mut backend_ids = IdAllocator::new(1, BACKEND_ID_MAX);
        let mut ids: Vec<(&u32, _)> = state.backends.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        for (id, backend) in ids {
            if !backend_ids.adopt(BackendKey::from_abi(backend), *id) {
                // A duplicate: keep the id out of circulation until the
                // entry is deleted as unreferenced.
                backend_ids.reserve(*id);
            }
        }
        let mut rev_nat = RevNatIds::default();
        let mut heads: Vec<_> = state
            .services
            .iter()
            .filter(|(k, _)| k.backend_slot == 0)
            .collect();
        heads.sort_by_key(|(k, _)| (k.address, k.dport, k.proto, k.scope));
        for (key, head) in heads {
            if !rev_nat.adopt(FrontendKey::from_abi(key), head.rev_nat_index) {
                rev_nat.retire_orphan(head.rev_nat_index);
            }
        }
        for index in state.revnat.keys() {
            if !rev_nat.is_assigned(*index) {
                rev_nat.retire_orphan(*index);
            }
        }
        Self {
            state,
            backend_ids,
            rev_nat,
            totals: WriterTotals::default(),
            applied: HashMap::new(),
            backend_refs: BackendRefs::default(),
            clean: false,
        }
    }

    /// The mirror of the maps.
    pub fn state(&self) -> &LbState {
        &self.state
    }

    pub fn totals(&self) -> &WriterTotals {
        &self.totals
    }

    /// The id of a backend, if it has one.
    pub fn backend_id(&self, key: &BackendKey) -> Option<u32> {
        self.backend_ids.get(key)
    }

    /// The reverse-NAT index of a frontend, if it has one.
    pub fn rev_nat_index(&self, key: &FrontendKey) -> Option<u16> {
        self.rev_nat.get(key)
    }

    /// Makes the maps (through `store`) equal to `desired`. After a clean
    /// apply only the frontends that changed since are looked at; otherwise
    /// every entry is compared with the mirror.
    pub fn apply(
        &mut self,
        store: &mut dyn LbStore,
        desired: &DesiredState,
        maglev: Option<MaglevFn<'_>>,
    ) -> ApplyOutcome {
        let mut outcome = if self.clean {
            self.apply_changes(store, desired, maglev)
        } else {
            self.apply_full(store, desired, maglev)
        };
        let stats = &mut outcome.stats;
        self.totals.applies += 1;
        self.totals.writes += stats.writes;
        self.totals.deletes += stats.deletes;
        for (map, n) in &stats.failures {
            *self.totals.failures.entry(map.clone()).or_default() += n;
        }
        stats.removed_pairs = outcome.removed.len();
        outcome
    }

    /// Records that the maps now hold exactly `desired` (or, after a
    /// failure, that they may not).
    fn settle(&mut self, desired: &DesiredState, stats: &ApplyStats) {
        self.clean = stats.failures.is_empty() && stats.frontends_failed == 0;
        if self.clean {
            self.applied = desired
                .frontends
                .iter()
                .map(|f| (FrontendKey::of(f), f.clone()))
                .collect();
            self.backend_refs = BackendRefs::default();
            for f in &desired.frontends {
                self.backend_refs.add(f);
            }
        } else {
            self.settle_dirty();
        }
    }

    fn settle_dirty(&mut self) {
        self.clean = false;
        self.applied.clear();
        self.backend_refs = BackendRefs::default();
    }

    /// The full diff of the plan against the mirror.
    fn apply_full(
        &mut self,
        store: &mut dyn LbStore,
        desired: &DesiredState,
        maglev: Option<MaglevFn<'_>>,
    ) -> ApplyOutcome {
        let mut run = Run::default();
        let frontends = &desired.frontends;

        // Stage 1: backends, then reverse-NAT entries.
        let wanted_backends = diff::desired_backends(frontends);
        let indices = self.write_backends_and_rev_nat(store, &wanted_backends, frontends, &mut run);

        // Stage 2: each frontend's slots and Maglev table, its slot 0, then
        // the slots beyond a shrunk count.
        let mut kept: HashMap<FrontendKey, u16> = HashMap::new();
        let mut kept_maglev: HashSet<u16> = HashSet::new();
        let mut services: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut removed = Vec::new();
        for (frontend, index) in frontends.iter().zip(&indices) {
            let key = FrontendKey::of(frontend);
            let Some(index) = *index else {
                run.fail(
                    weir_common::maps::LB4_REVNAT,
                    &io_exhausted(),
                    &format!("{key:?}"),
                );
                self.keep_as_is(key, &mut kept, &mut kept_maglev);
                run.stats.frontends_failed += 1;
                continue;
            };
            let ops = diff::frontend_ops(&self.state, frontend, index, &self.backend_ids, maglev);
            if self.execute_frontend(store, &ops, &mut run) {
                kept.insert(key, ops.count);
                if ops.maglev {
                    kept_maglev.insert(index);
                }
                removed.extend(ops.removed);
                services.insert((&frontend.service.namespace, &frontend.service.name));
                run.stats.frontends += 1;
            } else {
                self.keep_as_is(key, &mut kept, &mut kept_maglev);
                run.stats.frontends_failed += 1;
            }
        }

        // Stage 3: stale frontends (slot 0 first), then backends nothing
        // names any more.
        let (ops, stale_removed) = diff::stale_ops(&self.state, &kept, &kept_maglev);
        removed.extend(stale_removed);
        self.execute_all(store, &ops, &mut run);
        let wanted_ids: HashSet<u32> = wanted_backends
            .keys()
            .filter_map(|k| self.backend_ids.get(k))
            .collect();
        let ops = diff::unreferenced_backend_ops(&self.state, &wanted_ids);
        self.execute_all(store, &ops, &mut run);
        self.release_deleted_backends();
        let all_keys: HashSet<FrontendKey> = frontends.iter().map(FrontendKey::of).collect();
        self.rev_nat.retire_others(&all_keys);

        run.stats.services = services.len();
        run.stats.backends = wanted_ids
            .iter()
            .filter(|id| self.state.backends.contains_key(id))
            .count();
        run.warn_failures();
        self.settle(desired, &run.stats);
        ApplyOutcome {
            stats: run.stats,
            removed,
        }
    }

    /// The writes [`Self::apply`] would make if every one succeeded, in
    /// order, without touching the maps.
    pub fn dry_run(&self, desired: &DesiredState, maglev: Option<MaglevFn<'_>>) -> Vec<Op> {
        let mut scratch = self.clone();
        let mut recorder = Recorder::default();
        scratch.apply(&mut recorder, desired, maglev);
        recorder.ops
    }

    /// Reverse-NAT entries no frontend uses and no conntrack entry names
    /// (`referenced`, from a conntrack scan): deletes them and frees their
    /// indices. Returns how many were deleted.
    pub fn release_rev_nat(&mut self, store: &mut dyn LbStore, referenced: &HashSet<u16>) -> u64 {
        let mut idle: Vec<u16> = self
            .state
            .revnat
            .keys()
            .filter(|i| !self.rev_nat.is_assigned(**i) && !referenced.contains(i))
            .copied()
            .collect();
        idle.sort_unstable();
        let mut run = Run::default();
        for index in idle {
            if self.execute(store, &Op::DelRevNat { index }, &mut run) {
                self.rev_nat.free(index);
            }
        }
        run.warn_failures();
        self.totals.deletes += run.stats.deletes;
        run.stats.deletes
    }

    /// Keeps a frontend's current entries untouched by stage 3.
    fn keep_as_is(
        &self,
        key: FrontendKey,
        kept: &mut HashMap<FrontendKey, u16>,
        kept_maglev: &mut HashSet<u16>,
    ) {
        if let Some(head) = self.state.services.get(&key.slot(0)) {
            let highest = (1..=u16::MAX)
                .take_while(|s| self.state.services.contains_key(&key.slot(*s)))
                .last()
                .unwrap_or(0);
            kept.insert(key, highest.max(head.count));
            kept_maglev.insert(head.rev_nat_index);
        }
    }

    /// Runs a frontend's writes: the head only when every `pre` write
    /// succeeded (so its count never covers a missing slot), the shrink
    /// deletes only after the head. Returns whether all succeeded. One
    /// frontend at a time, so a nearly full map still takes whole
    /// frontends; its slots go in one batch.
    fn execute_frontend(
        &mut self,
        store: &mut dyn LbStore,
        ops: &FrontendOps,
        run: &mut Run,
    ) -> bool {
        if !self.execute_all(store, &ops.pre, run).iter().all(|ok| *ok) {
            return false;
        }
        if let Some(head) = &ops.head
            && !self.execute(store, head, run)
        {
            return false;
        }
        self.execute_all(store, &ops.post, run).iter().all(|ok| *ok)
    }

    /// Stage 1 of an apply, full or incremental: the `wanted` backends,
    /// then the reverse-NAT entries of `frontends`. Returns each
    /// frontend's rev-NAT index (`None`: none was free).
    fn write_backends_and_rev_nat<'f>(
        &mut self,
        store: &mut dyn LbStore,
        wanted: &BTreeMap<BackendKey, Lb4Backend>,
        frontends: impl IntoIterator<Item = &'f Frontend>,
        run: &mut Run,
    ) -> Vec<Option<u16>> {
        let (ops, no_id) = diff::backend_ops(&self.state, wanted, &mut self.backend_ids);
        for key in no_id {
            run.fail(
                weir_common::maps::LB4_BACKENDS,
                &io_exhausted(),
                &format!("{key:?}"),
            );
        }
        self.execute_all(store, &ops, run);
        let (ops, indices) = diff::revnat_ops(&self.state, frontends, &mut self.rev_nat);
        self.execute_all(store, &ops, run);
        indices
    }

    /// Runs `ops` in order as one batch (a store may need fewer syscalls);
    /// returns which succeeded.
    fn execute_all(&mut self, store: &mut dyn LbStore, ops: &[Op], run: &mut Run) -> Vec<bool> {
        let mut results = store.execute_batch(ops).into_iter();
        ops.iter()
            .map(|op| {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err(io::Error::other("not executed")));
                self.settle_op(op, result, run)
            })
            .collect()
    }

    fn execute(&mut self, store: &mut dyn LbStore, op: &Op, run: &mut Run) -> bool {
        let result = store.execute(op);
        self.settle_op(op, result, run)
    }

    /// Mirrors a write that succeeded; counts either outcome.
    fn settle_op(&mut self, op: &Op, result: io::Result<()>, run: &mut Run) -> bool {
        match result {
            Ok(()) => {
                self.state.record(op);
                if op.is_delete() {
                    run.stats.deletes += 1;
                } else {
                    run.stats.writes += 1;
                }
                true
            }
            Err(e) => {
                run.fail(op.map(), &e, &format!("{op:?}"));
                false
            }
        }
    }

    /// Frees the ids of backends whose entries are gone.
    fn release_deleted_backends(&mut self) {
        let gone: Vec<BackendKey> = self
            .backend_ids
            .keys()
            .filter(|(_, id)| !self.state.backends.contains_key(id))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            self.backend_ids.release(&key, false);
        }
    }
}

fn io_exhausted() -> io::Error {
    io::Error::other("id space exhausted")
}

/// Per-apply bookkeeping.
#[derive(Default)]
struct Run {
    stats: ApplyStats,
    /// First failure per map, for one log line per map.
    first: BTreeMap<&'static str, String>,
}

impl Run {
    fn fail(&mut self, map: &'static str, error: &io::Error, what: &str) {
        *self.stats.failures.entry(map.to_string()).or_default() += 1;
        self.first
            .entry(map)
            .or_insert_with(|| format!("{what}: {error}"));
    }

    fn warn_failures(&self) {
        for (map, first) in &self.first {
            let failed = self.stats.failures.get(*map).copied().unwrap_or(0);
            warn!(map, failed, first = %first, "map writes failed (full map?); the rest applied");
        }
    }
}

/// A store that accepts everything and remembers the order.
#[derive(Default)]
struct Recorder {
    ops: Vec<Op>,
}

impl LbStore for Recorder {
    fn execute(&mut self, op: &Op) -> io::Result<()> {
        self.ops.push(*op);
        Ok(())
    }
}
