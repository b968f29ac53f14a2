#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::select::{self, Candidate};
use super::*;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::k8s::{ObjectName, ObjectWarning, Snapshot};
use crate::plan::{Backend, Protocol};

fn service(name: &str, extra_spec: &str, ports: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}}}\n\
         spec:\n  clusterIP: 10.96.0.1\n{extra_spec}  ports: [{ports}]\n"
    )
}

const WEB: &str = "  selector: {app: web}\n";

fn endpoints_of(
    snap: &Snapshot,
    name: &str,
    overrides: &HashMap<ObjectName, Ipv4Addr>,
) -> (Vec<Endpoint>, Vec<ObjectWarning>) {
    let key = ObjectName::new("default", name);
    let svc = snap.services.get(&key).unwrap();
    let mut warnings = Vec::new();
    let eps = EndpointSources::new(snap).for_service(&key, svc, overrides, &mut warnings);
    (eps, warnings)
}

/// (address, ready, serving, terminating) per endpoint.
fn states(eps: &[Endpoint]) -> Vec<(String, bool, bool, bool)> {
    eps.iter()
        .map(|e| {
            let c = e.conditions;
            (e.address.to_string(), c.ready, c.serving, c.terminating)
        })
        .collect()
}

fn nodes() -> String {
    node("n1", "192.168.0.1", None) + &node("n2", "192.168.0.2", None)
}

#[test]
fn selector_picks_matching_pods_of_the_services_namespace() {
    let snap = snapshot(
        &(nodes()
            + &service("web", WEB, "{port: 80}")
            + &pod("default", "a", "app: web", "n1", "10.0.1.1", true, &[])
            + &pod(
                "default",
                "b",
                "app: web, extra: x",
                "n2",
                "10.0.2.1",
                true,
                &[],
            )
            + &pod("default", "c", "app: db", "n1", "10.0.1.2", true, &[])
            + &pod("other", "d", "app: web", "n1", "10.0.1.3", true, &[])),
    );
    let (eps, warnings) = endpoints_of(&snap, "web", &HashMap::new());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        states(&eps),
        vec![
            ("10.0.1.1".into(), true, true, false),
            ("10.0.2.1".into(), true, true, false)
        ]
    );
    assert_eq!(eps[0].node_name.as_deref(), Some("n1"));
    assert_eq!(eps[0].target, Some(ObjectName::new("default", "a")));
    // targetPort unset: the port itself.
    assert_eq!(eps[0].port("", Protocol::Tcp), Some(80));
}

#[test]
fn an_empty_selector_selects_nothing() {
    let snap = snapshot(
        &(nodes()
            + &service("web", "  selector: {}\n", "{port: 80}")
            + &pod("default", "a", "app: web", "n1", "10.0.1.1", true, &[])),
    );
    assert!(endpoints_of(&snap, "web", &HashMap::new()).0.is_empty());
}

#[test]
fn readiness_terminating_and_terminal_phases() {
    let terminating = pod("default", "term", "app: web", "n1", "10.0.1.3", true, &[]).replace(
        "metadata: {",
        "metadata: {deletionTimestamp: \"2024-01-01T00:00:00Z\", ",
    );
    let terminating_unready = pod("default", "term2", "app: web", "n1", "10.0.1.4", false, &[])
        .replace(
            "metadata: {",
            "metadata: {deletionTimestamp: \"2024-01-01T00:00:00Z\", ",
        );
    let succeeded = pod("default", "done", "app: web", "n1", "10.0.1.5", false, &[])
        .replace("phase: Running", "phase: Succeeded");
    let failed = pod(
        "default",
        "failed",
        "app: web",
        "n1",
        "10.0.1.6",
        false,
        &[],
    )
    .replace("phase: Running", "phase: Failed");
    let pending = pod(
        "default",
        "pending",
        "app: web",
        "n1",
        "10.0.1.7",
        false,
        &[],
    )
    .replace("phase: Running", "phase: Pending");
    let snap = snapshot(
        &(nodes()
            + &service("web", WEB, "{port: 80}")
            + &pod("default", "ready", "app: web", "n1", "10.0.1.1", true, &[])
            + &pod(
                "default",
                "unready",
                "app: web",
                "n1",
                "10.0.1.2",
                false,
                &[],
            )
            + &terminating
            + &terminating_unready
            + &succeeded
            + &failed
            + &pending),
    );
    let (eps, _) = endpoints_of(&snap, "web", &HashMap::new());
    assert_eq!(
        states(&eps),
        vec![
            ("10.0.1.7".into(), false, false, false), // pending
            ("10.0.1.1".into(), true, true, false),   // ready
            ("10.0.1.3".into(), false, true, true),   // term: serving, not ready
            ("10.0.1.4".into(), false, false, true),  // term2
            ("10.0.1.2".into(), false, false, false), // unready
        ]
    );
}

