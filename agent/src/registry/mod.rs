//! Pod registration: the CNI plugin tells the agent about each pod it
//! wires ([`protocol`] over the socket served by [`server`]); the agent
//! keeps a [`record`] file per pod so it can [`rebuild`] its list after a
//! restart, and an in-memory [`Registry`] the plan reads.

pub mod hub;
pub mod links;
pub mod monitor;
pub mod monitor_client;
pub mod protocol;
pub mod rebuild;
pub mod record;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::k8s::ObjectName;

pub use hub::{MonitorHub, Subscription};
pub use monitor::{MonitorEvent, MonitorFilter, MonitorVerdict};
pub use protocol::{EndpointSpec, ErrorCode, Op, Request, Response};
pub use record::{AttachmentKey, EndpointRecord, RecordStore};

/// The registered endpoints of this node, by attachment.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_key: BTreeMap<AttachmentKey, EndpointRecord>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces; returns the record it replaced.
    pub fn insert(&mut self, record: EndpointRecord) -> Option<EndpointRecord> {
        self.by_key.insert(record.key(), record)
    }

    pub fn remove(&mut self, key: &AttachmentKey) -> Option<EndpointRecord> {
        self.by_key.remove(key)
    }

    pub fn get(&self, key: &AttachmentKey) -> Option<&EndpointRecord> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.by_key.values()
    }

    /// Pod addresses by pod namespace/name, for the plan: a registered
    /// address wins over the Pod object's `status.podIP`. Attachments
    /// without a pod name (runtimes that send no K8S_ args) are skipped.
    pub fn pod_ips(&self) -> HashMap<ObjectName, Ipv4Addr> {
        self.by_key
            .values()
            .filter(|r| !r.endpoint.pod_name.is_empty())
            .filter_map(|r| {
                let name = ObjectName::new(&r.endpoint.pod_namespace, &r.endpoint.pod_name);
                r.ip().map(|ip| (name, ip))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::record::tests::spec;

    #[test]
    fn pod_ips_come_from_named_registrations() {
        let mut registry = Registry::new();
        registry.insert(EndpointRecord::new(spec("a", 5)));
        let mut anonymous = spec("b", 6);
        anonymous.pod_name.clear();
        registry.insert(EndpointRecord::new(anonymous));
        let ips = registry.pod_ips();
        assert_eq!(ips.len(), 1);
        assert_eq!(
            ips.get(&ObjectName::new("default", "pod-a")),
            Some(&Ipv4Addr::new(10, 244, 1, 5))
        );
        let replaced = registry.insert(EndpointRecord::new(spec("a", 7)));
        assert_eq!(replaced.unwrap().endpoint.host_ifindex, 5);
        assert_eq!(registry.len(), 2);
        assert!(registry.remove(&AttachmentKey::new("a", "eth0")).is_some());
        assert!(registry.get(&AttachmentKey::new("a", "eth0")).is_none());
    }
}
