//! The main loop against fakes: ordering of attach, apply and answers;
//! readiness gating; refusal paths; start-up adoption; shutdown.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use crate::daemon::seams::{
    ApplyStats, DatapathStats, GcStats, MapFill, PolicyApplyStats, PolicyCounters,
    PolicyEventSource, PolicySettings, SourceView,
};
use crate::http::Health;
use crate::k8s::test_support::snapshot;
use crate::plan::DesiredState;
use crate::policy::{Capacities, PolicyPlan};
use crate::registry::protocol::EndpointSpec;
use crate::registry::rebuild::LiveLink;
use crate::routes::RouteReport;

#[derive(Default)]
struct DpLog {
    calls: Vec<String>,
    applied: Vec<DesiredState>,
    fail_attach: bool,
    fail_apply: bool,
    /// Offer the periodic walks to a thread of their own.
    walks_off_loop: bool,
    policies: Vec<PolicyPlan>,
    policy_settings: Vec<PolicySettings>,
    pinned_revision: u32,
    fail_policy: bool,
    /// Policy map capacity (entries of weir_policy_v1), default: the object's.
    policy_capacity: Option<u32>,
    policy_drops: Vec<(u32, u64)>,
}

#[derive(Clone, Default)]
struct FakeDatapath(Arc<Mutex<DpLog>>);

impl Datapath for FakeDatapath {
    fn attach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()> {
        let mut log = self.0.lock().unwrap();
        if log.fail_attach {
            anyhow::bail!("no tcx for you");
        }
        log.calls
            .push(format!("attach {}", pod.endpoint.container_id));
        Ok(())
    }
    fn detach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("detach {}", pod.endpoint.container_id));
        Ok(())
    }
    fn retain_pods(&mut self, pods: &[EndpointRecord]) -> anyhow::Result<()> {
        let ids: Vec<&str> = pods
            .iter()
            .map(|p| p.endpoint.container_id.as_str())
            .collect();
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("retain {}", ids.join(",")));
        Ok(())
    }
    fn apply(&mut self, desired: &DesiredState) -> anyhow::Result<ApplyStats> {
        let mut log = self.0.lock().unwrap();
        log.calls.push("apply".into());
        if log.fail_apply {
            anyhow::bail!("map full");
        }
        log.applied.push(desired.clone());
        Ok(ApplyStats::default())
    }
    fn stats(&mut self) -> anyhow::Result<DatapathStats> {
        self.0
            .lock()
            .unwrap()
            .calls
            .push("stats on the loop".into());
        Ok(DatapathStats::default())
    }
    fn walks(&self) -> anyhow::Result<Option<Box<dyn crate::daemon::seams::Walks>>> {
        let off = self.0.lock().unwrap().walks_off_loop;
        Ok(off.then(|| Box::new(FakeWalks) as Box<dyn crate::daemon::seams::Walks>))
    }
    fn mirrored_fill(&self) -> Vec<MapFill> {
        vec![fill("mirrored", 2)]
    }
    fn policy_revision(&mut self) -> anyhow::Result<u32> {
        Ok(self.0.lock().unwrap().pinned_revision)
    }
    fn policy_capacities(&self) -> Capacities {
        let log = self.0.lock().unwrap();
        Capacities {
            policy: log.policy_capacity.unwrap_or(Capacities::default().policy),
            ..Capacities::default()
        }
    }
    fn set_policy_settings(&mut self, settings: &PolicySettings) -> anyhow::Result<()> {
        let mut log = self.0.lock().unwrap();
        log.calls.push("policy settings".into());
        log.policy_settings.push(*settings);
        Ok(())
    }
    fn apply_policy(&mut self, plan: &PolicyPlan) -> anyhow::Result<PolicyApplyStats> {
        let mut log = self.0.lock().unwrap();
        log.calls.push(format!("policy {}", plan.revision));
        if log.fail_policy {
            anyhow::bail!("policy map full");
        }
        log.policies.push(plan.clone());
        Ok(PolicyApplyStats {
            map_writes: plan.policy_entry_count() as u64,
            revision: plan.revision,
        })
    }
    fn policy_counters(&mut self) -> anyhow::Result<PolicyCounters> {
        Ok(PolicyCounters {
            drops: self.0.lock().unwrap().policy_drops.clone(),
            events_lost: 4,
        })
    }
    fn policy_events(&mut self) -> anyhow::Result<Option<Box<dyn PolicyEventSource>>> {
        Ok(None)
    }
    fn release_rev_nat(&mut self, referenced: &std::collections::HashSet<u16>) -> u64 {
        let mut ids: Vec<u16> = referenced.iter().copied().collect();
        ids.sort_unstable();
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("release except {ids:?}"));
        1
    }
}

