//! The writes that turn the service maps' current contents into the plan,
//! as lists of [`Op`]s, computed before anything is executed. Pure: the
//! only inputs are the mirror ([`LbState`]), the plan and the id allocators.
//!
//! The writer runs them in stages so a datapath reading concurrently never
//! sees a half-written service:
//!
//! 1. backends and reverse-NAT entries ([`backend_ops`], [`revnat_ops`]);
//! 2. per frontend ([`frontend_ops`]): its backend slots and Maglev table
//!    (`pre`), then its slot-0 entry with the count and flags (`head`), then
//!    the slots beyond a shrunk count (`post`);
//! 3. stale frontends, slot 0 first ([`stale_ops`]), then backends no slot or
//!    Maglev entry names any more ([`unreferenced_backend_ops`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use weir_common::lb::{
    BACKEND_ACTIVE, BACKEND_TERMINATING, Lb4Backend, Lb4Key, Lb4RevNat, Lb4Service,
    MAGLEV_TABLE_SIZE, svc_flags,
};

use super::{
    ids::IdAllocator,
    keys::{BackendKey, FrontendKey, addr_to_abi, port_to_abi},
    state::{LbState, Op, maglev_key},
};
use crate::plan::{Algorithm, Backend, Frontend, FrontendKind};

/// Builds a Maglev table for a frontend's backends: entry `i` is an index
/// into the slice; [`MAGLEV_TABLE_SIZE`] entries.
pub type MaglevFn<'a> = &'a dyn Fn(&[Backend]) -> Vec<u32>;

/// A backend that left a frontend: conntrack entries of non-TCP flows from
/// that frontend to it get flushed, and so do affinity entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovedPair {
    pub rev_nat_index: u16,
    pub backend_id: u32,
    pub backend: Lb4Backend,
}

/// The backends the plan uses, by identity, with their map values. A
/// backend shared by several frontends is terminating only if all of them
/// say so, and local if any does.
pub fn desired_backends(frontends: &[Frontend]) -> BTreeMap<BackendKey, Lb4Backend> {
    let mut refs = BackendRefs::default();
    for f in frontends {
        refs.add(f);
    }
    refs.values()
}

/// How many frontends use each backend, and how: enough to derive the
/// backend's map value incrementally as frontends come and go.
#[derive(Clone, Debug, Default)]
pub struct BackendRefs {
    refs: HashMap<BackendKey, Uses>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Uses {
    users: u32,
    active: u32,
    local: u32,
}

impl BackendRefs {
    fn keys_of(f: &Frontend) -> impl Iterator<Item = (BackendKey, &Backend)> {
        let proto = f.proto.number();
        f.backends.iter().map(move |b| {
            let key = BackendKey {
                address: b.address,
                port: b.port,
                proto,
            };
            (key, b)
        })
    }

    /// Counts `f`'s backends; returns their keys.
    pub fn add(&mut self, f: &Frontend) -> Vec<BackendKey> {
        Self::keys_of(f)
            .map(|(key, b)| {
                let uses = self.refs.entry(key).or_default();
                uses.users += 1;
                uses.active += u32::from(!b.terminating);
                uses.local += u32::from(b.local);
                key
            })
            .collect()
    }

