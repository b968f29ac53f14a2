//! The main loop: keeps the datapath and the node routes equal to what
//! the objects and the registered pods ask for.
//!
//! Events: a new source view, a registration request, a timer. Changes
//! are batched for a short window (a burst of manifest edits or parallel
//! pod ADDs becomes one sync), then one sync computes the plan, applies
//! it, programs the routes and answers the registrations that waited for
//! it. Nothing is applied before the sources synced: a plan from a
//! partial view would delete the state a restarted agent adopted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::events::EventReader;
use super::policy_sync::{PolicyInputs, PolicyOutcome, PolicySync};
use super::seams::{
    Datapath, LinkTable, PolicySettings, RouteSync, SnapshotHolder, Source, SourceView,
};
use super::walker::{Walked, Walker};
use crate::http::Health;
use crate::k8s::{ObjectName, ObjectWarning};
use crate::metrics::{Metrics, Programmed, SyncRecord};
use crate::plan::{Algorithm, NodeRoute};
use crate::registry::rebuild::{self, Verdict};
use crate::registry::record::{self, validate_container_id, validate_ifname};
use crate::registry::server::{Registration, stopped};
use crate::registry::{
    AttachmentKey, EndpointRecord, EndpointSpec, ErrorCode, MonitorHub, Op, RecordStore, Registry,
    Response,
};
use crate::services::{IncrementalPlanner, PlanContext};

/// Handles shared with the HTTP server.
#[derive(Clone, Debug)]
pub struct Context {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// What the plan needs from the configuration.
#[derive(Clone, Debug, Default)]
pub struct PlanSettings {
    pub node_name: String,
    pub default_algorithm: Algorithm,
    pub nodeport_addresses: Option<Vec<std::net::Ipv4Addr>>,
    pub policy: PolicySettings,
}

/// The loop's clocks.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Batch window after a source change (the watcher already waits for
    /// writers to settle).
    pub source_window: Duration,
    /// Batch window after a registration: parallel ADDs share a sync.
    pub registration_window: Duration,
    /// How long a registration waits for its Pod object to reach the
    /// sources (its labels decide its policy) before it is answered
    /// anyway, unpoliced until the object arrives.
    pub pod_object_grace: Duration,
    /// Heartbeat and housekeeping period.
    pub tick: Duration,
    pub stats_every: Duration,
    pub gc_every: Duration,
    /// Re-check the routes (someone may have deleted one).
    pub routes_every: Duration,
    /// First retry delay after a failed sync; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            // The manifest watcher already waits for writers to settle;
            // this only merges what arrives together.
            source_window: Duration::from_millis(1),
            registration_window: Duration::from_millis(5),
            pod_object_grace: Duration::from_secs(3),
            tick: Duration::from_secs(1),
            stats_every: Duration::from_secs(5),
            gc_every: Duration::from_secs(10),
            routes_every: Duration::from_secs(30),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What woke the loop.
enum Wake {
    Stop,
    Source(bool),
    Request(Option<Box<Registration>>),
    Flush,
    Tick,
    /// A walk's result (`None`: the walker thread is gone).
    Walked(Option<Walked>),
    /// The pods monitor subscribers watch changed (`false`: the hub is gone).
    Watched(bool),
}

/// A registration accepted and waiting for the sync that programs it.
struct Pending {
    op: &'static str,
    key: AttachmentKey,
    reply: oneshot::Sender<Response>,
    received: Instant,
    /// The registered pod, when the runtime named it: its policy needs
    /// its Pod object (labels), which the sources may not have yet.
    pod: Option<ObjectName>,
}

/// Runs `f`, which blocks (BPF syscalls, plan computation), without
/// stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub struct Reconciler<D, L, R> {
    ctx: Context,
    settings: PlanSettings,
    timing: Timing,
    datapath: D,
    links: L,
    routes: R,
    store: RecordStore,
    registry: Registry,
    view: SourceView,
    /// Keeps each Service's share of the plan; `planned` is the snapshot
    /// it last planned from, to diff the next one against.
    planner: IncrementalPlanner,
    planned: Option<Arc<dyn SnapshotHolder>>,
    pending: Vec<Pending>,
    /// Registrations held back for their Pod objects by this sync.
    waiting_for_pods: Vec<Pending>,
    flush_at: Option<Instant>,
    retry_delay: Duration,
    warnings: BTreeSet<ObjectWarning>,
    last_routes: Vec<NodeRoute>,
    applied_once: bool,
    next_stats: Instant,
    next_gc: Instant,
    next_routes: Instant,
    /// The periodic map walks, off the loop once the first sync is done
    /// (if the datapath offers them); else `housekeeping` runs them.
    walker: Option<Walker>,
    walked: Option<mpsc::UnboundedReceiver<Walked>>,
    policy: PolicySync,
    /// `weirctl monitor` subscribers; their watched pods get EMIT_ALLOWS.
    monitor: Option<MonitorHub>,
    watched: Option<watch::Receiver<BTreeMap<ObjectName, usize>>>,
    events: Option<EventReader>,
    /// When to re-read the netns' addresses (the veth gateways) for policy.
    next_host_addresses: Instant,
    next_policy_counters: Instant,
}