fn fill(name: &str, entries: u64) -> MapFill {
    MapFill {
        name: name.into(),
        entries,
        capacity: 10,
    }
}

/// Walks that find one map and a conntrack table naming rev-NAT index 3.
struct FakeWalks;

impl crate::daemon::seams::Walks for FakeWalks {
    fn stats(&mut self) -> anyhow::Result<DatapathStats> {
        Ok(DatapathStats {
            maps: vec![fill("walked", 4)],
            ct_entries: Some(5),
            ..DatapathStats::default()
        })
    }
    fn gc(&mut self) -> anyhow::Result<crate::daemon::walker::GcPass> {
        Ok(crate::daemon::walker::GcPass {
            stats: GcStats {
                scanned: 5,
                expired: 2,
            },
            referenced_rev_nat: Some([3].into()),
        })
    }
}

#[derive(Clone, Default)]
struct FakeLinks(Arc<Mutex<Vec<LiveLink>>>);

/// The gateway address the CNI puts on every host-side veth.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

impl FakeLinks {
    fn add(&self, index: u32, name: &str) {
        self.0.lock().unwrap().push(LiveLink {
            index,
            name: name.into(),
        });
    }
}

impl LinkTable for FakeLinks {
    async fn list(&self) -> anyhow::Result<Vec<LiveLink>> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn by_index(&self, index: u32) -> anyhow::Result<Option<LiveLink>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.index == index)
            .cloned())
    }
    async fn ipv4_addresses(&self) -> anyhow::Result<Vec<Ipv4Addr>> {
        Ok(vec![Ipv4Addr::new(192, 168, 100, 11), GATEWAY])
    }
}

#[derive(Clone, Default)]
struct FakeRoutes(Arc<Mutex<Vec<Vec<NodeRoute>>>>);

impl RouteSync for FakeRoutes {
    async fn sync(&mut self, desired: &[NodeRoute]) -> anyhow::Result<RouteReport> {
        self.0.lock().unwrap().push(desired.to_vec());
        Ok(RouteReport {
            programmed: desired.len(),
            ..RouteReport::default()
        })
    }
}

struct FakeSource(watch::Receiver<SourceView>);

impl Source for FakeSource {
    async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
    fn current(&mut self) -> SourceView {
        self.0.borrow_and_update().clone()
    }
}

const OBJECTS: &str = "
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.100.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.100.12}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod-a, namespace: default, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {conditions: [{type: Ready, status: 'True'}]}
";

fn view(synced: bool) -> SourceView {
    view_with(synced, "")
}

/// [`OBJECTS`] plus more documents.
fn view_with(synced: bool, extra: &str) -> SourceView {
    SourceView {
        objects: Arc::new(snapshot(&format!("{OBJECTS}{extra}"))),
        synced,
        bad_documents: Default::default(),
        generation: 1,
    }
}

/// Isolates every pod of `default` for ingress; allows ingress from pods
/// labelled app=web.
const POLICIES: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: default}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
";

/// A policy the compiler rejects a rule of (fails closed, counted).
const BAD_POLICY: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: default}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]
";

