//! [`Datapath`]: the loaded object with its maps pinned under `--bpffs`,
//! adopted from a previous run when they are already there.
//!
//! Loading never flushes: pinned maps are reused as they are (aya's
//! `map_pin_path` opens an existing pin instead of creating a map), links
//! keep their interfaces and get the new programs atomically, and the map
//! writer starts from what the maps hold.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader, programs::Program};
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};
use weir_common::{config::DatapathConfig, endpoint::EndpointInfo, maps as names};

use super::{
    attach::{self, Attached, Iface, LinkRefresh, TcHook},
    bpffs,
    ct_gc::{self, CtGcStats, CtTimeouts},
    error::{DatapathError, DatapathResult},
    keys::addr_to_abi,
    maps::Maps,
    object::{self, MapSpec},
    pin::{self, PinLayout},
    policy_maps::{PolicyApplyStats, PolicyEventReader, PolicyMaps},
    stats::{self, DatapathMetrics, MapFill},
    writer::{ApplyStats, Writer},
};
use crate::plan::DesiredState;
use crate::policy::{Capacities, PolicyPlan};

/// Default pin root (`--bpffs`).
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/weir";

/// How to load the datapath.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The pin root (`--bpffs`): a directory on a bpffs, or one we mount a
    /// bpffs on.
    pub bpffs: PathBuf,
    /// Capacities that differ from the object's, by map name (e.g. a larger
    /// service map for 100k services). A pinned map with another capacity
    /// is migrated into a new one.
    pub max_entries: BTreeMap<String, u32>,
    /// Conntrack idle timeouts.
    pub ct_timeouts: CtTimeouts,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            bpffs: PathBuf::from(DEFAULT_BPFFS),
            max_entries: BTreeMap::new(),
            ct_timeouts: CtTimeouts::default(),
        }
    }
}

impl LoadOptions {
    pub fn new(bpffs: impl Into<PathBuf>) -> Self {
        Self {
            bpffs: bpffs.into(),
            ..Self::default()
        }
    }
}

/// What [`Datapath::load`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// `bpffs` was mounted by us (it was not on a bpffs).
    pub mounted_bpffs: bool,
    /// Maps whose pinned layout differed and were replaced (or migrated).
    pub replaced_maps: Vec<String>,
    /// Pins of maps of other versions that were removed.
    pub removed_stale_maps: Vec<String>,
    pub links: LinkRefresh,
    /// Entries adopted from the pinned service maps.
    pub adopted_services: usize,
    pub adopted_backends: usize,
}

/// The loaded, pinned datapath.
pub struct Datapath {
    /// Held for the datapath's lifetime: one agent per pin root.
    _lock: Flock<File>,
    pins: PinLayout,
    specs: BTreeMap<String, MapSpec>,
    ebpf: Ebpf,
    maps: Maps,
    policy: PolicyMaps,
    writer: Writer,
    ct_timeouts: CtTimeouts,
    report: LoadReport,
    last_gc: Option<CtGcStats>,
    ct_expired_total: u64,
    ct_flushed_total: u64,
}

impl Datapath {
    /// Loads the embedded object with its maps pinned under `opts.bpffs`.
    pub fn load(opts: &LoadOptions) -> DatapathResult<Self> {
        Self::load_object(object::bytes()?, opts)
    }

