#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::*;
use crate::k8s::Snapshot;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::plan::{Algorithm, Frontend, FrontendKind, NodeRoute, Protocol, Scope};

fn ctx() -> PlanContext {
    PlanContext {
        node_name: "n1".into(),
        ..PlanContext::default()
    }
}

/// Two nodes; n1 (this node) has two InternalIPs.
fn cluster() -> String {
    node("n1", "192.168.0.1", Some("10.0.1.0/24")).replace(
        "addresses: [",
        "addresses: [{type: ExternalIP, address: 203.0.113.1}, {type: InternalIP, address: 192.168.1.1}, ",
    ) + &node("n2", "192.168.0.2", Some("10.0.2.0/24"))
}

fn service(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}}}\nspec:\n{spec}"
    )
}

/// Ready web pods: a on n1, b on n2, both serving http on 8080.
fn web_pods() -> String {
    pod(
        "default",
        "a",
        "app: web",
        "n1",
        "10.0.1.10",
        true,
        &["http:8080"],
    ) + &pod(
        "default",
        "b",
        "app: web",
        "n2",
        "10.0.2.10",
        true,
        &["http:8080"],
    )
}

fn plan(yaml: &str) -> PlanResult {
    compute_plan(&snapshot(yaml), &ctx())
}

/// A compact view: "kind address:port/proto scope [flags] -> backends".
fn view(f: &Frontend) -> String {
    let mut flags = String::new();
    if f.local_only {
        flags.push_str(" local_only");
    }
    if f.two_scopes {
        flags.push_str(" two_scopes");
    }
    let backends: Vec<String> = f
        .backends
        .iter()
        .map(|b| {
            format!(
                "{}:{}{}{}",
                b.address,
                b.port,
                if b.local { "L" } else { "" },
                if b.terminating { "T" } else { "" }
            )
        })
        .collect();
    let proto = match f.proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    };
    let scope = match f.scope {
        Scope::External => "ext",
        Scope::Internal => "int",
    };
    format!(
        "{:?} {}:{}/{proto} {scope}{flags} -> [{}]",
        f.kind,
        f.address,
        f.port,
        backends.join(" ")
    )
}

fn views(result: &PlanResult) -> Vec<String> {
    result.state.frontends.iter().map(view).collect()
}

fn messages(result: &PlanResult) -> Vec<String> {
    result.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn cluster_ip_multi_port_with_named_target_ports() {
    let result = plan(
        &(cluster()
            + &service(
                "web",
                "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}\n",
            )
            + &web_pods()
            + &pod(
                "default",
                "c",
                "app: web",
                "n2",
                "10.0.2.11",
                true,
                &["http:9090"],
            )),
    );
    assert!(result.warnings.is_empty(), "{:?}", messages(&result));
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:53/udp ext -> [10.0.1.10:5353L 10.0.2.10:5353 10.0.2.11:5353]",
            "ClusterIp 10.96.0.10:80/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080 10.0.2.11:9090]",
        ]
    );
    let f = &result.state.frontends[1];
    assert_eq!(
        (
            f.service.namespace.as_str(),
            f.service.name.as_str(),
            f.service.port_name.as_str()
        ),
        ("default", "web", "http")
    );
    assert_eq!(f.affinity_timeout, None);
    assert_eq!(f.algorithm, Algorithm::Random);
    assert_eq!(result.endpoints, 3);
}

#[test]
fn no_usable_endpoints_leave_the_frontend_with_no_backends() {
    let result = plan(
        &(cluster()
            + &service(
                "web",
                "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80}]\n",
            )
            + &pod("default", "a", "app: web", "n1", "10.0.1.10", false, &[])
            + &service(
                "nobody",
                "  clusterIP: 10.96.0.11\n  selector: {app: none}\n  ports: [{port: 80}]\n",
            )),
    );
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> []",
            "ClusterIp 10.96.0.11:80/tcp ext -> []"
        ]
    );
}

