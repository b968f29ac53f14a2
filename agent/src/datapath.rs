//! The embedded eBPF object and its programs and maps.

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, SchedClassifier},
};
use weir_common::{
    DropReason,
    maps::METRICS,
    metrics::{Direction, MetricKey, MetricValue},
};

use crate::{Error, Result};

/// The eBPF object `cargo xtask build` compiled; empty in a stub build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir.bpf.o"));

/// TC program on the host-side veth's ingress: packets leaving a pod.
pub const PROG_FROM_POD: &str = "weir_from_pod";
/// TC program on the host-side veth's egress: packets entering a pod.
pub const PROG_TO_POD: &str = "weir_to_pod";

/// Whether this binary carries a real eBPF object.
pub fn has_object() -> bool {
    !OBJECT.is_empty()
}

/// Parses the embedded object and creates its maps in the kernel.
pub fn open() -> Result<Ebpf> {
    if !has_object() {
        return Err(Error::NoEbpfObject);
    }
    Ebpf::load(OBJECT).map_err(Error::LoadObject)
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
    let mut out = Vec::new();
    for direction in Direction::ALL {
        for reason in DropReason::ALL {
            let key = MetricKey::new(direction, reason);
            let per_cpu = counters.get(&key.index(), 0).map_err(|source| Error::Map {
                name: METRICS,
                source,
            })?;
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