    /// Loads `object` (an eBPF ELF) like [`Self::load`]; for tests.
    pub fn load_object(object: &[u8], opts: &LoadOptions) -> DatapathResult<Self> {
        let pins = PinLayout::new(&opts.bpffs);
        let mut report = LoadReport {
            mounted_bpffs: bpffs::ensure(pins.root())? == bpffs::Prepared::Mounted,
            ..LoadReport::default()
        };
        let lock = lock_root(pins.root())?;
        let links_dir = pins.links_dir();
        std::fs::create_dir_all(&links_dir)
            .map_err(|e| DatapathError::io("creating", &links_dir, e))?;

        let specs = object::map_specs(object, &opts.max_entries)?;
        let replaced = pin::reconcile_maps(&pins, &specs)?;
        report.replaced_maps = replaced.iter().map(|r| r.name.clone()).collect();

        let mut loader = EbpfLoader::new();
        for name in specs.keys() {
            loader.map_pin_path(name.as_str(), pins.map(name));
        }
        for (name, max) in &opts.max_entries {
            loader.map_max_entries(name.as_str(), *max);
        }
        let mut ebpf = loader.load(object).map_err(|source| DatapathError::Load {
            dir: pins.root().to_path_buf(),
            source: Box::new(source),
        })?;
        pin::migrate(&pins, &replaced, &specs);
        drop(replaced);
        load_programs(&mut ebpf)?;

        report.links = attach::refresh_links(&ebpf, &pins)?;
        report.removed_stale_maps = pin::remove_stale_maps(&pins, &specs)?;

        let maps = Maps::take(&mut ebpf)?;
        let policy = PolicyMaps::take(&mut ebpf, policy_capacities(&specs))?;
        let state = maps.read_lb_state()?;
        report.adopted_services = state.services.len();
        report.adopted_backends = state.backends.len();
        let writer = Writer::adopt(state);
        info!(bpffs = %pins.root().display(), mounted = report.mounted_bpffs,
              replaced = ?report.replaced_maps, stale_removed = ?report.removed_stale_maps,
              links = ?report.links, services = report.adopted_services,
              backends = report.adopted_backends, "datapath loaded; pinned state adopted");
        Ok(Self {
            _lock: lock,
            pins,
            specs,
            ebpf,
            maps,
            policy,
            writer,
            ct_timeouts: opts.ct_timeouts,
            report,
            last_gc: None,
            ct_expired_total: 0,
            ct_flushed_total: 0,
        })
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    pub fn pins(&self) -> &PinLayout {
        &self.pins
    }

    /// The map layouts as loaded.
    pub fn map_specs(&self) -> &BTreeMap<String, MapSpec> {
        &self.specs
    }

    /// The writer (its mirror of the service maps and its ids).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The loaded object (programs; the agent's maps are taken out).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    // --- attachment ------------------------------------------------------

    /// Attaches `weir_from_pod` to the ingress and `weir_to_pod` to the
    /// egress of a pod's host-side veth (in the calling thread's netns).
    pub fn attach_pod(&mut self, iface: impl Into<Iface>) -> DatapathResult<[Attached; 2]> {
        let ifindex = iface.into().index()?;
        Ok([
            attach::attach_tc(&mut self.ebpf, &self.pins, TcHook::PodIngress, ifindex)?,
            attach::attach_tc(&mut self.ebpf, &self.pins, TcHook::PodEgress, ifindex)?,
        ])
    }

    /// Detaches the pod programs from interface `ifindex`; fine when the
    /// interface is already gone. Returns how many links were detached.
    pub fn detach_pod(&mut self, ifindex: u32) -> DatapathResult<usize> {
        let mut n = 0;
        for hook in [TcHook::PodIngress, TcHook::PodEgress] {
            n += usize::from(attach::detach_tc(&self.pins, hook, ifindex)?);
        }
        Ok(n)
    }

    /// Attaches `weir_from_netdev` / `weir_to_netdev` to the node's uplink.
    pub fn attach_netdev(&mut self, iface: impl Into<Iface>) -> DatapathResult<[Attached; 2]> {
        let ifindex = iface.into().index()?;
        Ok([
            attach::attach_tc(&mut self.ebpf, &self.pins, TcHook::NetdevIngress, ifindex)?,
            attach::attach_tc(&mut self.ebpf, &self.pins, TcHook::NetdevEgress, ifindex)?,
        ])
    }

    pub fn detach_netdev(&mut self, ifindex: u32) -> DatapathResult<usize> {
        let mut n = 0;
        for hook in [TcHook::NetdevIngress, TcHook::NetdevEgress] {
            n += usize::from(attach::detach_tc(&self.pins, hook, ifindex)?);
        }
        Ok(n)
    }

    /// Attaches the socket LB programs to a cgroup v2 directory.
    pub fn attach_cgroup(
        &mut self,
        cgroup: &Path,
    ) -> DatapathResult<Vec<(&'static str, Attached)>> {
        attach::attach_cgroup(&mut self.ebpf, &self.pins, cgroup)
    }

    pub fn detach_cgroup(&mut self, cgroup: &Path) -> DatapathResult<usize> {
        attach::detach_cgroup(&self.pins, cgroup)
    }

    /// Unpins links whose interface or cgroup is gone.
    pub fn prune_links(&mut self) -> DatapathResult<usize> {
        attach::prune_defunct(&self.pins)
    }

    // --- service maps ----------------------------------------------------

    /// Makes the service maps equal to `desired`, then flushes the non-TCP
    /// conntrack entries and the affinity entries of backends that left a
    /// frontend. Never fails as a whole: failed writes are counted in the
    /// stats and logged.
    pub fn apply(&mut self, desired: &DesiredState) -> ApplyStats {
        let outcome = self
            .writer
            .apply(&mut self.maps, desired, Some(&crate::maglev::table_for));
        let mut stats = outcome.stats;
        if !outcome.removed.is_empty() {
            match self.flush_removed(&outcome.removed) {
                Ok((ct, affinity)) => {
                    stats.ct_flushed = ct;
                    stats.affinity_flushed = affinity;
                    self.ct_flushed_total += ct;
                }
                Err(e) => warn!(error = %e, "flushing conntrack of removed backends failed"),
            }
        }
        stats
    }

    fn flush_removed(
        &mut self,
        removed: &[super::diff::RemovedPair],
    ) -> DatapathResult<(u64, u64)> {
        let limit = 2 * u64::from(self.spec_max(names::CT4));
        let (entries, _) =
            ct_gc::scan(&self.maps.ct, limit).map_err(|e| DatapathError::map(names::CT4, e))?;
        let keys = ct_gc::plan_flush(&entries, removed);
        let (ct, _) = ct_gc::delete_keys(&mut self.maps.ct, &keys);
        let limit = 2 * u64::from(self.spec_max(names::LB4_AFFINITY));
        let (entries, _) = ct_gc::scan(&self.maps.affinity, limit)
            .map_err(|e| DatapathError::map(names::LB4_AFFINITY, e))?;
        let keys = ct_gc::plan_affinity_flush(&entries, removed);
        let (affinity, _) = ct_gc::delete_keys(&mut self.maps.affinity, &keys);
        if ct + affinity > 0 {
            info!(
                conntrack = ct,
                affinity,
                pairs = removed.len(),
                "flushed non-TCP flows and affinity of backends that left their service"
            );
        }
        Ok((ct, affinity))
    }

    fn spec_max(&self, name: &str) -> u32 {
        self.specs.get(name).map_or(1 << 20, |s| s.max_entries)
    }

    // --- NetworkPolicy ----------------------------------------------------

    /// The policy maps (the handle the methods below delegate to).
    pub fn policy(&self) -> &PolicyMaps {
        &self.policy
    }

    pub fn policy_mut(&mut self) -> &mut PolicyMaps {
        &mut self.policy
    }

    /// Writes `plan` into the policy maps (see [`PolicyMaps::apply_policy`]).
    pub fn apply_policy(&mut self, plan: &PolicyPlan) -> DatapathResult<PolicyApplyStats> {
        self.policy.apply_policy(plan)
    }

    /// The pinned policy revision and settings.
    pub fn policy_config(&self) -> DatapathResult<weir_common::policy::PolicyConfig> {
        self.policy.policy_config()
    }

    pub fn set_policy_settings(
        &mut self,
        audit_all: bool,
        events_per_sec: u32,
        allow_sample: u32,
    ) -> DatapathResult<()> {
        self.policy
            .set_policy_settings(audit_all, events_per_sec, allow_sample)
    }

    /// Drops per isolation rule id, summed over CPUs.
    pub fn policy_drops(&self) -> DatapathResult<Vec<(u32, u64)>> {
        self.policy.policy_drops()
    }

    pub fn policy_events_lost(&self) -> DatapathResult<u64> {
        self.policy.policy_events_lost()
    }

    /// A reader of the verdict ring buffer, on a handle of its own (give it
    /// a thread: `next` blocks in poll(2)). One reader per ring.
    pub fn policy_event_reader(&self) -> DatapathResult<PolicyEventReader> {
        PolicyEventReader::open(&self.pins)
    }

    /// One policy conntrack GC pass: expires idle flows.
    pub fn polct_gc(&mut self) -> DatapathResult<ct_gc::PolCtGcStats> {
        self.polct_gc_at(ct_gc::monotonic_now_ns())
    }

    /// [`Self::polct_gc`] as if the monotonic clock read `now_ns`.
    pub fn polct_gc_at(&mut self, now_ns: u64) -> DatapathResult<ct_gc::PolCtGcStats> {
        let limit = 2 * u64::from(self.spec_max(weir_common::policy::POLICY_CT4));
        ct_gc::polct_pass(&mut self.policy.polct, now_ns, &self.ct_timeouts, limit)
    }

    // --- conntrack -------------------------------------------------------

    /// One GC pass: expires idle flows (both entries), then deletes
    /// reverse-NAT entries that neither a frontend nor a live flow uses.
    pub fn ct_gc(&mut self) -> DatapathResult<CtGcStats> {
        self.ct_gc_at(ct_gc::monotonic_now_ns())
    }

    /// [`Self::ct_gc`] as if the monotonic clock read `now_ns`.
    pub fn ct_gc_at(&mut self, now_ns: u64) -> DatapathResult<CtGcStats> {
        let limit = 2 * u64::from(self.spec_max(names::CT4));
        let (entries, truncated) =
            ct_gc::scan(&self.maps.ct, limit).map_err(|e| DatapathError::map(names::CT4, e))?;
        let (expired, mut stats) = ct_gc::plan_expiry(&entries, now_ns, &self.ct_timeouts);
        let (deleted, failed) = ct_gc::delete_keys(&mut self.maps.ct, &expired);
        stats.deleted = deleted;
        stats.delete_failed = failed;
        stats.truncated = truncated;
        self.ct_expired_total += deleted;
        if !truncated {
            self.writer
                .release_rev_nat(&mut self.maps, &stats.referenced_rev_nat);
        }
        self.last_gc = Some(stats.clone());
        Ok(stats)
    }

    /// The writer's share of a conntrack GC pass run elsewhere (on handles
    /// of its own): reverse-NAT entries that neither a frontend nor a flow
    /// in `referenced` names are deleted. Returns how many.
    pub fn release_rev_nat(&mut self, referenced: &HashSet<u16>) -> u64 {
        self.writer.release_rev_nat(&mut self.maps, referenced)
    }

    // --- endpoints and node config ---------------------------------------

    /// Adds or replaces a local endpoint (a pod on this node).
    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> DatapathResult<()> {
        self.maps
            .endpoints
            .insert(addr_to_abi(ip), info, 0)
            .map_err(|e| DatapathError::map(names::ENDPOINTS, e))
    }

    /// Removes a local endpoint; `Ok(false)` when it was not there.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> DatapathResult<bool> {
        match self.maps.endpoints.remove(&addr_to_abi(ip)) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(DatapathError::map(names::ENDPOINTS, e)),
        }
    }

    /// The endpoints in the map.
    pub fn endpoints(&self) -> DatapathResult<Vec<(Ipv4Addr, EndpointInfo)>> {
        let (entries, _) = ct_gc::scan(&self.maps.endpoints, u64::from(u32::MAX))
            .map_err(|e| DatapathError::map(names::ENDPOINTS, e))?;
        let mut out: Vec<(Ipv4Addr, EndpointInfo)> = entries
            .into_iter()
            .map(|(ip, info)| (super::keys::addr_from_abi(ip), info))
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Writes the node settings (`weir_config_v1[0]`).
    pub fn set_node_config(&mut self, config: &DatapathConfig) -> DatapathResult<()> {
        self.maps
            .config
            .set(0, config, 0)
            .map_err(|e| DatapathError::map(names::CONFIG, e))
    }

    pub fn node_config(&self) -> DatapathResult<DatapathConfig> {
        self.maps
            .config
            .get(&0, 0)
            .map_err(|e| DatapathError::map(names::CONFIG, e))
    }

    // --- metrics ----------------------------------------------------------

    /// Verdict counters by (direction, reason), summed over CPUs.
    pub fn read_verdicts(
        &self,
    ) -> DatapathResult<
        Vec<(
            weir_common::metrics::MetricKey,
            weir_common::metrics::MetricValue,
        )>,
    > {
        stats::sum_verdicts(&self.maps.metrics, names::METRICS)
    }

    /// Fill level of every map. The service maps are counted from the
    /// writer's mirror; the others by walking their keys.
    pub fn map_fill(&self) -> DatapathResult<Vec<MapFill>> {
        let mirrored: BTreeMap<&str, u64> =
            self.writer.state().entry_counts().into_iter().collect();
        let mut out = Vec::new();
        for (name, spec) in &self.specs {
            let entries = match mirrored.get(name.as_str()) {
                Some(n) => *n,
                None => stats::count_entries(&self.pins, spec, 2 * u64::from(spec.max_entries))?,
            };
            out.push(MapFill {
                name: name.clone(),
                entries,
                max_entries: spec.max_entries,
            });
        }
        Ok(out)
    }

    /// Everything for `/metrics`.
    pub fn metrics(&self) -> DatapathResult<DatapathMetrics> {
        Ok(DatapathMetrics {
            maps: self.map_fill()?,
            verdicts: self.read_verdicts()?,
            ct_entries_by_proto: self
                .last_gc
                .as_ref()
                .map(|g| g.entries_by_proto.clone())
                .unwrap_or_default(),
            last_gc: self.last_gc.clone(),
            ct_expired_total: self.ct_expired_total,
            ct_flushed_total: self.ct_flushed_total,
            writer: self.writer.totals().clone(),
            policy_drops: self.policy.policy_drops()?,
            policy_events_lost: self.policy.policy_events_lost()?,
        })
    }
}

