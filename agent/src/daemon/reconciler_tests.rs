//! The main loop against fakes: ordering of attach, apply and answers;
//! readiness gating; refusal paths; start-up adoption; shutdown.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use crate::daemon::seams::{ApplyStats, DatapathStats, GcStats, MapFill, SourceView};
use crate::http::Health;
use crate::k8s::test_support::snapshot;
use crate::plan::DesiredState;
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
    SourceView {
        objects: Arc::new(snapshot(OBJECTS)),
        synced,
        bad_documents: Default::default(),
        generation: 1,
    }
}

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
}

fn timing() -> Timing {
    Timing {
        source_window: Duration::from_millis(1),
        registration_window: Duration::from_millis(1),
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

    fn reconciler(
        dp: &FakeDatapath,
        links: &FakeLinks,
        routes: &FakeRoutes,
        ctx: &Context,
        dir: &tempfile::TempDir,
    ) -> Reconciler<FakeDatapath, FakeLinks, FakeRoutes> {
        Reconciler::new(
            ctx.clone(),
            PlanSettings {
                node_name: "node1".into(),
                ..PlanSettings::default()
            },
            timing(),
            dp.clone(),
            links.clone(),
            routes.clone(),
            RecordStore::open(dir.path()).unwrap(),
        )
    }

    async fn start(
        initial: SourceView,
        prepare: impl FnOnce(&FakeDatapath, &FakeLinks, &tempfile::TempDir),
    ) -> Self {
        let (dp, links, routes, ctx, store_dir) = Self::parts();
        prepare(&dp, &links, &store_dir);
        let mut reconciler = Self::reconciler(&dp, &links, &routes, &ctx, &store_dir);
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
        }
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