#[test]
fn publish_not_ready_addresses_makes_every_pod_ready_and_tolerates_unknown_nodes() {
    let terminating = pod("default", "term", "app: web", "n1", "10.0.1.3", false, &[]).replace(
        "metadata: {",
        "metadata: {deletionTimestamp: \"2024-01-01T00:00:00Z\", ",
    );
    let snap = snapshot(
        &(nodes()
            + &service(
                "web",
                "  selector: {app: web}\n  publishNotReadyAddresses: true\n",
                "{port: 80}",
            )
            + &pod(
                "default",
                "unready",
                "app: web",
                "n1",
                "10.0.1.2",
                false,
                &[],
            )
            + &pod("default", "lost", "app: web", "gone", "10.0.9.1", true, &[])
            + &terminating),
    );
    let (eps, warnings) = endpoints_of(&snap, "web", &HashMap::new());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        states(&eps),
        vec![
            ("10.0.9.1".into(), true, true, false),
            ("10.0.1.3".into(), true, false, true),
            ("10.0.1.2".into(), true, false, false),
        ]
    );
}

#[test]
fn pods_on_unknown_nodes_are_skipped_with_one_warning() {
    let snap = snapshot(
        &(nodes()
            + &service("web", WEB, "{port: 80}")
            + &pod("default", "a", "app: web", "n1", "10.0.1.1", true, &[])
            + &pod("default", "b", "app: web", "gone", "10.0.9.1", true, &[])
            + &pod("default", "c", "app: web", "gone", "10.0.9.2", true, &[])),
    );
    let (eps, warnings) = endpoints_of(&snap, "web", &HashMap::new());
    assert_eq!(states(&eps), vec![("10.0.1.1".into(), true, true, false)]);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].object.to_string(), "Service default/web");
    assert!(
        warnings[0].message.starts_with("2 matching pod(s) skipped"),
        "{}",
        warnings[0].message
    );
}

#[test]
fn addresses_come_from_cni_registrations_then_status() {
    let no_ip = pod("default", "wired", "app: web", "n1", "10.0.1.1", true, &[])
        .replace("  podIP: 10.0.1.1\n", "");
    let v6_only = pod("default", "v6", "app: web", "n1", "fd00::1", true, &[]);
    let dual = pod("default", "dual", "app: web", "n1", "fd00::2", true, &[]).replace(
        "  podIP: fd00::2\n",
        "  podIP: fd00::2\n  podIPs: [{ip: \"fd00::2\"}, {ip: 10.0.1.9}]\n",
    );
    let bad = pod("default", "bad", "app: web", "n1", "not-an-ip", true, &[]);
    let snap = snapshot(
        &(nodes()
            + &service("web", WEB, "{port: 80}")
            + &no_ip
            + &pod("default", "stale", "app: web", "n1", "10.0.1.2", true, &[])
            + &v6_only
            + &dual
            + &bad),
    );
    let (eps, _) = endpoints_of(&snap, "web", &HashMap::new());
    assert_eq!(
        states(&eps),
        vec![
            ("10.0.1.9".into(), true, true, false),
            ("10.0.1.2".into(), true, true, false)
        ]
    );

    let overrides = HashMap::from([
        (
            ObjectName::new("default", "wired"),
            Ipv4Addr::new(10, 0, 1, 100),
        ),
        (
            ObjectName::new("default", "stale"),
            Ipv4Addr::new(10, 0, 1, 101),
        ),
    ]);
    let (eps, warnings) = endpoints_of(&snap, "web", &overrides);
    assert_eq!(
        eps.iter()
            .map(|e| e.address.to_string())
            .collect::<Vec<_>>(),
        vec!["10.0.1.9", "10.0.1.101", "10.0.1.100"]
    );
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("not-an-ip"), "{warnings:?}");
}

