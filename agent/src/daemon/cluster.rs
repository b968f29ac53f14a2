//! The in-cluster source: kube watchers for the six kinds the agent
//! reads, folded into one [`Snapshot`] behind the [`Source`] seam.
//!
//! Each kind has a `kube::runtime::watcher` (list + watch, relist after
//! errors, backoff). Its Init..InitDone sequence becomes an
//! [`ObjectEvent::Resynced`]; the source reports `synced` only once every
//! kind finished its first list, so the loop never applies a plan built
//! from half the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::seams::{Source, SourceView};
use crate::k8s::{Kind, Object, ObjectEvent, Snapshot};

/// One watcher event, with the object already converted.
#[derive(Clone, Debug)]
pub enum KindEvent {
    Init,
    InitApply(Object),
    InitDone,
    Apply(Object),
    Delete(Object),
}

/// Folds the watchers' events into a snapshot.
#[derive(Debug, Default)]
pub struct Aggregator {
    snapshot: Snapshot,
    synced: BTreeSet<Kind>,
    /// Objects of a relist in progress, by kind.
    relisting: HashMap<Kind, Vec<Object>>,
    generation: u64,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; true when the snapshot changed.
    pub fn on_event(&mut self, kind: Kind, event: KindEvent) -> bool {
        let change = match event {
            KindEvent::Init => {
                self.relisting.insert(kind, Vec::new());
                None
            }
            KindEvent::InitApply(object) => {
                self.relisting.entry(kind).or_default().push(object);
                None
            }
            KindEvent::InitDone => {
                let objects = self.relisting.remove(&kind).unwrap_or_default();
                if self.synced.insert(kind) {
                    info!(
                        kind = kind.name(),
                        objects = objects.len(),
                        "initial list done"
                    );
                }
                Some(ObjectEvent::Resynced { kind, objects })
            }
            KindEvent::Apply(object) => Some(ObjectEvent::Applied(object)),
            KindEvent::Delete(object) => Some(ObjectEvent::Deleted(object.key())),
        };
        match change {
            Some(event) => {
                self.snapshot.apply(event);
                self.generation += 1;
                true
            }
            None => false,
        }
    }

    /// Every kind finished its first list.
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn view(&self) -> SourceView {
        SourceView {
            objects: Arc::new(self.snapshot.clone()),
            synced: self.synced(),
            bad_documents: BTreeMap::new(),
            generation: self.generation,
        }
    }
}

/// How long the aggregator gathers events before publishing (a relist
/// of thousands of objects arrives as one burst).
const PUBLISH_QUIET: Duration = Duration::from_millis(20);

/// The API server as a [`Source`].
pub struct ClusterSource {
    rx: watch::Receiver<SourceView>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterSource {
    /// Connects with `kube::Config::infer()` (in-cluster config or
    /// KUBECONFIG) and starts one watcher per kind.
    pub async fn start() -> anyhow::Result<Self> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no cluster config (in-cluster or KUBECONFIG); use --manifests DIR for standalone mode: {e}"))?;
        info!(cluster = %config.cluster_url, "watching the API server");
        let client = Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("building the API client: {e}"))?;
        let (events_tx, events_rx) = mpsc::channel(1024);
        let mut tasks = vec![
            spawn_watch::<Namespace>(client.clone(), Kind::Namespace, events_tx.clone()),
            spawn_watch::<Node>(client.clone(), Kind::Node, events_tx.clone()),
            spawn_watch::<Pod>(client.clone(), Kind::Pod, events_tx.clone()),
            spawn_watch::<Service>(client.clone(), Kind::Service, events_tx.clone()),
            spawn_watch::<EndpointSlice>(client.clone(), Kind::EndpointSlice, events_tx.clone()),
            spawn_watch::<NetworkPolicy>(client, Kind::NetworkPolicy, events_tx),
        ];
        let (publish, rx) = watch::channel(SourceView::default());
        tasks.push(tokio::spawn(aggregate(events_rx, publish)));
        Ok(Self { rx, tasks })
    }
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Source for ClusterSource {
    async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    fn current(&mut self) -> SourceView {
        self.rx.borrow_and_update().clone()
    }
}

fn spawn_watch<K>(
    client: Client,
    kind: Kind,
    events: mpsc::Sender<(Kind, KindEvent)>,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Object: From<K>,
{
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(Event::Init) => KindEvent::Init,
                Ok(Event::InitApply(o)) => KindEvent::InitApply(Object::from(o)),
                Ok(Event::InitDone) => KindEvent::InitDone,
                Ok(Event::Apply(o)) => KindEvent::Apply(Object::from(o)),
                Ok(Event::Delete(o)) => KindEvent::Delete(Object::from(o)),
                Err(e) => {
                    warn!(kind = kind.name(), error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if events.send((kind, event)).await.is_err() {
                return;
            }
        }
    })
}

async fn aggregate(
    mut events: mpsc::Receiver<(Kind, KindEvent)>,
    publish: watch::Sender<SourceView>,
) {
    let mut aggregator = Aggregator::new();
    while let Some((kind, event)) = events.recv().await {
        let mut changed = aggregator.on_event(kind, event);
        // Gather the rest of a burst before copying the snapshot.
        loop {
            match tokio::time::timeout(PUBLISH_QUIET, events.recv()).await {
                Ok(Some((kind, event))) => changed |= aggregator.on_event(kind, event),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if changed {
            publish.send_replace(aggregator.view());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str) -> Object {
        Object::from(Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn synced_only_after_every_kind_listed_once() {
        let mut a = Aggregator::new();
        assert!(!a.on_event(Kind::Service, KindEvent::Init));
        assert!(!a.on_event(Kind::Service, KindEvent::InitApply(service("a"))));
        assert!(a.on_event(Kind::Service, KindEvent::InitDone));
        assert_eq!(a.view().snapshot().counts().services, 1);
        assert!(!a.synced());
        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Service) {
            a.on_event(kind, KindEvent::Init);
            a.on_event(kind, KindEvent::InitDone);
        }
        assert!(a.synced());
        assert!(a.view().synced);
    }

    #[test]
    fn relist_replaces_and_events_apply() {
        let mut a = Aggregator::new();
        a.on_event(Kind::Service, KindEvent::Apply(service("a")));
        a.on_event(Kind::Service, KindEvent::Apply(service("b")));
        assert_eq!(a.view().snapshot().counts().services, 2);
        a.on_event(Kind::Service, KindEvent::Delete(service("a")));
        assert_eq!(a.view().snapshot().counts().services, 1);
        // A relist after a watch error: only what it lists stays.
        a.on_event(Kind::Service, KindEvent::Init);
        a.on_event(Kind::Service, KindEvent::InitApply(service("c")));
        assert_eq!(
            a.view().snapshot().counts().services,
            1,
            "nothing changes before InitDone"
        );
        a.on_event(Kind::Service, KindEvent::InitDone);
        let view = a.view();
        let names: Vec<&str> = view
            .snapshot()
            .services
            .keys()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, vec!["c"]);
    }
}