#[test]
fn terminating_endpoints_are_used_only_without_ready_ones() {
    let terminating = |name: &str, ip: &str, node: &str| {
        pod("default", name, "app: web", node, ip, true, &[]).replace(
            "metadata: {",
            "metadata: {deletionTimestamp: \"2024-01-01T00:00:00Z\", ",
        )
    };
    let svc = service(
        "web",
        "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let only_terminating = plan(&(cluster() + &svc + &terminating("t", "10.0.2.20", "n2")));
    assert_eq!(
        views(&only_terminating),
        vec!["ClusterIp 10.96.0.10:80/tcp ext -> [10.0.2.20:80T]"]
    );
    let both = plan(
        &(cluster()
            + &svc
            + &terminating("t", "10.0.2.20", "n2")
            + &pod("default", "r", "app: web", "n2", "10.0.2.21", true, &[])),
    );
    assert_eq!(
        views(&both),
        vec!["ClusterIp 10.96.0.10:80/tcp ext -> [10.0.2.21:80]"]
    );
}

#[test]
fn headless_external_name_and_unallocated_services_get_nothing() {
    let result = plan(
        &(cluster()
            + &web_pods()
            + &service(
                "headless",
                "  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n",
            )
            + &service(
                "extname",
                "  type: ExternalName\n  externalName: example.com\n",
            )
            + &service("noip", "  selector: {app: web}\n  ports: [{port: 80}]\n")
            + &service(
                "v6",
                "  clusterIP: fd00::10\n  clusterIPs: [\"fd00::10\"]\n  ports: [{port: 80}]\n",
            )),
    );
    assert!(result.state.frontends.is_empty(), "{:?}", views(&result));
    assert_eq!(
        messages(&result),
        vec![
            "Service default/noip: no spec.clusterIP: standalone mode allocates none, so the manifest must set it",
            "Service default/v6: no IPv4 ClusterIP: Weir serves IPv4 only",
        ]
    );
}

#[test]
fn dual_stack_services_use_their_ipv4_cluster_ip() {
    let result = plan(
        &(cluster()
            + &web_pods()
            + &service(
                "dual",
                "  clusterIP: fd00::10\n  clusterIPs: [\"fd00::10\", 10.96.0.12]\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
            )),
    );
    assert_eq!(
        views(&result),
        vec!["ClusterIp 10.96.0.12:80/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]"]
    );
}

#[test]
fn node_ports_answer_on_every_internal_ip_of_this_node() {
    let result = plan(
        &(cluster()
            + &web_pods()
            + &service(
                "web",
                "  type: NodePort\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
            )),
    );
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
            "NodePort 192.168.0.1:30080/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
            "NodePort 192.168.1.1:30080/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
        ]
    );

    let mut custom = ctx();
    custom.nodeport_addresses = Some(vec![Ipv4Addr::new(172, 16, 0, 1)]);
    let yaml = cluster()
        + &service(
            "web",
            "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80, nodePort: 30080}, {name: b, port: 81}]\n",
        );
    let result = compute_plan(&snapshot(&yaml), &custom);
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> []",
            "ClusterIp 10.96.0.10:81/tcp ext -> []",
            "NodePort 172.16.0.1:30080/tcp ext -> []"
        ]
    );
    assert_eq!(
        messages(&result),
        vec![
            "Service default/web: spec.ports[1]: no nodePort: standalone mode allocates none, so the manifest must set it"
        ]
    );
}

#[test]
fn node_ports_need_this_nodes_object() {
    let yaml = service(
        "web",
        "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80, nodePort: 30080}]\n",
    );
    let result = plan(&yaml);
    assert_eq!(
        views(&result),
        vec!["ClusterIp 10.96.0.10:80/tcp ext -> []"]
    );
    assert_eq!(
        messages(&result),
        vec!["Node n1: this node's Node object is unknown: no NodePort frontends"]
    );
}

#[test]
fn load_balancer_ingress_and_external_ips() {
    let yaml = cluster()
        + &web_pods()
        + &service(
            "lb",
            "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  externalIPs: [198.51.100.7, \"2001:db8::1\", nonsense]\n  \
             selector: {app: web}\n  ports: [{port: 443, targetPort: 8080}]\n",
        )
        + "status:\n  loadBalancer:\n    ingress:\n    - {ip: 198.51.100.1}\n    - {ip: 198.51.100.2, ipMode: Proxy}\n    \
           - {hostname: lb.example.com}\n    - {ip: 198.51.100.3, ipMode: VIP}\n";
    let result = plan(&yaml);
    let all = "[10.0.1.10:8080L 10.0.2.10:8080]";
    assert_eq!(
        views(&result),
        vec![
            format!("ClusterIp 10.96.0.10:443/tcp ext -> {all}"),
            format!("LoadBalancer 198.51.100.1:443/tcp ext -> {all}"),
            format!("LoadBalancer 198.51.100.3:443/tcp ext -> {all}"),
            format!("ExternalIp 198.51.100.7:443/tcp ext -> {all}"),
        ]
    );
    assert_eq!(
        messages(&result),
        vec!["Service default/lb: spec.externalIPs: unparsable address \"nonsense\""]
    );
}

