//! The seams between the main loop and the parts it drives: the datapath
//! (BPF maps and program attachments) and the object sources. The daemon
//! talks only to these traits, so its logic runs in tests with fakes.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use weir_common::policy::PolicyEvent;
use weir_common::{DropReason, metrics::Direction};

use crate::k8s::Snapshot;
use crate::plan::{DesiredState, NodeRoute};
use crate::policy::{Capacities, PolicyPlan};
use crate::registry::EndpointRecord;
use crate::registry::rebuild::LiveLink;
use crate::routes::RouteReport;

pub use super::walker::Walks;

/// What one [`Datapath::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Services (namespace/name) with at least one frontend programmed.
    pub services: u64,
    /// Frontends whose map entries match the plan.
    pub frontends: u64,
    /// Distinct backends of the plan in the backends map.
    pub backends: u64,
    /// Map entries written or deleted.
    pub map_writes: u64,
    /// Writes that failed (a full map); their frontends keep their
    /// previous state and the next sync retries.
    pub failed_writes: u64,
    /// Conntrack entries flushed because their backend went away.
    pub ct_flushed: u64,
}

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub capacity: u64,
}

/// Packets and bytes one program counted for one verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketCount {
    pub direction: Direction,
    pub reason: DropReason,
    pub packets: u64,
    pub bytes: u64,
}

/// The datapath's counters, for /metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    pub maps: Vec<MapFill>,
    pub packets: Vec<PacketCount>,
    /// Conntrack entries (both directions count).
    pub ct_entries: Option<u64>,
}

/// What one conntrack GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub scanned: u64,
    pub expired: u64,
}

/// Node-wide policy settings the datapath reads (`PolicyConfig`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// `--policy-audit`: every would-be drop passes and is reported audit.
    pub audit_all: bool,
    /// `--policy-events-per-sec`: per CPU; 0 is no limit.
    pub events_per_sec: u32,
    /// `--policy-allow-sample`: one allowed new flow in N emits an event;
    /// 0 is none.
    pub allow_sample: u32,
}

/// What one [`Datapath::apply_policy`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyApplyStats {
    /// Map entries written or deleted (the revision not counted).
    pub map_writes: u64,
    /// The revision now pinned.
    pub revision: u32,
}

/// The datapath's policy counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    /// Drops per isolation rule id (summed over CPUs).
    pub drops: Vec<(u32, u64)>,
    /// Events refused by the rate limit or a full ring, ever.
    pub events_lost: u64,
}

/// A blocking reader of the policy event ring, for a thread of its own.
pub trait PolicyEventSource: Send {
    /// The next event, waiting at most `timeout`; `None` when none came.
    fn next(&mut self, timeout: Duration) -> Option<PolicyEvent>;
}

/// The node's datapath. Every method is idempotent: the loop may repeat
/// a call after a failure or a restart.
pub trait Datapath: Send {
    /// Programs a local pod: programs on its host-side veth
    /// (`host_ifindex`), its endpoint map entry. Returns once both are in
    /// place.
    fn attach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()>;

    /// Forgets a local pod: its endpoint entry, and its attachments if the
    /// link still exists (usually the CNI deleted it already).
    fn detach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()>;

    /// Start-up adoption: makes the endpoint state hold exactly `pods`
    /// (attaching each, dropping entries of pods that are gone).
    fn retain_pods(&mut self, pods: &[EndpointRecord]) -> anyhow::Result<()>;

    /// Makes the service maps equal to `desired`.
    fn apply(&mut self, desired: &DesiredState) -> anyhow::Result<ApplyStats>;

    /// Counters for /metrics.
    fn stats(&mut self) -> anyhow::Result<DatapathStats>;

    /// One conntrack GC pass; datapaths without one do nothing.
    fn collect_garbage(&mut self) -> anyhow::Result<GcStats> {
        Ok(GcStats::default())
    }

    /// The periodic walks ([`Self::stats`], [`Self::collect_garbage`]) as
    /// a job for another thread, with handles of its own. `None`: the main
    /// loop calls those two itself.
    fn walks(&self) -> anyhow::Result<Option<Box<dyn Walks>>> {
        Ok(None)
    }

    /// Fill levels the loop knows without a walk (maps the writer
    /// mirrors); [`Self::walks`] leaves those out.
    fn mirrored_fill(&self) -> Vec<MapFill> {
        Vec::new()
    }

    /// The loop's share of a GC pass done by [`Self::walks`]: deletes the
    /// reverse-NAT entries that neither a frontend nor a live flow
    /// (`referenced`) names. Returns how many went.
    fn release_rev_nat(&mut self, _referenced: &HashSet<u16>) -> u64 {
        0
    }