#[test]
fn named_target_ports_resolve_per_pod_and_protocol() {
    let snap = snapshot(
        &(nodes()
            + &service(
                "web",
                WEB,
                "{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP, targetPort: dns}, \
                 {name: fixed, port: 90, targetPort: 9090}",
            )
            + &pod(
                "default",
                "a",
                "app: web",
                "n1",
                "10.0.1.1",
                true,
                &["http:8080", "dns:5353/UDP"],
            )
            + &pod(
                "default",
                "b",
                "app: web",
                "n1",
                "10.0.1.2",
                true,
                &["http:8081", "dns:5353/TCP"],
            )
            + &pod(
                "default",
                "c",
                "app: web",
                "n1",
                "10.0.1.3",
                true,
                &["other:1"],
            )),
    );
    let (eps, _) = endpoints_of(&snap, "web", &HashMap::new());
    let ports: Vec<_> = eps
        .iter()
        .map(|e| {
            (
                e.port("http", Protocol::Tcp),
                e.port("dns", Protocol::Udp),
                e.port("fixed", Protocol::Tcp),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            (Some(8080), Some(5353), Some(9090)),
            // b's "dns" is TCP: no endpoint for the UDP port.
            (Some(8081), None, Some(9090)),
            (None, None, Some(9090)),
        ]
    );
}

const SLICE_HEAD: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n";

#[test]
fn explicit_slices_serve_selectorless_services() {
    let slice = format!(
        "{SLICE_HEAD}metadata: {{namespace: default, name: ext-1, labels: {{kubernetes.io/service-name: ext}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: dns, port: 53, protocol: UDP}}, {{name: noport}}]\n\
         endpoints:\n\
         - {{addresses: [10.1.0.1]}}\n\
         - {{addresses: [10.1.0.2, 10.1.0.22], nodeName: n1, conditions: {{ready: false, serving: true, terminating: true}}}}\n\
         - {{addresses: []}}\n\
         - {{addresses: [bogus]}}\n"
    );
    let v6 = format!(
        "{SLICE_HEAD}metadata: {{namespace: default, name: ext-2, labels: {{kubernetes.io/service-name: ext}}}}\n\
         addressType: IPv6\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"fd00::1\"]}}]\n"
    );
    let other = format!(
        "{SLICE_HEAD}metadata: {{namespace: default, name: x, labels: {{kubernetes.io/service-name: other}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [10.9.9.9]}}]\n"
    );
    let snap = snapshot(&(service("ext", "", "{name: http, port: 80}") + &slice + &v6 + &other));
    let (eps, warnings) = endpoints_of(&snap, "ext", &HashMap::new());
    assert_eq!(
        states(&eps),
        vec![
            ("10.1.0.1".into(), true, true, false),
            ("10.1.0.2".into(), false, true, true)
        ]
    );
    assert_eq!(eps[1].node_name.as_deref(), Some("n1"));
    assert_eq!(eps[0].port("http", Protocol::Tcp), Some(8080));
    assert_eq!(eps[0].port("dns", Protocol::Udp), Some(53));
    let messages: Vec<_> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("EndpointSlice default/ext-1: port \"noport\""),
        "{messages:?}"
    );
    assert!(messages[1].contains("bogus"), "{messages:?}");
}

#[test]
fn with_a_selector_controller_slices_are_replaced_and_custom_ones_merged() {
    let managed = format!(
        "{SLICE_HEAD}metadata: {{namespace: default, name: web-abc, labels: {{kubernetes.io/service-name: web, \
         endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}}}}\n\
         addressType: IPv4\nports: [{{port: 80}}]\nendpoints: [{{addresses: [10.5.5.5]}}]\n"
    );
    let custom = format!(
        "{SLICE_HEAD}metadata: {{namespace: default, name: web-extra, labels: {{kubernetes.io/service-name: web, \
         endpointslice.kubernetes.io/managed-by: me}}}}\n\
         addressType: IPv4\nports: [{{port: 80}}]\nendpoints: [{{addresses: [10.6.6.6]}}]\n"
    );
    let snap = snapshot(
        &(nodes()
            + &service("web", WEB, "{port: 80}")
            + &pod("default", "a", "app: web", "n1", "10.0.1.1", true, &[])
            + &managed
            + &custom),
    );
    let (eps, _) = endpoints_of(&snap, "web", &HashMap::new());
    assert_eq!(
        eps.iter()
            .map(|e| e.address.to_string())
            .collect::<Vec<_>>(),
        vec!["10.0.1.1", "10.6.6.6"]
    );
}

