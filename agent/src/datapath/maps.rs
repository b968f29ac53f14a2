//! The maps the agent reads and writes, typed, taken out of the loaded
//! object (their fds stay open; the programs hold their own references).

use std::io;

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
};
use weir_common::{
    config::DatapathConfig,
    ct::{Ct4Entry, Ct4Key},
    endpoint::EndpointInfo,
    lb::{
        Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4MaglevKey, Lb4RevNat, Lb4Service,
    },
    maps as names,
    metrics::MetricValue,
};

#[path = "maps_batch.rs"]
mod batch;

use super::{
    ct_gc,
    error::{DatapathError, DatapathResult},
    state::{LbState, LbStore, Op},
};

pub struct Maps {
    pub services: BpfHashMap<MapData, Lb4Key, Lb4Service>,
    pub backends: BpfHashMap<MapData, u32, Lb4Backend>,
    pub revnat: BpfHashMap<MapData, u16, Lb4RevNat>,
    pub maglev: BpfHashMap<MapData, Lb4MaglevKey, u32>,
    pub affinity: BpfHashMap<MapData, Lb4AffinityKey, Lb4AffinityValue>,
    pub ct: BpfHashMap<MapData, Ct4Key, Ct4Entry>,
    pub endpoints: BpfHashMap<MapData, u32, EndpointInfo>,
    pub config: Array<MapData, DatapathConfig>,
    pub metrics: PerCpuArray<MapData, MetricValue>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> DatapathResult<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> DatapathResult<Self> {
        Ok(Self {
            services: take(ebpf, names::LB4_SERVICES)?,
            backends: take(ebpf, names::LB4_BACKENDS)?,
            revnat: take(ebpf, names::LB4_REVNAT)?,
            maglev: take(ebpf, names::LB4_MAGLEV)?,
            affinity: take(ebpf, names::LB4_AFFINITY)?,
            ct: take(ebpf, names::CT4)?,
            endpoints: take(ebpf, names::ENDPOINTS)?,
            config: take(ebpf, names::CONFIG)?,
            metrics: take(ebpf, names::METRICS)?,
        })
    }

    /// Reads the service maps (for adoption after a restart).
    pub fn read_lb_state(&self) -> DatapathResult<LbState> {
        let mut state = LbState::default();
        let limit = u64::from(u32::MAX);
        let wrap = |name: &'static str| move |e| DatapathError::map(name, e);
        let (services, _) =
            ct_gc::scan(&self.services, limit).map_err(wrap(names::LB4_SERVICES))?;
        state.services.extend(services);
        let (backends, _) =
            ct_gc::scan(&self.backends, limit).map_err(wrap(names::LB4_BACKENDS))?;
        state.backends.extend(backends);
        let (revnat, _) = ct_gc::scan(&self.revnat, limit).map_err(wrap(names::LB4_REVNAT))?;
        state.revnat.extend(revnat);
        let (maglev, _) = ct_gc::scan(&self.maglev, limit).map_err(wrap(names::LB4_MAGLEV))?;
        for (key, id) in maglev {
            state.insert_maglev(&key, id);
        }
        Ok(state)
    }
}

/// Ops that can share a batch: same map, both puts or both deletes.
fn same_kind(a: &Op, b: &Op) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl Maps {
    /// One run of [`same_kind`] ops.
    fn execute_run(&mut self, run: &[Op]) -> Vec<io::Result<()>> {
        match run.first() {
            Some(Op::PutService { .. }) => batch::put(
                &mut self.services,
                &pick(run, |op| match op {
                    Op::PutService { key, value } => Some((*key, *value)),
                    _ => None,
                }),
            ),
            Some(Op::PutBackend { .. }) => batch::put(
                &mut self.backends,
                &pick(run, |op| match op {
                    Op::PutBackend { id, value } => Some((*id, *value)),
                    _ => None,
                }),
            ),
            Some(Op::PutRevNat { .. }) => batch::put(
                &mut self.revnat,
                &pick(run, |op| match op {
                    Op::PutRevNat { index, value } => Some((*index, *value)),
                    _ => None,
                }),
            ),
            Some(Op::DelBackend { .. }) => batch::delete(
                &mut self.backends,
                &pick(run, |op| match op {
                    Op::DelBackend { id } => Some(*id),
                    _ => None,
                }),
            ),
            Some(Op::PutMaglev { .. }) => batch::put(
                &mut self.maglev,
                &pick(run, |op| match op {
                    Op::PutMaglev { key, backend_id } => Some((*key, *backend_id)),
                    _ => None,
                }),
            ),
            Some(Op::DelService { .. }) => batch::delete(
                &mut self.services,
                &pick(run, |op| match op {
                    Op::DelService { key } => Some(*key),
                    _ => None,
                }),
            ),
            Some(Op::DelMaglev { .. }) => batch::delete(
                &mut self.maglev,
                &pick(run, |op| match op {
                    Op::DelMaglev { key } => Some(*key),
                    _ => None,
                }),
            ),
            // Rare (rev-NAT deletes wait for the conntrack GC): one by one.
            _ => run.iter().map(|op| self.execute(op)).collect(),
        }
    }
}

/// The payloads of a run of one kind of op.
fn pick<T>(run: &[Op], payload: impl Fn(&Op) -> Option<T>) -> Vec<T> {
    run.iter().filter_map(payload).collect()
}

fn syscall_error(e: MapError) -> io::Error {
    match e {
        MapError::SyscallError(s) => s.io_error,
        other => io::Error::other(other.to_string()),
    }
}

fn ignore_missing(result: Result<(), MapError>) -> io::Result<()> {
    match result.map_err(syscall_error) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

impl LbStore for Maps {
    /// Runs of puts (or deletes) to one map go to the kernel as batches: a
    /// first sync of 10k services writes ~220k entries.
    fn execute_batch(&mut self, ops: &[Op]) -> Vec<io::Result<()>> {
        let mut results = Vec::with_capacity(ops.len());
        for run in ops.chunk_by(same_kind) {
            results.extend(self.execute_run(run));
        }
        results
    }

    fn execute(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::PutBackend { id, value } => {
                self.backends.insert(id, value, 0).map_err(syscall_error)
            }
            Op::DelBackend { id } => ignore_missing(self.backends.remove(id)),
            Op::PutRevNat { index, value } => {
                self.revnat.insert(index, value, 0).map_err(syscall_error)
            }
            Op::DelRevNat { index } => ignore_missing(self.revnat.remove(index)),
            Op::PutService { key, value } => {
                self.services.insert(key, value, 0).map_err(syscall_error)
            }
            Op::DelService { key } => ignore_missing(self.services.remove(key)),
            Op::PutMaglev { key, backend_id } => self
                .maglev
                .insert(key, backend_id, 0)
                .map_err(syscall_error),
            Op::DelMaglev { key } => ignore_missing(self.maglev.remove(key)),
        }
    }
}