/// The policy maps' capacities as loaded.
pub fn policy_capacities(specs: &BTreeMap<String, MapSpec>) -> Capacities {
    let max = |name: &str, default: u32| specs.get(name).map_or(default, |s| s.max_entries);
    let d = Capacities::default();
    Capacities {
        ipcache: max(weir_common::policy::IPCACHE, d.ipcache),
        policy: max(weir_common::policy::POLICY, d.policy),
        endpoints: max(weir_common::policy::POLICY_ENDPOINTS, d.endpoints),
    }
}

/// Takes an exclusive lock on the pin root, so two agents never adopt and
/// rewrite the same maps at once.
fn lock_root(root: &Path) -> DatapathResult<Flock<File>> {
    let dir = File::open(root).map_err(|e| DatapathError::io("opening", root, e))?;
    Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        DatapathError::io(
            "locking (is another agent using it?)",
            root,
            std::io::Error::from(errno),
        )
    })
}

/// Loads (verifies) every program of the object.
fn load_programs(ebpf: &mut Ebpf) -> DatapathResult<()> {
    for (name, program) in ebpf.programs_mut() {
        let result = match program {
            Program::SchedClassifier(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            other => {
                warn!(program = name, kind = ?other.prog_type(), "unexpected program type; not loaded");
                continue;
            }
        };
        result.map_err(|e| DatapathError::program(name, e))?;
    }
    Ok(())
}