fn spec(id: &str, index: u32, ip: [u8; 4]) -> EndpointSpec {
    EndpointSpec {
        container_id: id.into(),
        netns: format!("/run/netns/{id}"),
        ifname: "eth0".into(),
        host_ifindex: index,
        host_ifname: format!("weir{index}"),
        ips: vec![Ipv4Addr::from(ip)],
        mac: None,
        host_mac: None,
        pod_namespace: "default".into(),
        pod_name: format!("pod-{id}"),
    }
}

struct Harness {
    dp: FakeDatapath,
    links: FakeLinks,
    routes: FakeRoutes,
    ctx: Context,
    store_dir: tempfile::TempDir,
    source: watch::Sender<SourceView>,
    requests: mpsc::Sender<Registration>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    hub: MonitorHub,
}

fn timing() -> Timing {
    Timing {
        source_window: Duration::from_millis(1),
        registration_window: Duration::from_millis(1),
        pod_object_grace: Duration::from_millis(400),
        tick: Duration::from_millis(10),
        stats_every: Duration::from_millis(10),
        gc_every: Duration::from_millis(10),
        routes_every: Duration::from_secs(3600),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(40),
    }
}

impl Harness {
    fn parts() -> (
        FakeDatapath,
        FakeLinks,
        FakeRoutes,
        Context,
        tempfile::TempDir,
    ) {
        let links = FakeLinks::default();
        links.add(1, "lo");
        links.add(2, "eth0");
        (
            FakeDatapath::default(),
            links,
            FakeRoutes::default(),
            Context {
                metrics: Arc::new(Metrics::new()),
                health: Arc::new(Health::default()),
            },
            tempfile::tempdir().unwrap(),
        )
    }

    async fn start(
        initial: SourceView,
        prepare: impl FnOnce(&FakeDatapath, &FakeLinks, &tempfile::TempDir),
    ) -> Self {
        Self::start_with(initial, PolicySettings::default(), prepare).await
    }

    async fn start_with(
        initial: SourceView,
        policy: PolicySettings,
        prepare: impl FnOnce(&FakeDatapath, &FakeLinks, &tempfile::TempDir),
    ) -> Self {
        let (dp, links, routes, ctx, store_dir) = Self::parts();
        prepare(&dp, &links, &store_dir);
        let hub = MonitorHub::new(16);
        let mut reconciler = Reconciler::new(
            ctx.clone(),
            PlanSettings {
                node_name: "node1".into(),
                policy,
                ..PlanSettings::default()
            },
            timing(),
            dp.clone(),
            links.clone(),
            routes.clone(),
            RecordStore::open(store_dir.path()).unwrap(),
        )
        .with_monitor(hub.clone());
        reconciler.adopt().await.unwrap();
        let (source, source_rx) = watch::channel(initial);
        let (requests, requests_rx) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(reconciler.run(FakeSource(source_rx), requests_rx, stop_rx));
        Self {
            dp,
            links,
            routes,
            ctx,
            store_dir,
            source,
            requests,
            stop,
            task: Some(task),
            hub,
        }
    }

    fn policies(&self) -> Vec<PolicyPlan> {
        self.dp.0.lock().unwrap().policies.clone()
    }

    fn send(&self, op: Op) -> oneshot::Receiver<Response> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(Registration {
                op,
                reply,
                received: std::time::Instant::now(),
            })
            .unwrap();
        answer
    }

    async fn ask(&self, op: Op) -> Response {
        tokio::time::timeout(Duration::from_secs(10), self.send(op))
            .await
            .unwrap()
            .unwrap()
    }

    fn calls(&self) -> Vec<String> {
        self.dp.0.lock().unwrap().calls.clone()
    }

    fn record_path(&self, id: &str) -> std::path::PathBuf {
        self.store_dir.path().join(format!("{id}-eth0.json"))
    }

    async fn stop(&mut self) {
        self.stop.send(true).unwrap();
        self.task.take().unwrap().await.unwrap();
    }

    /// Waits until `f` holds (the loop runs on other threads).
    async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        for _ in 0..1000 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for: {what}; calls {:?}", self.calls());
    }
}