#[test]
fn external_traffic_policy_local_splits_external_and_internal_scopes() {
    let yaml = cluster()
        + &web_pods()
        + &service(
            "web",
            "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  \
             selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
        )
        + "status: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n";
    let result = plan(&yaml);
    let all = "[10.0.1.10:8080L 10.0.2.10:8080]";
    let local = "[10.0.1.10:8080L]";
    assert_eq!(
        views(&result),
        vec![
            format!("ClusterIp 10.96.0.10:80/tcp ext -> {all}"),
            format!("NodePort 192.168.0.1:30080/tcp ext local_only two_scopes -> {local}"),
            format!("NodePort 192.168.0.1:30080/tcp int two_scopes -> {all}"),
            format!("NodePort 192.168.1.1:30080/tcp ext local_only two_scopes -> {local}"),
            format!("NodePort 192.168.1.1:30080/tcp int two_scopes -> {all}"),
            format!("LoadBalancer 198.51.100.1:80/tcp ext local_only two_scopes -> {local}"),
            format!("LoadBalancer 198.51.100.1:80/tcp int two_scopes -> {all}"),
        ]
    );

    // Seen from n2's agent, whose only endpoint is b.
    let mut on_n2 = ctx();
    on_n2.node_name = "n2".into();
    let result = compute_plan(&snapshot(&yaml), &on_n2);
    let lb = result
        .state
        .frontends
        .iter()
        .find(|f| f.kind == FrontendKind::LoadBalancer && f.scope == Scope::External)
        .unwrap();
    assert_eq!(
        view(lb),
        "LoadBalancer 198.51.100.1:80/tcp ext local_only two_scopes -> [10.0.2.10:8080L]"
    );
}

#[test]
fn external_traffic_policy_local_without_local_endpoints_has_an_empty_external_scope() {
    let yaml = cluster()
        + &pod("default", "b", "app: web", "n2", "10.0.2.10", true, &[])
        + &service(
            "web",
            "  type: NodePort\n  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  \
             selector: {app: web}\n  ports: [{port: 80, nodePort: 30080}]\n",
        );
    let mut one_ip = ctx();
    one_ip.nodeport_addresses = Some(vec![Ipv4Addr::new(192, 168, 0, 1)]);
    let result = compute_plan(&snapshot(&yaml), &one_ip);
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> [10.0.2.10:80]",
            "NodePort 192.168.0.1:30080/tcp ext local_only two_scopes -> []",
            "NodePort 192.168.0.1:30080/tcp int two_scopes -> [10.0.2.10:80]",
        ]
    );
}

#[test]
fn external_traffic_policy_is_ignored_for_cluster_ip_services() {
    let yaml = cluster()
        + &web_pods()
        + &service(
            "web",
            "  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  externalIPs: [198.51.100.7]\n  \
             selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
        );
    assert_eq!(
        views(&plan(&yaml)),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
            "ExternalIp 198.51.100.7:80/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
        ]
    );
}

#[test]
fn internal_traffic_policy_local_keeps_cluster_ip_traffic_on_the_node() {
    let yaml = cluster()
        + &web_pods()
        + &service(
            "web",
            "  type: NodePort\n  clusterIP: 10.96.0.10\n  internalTrafficPolicy: Local\n  \
             selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
        );
    let mut one_ip = ctx();
    one_ip.nodeport_addresses = Some(vec![Ipv4Addr::new(192, 168, 0, 1)]);
    let result = compute_plan(&snapshot(&yaml), &one_ip);
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext local_only -> [10.0.1.10:8080L]",
            // External destinations follow externalTrafficPolicy (Cluster).
            "NodePort 192.168.0.1:30080/tcp ext -> [10.0.1.10:8080L 10.0.2.10:8080]",
        ]
    );
    let mut on_n3 = one_ip.clone();
    on_n3.node_name = "n3".into();
    let result = compute_plan(&snapshot(&yaml), &on_n3);
    assert_eq!(
        view(&result.state.frontends[0]),
        "ClusterIp 10.96.0.10:80/tcp ext local_only -> []"
    );
}