fn candidate(last: u8, ready: bool, serving: bool, terminating: bool, local: bool) -> Candidate {
    Candidate {
        address: Ipv4Addr::new(10, 0, 0, last),
        port: 80,
        conditions: Conditions {
            ready,
            serving,
            terminating,
        },
        local,
    }
}

fn addresses(backends: &[Backend]) -> Vec<(u8, bool)> {
    backends
        .iter()
        .map(|b| (b.address.octets()[3], b.terminating))
        .collect()
}

#[test]
fn ready_endpoints_win_then_serving_terminating_ones_then_none() {
    let mixed = [
        candidate(1, true, true, false, false),
        candidate(2, false, true, true, true),
        candidate(3, false, false, false, true),
        candidate(4, true, true, false, true),
    ];
    assert_eq!(
        addresses(&select::cluster(&mixed)),
        vec![(1, false), (4, false)]
    );
    assert_eq!(addresses(&select::local(&mixed)), vec![(4, false)]);

    let terminating = [
        candidate(1, false, true, true, false),
        candidate(2, false, false, true, false), // terminating, not serving: never
        candidate(3, false, false, false, false),
    ];
    assert_eq!(addresses(&select::cluster(&terminating)), vec![(1, true)]);
    assert!(select::local(&terminating).is_empty());

    let dead = [
        candidate(1, false, false, false, true),
        candidate(2, false, false, true, true),
    ];
    assert!(select::cluster(&dead).is_empty());
    assert!(select::cluster(&[]).is_empty());
}

#[test]
fn local_policy_falls_back_to_local_terminating_ones_even_when_remote_ones_are_ready() {
    let c = [
        candidate(1, true, true, false, false),
        candidate(2, false, true, true, true),
    ];
    assert_eq!(addresses(&select::cluster(&c)), vec![(1, false)]);
    assert_eq!(addresses(&select::local(&c)), vec![(2, true)]);
}

#[test]
fn candidates_are_per_port_deduplicated_and_sorted_preferring_local_duplicates() {
    let ep = |last: u8, node: Option<&str>, ready: bool, ports: &[(&str, u16)]| Endpoint {
        address: Ipv4Addr::new(10, 0, 0, last),
        node_name: node.map(str::to_string),
        conditions: Conditions {
            ready,
            serving: ready,
            terminating: false,
        },
        target: None,
        ports: ports
            .iter()
            .map(|(name, port)| EndpointPort {
                name: name.to_string(),
                protocol: Protocol::Tcp,
                port: *port,
            })
            .collect(),
    };
    let eps = [
        ep(9, Some("n2"), true, &[("http", 80)]),
        ep(3, Some("n2"), true, &[("http", 80), ("admin", 9000)]),
        ep(3, Some("n1"), false, &[("http", 80)]),
        ep(3, Some("n2"), true, &[("http", 80)]),
        ep(5, None, true, &[("admin", 9000)]),
    ];
    let http = select::candidates(&eps, "http", Protocol::Tcp, "n1");
    assert_eq!(
        http.iter()
            .map(|c| (c.address.octets()[3], c.local, c.conditions.ready))
            .collect::<Vec<_>>(),
        vec![(3, true, false), (9, false, true)]
    );
    let admin = select::candidates(&eps, "admin", Protocol::Tcp, "n1");
    assert_eq!(
        admin
            .iter()
            .map(|c| (c.address.octets()[3], c.port))
            .collect::<Vec<_>>(),
        vec![(3, 9000), (5, 9000)]
    );
    assert!(select::candidates(&eps, "http", Protocol::Udp, "n1").is_empty());
}