fn register(id: &str, index: u32, ip: [u8; 4]) -> Op {
    Op::Register {
        endpoint: spec(id, index, ip),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_attaches_persists_applies_then_answers() {
    let mut h = Harness::start(view(true), |_, links, _| links.add(7, "weir7")).await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;

    let answer = h.ask(register("a", 7, [10, 244, 1, 5])).await;
    assert!(answer.ok, "{answer:?}");
    let calls = h.calls();
    let attach = calls.iter().position(|c| c == "attach a").unwrap();
    let apply_after = calls.iter().rposition(|c| c == "apply").unwrap();
    assert!(
        attach < apply_after,
        "attach, then the apply that answers: {calls:?}"
    );
    let record: EndpointRecord =
        serde_json::from_slice(&std::fs::read(h.record_path("a")).unwrap()).unwrap();
    assert_eq!(record.endpoint.host_ifindex, 7);

    // The registered address became the selected pod's backend.
    let plan = h.dp.0.lock().unwrap().applied.last().cloned().unwrap();
    let web = plan
        .frontends
        .iter()
        .find(|f| f.service.name == "web")
        .unwrap();
    assert_eq!(web.backends.len(), 1);
    assert_eq!(web.backends[0].address, Ipv4Addr::new(10, 244, 1, 5));
    assert_eq!(web.backends[0].port, 8080);
    let routes = h.routes.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(routes.len(), 1, "a route to node2's pod CIDR");
    assert_eq!(routes[0].via, Ipv4Addr::new(192, 168, 100, 12));

    let answer = h
        .ask(Op::Deregister {
            container_id: "a".into(),
            ifname: "eth0".into(),
        })
        .await;
    assert!(answer.ok);
    assert!(!h.record_path("a").exists());
    assert!(h.calls().contains(&"detach a".to_string()));
    let plan = h.dp.0.lock().unwrap().applied.last().cloned().unwrap();
    let web = plan
        .frontends
        .iter()
        .find(|f| f.service.name == "web")
        .unwrap();
    assert!(web.backends.is_empty(), "the pod left the service");

    // Unknown attachments deregister fine (DEL is idempotent).
    let again = h
        .ask(Op::Deregister {
            container_id: "a".into(),
            ifname: "eth0".into(),
        })
        .await;
    assert!(again.ok);
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains("weir_registrations_total{op=\"register\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_registrations_total{op=\"deregister\",result=\"ok\"} 2"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_applied_before_the_sources_sync() {
    let mut h = Harness::start(view(false), |_, links, _| links.add(7, "weir7")).await;
    let mut answer = h.send(register("a", 7, [10, 244, 1, 5]));
    h.until("attach", |h| h.calls().contains(&"attach a".to_string()))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        answer.try_recv().is_err(),
        "no answer before the first full sync"
    );
    assert!(!h.calls().contains(&"apply".to_string()), "{:?}", h.calls());
    assert!(h.ctx.health.readiness().is_err());

    h.source.send(view(true)).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.ok);
    h.until("ready", |h| h.ctx.health.is_ready()).await;
    assert!(h.ctx.metrics.render().contains("weir_ready 1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_nothing_behind() {
    let mut h = Harness::start(view(true), |_, links, _| links.add(7, "weir7")).await;
    let code = |r: Response| r.error.unwrap().code;

    assert_eq!(
        code(h.ask(register("a", 8, [10, 244, 1, 5])).await),
        ErrorCode::LinkMismatch
    );
    let mut renamed = spec("a", 7, [10, 244, 1, 5]);
    renamed.host_ifname = "weirX".into();
    assert_eq!(
        code(h.ask(Op::Register { endpoint: renamed }).await),
        ErrorCode::LinkMismatch
    );
    let mut bad = spec("../x", 7, [10, 244, 1, 5]);
    assert_eq!(
        code(
            h.ask(Op::Register {
                endpoint: bad.clone()
            })
            .await
        ),
        ErrorCode::InvalidEndpoint
    );
    bad.container_id = "ok".into();
    bad.ips.clear();
    assert_eq!(
        code(h.ask(Op::Register { endpoint: bad }).await),
        ErrorCode::InvalidEndpoint
    );
    assert_eq!(
        code(
            h.ask(Op::Deregister {
                container_id: "a/../../x".into(),
                ifname: "eth0".into()
            })
            .await
        ),
        ErrorCode::InvalidEndpoint
    );

    h.dp.0.lock().unwrap().fail_attach = true;
    assert_eq!(
        code(h.ask(register("a", 7, [10, 244, 1, 5])).await),
        ErrorCode::Datapath
    );
    assert_eq!(
        std::fs::read_dir(h.store_dir.path()).unwrap().count(),
        0,
        "no record stays"
    );
    assert!(!h.calls().iter().any(|c| c.starts_with("attach")));
    let metrics = h.ctx.metrics.render();
    assert!(metrics.contains("result=\"link_mismatch\"} 2"), "{metrics}");
    assert!(metrics.contains("weir_endpoints_registered 0"), "{metrics}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_fails_the_registration_and_is_retried() {
    let mut h = Harness::start(view(true), |_, links, _| links.add(7, "weir7")).await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    h.dp.0.lock().unwrap().fail_apply = true;
    let answer = h.ask(register("a", 7, [10, 244, 1, 5])).await;
    assert_eq!(answer.error.unwrap().code, ErrorCode::Datapath);
    assert!(!h.record_path("a").exists(), "the registration is undone");
    assert!(h.calls().contains(&"detach a".to_string()));
    let failed_applies = |h: &Harness| h.calls().iter().filter(|c| *c == "apply").count();
    let before = failed_applies(&h);
    h.until("a retry", |h| failed_applies(h) > before).await;
    h.dp.0.lock().unwrap().fail_apply = false;
    h.until("recovery", |h| {
        !h.dp.0.lock().unwrap().applied.is_empty()
            && h.ctx
                .metrics
                .render()
                .contains("weir_sync_total{result=\"error\"}")
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_on_a_reused_link_or_address_replaces_the_stale_one() {
    let mut h = Harness::start(view(true), |_, links, _| {
        links.add(7, "weir7");
        links.add(9, "weir9");
    })
    .await;
    assert!(h.ask(register("old", 7, [10, 244, 1, 5])).await.ok);
    assert!(
        h.ask(register("new", 9, [10, 244, 1, 5])).await.ok,
        "same address, new link"
    );
    assert!(!h.record_path("old").exists());
    assert!(h.record_path("new").exists());
    assert!(h.calls().contains(&"detach old".to_string()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_keeps_live_links_and_drops_the_rest() {
    let mut h = Harness::start(view(true), |_, links, dir| {
        let store = RecordStore::open(dir.path()).unwrap();
        links.add(7, "weir7");
        links.add(8, "weirOther");
        store
            .write(&EndpointRecord::new(spec("alive", 7, [10, 244, 1, 5])))
            .unwrap();
        store
            .write(&EndpointRecord::new(spec("reused", 8, [10, 244, 1, 6])))
            .unwrap();
        store
            .write(&EndpointRecord::new(spec("gone", 9, [10, 244, 1, 7])))
            .unwrap();
        std::fs::write(dir.path().join("torn-eth0.json"), b"{").unwrap();
    })
    .await;
    assert_eq!(h.calls()[0], "retain alive");
    assert!(h.record_path("alive").exists());
    for gone in ["reused", "gone", "torn"] {
        assert!(!h.record_path(gone).exists(), "{gone}");
    }
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    let plan = h.dp.0.lock().unwrap().applied.last().cloned().unwrap();
    let web = plan.frontends.iter().find(|f| f.service.name == "web");
    assert!(
        web.is_some_and(|f| f.backends.is_empty()),
        "pod-a is not registered (pod-alive is)"
    );
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains("weir_endpoint_records_dropped_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_endpoints_registered 1"), "{metrics}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_everyone() {
    // Synced: the accepted registration is programmed on the way out.
    let mut h = Harness::start(view(true), |_, links, _| links.add(7, "weir7")).await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    let answer = h.send(register("a", 7, [10, 244, 1, 5]));
    h.until("attach", |h| h.calls().contains(&"attach a".to_string()))
        .await;
    h.stop().await;
    assert!(answer.await.unwrap().ok);

    // Never synced: nothing may be applied, so the answer is "try again".
    let mut h = Harness::start(view(false), |_, links, _| links.add(7, "weir7")).await;
    let answer = h.send(register("a", 7, [10, 244, 1, 5]));
    h.until("attach", |h| h.calls().contains(&"attach a".to_string()))
        .await;
    h.stop().await;
    assert_eq!(
        answer.await.unwrap().error.unwrap().code,
        ErrorCode::ShuttingDown
    );
    assert!(!h.calls().contains(&"apply".to_string()));
    drop(h.links);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_client_left_is_undone() {
    // Unsynced, so the answer waits and the client can leave first.
    let mut h = Harness::start(view(false), |_, links, _| links.add(7, "weir7")).await;
    let answer = h.send(register("a", 7, [10, 244, 1, 5]));
    h.until("attach", |h| h.calls().contains(&"attach a".to_string()))
        .await;
    assert!(h.record_path("a").exists());
    drop(answer);
    h.source.send(view(true)).unwrap();
    h.until("the undo", |h| h.calls().contains(&"detach a".to_string()))
        .await;
    assert!(!h.record_path("a").exists());
    h.until("a sync without the pod", |h| {
        let log = h.dp.0.lock().unwrap();
        log.applied
            .last()
            .is_some_and(|plan| plan.frontends.iter().all(|f| f.backends.is_empty()))
            && log.calls.iter().filter(|c| *c == "apply").count() >= 2
    })
    .await;
    assert!(
        h.ctx
            .metrics
            .render()
            .contains("weir_endpoints_registered 0")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_walks_run_off_the_loop_and_their_results_reach_the_metrics() {
    let mut h = Harness::start(view(true), |dp, _, _| {
        dp.0.lock().unwrap().walks_off_loop = true;
    })
    .await;
    h.until("a GC pass handed back", |h| {
        h.calls().contains(&"release except [3]".to_string())
    })
    .await;
    h.until("counters published", |h| {
        h.ctx.metrics.render().contains("weir_ct_entries 5")
    })
    .await;
    let text = h.ctx.metrics.render();
    assert!(
        text.contains("weir_map_entries{map=\"walked\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("weir_map_entries{map=\"mirrored\"} 2"),
        "{text}"
    );
    let expired: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("weir_ct_gc_expired_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(expired >= 2.0, "{text}");
    assert!(
        !h.calls().contains(&"stats on the loop".to_string()),
        "{:?}",
        h.calls()
    );
    h.stop().await;
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_is_written_every_sync_before_services_continuing_the_pinned_revision() {
    let settings = PolicySettings {
        audit_all: true,
        events_per_sec: 50,
        allow_sample: 7,
    };
    let mut h = Harness::start_with(view_with(true, POLICIES), settings, |dp, links, _| {
        dp.0.lock().unwrap().pinned_revision = 41;
        links.add(7, "weir7");
    })
    .await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    assert_eq!(h.dp.0.lock().unwrap().policy_settings, [settings]);
    let calls = h.calls();
    let settings_at = calls.iter().position(|c| c == "policy settings").unwrap();
    let policy_at = calls.iter().position(|c| c == "policy 42").unwrap();
    let apply_at = calls.iter().position(|c| c == "apply").unwrap();
    assert!(
        settings_at < policy_at && policy_at < apply_at,
        "settings, then policy, then services: {calls:?}"
    );
    let first = h.policies()[0].clone();
    assert_eq!(first.revision, 42, "continues after the pinned revision");
    assert!(first.audit_all, "--policy-audit reaches the plan");
    // The host's addresses (the veth gateway among them) are the node.
    let host = first
        .ipcache
        .iter()
        .find(|(prefix, _)| prefix.ip() == GATEWAY && prefix.prefix() == 32)
        .map(|(_, e)| e.identity);
    assert_eq!(host, Some(weir_common::policy::identity::HOST));

    // An unchanged policy is not rewritten by the next sync.
    let writes = |h: &Harness| {
        h.calls()
            .iter()
            .filter(|c| c.starts_with("policy "))
            .count()
    };
    let before = writes(&h);
    h.source.send(view_with(true, POLICIES)).unwrap();
    h.until("another service apply", |h| {
        h.calls().iter().filter(|c| *c == "apply").count() >= 2
    })
    .await;
    assert_eq!(writes(&h), before, "{:?}", h.calls());
    let text = h.ctx.metrics.render();
    assert_eq!(metric(&text, "weir_policy_revision"), 42.0);
    assert!(metric(&text, "weir_policy_syncs_total{result=\"ok\"}") >= 2.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_answered_after_the_policy_write_that_polices_its_pod() {
    let mut h = Harness::start(view_with(true, POLICIES), |_, links, _| {
        links.add(7, "weir7")
    })
    .await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    let before = h.policies().len();
    let answer = h.ask(register("a", 7, [10, 244, 1, 5])).await;
    assert!(answer.ok, "{answer:?}");
    // Answered: a policy write after the attach names the new address.
    let calls = h.calls();
    let attach = calls.iter().position(|c| c == "attach a").unwrap();
    let written = calls
        .iter()
        .rposition(|c| c.starts_with("policy "))
        .unwrap();
    assert!(attach < written, "{calls:?}");
    let plans = h.policies();
    assert!(plans.len() > before);
    let last = plans.last().unwrap();
    let endpoint = &last.endpoints[&Ipv4Addr::new(10, 244, 1, 5)];
    assert_eq!(
        endpoint.pod,
        crate::k8s::ObjectName::new("default", "pod-a")
    );
    assert!(
        endpoint.ingress.isolated_by.is_some(),
        "isolated from the start"
    );
    assert!(
        !endpoint.ingress.allows.is_empty(),
        "its allow entries came in the same write"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_policy_write_fails_the_registration_and_is_retried() {
    let mut h = Harness::start(view_with(true, POLICIES), |_, links, _| {
        links.add(7, "weir7")
    })
    .await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    h.dp.0.lock().unwrap().fail_policy = true;
    let answer = h.ask(register("a", 7, [10, 244, 1, 5])).await;
    let error = answer.error.unwrap();
    assert_eq!(error.code, ErrorCode::Datapath);
    assert!(error.message.contains("policy"), "{}", error.message);
    assert!(!h.record_path("a").exists(), "the registration is undone");
    h.until("counted", |h| {
        metric(
            &h.ctx.metrics.render(),
            "weir_policy_syncs_total{result=\"error\"}",
        ) >= 1.0
    })
    .await;
    let tries = |h: &Harness| {
        h.calls()
            .iter()
            .filter(|c| c.starts_with("policy "))
            .count()
    };
    let before = tries(&h);
    h.until("a retry", |h| tries(h) > before).await;
    h.dp.0.lock().unwrap().fail_policy = false;
    h.until("recovery", |h| !h.policies().is_empty()).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_capacity_is_refused_and_the_old_one_stays() {
    let mut h = Harness::start(view_with(true, POLICIES), |dp, links, _| {
        links.add(7, "weir7");
        dp.0.lock().unwrap().policy_capacity = Some(0);
    })
    .await;
    h.until("first sync", |h| h.ctx.health.is_ready()).await;
    // pod-a has no address until it registers: nothing to write yet.
    assert_eq!(h.policies().len(), 1);
    let answer = h.ask(register("a", 7, [10, 244, 1, 5])).await;
    let error = answer.error.unwrap();
    assert_eq!(error.code, ErrorCode::Datapath);
    assert!(error.message.contains("does not fit"), "{}", error.message);
    assert_eq!(
        h.policies().len(),
        1,
        "nothing of the refused plan is written"
    );
    let text = h.ctx.metrics.render();
    assert!(metric(&text, "weir_policy_syncs_total{result=\"refused\"}") >= 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_errors_are_counted_and_drops_named_by_policy() {
    let mut h = Harness::start(
        view_with(true, &format!("{POLICIES}{BAD_POLICY}")),
        |_, links, _| links.add(7, "weir7"),
    )
    .await;
    assert!(h.ask(register("a", 7, [10, 244, 1, 5])).await.ok);
    let plan = h.policies().last().cloned().unwrap();
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let isolation = plan.endpoints[&Ipv4Addr::new(10, 244, 1, 5)]
        .ingress
        .isolated_by
        .unwrap();
    h.dp.0.lock().unwrap().policy_drops = vec![(isolation, 9), (123_456, 1)];
    h.until("drops by policy", |h| {
        h.ctx.metrics.render().contains(
            "weir_policy_drops_total{policy=\"default/allow-web\",direction=\"ingress\"} 9",
        )
    })
    .await;
    let text = h.ctx.metrics.render();
    assert_eq!(metric(&text, "weir_policy_compile_errors"), 1.0);
    assert_eq!(metric(&text, "weir_policy_events_lost_total"), 4.0);
    assert!(!text.contains("123456"), "an id no plan names is left out");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_on_a_pod_turns_on_its_allow_events_while_it_lasts() {
    let mut h = Harness::start(view_with(true, POLICIES), |_, links, _| {
        links.add(7, "weir7")
    })
    .await;
    assert!(h.ask(register("a", 7, [10, 244, 1, 5])).await.ok);
    let pod_a = Ipv4Addr::new(10, 244, 1, 5);
    let emit = weir_common::policy::ep_policy_flags::EMIT_ALLOWS;
    let flags = |h: &Harness| {
        h.policies()
            .last()
            .and_then(|p| p.endpoints.get(&pod_a).map(|e| e.abi().flags))
            .unwrap_or(0)
    };
    assert_eq!(flags(&h) & emit, 0);
    let watching = h
        .hub
        .subscribe(crate::registry::MonitorFilter {
            pod: Some("default/pod-a".into()),
            verdict: None,
        })
        .unwrap();
    h.until("EMIT_ALLOWS set", |h| flags(h) & emit != 0).await;
    drop(watching);
    h.until("EMIT_ALLOWS cleared", |h| flags(h) & emit == 0)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_waits_for_its_pod_object_so_its_policy_can_select_it() {
    let mut h = Harness::start(view_with(true, POLICIES), |_, links, _| {
        links.add(7, "weir7");
        links.add(8, "weir8");
    })
    .await;
    h.until("first apply", |h| h.ctx.health.is_ready()).await;
    // pod-late is not in the objects yet (the watch lags the runtime).
    let mut answer = h.send(register("late", 7, [10, 244, 1, 7]));
    h.until("attach", |h| h.calls().contains(&"attach late".to_string()))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        answer.try_recv().is_err(),
        "answered before its Pod object came"
    );
    let late_pod = "
---
apiVersion: v1
kind: Pod
metadata: {name: pod-late, namespace: default, labels: {app: db}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
";
    h.source
        .send(view_with(true, &format!("{POLICIES}{late_pod}")))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.ok, "{answer:?}");
    let plan = h.policies().last().cloned().unwrap();
    let endpoint = &plan.endpoints[&Ipv4Addr::new(10, 244, 1, 7)];
    assert_eq!(
        endpoint.pod,
        crate::k8s::ObjectName::new("default", "pod-late")
    );
    assert!(endpoint.ingress.isolated_by.is_some());

    // A pod whose object never comes is answered after the grace.
    let started = std::time::Instant::now();
    let answer = h.ask(register("ghost", 8, [10, 244, 1, 8])).await;
    assert!(answer.ok, "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
}
