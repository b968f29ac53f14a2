//! The Kubernetes objects the agent knows, and how they are named.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The kinds the agent watches (in cluster) or reads (standalone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
    ];

    /// The `kind` field, e.g. `"EndpointSlice"`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The `apiVersion` the agent reads this kind in.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Node | Kind::Pod | Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    /// Namespaced kinds live in a namespace; the others are cluster-wide.
    pub const fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind for an `apiVersion`/`kind` pair, if the agent reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `namespace/name`; the namespace is empty for cluster-wide kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

impl ObjectName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-wide object's name (no namespace).
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }

    /// The name of an object of `kind` from its metadata (missing fields
    /// are empty; the sources reject nameless objects before this).
    pub fn of(kind: Kind, meta: &ObjectMeta) -> Self {
        let namespace = if kind.namespaced() {
            meta.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        Self::new(namespace, meta.name.clone().unwrap_or_default())
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Which object: kind plus name. Displays as `Service default/web`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub name: ObjectName,
}

impl ObjectKey {
    pub fn new(kind: Kind, name: ObjectName) -> Self {
        Self { kind, name }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// One object of a kind the agent knows. Shared (`Arc`) so snapshots are
/// cheap to copy, as kube's reflector stores hand them out.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    NetworkPolicy(Arc<NetworkPolicy>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        ObjectKey::new(kind, ObjectName::of(kind, self.metadata()))
    }
}

macro_rules! object_from {
    ($($kind:ident),*) => {$(
        impl From<$kind> for Object {
            fn from(o: $kind) -> Self {
                Object::$kind(Arc::new(o))
            }
        }
        impl From<Arc<$kind>> for Object {
            fn from(o: Arc<$kind>) -> Self {
                Object::$kind(o)
            }
        }
    )*};
}
object_from!(Namespace, Node, Pod, Service, EndpointSlice, NetworkPolicy);

/// What a source of objects reports. The in-cluster watcher (kube
/// reflectors) maps its watch events onto these; the standalone source
/// produces whole [`Snapshot`](super::Snapshot)s instead.
#[derive(Clone, Debug)]
pub enum ObjectEvent {
    /// Created or changed.
    Applied(Object),
    Deleted(ObjectKey),
    /// A relist of one kind: every object of `kind` is replaced by
    /// `objects` (what a reflector's Init..InitDone sequence amounts to).
    Resynced {
        kind: Kind,
        objects: Vec<Object>,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_type_meta() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type(kind.api_version(), kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_type("v1", "EndpointSlice"), None);
        assert_eq!(Kind::from_type("apps/v1", "Deployment"), None);
    }

    #[test]
    fn cluster_wide_names_drop_the_namespace() {
        let meta = ObjectMeta {
            name: Some("n1".into()),
            namespace: Some("ignored".into()),
            ..Default::default()
        };
        assert_eq!(ObjectName::of(Kind::Node, &meta), ObjectName::cluster("n1"));
        assert_eq!(
            ObjectName::of(Kind::Pod, &meta).to_string(),
            "ignored/n1".to_string()
        );
        let key = Object::from(Node {
            metadata: meta,
            ..Default::default()
        })
        .key();
        assert_eq!(key.to_string(), "Node n1");
    }
}