#[test]
fn session_affinity_client_ip_and_its_timeout() {
    let svc = |name: &str, ip: &str, affinity: &str| {
        service(
            name,
            &format!("  clusterIP: {ip}\n{affinity}  ports: [{{port: 80}}]\n"),
        )
    };
    let yaml = cluster()
        + &svc("none", "10.96.0.1", "")
        + &svc(
            "default-timeout",
            "10.96.0.2",
            "  sessionAffinity: ClientIP\n",
        )
        + &svc(
            "custom",
            "10.96.0.3",
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
        )
        + &svc(
            "too-long",
            "10.96.0.4",
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 100000}}\n",
        );
    let result = plan(&yaml);
    let timeouts: Vec<_> = result
        .state
        .frontends
        .iter()
        .map(|f| f.affinity_timeout)
        .collect();
    assert_eq!(timeouts, vec![None, Some(10_800), Some(60), Some(10_800)]);
    assert_eq!(result.warnings.len(), 1);
    assert!(
        result.warnings[0]
            .to_string()
            .starts_with("Service default/too-long: sessionAffinityConfig")
    );
}

#[test]
fn lb_algorithm_from_annotation_or_agent_default() {
    let svc = |name: &str, ip: &str, annotation: Option<&str>| {
        let annotations = annotation
            .map(|a| format!(", annotations: {{weir.io/lb-algorithm: {a}}}"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}{annotations}}}\n\
             spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    };
    let yaml = svc("a", "10.96.0.1", None)
        + &svc("b", "10.96.0.2", Some("maglev"))
        + &svc("c", "10.96.0.3", Some("random"))
        + &svc("d", "10.96.0.4", Some("roundrobin"));
    let snap = snapshot(&yaml);
    let algorithms = |default| {
        let mut c = ctx();
        c.default_algorithm = default;
        c.nodeport_addresses = Some(Vec::new());
        let result = compute_plan(&snap, &c);
        (
            result
                .state
                .frontends
                .iter()
                .map(|f| f.algorithm)
                .collect::<Vec<_>>(),
            result.warnings.len(),
        )
    };
    use Algorithm::{Maglev, Random};
    assert_eq!(
        algorithms(Random),
        (vec![Random, Maglev, Random, Random], 1)
    );
    assert_eq!(
        algorithms(Maglev),
        (vec![Maglev, Maglev, Random, Maglev], 1)
    );
}

#[test]
fn a_taken_frontend_stays_with_the_first_service() {
    let yaml = cluster()
        + &service(
            "a",
            "  clusterIP: 10.96.0.1\n  externalIPs: [198.51.100.7]\n  ports: [{port: 80}]\n",
        )
        + &service(
            "b",
            "  clusterIP: 10.96.0.2\n  externalIPs: [198.51.100.7]\n  ports: [{port: 80}, {name: other, port: 81}]\n",
        );
    let result = plan(&yaml);
    let owners: Vec<_> = result
        .state
        .frontends
        .iter()
        .map(|f| (view(f), f.service.name.clone()))
        .collect();
    assert_eq!(
        owners
            .iter()
            .map(|(v, s)| format!("{s}: {v}"))
            .collect::<Vec<_>>(),
        vec![
            "a: ClusterIp 10.96.0.1:80/tcp ext -> []",
            "b: ClusterIp 10.96.0.2:80/tcp ext -> []",
            "b: ClusterIp 10.96.0.2:81/tcp ext -> []",
            "a: ExternalIp 198.51.100.7:80/tcp ext -> []",
            "b: ExternalIp 198.51.100.7:81/tcp ext -> []",
        ]
    );
    assert_eq!(
        messages(&result),
        vec![
            "Service default/b: 198.51.100.7:80/TCP (ExternalIp, External scope) is already Service default/a's; ignored here"
        ]
    );
}

#[test]
fn unsupported_protocols_and_ports_are_skipped_per_port() {
    let yaml = cluster()
        + &service(
            "web",
            "  clusterIP: 10.96.0.10\n  ports: [{name: a, port: 80, protocol: QUIC}, {name: b, port: 70000}, {name: c, port: 81, protocol: SCTP}]\n",
        );
    let result = plan(&yaml);
    assert_eq!(
        views(&result),
        vec!["ClusterIp 10.96.0.10:81/sctp ext -> []"]
    );
    assert_eq!(result.warnings.len(), 2, "{:?}", messages(&result));
}