    /// Uncounts `f`'s backends; returns their keys.
    pub fn remove(&mut self, f: &Frontend) -> Vec<BackendKey> {
        Self::keys_of(f)
            .map(|(key, b)| {
                if let Some(uses) = self.refs.get_mut(&key) {
                    uses.users = uses.users.saturating_sub(1);
                    uses.active = uses.active.saturating_sub(u32::from(!b.terminating));
                    uses.local = uses.local.saturating_sub(u32::from(b.local));
                    if uses.users == 0 {
                        self.refs.remove(&key);
                    }
                }
                key
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The map value of a used backend: terminating only if every user
    /// says so, local if any does.
    pub fn value(&self, key: &BackendKey) -> Option<Lb4Backend> {
        let uses = self.refs.get(key)?;
        Some(Lb4Backend {
            address: addr_to_abi(key.address),
            port: port_to_abi(key.port),
            proto: key.proto,
            state: if uses.active > 0 {
                BACKEND_ACTIVE
            } else {
                BACKEND_TERMINATING
            },
            local: u8::from(uses.local > 0),
            pad: [0; 3],
        })
    }

    pub fn values(&self) -> BTreeMap<BackendKey, Lb4Backend> {
        self.refs
            .keys()
            .filter_map(|k| Some((*k, self.value(k)?)))
            .collect()
    }
}

/// Stage 1a: backend entries that are missing or differ. Backends that get
/// no id (the id space is exhausted) are returned separately.
pub fn backend_ops(
    state: &LbState,
    desired: &BTreeMap<BackendKey, Lb4Backend>,
    ids: &mut IdAllocator<BackendKey>,
) -> (Vec<Op>, Vec<BackendKey>) {
    let mut ops = Vec::new();
    let mut no_id = Vec::new();
    for (key, value) in desired {
        let Some(id) = ids.get_or_alloc(key) else {
            no_id.push(*key);
            continue;
        };
        if state.backends.get(&id) != Some(value) {
            ops.push(Op::PutBackend { id, value: *value });
        }
    }
    (ops, no_id)
}

/// Stage 1b: reverse-NAT entries of the plan's frontends, and each
/// frontend's index (`None`: the index space is exhausted).
pub fn revnat_ops<'a>(
    state: &LbState,
    frontends: impl IntoIterator<Item = &'a Frontend>,
    indices: &mut RevNatIds,
) -> (Vec<Op>, Vec<Option<u16>>) {
    let mut ops = Vec::new();
    let mut written = HashSet::new();
    let per_frontend = frontends
        .into_iter()
        .map(|f| {
            let index = indices.get_or_alloc(&FrontendKey::of(f))?;
            let value = Lb4RevNat {
                address: addr_to_abi(f.address),
                port: port_to_abi(f.port),
                pad: 0,
            };
            if state.revnat.get(&index) != Some(&value) && written.insert(index) {
                ops.push(Op::PutRevNat { index, value });
            }
            Some(index)
        })
        .collect();
    (ops, per_frontend)
}

/// The writes of one frontend, in execution order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendOps {
    /// Backend slots `1..=count` and Maglev entries.
    pub pre: Vec<Op>,
    /// The slot-0 entry, when it changes.
    pub head: Option<Op>,
    /// Slots beyond the new count, and a Maglev table no longer used.
    pub post: Vec<Op>,
    /// Backends this frontend no longer uses.
    pub removed: Vec<RemovedPair>,
    /// The number of backend slots after the writes.
    pub count: u16,
    /// Whether the frontend uses its Maglev table after the writes.
    pub maglev: bool,
}

impl FrontendOps {
    pub fn all(&self) -> impl Iterator<Item = &Op> {
        self.pre
            .iter()
            .chain(self.head.iter())
            .chain(self.post.iter())
    }
}

/// Stage 2 for one frontend with reverse-NAT index `rev_nat_index`. Only
/// backends already in the mirror are used, so a backend whose write failed
/// is never named by a slot.
pub fn frontend_ops(
    state: &LbState,
    frontend: &Frontend,
    rev_nat_index: u16,
    backend_ids: &IdAllocator<BackendKey>,
    maglev: Option<MaglevFn<'_>>,
) -> FrontendOps {
    let key = FrontendKey::of(frontend);
    let proto = frontend.proto.number();
    // Usable backends, in plan order, with their ids.
    let usable: Vec<(&Backend, u32)> = frontend
        .backends
        .iter()
        .filter_map(|b| {
            let id = backend_ids.get(&BackendKey {
                address: b.address,
                port: b.port,
                proto,
            })?;
            state.backends.contains_key(&id).then_some((b, id))
        })
        .take(usize::from(u16::MAX))
        .collect();
    let new_ids: Vec<u32> = usable.iter().map(|(_, id)| *id).collect();
    let old_head = state.services.get(&key.slot(0));
    let old_count = old_head.map_or(0, |h| h.count);
    let old_slots: Vec<Option<u32>> = (1..=old_count)
        .map(|slot| state.services.get(&key.slot(slot)).map(|s| s.backend_id))
        .collect();
    let slots = place_stably(&old_slots, &new_ids);
    let count = slots.len() as u16;

    let mut out = FrontendOps {
        count,
        ..FrontendOps::default()
    };
    for (i, id) in slots.iter().enumerate() {
        let slot_key = key.slot(i as u16 + 1);
        let value = Lb4Service {
            backend_id: *id,
            rev_nat_index,
            ..Lb4Service::default()
        };
        if state.services.get(&slot_key) != Some(&value) {
            out.pre.push(Op::PutService {
                key: slot_key,
                value,
            });
        }
    }

    // Maglev: only with backends and a table builder that honours the size.
    let wants_maglev = frontend.algorithm == Algorithm::Maglev && count > 0;
    let table: Option<Vec<u32>> = maglev.filter(|_| wants_maglev).and_then(|build| {
        let backends: Vec<Backend> = usable.iter().map(|(b, _)| (*b).clone()).collect();
        let indices = build(&backends);
        (indices.len() == MAGLEV_TABLE_SIZE as usize)
            .then(|| {
                indices
                    .iter()
                    .map(|i| new_ids.get(*i as usize).copied())
                    .collect()
            })
            .flatten()
    });
    if let Some(table) = &table {
        let old = state.maglev.get(&rev_nat_index);
        for (index, id) in table.iter().enumerate() {
            if old.and_then(|t| t.get(index)) != Some(id) {
                out.pre.push(Op::PutMaglev {
                    key: maglev_key(rev_nat_index, index as u32),
                    backend_id: *id,
                });
            }
        }
    }
    out.maglev = table.is_some();

    let head = Lb4Service {
        backend_id: 0,
        count,
        rev_nat_index,
        flags: head_flags(frontend, out.maglev),
        pad: 0,
        affinity_timeout: frontend.affinity_timeout.unwrap_or(0),
    };
    if old_head != Some(&head) {
        out.head = Some(Op::PutService {
            key: key.slot(0),
            value: head,
        });
    }
    for slot in count + 1..=old_count {
        out.post.push(Op::DelService {
            key: key.slot(slot),
        });
    }
    // A table the frontend no longer uses goes after the head dropped MAGLEV.
    if !out.maglev
        && let Some(old) = state.maglev.get(&rev_nat_index)
    {
        for (index, id) in old.iter().enumerate() {
            if *id != 0 {
                out.post.push(Op::DelMaglev {
                    key: maglev_key(rev_nat_index, index as u32),
                });
            }
        }
    }

    let kept: HashSet<u32> = new_ids.iter().copied().collect();
    let old_index = old_head.map_or(rev_nat_index, |h| h.rev_nat_index);
    out.removed = removed_pairs(state, old_index, old_slots.iter().flatten().copied(), &kept);
    out
}

fn head_flags(frontend: &Frontend, maglev: bool) -> u16 {
    let mut flags = match frontend.kind {
        FrontendKind::ClusterIp => svc_flags::CLUSTER_IP,
        FrontendKind::NodePort => svc_flags::NODE_PORT,
        FrontendKind::LoadBalancer => svc_flags::LOAD_BALANCER,
        FrontendKind::ExternalIp => svc_flags::EXTERNAL_IP,
    };
    if frontend.affinity_timeout.is_some() {
        flags |= svc_flags::AFFINITY;
    }
    if frontend.local_only {
        flags |= svc_flags::LOCAL_ONLY;
    }
    if maglev {
        flags |= svc_flags::MAGLEV;
    }
    if frontend.two_scopes {
        flags |= svc_flags::TWO_SCOPES;
    }
    flags
}

/// New slot contents that keep every backend that stays in its old slot,
/// so a changed backend set rewrites only the slots that must change.
/// `old[i]` is slot `i + 1` (`None`: missing in the map).
pub fn place_stably(old: &[Option<u32>], new: &[u32]) -> Vec<u32> {
    let wanted: HashSet<u32> = new.iter().copied().collect();
    let mut slots: Vec<Option<u32>> = vec![None; new.len()];
    let mut placed = HashSet::new();
    for (slot, id) in slots.iter_mut().zip(old) {
        if let Some(id) = id
            && wanted.contains(id)
            && placed.insert(*id)
        {
            *slot = Some(*id);
        }
    }
    let mut rest = new.iter().filter(|id| !placed.contains(*id));
    slots
        .into_iter()
        .map(|s| s.or_else(|| rest.next().copied()).unwrap_or_default())
        .collect()
}

fn removed_pairs(
    state: &LbState,
    rev_nat_index: u16,
    old_ids: impl Iterator<Item = u32>,
    kept: &HashSet<u32>,
) -> Vec<RemovedPair> {
    let mut seen = HashSet::new();
    old_ids
        .filter(|id| !kept.contains(id) && seen.insert(*id))
        .filter_map(|backend_id| {
            Some(RemovedPair {
                rev_nat_index,
                backend_id,
                backend: *state.backends.get(&backend_id)?,
            })
        })
        .collect()
}

/// Stage 3a: entries of frontends the plan no longer has (slot 0 of every
/// one first, then their slots), stray slots beyond a frontend's kept
/// count, and Maglev tables no kept frontend uses. `kept` maps each kept
/// frontend to its highest kept slot.
pub fn stale_ops(
    state: &LbState,
    kept: &HashMap<FrontendKey, u16>,
    kept_maglev: &HashSet<u16>,
) -> (Vec<Op>, Vec<RemovedPair>) {
    let mut heads: Vec<Lb4Key> = Vec::new();
    let mut slots: Vec<Lb4Key> = Vec::new();
    for key in state.services.keys() {
        match kept.get(&FrontendKey::from_abi(key)) {
            Some(max) if key.backend_slot <= *max => {}
            Some(_) => slots.push(*key),
            None if key.backend_slot == 0 => heads.push(*key),
            None => slots.push(*key),
        }
    }
    heads.sort_by_key(sort_key);
    slots.sort_by_key(sort_key);
    let mut removed = Vec::new();
    for head in &heads {
        let Some(value) = state.services.get(head) else {
            continue;
        };
        let fk = FrontendKey::from_abi(head);
        let ids =
            (1..=value.count).filter_map(|s| state.services.get(&fk.slot(s)).map(|v| v.backend_id));
        removed.extend(removed_pairs(
            state,
            value.rev_nat_index,
            ids,
            &HashSet::new(),
        ));
    }
    let mut ops: Vec<Op> = heads
        .iter()
        .chain(slots.iter())
        .map(|key| Op::DelService { key: *key })
        .collect();
    let mut tables: Vec<(&u16, &Vec<u32>)> = state
        .maglev
        .iter()
        .filter(|(index, _)| !kept_maglev.contains(index))
        .collect();
    tables.sort_by_key(|(index, _)| **index);
    for (index, table) in tables {
        for (i, id) in table.iter().enumerate() {
            if *id != 0 {
                ops.push(Op::DelMaglev {
                    key: maglev_key(*index, i as u32),
                });
            }
        }
    }
    (ops, removed)
}

/// Stage 3a for known frontends only (the incremental path): the heads of
/// `gone` first, then their slots, then their Maglev tables.
pub fn removed_frontend_ops(state: &LbState, gone: &[FrontendKey]) -> (Vec<Op>, Vec<RemovedPair>) {
    let mut heads = Vec::new();
    let mut slots = Vec::new();
    let mut tables = Vec::new();
    let mut removed = Vec::new();
    for fk in gone {
        let Some(head) = state.services.get(&fk.slot(0)) else {
            continue;
        };
        heads.push(Op::DelService { key: fk.slot(0) });
        let mut ids = Vec::new();
        for slot in 1..=head.count {
            if let Some(entry) = state.services.get(&fk.slot(slot)) {
                ids.push(entry.backend_id);
                slots.push(Op::DelService { key: fk.slot(slot) });
            }
        }
        removed.extend(removed_pairs(
            state,
            head.rev_nat_index,
            ids.into_iter(),
            &HashSet::new(),
        ));
        if let Some(table) = state.maglev.get(&head.rev_nat_index) {
            for (i, id) in table.iter().enumerate() {
                if *id != 0 {
                    tables.push(Op::DelMaglev {
                        key: maglev_key(head.rev_nat_index, i as u32),
                    });
                }
            }
        }
    }
    heads.extend(slots);
    heads.extend(tables);
    (heads, removed)
}

fn sort_key(key: &Lb4Key) -> (u32, u16, u8, u8, u16) {
    (
        key.address,
        key.dport,
        key.proto,
        key.scope,
        key.backend_slot,
    )
}

/// Stage 3b: backends that are neither wanted nor named by any slot or
/// Maglev entry still in the mirror.
pub fn unreferenced_backend_ops(state: &LbState, wanted: &HashSet<u32>) -> Vec<Op> {
    let referenced = referenced_backends(state);
    let mut ids: Vec<u32> = state
        .backends
        .keys()
        .filter(|id| !wanted.contains(id) && !referenced.contains(id))
        .copied()
        .collect();
    ids.sort_unstable();
    ids.into_iter().map(|id| Op::DelBackend { id }).collect()
}

/// Backend ids some slot or Maglev entry in the mirror names.
pub fn referenced_backends(state: &LbState) -> HashSet<u32> {
    let mut referenced: HashSet<u32> = state
        .services
        .iter()
        .filter(|(k, _)| k.backend_slot != 0)
        .map(|(_, v)| v.backend_id)
        .collect();
    referenced.extend(state.maglev.values().flatten().copied());
    referenced
}

/// Reverse-NAT indices: one per frontend key, in `1..=u16::MAX` (0 means
/// "none" in the ABI). An index whose frontend left is retired, not freed:
/// its entry stays until no conntrack entry names it (replies of open flows
/// still need it), and the frontend gets it back if it returns meanwhile.
#[derive(Clone, Debug)]
pub struct RevNatIds {
    ids: IdAllocator<FrontendKey>,
    retired: HashMap<FrontendKey, u16>,
}

impl Default for RevNatIds {
    fn default() -> Self {
        Self {
            ids: IdAllocator::new(1, u32::from(u16::MAX)),
            retired: HashMap::new(),
        }
    }
}

impl RevNatIds {
    pub fn adopt(&mut self, key: FrontendKey, index: u16) -> bool {
        self.ids.adopt(key, u32::from(index))
    }

