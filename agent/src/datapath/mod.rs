//! The datapath, userspace side: everything between the plan
//! ([`crate::plan::DesiredState`]) and the kernel.
//!
//! * [`Datapath::load`] loads the embedded eBPF object with every map pinned
//!   under `--bpffs` and adopts what a previous run left there
//!   ([`loader`], [`pin`], [`bpffs`]).
//! * [`Datapath::attach_pod`], [`Datapath::attach_netdev`],
//!   [`Datapath::attach_cgroup`] attach programs with pinned bpf_links that
//!   survive the agent ([`attach`]).
//! * [`Datapath::apply`] makes the service maps equal to the plan
//!   ([`writer`], [`diff`], [`ids`]) and flushes conntrack of removed
//!   backends; [`Datapath::ct_gc`] expires idle flows ([`ct_gc`]).
//! * [`Datapath::apply_policy`] writes a NetworkPolicy plan into the policy
//!   maps; [`Datapath::policy_event_reader`] reads the verdict events
//!   ([`policy_maps`]).
//! * [`Datapath::upsert_endpoint`] / [`Datapath::remove_endpoint`] keep the
//!   local endpoint map; [`Datapath::metrics`] reads what `/metrics` shows
//!   ([`stats`]).
//!
//! Interface work happens in the calling thread's network namespace;
//! [`netns::in_netns`] runs it in another one on a dedicated thread.
//!
//! The functions at this level ([`open`], [`load_classifier`],
//! [`read_metrics`]) load the object *without* pins, for
//! `BPF_PROG_TEST_RUN` tests and `--check-datapath`.

pub mod attach;
pub mod bpffs;
pub mod ct_gc;
pub mod diff;
mod error;
pub mod ids;
pub mod keys;
pub mod loader;
pub mod maps;
pub mod netns;
pub mod object;
pub mod pin;
pub mod policy_maps;
pub mod state;
pub mod stats;
mod sys;
pub mod writer;

#[cfg(test)]
mod writer_tests;

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, SchedClassifier},
};
use weir_common::{
    maps::METRICS,
    metrics::{MetricKey, MetricValue},
};

pub use attach::{Attached, Iface, TcHook};
pub use ct_gc::{CtGcStats, CtTimeouts};
pub use error::{DatapathError, DatapathResult};
pub use loader::{DEFAULT_BPFFS, Datapath, LoadOptions, LoadReport};
pub use object::has_object;
pub use policy_maps::{PolicyApplyStats, PolicyEventReader, PolicyMaps};
pub use stats::{DatapathMetrics, MapFill};
pub use writer::{ApplyStats, WriterTotals};

use crate::{Error, Result};

/// TC program on the host-side veth's ingress: packets leaving a pod.
pub const PROG_FROM_POD: &str = weir_common::programs::FROM_POD;
/// TC program on the host-side veth's egress: packets entering a pod.
pub const PROG_TO_POD: &str = weir_common::programs::TO_POD;

/// Parses the embedded object and creates its maps in the kernel, unpinned.
pub fn open() -> Result<Ebpf> {
    let object = object::bytes().map_err(|_| Error::NoEbpfObject)?;
    Ebpf::load(object).map_err(Error::LoadObject)
}

/// Loads (verifies) a TC classifier from the object.
pub fn load_classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source: ProgramError| Error::Program { name, source })?;
    program
        .load()
        .map_err(|source| Error::Program { name, source })?;
    Ok(program)
}

/// Counters summed over CPUs, per (direction, reason).
pub fn read_metrics(ebpf: &Ebpf) -> Result<Vec<(MetricKey, MetricValue)>> {
    let map = ebpf.map(METRICS).ok_or(Error::MissingMap(METRICS))?;
    let counters = PerCpuArray::<_, MetricValue>::try_from(map).map_err(|source| Error::Map {
        name: METRICS,
        source,
    })?;
    stats::sum_verdicts(&counters, METRICS).map_err(|e| match e {
        DatapathError::Map { source, .. } => Error::Map {
            name: METRICS,
            source: *source,
        },
        other => Error::Io {
            path: METRICS.into(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}