#[test]
fn routes_go_to_every_other_nodes_pod_cidr() {
    let yaml = cluster()
        + &node("n3", "192.168.0.3", Some("10.0.0.0/24"))
        + &node("n4", "192.168.0.4", None)
        + &node("n5", "192.168.0.5", Some("10.0.2.0/24"))
        + &node("n6", "192.168.0.6", Some("10.0.6.0/24"))
            .replace("type: InternalIP", "type: Hostname")
        + &node("n7", "192.168.0.7", Some("fd00:7::/64"))
        + &node("n8", "192.168.0.8", Some("nonsense"));
    let result = plan(&yaml);
    let route = |node: &str, cidr: &str, via: &str| NodeRoute {
        node: node.into(),
        pod_cidr: cidr.parse().unwrap(),
        via: via.parse().unwrap(),
    };
    assert_eq!(
        result.state.routes,
        vec![
            route("n3", "10.0.0.0/24", "192.168.0.3"),
            route("n2", "10.0.2.0/24", "192.168.0.2")
        ]
    );
    assert_eq!(
        messages(&result),
        vec![
            "Node n5: pod CIDR 10.0.2.0/24 is also node n2's: no route via this node",
            "Node n6: pod CIDR 10.0.6.0/24 but no IPv4 InternalIP address: no route to it",
            "Node n8: unparsable pod CIDR \"nonsense\"",
        ]
    );
}

#[test]
fn plans_are_deterministic_whatever_the_input_order() {
    let docs: Vec<String> = vec![
        cluster(),
        web_pods(),
        service(
            "b",
            "  clusterIP: 10.96.0.2\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
        ),
        service(
            "a",
            "  type: NodePort\n  clusterIP: 10.96.0.1\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30001}]\n",
        ),
    ];
    let forward = plan(&docs.concat());
    let backward = plan(&docs.iter().rev().cloned().collect::<String>());
    assert_eq!(forward, backward);
    let frontends = &forward.state.frontends;
    assert!(
        frontends
            .windows(2)
            .all(|w| (w[0].address, w[0].port, w[0].proto, w[0].scope)
                < (w[1].address, w[1].port, w[1].proto, w[1].scope))
    );
    assert!(frontends.iter().all(|f| {
        f.backends
            .windows(2)
            .all(|w| (w[0].address, w[0].port) < (w[1].address, w[1].port))
    }));
}

#[test]
fn cni_registrations_override_pod_addresses() {
    let yaml = cluster()
        + &service(
            "web",
            "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80}]\n",
        )
        + &pod("default", "a", "app: web", "n1", "10.0.1.10", true, &[])
            .replace("  podIP: 10.0.1.10\n", "");
    let snap: Snapshot = snapshot(&yaml);
    assert_eq!(
        views(&compute_plan(&snap, &ctx())),
        vec!["ClusterIp 10.96.0.10:80/tcp ext -> []"]
    );
    let mut registered = ctx();
    registered.pod_ip_overrides = HashMap::from([(
        crate::k8s::ObjectName::new("default", "a"),
        Ipv4Addr::new(10, 0, 1, 77),
    )]);
    assert_eq!(
        views(&compute_plan(&snap, &registered)),
        vec!["ClusterIp 10.96.0.10:80/tcp ext -> [10.0.1.77:80L]"]
    );
}

#[test]
fn traffic_policy_local_without_any_endpoint_rejects_instead_of_dropping() {
    // kube-proxy drops Local traffic only when endpoints exist on other
    // nodes; with none anywhere the frontend rejects like any empty one.
    let yaml = cluster()
        + &service(
            "web",
            "  type: NodePort\n  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  \
             internalTrafficPolicy: Local\n  selector: {app: web}\n  \
             ports: [{port: 80, nodePort: 30080}]\n",
        );
    let mut one_ip = ctx();
    one_ip.nodeport_addresses = Some(vec![Ipv4Addr::new(192, 168, 0, 1)]);
    let result = compute_plan(&snapshot(&yaml), &one_ip);
    assert_eq!(
        views(&result),
        vec![
            "ClusterIp 10.96.0.10:80/tcp ext -> []",
            "NodePort 192.168.0.1:30080/tcp ext two_scopes -> []",
            "NodePort 192.168.0.1:30080/tcp int two_scopes -> []",
        ]
    );
}