    /// The policy revision pinned in the maps (0 when none was written),
    /// so a restarted compiler continues after it.
    fn policy_revision(&mut self) -> anyhow::Result<u32>;

    /// `max_entries` of the policy maps, to refuse a plan that does not
    /// fit before writing any of it.
    fn policy_capacities(&self) -> Capacities {
        Capacities::default()
    }

    /// Writes the node-wide policy settings.
    fn set_policy_settings(&mut self, settings: &PolicySettings) -> anyhow::Result<()>;

    /// Makes the policy maps equal to `plan` (ipcache, entries,
    /// endpoints, deletes, then the revision).
    fn apply_policy(&mut self, plan: &PolicyPlan) -> anyhow::Result<PolicyApplyStats>;

    /// Policy drops by rule id and lost events.
    fn policy_counters(&mut self) -> anyhow::Result<PolicyCounters>;

    /// A reader of the event ring; `None` when the datapath has none.
    /// Called once.
    fn policy_events(&mut self) -> anyhow::Result<Option<Box<dyn PolicyEventSource>>>;
}

/// Something that holds a snapshot: a manifest load, or a snapshot
/// itself. Lets sources hand over what they built without copying it.
pub trait SnapshotHolder: Send + Sync + std::fmt::Debug {
    fn snapshot(&self) -> &Snapshot;
}

impl SnapshotHolder for Snapshot {
    fn snapshot(&self) -> &Snapshot {
        self
    }
}

impl SnapshotHolder for crate::manifests::ManifestSet {
    fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// What a source knows at one moment.
#[derive(Clone, Debug)]
pub struct SourceView {
    pub objects: Arc<dyn SnapshotHolder>,
    /// Every kind has been listed once: the snapshot is the whole truth,
    /// so a plan from it may delete what it lacks. Until then the loop
    /// must not apply (it would flush pinned state a restart adopted).
    pub synced: bool,
    /// Bad documents by reason code (standalone manifests).
    pub bad_documents: BTreeMap<&'static str, usize>,
    /// Increases with every change.
    pub generation: u64,
}

impl Default for SourceView {
    fn default() -> Self {
        Self {
            objects: Arc::new(Snapshot::new()),
            synced: false,
            bad_documents: BTreeMap::new(),
            generation: 0,
        }
    }
}

impl SourceView {
    pub fn snapshot(&self) -> &Snapshot {
        self.objects.snapshot()
    }
}

/// A stream of object snapshots: the manifest directory or the API
/// server.
pub trait Source: Send {
    /// Waits for the next change. `false`: the source ended for good.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
    /// The latest view (cheap: shared snapshot).
    fn current(&mut self) -> SourceView;
}

/// The node netns' links (rtnetlink in the agent; a list in tests).
pub trait LinkTable: Send + Sync {
    fn list(&self) -> impl Future<Output = anyhow::Result<Vec<LiveLink>>> + Send;
    fn by_index(&self, index: u32)
    -> impl Future<Output = anyhow::Result<Option<LiveLink>>> + Send;
    /// Every IPv4 address of the netns: the node's own, and the gateway
    /// addresses on the host side of the pod veths, which is what pods
    /// see as their node.
    fn ipv4_addresses(&self) -> impl Future<Output = anyhow::Result<Vec<Ipv4Addr>>> + Send;
}

/// Programs the plan's node routes.
pub trait RouteSync: Send {
    fn sync(
        &mut self,
        desired: &[NodeRoute],
    ) -> impl Future<Output = anyhow::Result<RouteReport>> + Send;
}

/// rtnetlink links of the netns the handle was opened in.
#[derive(Clone, Debug)]
pub struct NetlinkLinks(pub rtnetlink::Handle);

impl LinkTable for NetlinkLinks {
    async fn list(&self) -> anyhow::Result<Vec<LiveLink>> {
        crate::registry::links::list(&self.0).await
    }

    async fn by_index(&self, index: u32) -> anyhow::Result<Option<LiveLink>> {
        crate::registry::links::by_index(&self.0, index).await
    }

    async fn ipv4_addresses(&self) -> anyhow::Result<Vec<Ipv4Addr>> {
        crate::registry::links::ipv4_addresses(&self.0).await
    }
}

impl RouteSync for crate::routes::RouteProgrammer {
    async fn sync(&mut self, desired: &[NodeRoute]) -> anyhow::Result<RouteReport> {
        crate::routes::RouteProgrammer::sync(self, desired).await
    }
}
