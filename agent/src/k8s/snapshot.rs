//! The agent's view of the cluster: every known object by kind and name.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::object::{Kind, Object, ObjectEvent, ObjectKey, ObjectName};

/// All objects, one map per kind, keyed by [`ObjectName`] (sorted, so every
/// walk over a snapshot is deterministic). Both sources feed one: the
/// standalone source builds a fresh snapshot per directory change; the
/// in-cluster watcher keeps one and [`apply`](Self::apply)s events to it.
///
/// The maps are public for reading; change them through [`insert`],
/// [`remove`] and [`apply`] so keys always match the objects' metadata.
///
/// [`insert`]: Self::insert
/// [`remove`]: Self::remove
/// [`apply`]: Self::apply
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub namespaces: BTreeMap<ObjectName, Arc<Namespace>>,
    pub nodes: BTreeMap<ObjectName, Arc<Node>>,
    pub pods: BTreeMap<ObjectName, Arc<Pod>>,
    pub services: BTreeMap<ObjectName, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjectName, Arc<EndpointSlice>>,
    pub network_policies: BTreeMap<ObjectName, Arc<NetworkPolicy>>,
}

/// Object counts per kind, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    pub namespaces: usize,
    pub nodes: usize,
    pub pods: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub network_policies: usize,
}

impl ObjectCounts {
    pub fn get(&self, kind: Kind) -> usize {
        match kind {
            Kind::Namespace => self.namespaces,
            Kind::Node => self.nodes,
            Kind::Pod => self.pods,
            Kind::Service => self.services,
            Kind::EndpointSlice => self.endpoint_slices,
            Kind::NetworkPolicy => self.network_policies,
        }
    }

    pub fn total(&self) -> usize {
        Kind::ALL.into_iter().map(|k| self.get(k)).sum()
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot holding `objects`; later ones replace earlier ones of the
    /// same key.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Self::new();
        for object in objects {
            snapshot.insert(object);
        }
        snapshot
    }

    /// Adds or replaces an object; returns the one it replaced.
    pub fn insert(&mut self, object: Object) -> Option<Object> {
        let name = object.key().name;
        match object {
            Object::Namespace(o) => self.namespaces.insert(name, o).map(Object::from),
            Object::Node(o) => self.nodes.insert(name, o).map(Object::from),
            Object::Pod(o) => self.pods.insert(name, o).map(Object::from),
            Object::Service(o) => self.services.insert(name, o).map(Object::from),
            Object::EndpointSlice(o) => self.endpoint_slices.insert(name, o).map(Object::from),
            Object::NetworkPolicy(o) => self.network_policies.insert(name, o).map(Object::from),
        }
    }

    /// Removes an object; returns it if it was there.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        let name = &key.name;
        match key.kind {
            Kind::Namespace => self.namespaces.remove(name).map(Object::from),
            Kind::Node => self.nodes.remove(name).map(Object::from),
            Kind::Pod => self.pods.remove(name).map(Object::from),
            Kind::Service => self.services.remove(name).map(Object::from),
            Kind::EndpointSlice => self.endpoint_slices.remove(name).map(Object::from),
            Kind::NetworkPolicy => self.network_policies.remove(name).map(Object::from),
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Object> {
        let name = &key.name;
        match key.kind {
            Kind::Namespace => self.namespaces.get(name).cloned().map(Object::from),
            Kind::Node => self.nodes.get(name).cloned().map(Object::from),
            Kind::Pod => self.pods.get(name).cloned().map(Object::from),
            Kind::Service => self.services.get(name).cloned().map(Object::from),
            Kind::EndpointSlice => self.endpoint_slices.get(name).cloned().map(Object::from),
            Kind::NetworkPolicy => self.network_policies.get(name).cloned().map(Object::from),
        }
    }

    /// Removes every object of one kind.
    pub fn clear_kind(&mut self, kind: Kind) {
        match kind {
            Kind::Namespace => self.namespaces.clear(),
            Kind::Node => self.nodes.clear(),
            Kind::Pod => self.pods.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => self.endpoint_slices.clear(),
            Kind::NetworkPolicy => self.network_policies.clear(),
        }
    }

    /// Applies one source event.
    pub fn apply(&mut self, event: ObjectEvent) {
        match event {
            ObjectEvent::Applied(object) => {
                self.insert(object);
            }
            ObjectEvent::Deleted(key) => {
                self.remove(&key);
            }
            ObjectEvent::Resynced { kind, objects } => {
                self.clear_kind(kind);
                // An object of another kind in a resync is a caller bug; it
                // is still stored under its own kind rather than dropped.
                for object in objects {
                    self.insert(object);
                }
            }
        }
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        // ObjectName owns its strings; build the key once per lookup.
        self.nodes.get(&ObjectName::cluster(name))
    }

    pub fn counts(&self) -> ObjectCounts {
        ObjectCounts {
            namespaces: self.namespaces.len(),
            nodes: self.nodes.len(),
            pods: self.pods.len(),
            services: self.services.len(),
            endpoint_slices: self.endpoint_slices.len(),
            network_policies: self.network_policies.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts().total() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(ns: &str, name: &str, port: i32) -> Object {
        Object::from(Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn node(name: &str) -> Object {
        Object::from(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn events_apply_replace_delete_and_resync() {
        let mut snap = Snapshot::new();
        snap.apply(ObjectEvent::Applied(service("default", "web", 80)));
        snap.apply(ObjectEvent::Applied(service("default", "web", 81)));
        snap.apply(ObjectEvent::Applied(node("n1")));
        assert_eq!(snap.counts().services, 1);
        let key = ObjectKey::new(Kind::Service, ObjectName::new("default", "web"));
        assert_eq!(snap.get(&key), Some(service("default", "web", 81)));
        assert!(snap.node("n1").is_some());

        snap.apply(ObjectEvent::Resynced {
            kind: Kind::Node,
            objects: vec![node("n2"), node("n3")],
        });
        assert!(snap.node("n1").is_none());
        assert_eq!(snap.counts().nodes, 2);
        assert_eq!(snap.counts().services, 1, "a resync touches one kind only");

        snap.apply(ObjectEvent::Deleted(key.clone()));
        assert_eq!(snap.get(&key), None);
        assert_eq!(snap.counts().total(), 2);
    }

    #[test]
    fn from_objects_keeps_the_last_of_a_key() {
        let snap = Snapshot::from_objects([service("a", "s", 1), service("a", "s", 2)]);
        assert_eq!(snap.counts().total(), 1);
        let svc = snap.services.values().next().unwrap();
        assert_eq!(
            svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            2
        );
    }
}
