//! Indexes over a snapshot, so endpoint computation for 10k Services does
//! not scan every pod or slice per Service.

use std::collections::BTreeMap;

use foldhash::HashMap;
use foldhash::HashMapExt;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::k8s::{Snapshot, labels};

/// The label EndpointSlices name their Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Pods by (namespace, label key, label value).
pub struct PodIndex<'a> {
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Pod>>,
}

impl<'a> PodIndex<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut by_label: HashMap<_, Vec<&Pod>> = HashMap::new();
        for (name, pod) in &snapshot.pods {
            for (key, value) in pod.metadata.labels.iter().flatten() {
                by_label
                    .entry((name.namespace.as_str(), key.as_str(), value.as_str()))
                    .or_default()
                    .push(pod.as_ref());
            }
        }
        Self { by_label }
    }

    /// Pods in `namespace` matching a non-empty selector, in name order.
    /// Walks the shortest posting list among the selector's labels.
    pub fn select<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Pod> + 's {
        let shortest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(namespace, k.as_str(), v.as_str()))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
            })
            .min_by_key(|pods| pods.len())
            .unwrap_or_default();
        shortest
            .iter()
            .copied()
            .filter(move |pod| labels::matches(selector, pod.metadata.labels.as_ref()))
    }
}

/// EndpointSlices by (namespace, Service name), each list in slice-name
/// order (kube-proxy merges a Service's slices in that order).
pub struct SliceIndex<'a> {
    /// namespace → Service name → slices.
    by_service: HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>,
}

impl<'a> SliceIndex<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut by_service: HashMap<&str, HashMap<&str, Vec<&EndpointSlice>>> = HashMap::new();
        for (name, slice) in &snapshot.endpoint_slices {
            if let Some(service) = Self::service_of(slice) {
                by_service
                    .entry(name.namespace.as_str())
                    .or_default()
                    .entry(service)
                    .or_default()
                    .push(slice.as_ref());
            }
        }
        Self { by_service }
    }

    /// The Service a slice belongs to (its `kubernetes.io/service-name`).
    pub fn service_of(slice: &EndpointSlice) -> Option<&str> {
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
    }

    pub fn for_service(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.by_service
            .get(namespace)
            .and_then(|services| services.get(service))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