impl<D: Datapath, L: LinkTable, R: RouteSync> Reconciler<D, L, R> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: Context,
        settings: PlanSettings,
        timing: Timing,
        datapath: D,
        links: L,
        routes: R,
        store: RecordStore,
    ) -> Self {
        let now = Instant::now();
        let policy = PolicySync::new(settings.policy);
        Self {
            ctx,
            settings,
            timing,
            datapath,
            links,
            routes,
            store,
            registry: Registry::new(),
            view: SourceView::default(),
            planner: IncrementalPlanner::new(),
            planned: None,
            pending: Vec::new(),
            waiting_for_pods: Vec::new(),
            flush_at: None,
            retry_delay: timing.retry_min,
            warnings: BTreeSet::new(),
            last_routes: Vec::new(),
            applied_once: false,
            next_stats: now,
            next_gc: now + timing.gc_every,
            next_routes: now + timing.routes_every,
            walker: None,
            walked: None,
            policy,
            monitor: None,
            watched: None,
            events: None,
            next_host_addresses: now,
            next_policy_counters: now,
        }
    }

    /// Serves policy events to `hub`'s subscribers, and sets EMIT_ALLOWS
    /// on the pods they watch.
    pub fn with_monitor(mut self, hub: MonitorHub) -> Self {
        self.watched = Some(hub.watched());
        self.monitor = Some(hub);
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Start-up adoption: keeps the records whose link is still there
    /// (same index, same name), drops the others, and re-attaches the
    /// kept pods. Every decision is logged.
    pub async fn adopt(&mut self) -> anyhow::Result<()> {
        let (records, bad) = self.store.load_all()?;
        for b in &bad {
            warn!(file = %b.path.display(), reason = %b.reason, "removing an unusable endpoint record");
            if let Err(e) = std::fs::remove_file(&b.path) {
                warn!(file = %b.path.display(), error = %e, "cannot remove the endpoint record");
            }
        }
        let links = self.links.list().await?;
        let mut kept = Vec::new();
        let mut dropped = bad.len() as u64;
        for decision in rebuild::decide(records, &links) {
            let r = &decision.record;
            let e = &r.endpoint;
            match decision.verdict {
                Verdict::Keep => {
                    info!(
                        pod = %r.pod(), container = %e.container_id, ifname = %e.ifname,
                        host_ifname = %e.host_ifname, host_ifindex = e.host_ifindex, ip = ?r.ip(),
                        "adopting endpoint record: its link is still there"
                    );
                    kept.push(decision.record);
                }
                Verdict::Drop(reason) => {
                    info!(
                        pod = %r.pod(), container = %e.container_id, ifname = %e.ifname,
                        host_ifname = %e.host_ifname, host_ifindex = e.host_ifindex, %reason,
                        "dropping endpoint record"
                    );
                    dropped += 1;
                    if let Err(err) = self.store.remove(&r.key()) {
                        warn!(error = %err, "cannot remove the endpoint record");
                    }
                }
            }
        }
        blocking(|| self.datapath.retain_pods(&kept))
            .map_err(|e| anyhow::anyhow!("re-attaching {} adopted pods: {e:#}", kept.len()))?;
        // Policy continues after the pinned revision, so flows admitted
        // before the restart are re-checked against the first new plan.
        let settings = *self.policy.settings();
        let revision = blocking(|| {
            self.datapath.set_policy_settings(&settings)?;
            self.datapath.policy_revision()
        })
        .map_err(|e| anyhow::anyhow!("reading and configuring the policy maps: {e:#}"))?;
        self.policy.seed(revision);
        info!(
            pinned_revision = revision,
            audit_all = settings.audit_all,
            events_per_sec = settings.events_per_sec,
            allow_sample = settings.allow_sample,
            "policy settings written"
        );
        for record in kept {
            self.registry.insert(record);
        }
        self.ctx
            .metrics
            .set_registered_endpoints(self.registry.len());
        self.ctx.metrics.add_records_dropped_at_start(dropped);
        info!(
            adopted = self.registry.len(),
            dropped, "endpoint list rebuilt"
        );
        Ok(())
    }

    /// Runs until `stop` turns true (or its sender goes away). On the way
    /// out it finishes what was accepted: one last sync if changes wait,
    /// and an answer to every registration.
    pub async fn run<S: Source>(
        mut self,
        mut source: S,
        mut requests: mpsc::Receiver<Registration>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.take_view(source.current(), Duration::ZERO);
        self.start_event_reader();
        let mut source_open = true;
        let mut requests_open = true;
        let mut tick = tokio::time::interval(self.timing.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.ctx.health.beat();
            let flush_at = self.flush_at;
            let wake = tokio::select! {
                biased;
                () = stopped(&mut stop) => Wake::Stop,
                open = source.changed(), if source_open => Wake::Source(open),
                request = requests.recv(), if requests_open => Wake::Request(request.map(Box::new)),
                () = sleep_until(flush_at), if flush_at.is_some() => Wake::Flush,
                walked = next_walked(&mut self.walked), if self.walked.is_some() => Wake::Walked(walked),
                open = watched_changed(&mut self.watched), if self.watched.is_some() => Wake::Watched(open),
                _ = tick.tick() => Wake::Tick,
            };
            match wake {
                Wake::Stop => break,
                Wake::Source(true) => {
                    let view = source.current();
                    self.take_view(view, self.timing.source_window);
                }
                Wake::Source(false) => {
                    source_open = false;
                    error!("the object source ended; keeping the last objects in force");
                }
                Wake::Request(Some(request)) => self.handle(*request).await,
                Wake::Request(None) => requests_open = false,
                Wake::Flush => self.sync().await,
                Wake::Tick => self.housekeeping().await,
                Wake::Walked(walked) => self.take_walked(walked),
                Wake::Watched(true) => self.mark_dirty(self.timing.registration_window),
                Wake::Watched(false) => self.watched = None,
            }
        }
        info!("stopping: finishing accepted work");
        if self.flush_at.is_some() && self.view.synced {
            self.sync().await;
        }
        for pending in self.pending.drain(..) {
            let response = Response::error(
                ErrorCode::ShuttingDown,
                "the agent stopped before programming this pod",
            );
            self.ctx.metrics.record_registration(
                pending.op,
                response.result_label(),
                pending.received.elapsed(),
            );
            let _ = pending.reply.send(response);
        }
    }

    fn mark_dirty(&mut self, window: Duration) {
        let at = Instant::now() + window;
        self.flush_at = Some(self.flush_at.map_or(at, |t| t.min(at)));
    }

    fn take_view(&mut self, view: SourceView, window: Duration) {
        self.ctx
            .metrics
            .set_objects(view.snapshot().counts(), &view.bad_documents);
        if view.synced && !self.view.synced {
            info!(
                generation = view.generation,
                objects = view.snapshot().counts().total(),
                "object sources synced"
            );
            self.ctx.health.set_sources_synced();
        }
        self.view = view;
        if self.view.synced {
            self.mark_dirty(window);
        }
    }

    async fn handle(&mut self, request: Registration) {
        let Registration {
            op,
            reply,
            received,
        } = request;
        let label = match &op {
            Op::Register { .. } => "register",
            Op::Deregister { .. } => "deregister",
            Op::Ping => "ping",
            Op::Monitor(_) => "monitor",
        };
        let pod = match &op {
            Op::Register { endpoint } if !endpoint.pod_name.is_empty() => {
                Some(ObjectName::new(&endpoint.pod_namespace, &endpoint.pod_name))
            }
            _ => None,
        };
        let outcome = match op {
            Op::Register { endpoint } => self.register(endpoint).await,
            Op::Deregister {
                container_id,
                ifname,
            } => self.deregister(container_id, ifname),
            Op::Ping => Err(Response::ok()),
            // The socket serves these itself; one here is a bug upstream.
            Op::Monitor(_) => Err(Response::error(
                ErrorCode::BadRequest,
                "monitor is a stream the socket serves, not a loop request",
            )),
        };
        match outcome {
            Ok(key) => {
                self.pending.push(Pending {
                    op: label,
                    key,
                    reply,
                    received,
                    pod,
                });
                self.mark_dirty(self.timing.registration_window);
            }
            Err(response) => {
                if !response.ok {
                    warn!(op = label, error = ?response.error, "registration request refused");
                }
                if label != "ping" && label != "monitor" {
                    self.ctx.metrics.record_registration(
                        label,
                        response.result_label(),
                        received.elapsed(),
                    );
                }
                let _ = reply.send(response);
            }
        }
    }

    /// Validates, persists and attaches; the answer waits for the sync.
    async fn register(&mut self, spec: EndpointSpec) -> Result<AttachmentKey, Response> {
        record::validate(&spec).map_err(|m| Response::error(ErrorCode::InvalidEndpoint, m))?;
        match self.links.by_index(spec.host_ifindex).await {
            Ok(Some(link)) if link.name == spec.host_ifname => {}
            Ok(Some(link)) => {
                return Err(Response::error(
                    ErrorCode::LinkMismatch,
                    format!(
                        "link index {} is {}, not {}",
                        spec.host_ifindex, link.name, spec.host_ifname
                    ),
                ));
            }
            Ok(None) => {
                return Err(Response::error(
                    ErrorCode::LinkMismatch,
                    format!(
                        "no link with index {} ({} expected) in the agent's netns",
                        spec.host_ifindex, spec.host_ifname
                    ),
                ));
            }
            Err(e) => return Err(Response::error(ErrorCode::Internal, format!("{e:#}"))),
        }
        let record = EndpointRecord::new(spec);
        let key = record.key();
        self.forget_clashing(&record);
        self.store
            .write(&record)
            .map_err(|e| Response::error(ErrorCode::StateStore, e.to_string()))?;
        if let Err(e) = blocking(|| self.datapath.attach_pod(&record)) {
            if let Err(err) = self.store.remove(&key) {
                warn!(error = %err, "cannot remove the record of a failed registration");
            }
            return Err(Response::error(
                ErrorCode::Datapath,
                format!(
                    "programming pod {} on {}: {e:#}",
                    record.pod(),
                    record.endpoint.host_ifname
                ),
            ));
        }
        let e = &record.endpoint;
        debug!(
            pod = %record.pod(), container = %e.container_id, ifname = %e.ifname,
            host_ifname = %e.host_ifname, host_ifindex = e.host_ifindex, ip = ?record.ip(),
            "pod attached; waiting for the sync"
        );
        self.registry.insert(record);
        self.ctx
            .metrics
            .set_registered_endpoints(self.registry.len());
        Ok(key)
    }

    /// Drops registrations the new one makes stale: the same attachment,
    /// or another one on the same link or with the same addresses (a DEL
    /// the agent never saw).
    fn forget_clashing(&mut self, new: &EndpointRecord) {
        let key = new.key();
        let clashing: Vec<EndpointRecord> = self
            .registry
            .records()
            .filter(|r| {
                r.key() == key
                    || r.endpoint.host_ifindex == new.endpoint.host_ifindex
                    || r.endpoint
                        .ips
                        .iter()
                        .any(|ip| new.endpoint.ips.contains(ip))
            })
            .cloned()
            .collect();
        for old in clashing {
            if old.key() != key {
                info!(
                    old_pod = %old.pod(), old_container = %old.endpoint.container_id,
                    pod = %new.pod(), container = %new.endpoint.container_id,
                    "replacing a stale registration that claims the same link or address"
                );
                if let Err(e) = self.store.remove(&old.key()) {
                    warn!(error = %e, "cannot remove a stale endpoint record");
                }
            }
            self.registry.remove(&old.key());
            if let Err(e) = blocking(|| self.datapath.detach_pod(&old)) {
                warn!(pod = %old.pod(), error = %format!("{e:#}"), "detaching a stale registration failed");
            }
        }
    }

    /// Forgets the pod; unknown attachments are fine.
    fn deregister(
        &mut self,
        container_id: String,
        ifname: String,
    ) -> Result<AttachmentKey, Response> {
        validate_container_id(&container_id)
            .and_then(|()| validate_ifname("ifname", &ifname))
            .map_err(|m| Response::error(ErrorCode::InvalidEndpoint, m))?;
        let key = AttachmentKey::new(container_id, ifname);
        let removed = self.registry.remove(&key);
        if let Some(record) = &removed
            && let Err(e) = blocking(|| self.datapath.detach_pod(record))
        {
            warn!(pod = %record.pod(), error = %format!("{e:#}"), "detaching a deregistered pod failed");
        }
        self.store
            .remove(&key)
            .map_err(|e| Response::error(ErrorCode::StateStore, e.to_string()))?;
        self.ctx
            .metrics
            .set_registered_endpoints(self.registry.len());
        match &removed {
            Some(record) => {
                info!(pod = %record.pod(), container = %key.container_id, ifname = %key.ifname, "pod deregistered")
            }
            None => {
                debug!(container = %key.container_id, ifname = %key.ifname, "deregistration of an unknown attachment")
            }
        }
        Ok(key)
    }

    /// Plan → datapath → routes → metrics, then the waiting answers.
    async fn sync(&mut self) {
        self.flush_at = None;
        if !self.view.synced {
            debug!("changes wait for the sources' initial sync");
            return;
        }
        let started = Instant::now();
        let plan_ctx = PlanContext {
            node_name: self.settings.node_name.clone(),
            default_algorithm: self.settings.default_algorithm,
            pod_ip_overrides: self.registry.pod_ips(),
            nodeport_addresses: self.settings.nodeport_addresses.clone(),
        };
        let objects = self.view.objects.clone();
        let previous = self.planned.take();
        let plan = blocking(|| {
            self.planner.plan(
                previous.as_deref().map(|p| p.snapshot()),
                objects.snapshot(),
                &plan_ctx,
            )
        });
        let planned = started.elapsed();
        self.log_new_warnings(&plan.warnings);
        // Policy before services: a new backend is isolated before any
        // frontend names it, and a waiting pod is policed before its answer.
        self.refresh_host_addresses().await;
        let inputs = PolicyInputs {
            node_name: self.settings.node_name.clone(),
            pod_ips: plan_ctx.pod_ip_overrides.clone(),
            emit_allows: self
                .monitor
                .as_ref()
                .map(|hub| hub.watched_pods().into_iter().collect())
                .unwrap_or_default(),
        };
        let policy = blocking(|| {
            self.policy.sync(
                &mut self.datapath,
                objects.snapshot(),
                inputs,
                &self.ctx.metrics,
            )
        });
        self.planned = Some(objects);
        let policy_done = started.elapsed();
        let applied = blocking(|| self.datapath.apply(&plan.state));
        let apply_done = started.elapsed();
        let routes = self.routes.sync(&plan.state.routes).await;
        self.last_routes.clone_from(&plan.state.routes);
        self.next_routes = Instant::now() + self.timing.routes_every;
        let duration = started.elapsed();

        let route_report = match &routes {
            Ok(report) => report.clone(),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "programming node routes failed");
                Default::default()
            }
        };
        let complete = applied.as_ref().is_ok_and(|s| s.failed_writes == 0);
        let ok = complete && routes.is_ok() && policy.failure().is_none();
        self.ctx.metrics.record_sync(&SyncRecord {
            duration,
            ok,
            plan_warnings: plan.warnings.len(),
            endpoints: plan.endpoints,
            routes_programmed: route_report.programmed,
            route_conflicts: route_report.conflicts,
            programmed: applied.as_ref().ok().map(|s| Programmed {
                services: s.services,
                frontends: s.frontends,
                backends: s.backends,
            }),
        });
        match &applied {
            Ok(stats) => {
                info!(
                    generation = self.view.generation,
                    frontends = plan.state.frontends.len(),
                    routes = plan.state.routes.len(),
                    endpoints = plan.endpoints,
                    registered = self.registry.len(),
                    map_writes = stats.map_writes,
                    failed_writes = stats.failed_writes,
                    ct_flushed = stats.ct_flushed,
                    duration_ms = duration.as_secs_f64() * 1e3,
                    plan_ms = planned.as_secs_f64() * 1e3,
                    policy_ms = (policy_done - planned).as_secs_f64() * 1e3,
                    apply_ms = (apply_done - policy_done).as_secs_f64() * 1e3,
                    routes_ms = (duration - apply_done).as_secs_f64() * 1e3,
                    "datapath synced"
                );
                if ok {
                    self.retry_delay = self.timing.retry_min;
                }
                if !self.applied_once {
                    self.applied_once = true;
                    self.ctx.health.set_first_apply_done();
                    self.ctx.metrics.set_ready(true);
                    // Counters and a first CT count right away.
                    self.next_stats = Instant::now();
                    self.next_gc = Instant::now();
                    self.start_walker();
                    info!("ready: first full sync done");
                }
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), retry_in_ms = self.retry_delay.as_millis() as u64, "applying the plan to the datapath failed");
                self.mark_dirty(self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(self.timing.retry_max);
            }
        }
        if applied.is_ok() && !ok {
            // Partial: some writes or routes failed, or the policy write.
            // Answers go out (a failed policy write fails registrations);
            // the rest is retried.
            self.mark_dirty(self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(self.timing.retry_max);
        }
        // A pod must not start unpoliced: without its policy written, its
        // registration fails (the runtime retries the ADD).
        let failure = match (&policy, &applied) {
            (PolicyOutcome::Applied(_), Ok(_)) => None,
            (_, Err(e)) => Some(format!("applying the plan: {e:#}")),
            (outcome, Ok(_)) => outcome.failure().map(|m| format!("policy: {m}")),
        };
        self.hold_for_pod_objects(failure.is_some());
        self.answer_pending(failure);
    }

    /// Keeps back registrations whose Pod object the sources do not know
    /// yet (a watch or the manifests lagging behind the runtime): the
    /// policy just written could not select them. They are answered by a
    /// later sync, once the object arrives or the grace runs out.
    fn hold_for_pod_objects(&mut self, failed: bool) {
        if failed {
            return;
        }
        let grace = self.timing.pod_object_grace;
        let snapshot = self.view.objects.clone();
        let pods = &snapshot.snapshot().pods;
        let mut waiting = Vec::new();
        let mut ready = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let missing = p.pod.as_ref().is_some_and(|name| !pods.contains_key(name));
            if !missing || p.reply.is_closed() {
                ready.push(p);
            } else if p.received.elapsed() < grace {
                waiting.push(p);
            } else {
                warn!(
                    pod = %p.pod.as_ref().map(ToString::to_string).unwrap_or_default(),
                    container = %p.key.container_id, waited_ms = p.received.elapsed().as_millis() as u64,
                    "the Pod object is still unknown; answering the registration, the pod is policed once it arrives"
                );
                ready.push(p);
            }
        }
        if let Some(first) = waiting.iter().map(|p| p.received + grace).min() {
            debug!(
                waiting = waiting.len(),
                "registrations wait for their Pod objects"
            );
            // Re-checked at every view change (a sync) and at the deadline.
            let now = Instant::now();
            self.mark_dirty(first.saturating_duration_since(now));
        }
        self.pending = ready;
        self.waiting_for_pods = waiting;
    }

    /// Re-reads the netns' IPv4 addresses when a pod registers (its veth
    /// brings the gateway) and every `routes_every`.
    async fn refresh_host_addresses(&mut self) {
        let registering = self.pending.iter().any(|p| p.op == "register");
        if !registering && Instant::now() < self.next_host_addresses {
            return;
        }
        self.next_host_addresses = Instant::now() + self.timing.routes_every;
        match self.links.ipv4_addresses().await {
            Ok(addresses) => self.policy.set_host_addresses(addresses),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading the node's addresses for policy failed; keeping the last ones")
            }
        }
    }

    /// The policy event ring, read on a thread of its own, when there is
    /// someone to tell.
    fn start_event_reader(&mut self) {
        let Some(hub) = self.monitor.clone() else {
            return;
        };
        let source = match blocking(|| self.datapath.policy_events()) {
            Ok(Some(source)) => source,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "no policy event stream: opening the ring buffer failed");
                return;
            }
        };
        match EventReader::start(source, self.policy.names(), hub) {
            Ok(reader) => self.events = Some(reader),
            Err(e) => warn!(error = %e, "no policy event stream: starting its thread failed"),
        }
    }

    fn answer_pending(&mut self, failure: Option<String>) {
        let pending = std::mem::take(&mut self.pending);
        // The held ones go back in the queue for the next sync.
        self.pending = std::mem::take(&mut self.waiting_for_pods);
        let answers: Vec<(Pending, Response, bool)> = pending
            .into_iter()
            .map(|p| {
                let abandoned = p.reply.is_closed();
                let response = match (&failure, p.op) {
                    (Some(e), "register") => Response::error(ErrorCode::Datapath, e.clone()),
                    _ => Response::ok(),
                };
                (p, response, abandoned)
            })
            .collect();
        // Undo first, so whoever gets a failure sees nothing left behind.
        for (p, response, abandoned) in &answers {
            if p.op == "register" && (*abandoned || !response.ok) {
                if *abandoned {
                    warn!(container = %p.key.container_id, ifname = %p.key.ifname, "the client left before the answer; undoing its registration");
                }
                self.undo_registration(&p.key);
            }
        }
        for (p, response, abandoned) in answers {
            let latency = p.received.elapsed();
            let label = if abandoned {
                "abandoned"
            } else {
                response.result_label()
            };
            self.ctx.metrics.record_registration(p.op, label, latency);
            if response.ok && !abandoned {
                info!(op = p.op, container = %p.key.container_id, ifname = %p.key.ifname, latency_ms = latency.as_secs_f64() * 1e3, "registration answered");
            }
            let _ = p.reply.send(response);
        }
        self.ctx
            .metrics
            .set_registered_endpoints(self.registry.len());
    }

    fn undo_registration(&mut self, key: &AttachmentKey) {
        let Some(record) = self.registry.remove(key) else {
            return;
        };
        if let Err(e) = blocking(|| self.datapath.detach_pod(&record)) {
            warn!(pod = %record.pod(), error = %format!("{e:#}"), "detaching an undone registration failed");
        }
        if let Err(e) = self.store.remove(key) {
            warn!(error = %e, "cannot remove the record of an undone registration");
        }
        // The plan still names the pod's address.
        self.mark_dirty(self.timing.registration_window.max(self.retry_delay));
    }

    fn log_new_warnings(&mut self, warnings: &[ObjectWarning]) {
        let now: BTreeSet<ObjectWarning> = warnings.iter().cloned().collect();
        for w in now.difference(&self.warnings) {
            warn!(kind = %w.object.kind, object = %display_name(&w.object.name), message = %w.message, "object not fully honoured");
        }
        self.warnings = now;
    }

    /// Moves the periodic map walks to their own thread, when the
    /// datapath can hand them over.
    fn start_walker(&mut self) {
        let walks = match self.datapath.walks() {
            Ok(Some(walks)) => walks,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "map walks stay on the main loop");
                return;
            }
        };
        let (report, walked) = mpsc::unbounded_channel();
        match Walker::start(walks, self.timing.stats_every, self.timing.gc_every, report) {
            Ok(walker) => {
                self.walker = Some(walker);
                self.walked = Some(walked);
            }
            Err(e) => warn!(error = %e, "map walks stay on the main loop"),
        }
    }

    /// Publishes what the walker found; a GC pass also releases the
    /// reverse-NAT entries nothing names any more (the writer's part).
    fn take_walked(&mut self, walked: Option<Walked>) {
        match walked {
            Some(Walked::Stats(mut stats)) => {
                stats.maps.extend(self.datapath.mirrored_fill());
                stats.maps.sort_by(|a, b| a.name.cmp(&b.name));
                self.ctx.metrics.set_datapath(stats);
            }
            Some(Walked::Gc(pass)) => {
                self.ctx.metrics.add_gc_expired(pass.stats.expired);
                let released = pass.referenced_rev_nat.map_or(0, |referenced| {
                    blocking(|| self.datapath.release_rev_nat(&referenced))
                });
                debug!(
                    scanned = pass.stats.scanned,
                    expired = pass.stats.expired,
                    rev_nat_released = released,
                    "conntrack GC"
                );
            }
            None => {
                warn!("the map walker stopped; the main loop walks the maps again");
                self.walker = None;
                self.walked = None;
            }
        }
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        let walks_here = self.applied_once && self.walker.is_none();
        // GC first: the stats report the CT count of the last pass.
        if walks_here && now >= self.next_gc {
            self.next_gc = now + self.timing.gc_every;
            match blocking(|| self.datapath.collect_garbage()) {
                Ok(gc) => {
                    self.ctx.metrics.add_gc_expired(gc.expired);
                    debug!(scanned = gc.scanned, expired = gc.expired, "conntrack GC");
                }
                Err(e) => warn!(error = %format!("{e:#}"), "conntrack GC failed"),
            }
        }
        if walks_here && now >= self.next_stats {
            self.next_stats = now + self.timing.stats_every;
            match blocking(|| self.datapath.stats()) {
                Ok(stats) => self.ctx.metrics.set_datapath(stats),
                Err(e) => warn!(error = %format!("{e:#}"), "reading datapath counters failed"),
            }
        }
        if self.applied_once && now >= self.next_policy_counters {
            self.next_policy_counters = now + self.timing.stats_every;
            match blocking(|| self.datapath.policy_counters()) {
                Ok(counters) => self.ctx.metrics.set_policy_counters(
                    self.policy.drops_by_policy(&counters),
                    counters.events_lost,
                ),
                Err(e) => warn!(error = %format!("{e:#}"), "reading policy counters failed"),
            }
            if let Some(hub) = &self.monitor {
                self.ctx
                    .metrics
                    .set_monitor(hub.subscribers(), hub.published(), hub.dropped());
            }
        }
        if self.applied_once && now >= self.next_routes {
            self.next_routes = now + self.timing.routes_every;
            if let Err(e) = self.routes.sync(&self.last_routes).await {
                warn!(error = %format!("{e:#}"), "re-checking node routes failed");
            }
        }
    }
}

fn display_name(name: &ObjectName) -> String {
    if name.namespace.is_empty() {
        name.name.clone()
    } else {
        format!("{}/{}", name.namespace, name.name)
    }
}

async fn watched_changed(
    watched: &mut Option<watch::Receiver<BTreeMap<ObjectName, usize>>>,
) -> bool {
    match watched {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn next_walked(walked: &mut Option<mpsc::UnboundedReceiver<Walked>>) -> Option<Walked> {
    match walked {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
