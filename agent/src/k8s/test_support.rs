//! Building snapshots from YAML in tests: objects read the way the
//! standalone source reads them.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::Snapshot;

/// A snapshot from YAML documents; panics on any bad document, so a typo
/// in a test cannot silently drop an object.
pub fn snapshot(yaml: &str) -> Snapshot {
    let parsed = crate::manifests::parse_yaml(Path::new("test.yaml"), yaml);
    assert!(
        parsed.errors.is_empty(),
        "test manifests: {:?}",
        parsed.errors
    );
    Snapshot::from_objects(parsed.objects.into_iter().map(|p| p.object))
}

/// A Node with an InternalIP and (optionally) a pod CIDR.
pub fn node(name: &str, ip: &str, pod_cidr: Option<&str>) -> String {
    let cidr = pod_cidr
        .map(|c| format!("spec: {{podCIDR: {c}}}\n"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{cidr}\
         status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
    )
}

/// A running pod with `labels` (flow map body), on `node`, with `ip` and the
/// Ready condition `ready`, and container ports given as `name:port/PROTO`.
pub fn pod(
    ns: &str,
    name: &str,
    labels: &str,
    node: &str,
    ip: &str,
    ready: bool,
    ports: &[&str],
) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| {
            let (name, rest) = p.split_once(':').unwrap();
            let (port, proto) = rest.split_once('/').unwrap_or((rest, "TCP"));
            format!("{{name: {name}, containerPort: {port}, protocol: {proto}}}")
        })
        .collect();
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: {ns}, name: {name}, labels: {{{labels}}}}}\n\
         spec:\n  nodeName: {node}\n  containers: [{{name: c, image: x, ports: [{}]}}]\n\
         status:\n  phase: Running\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"{}\"}}]\n",
        ports.join(", "),
        if ready { "True" } else { "False" }
    )
}