    pub fn get(&self, key: &FrontendKey) -> Option<u16> {
        self.ids.get(key).and_then(|i| u16::try_from(i).ok())
    }

    pub fn get_or_alloc(&mut self, key: &FrontendKey) -> Option<u16> {
        if let Some(index) = self.retired.remove(key) {
            self.ids.unreserve(u32::from(index));
            self.ids.adopt(*key, u32::from(index));
        }
        self.ids
            .get_or_alloc(key)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Retires the indices of every key not in `keep`.
    pub fn retire_others(&mut self, keep: &HashSet<FrontendKey>) {
        let gone: Vec<FrontendKey> = self
            .ids
            .keys()
            .filter(|(k, _)| !keep.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(index) = self
                .ids
                .release(&key, true)
                .and_then(|i| u16::try_from(i).ok())
            {
                self.retired.insert(key, index);
            }
        }
    }

    /// Retires the index of one frontend that left.
    pub fn retire(&mut self, key: &FrontendKey) {
        if let Some(index) = self
            .ids
            .release(key, true)
            .and_then(|i| u16::try_from(i).ok())
        {
            self.retired.insert(*key, index);
        }
    }

    /// Retires an index found in the maps without a frontend.
    pub fn retire_orphan(&mut self, index: u16) {
        self.ids.reserve(u32::from(index));
    }

    /// Whether `index` is assigned to a current frontend.
    pub fn is_assigned(&self, index: u16) -> bool {
        self.ids.holder(u32::from(index)).is_some()
    }

    /// Frees a retired index once its entry is deleted.
    pub fn free(&mut self, index: u16) {
        self.retired.retain(|_, i| *i != index);
        self.ids.unreserve(u32::from(index));
    }
}
