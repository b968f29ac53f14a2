//! Issue 4's NetworkPolicy cases over the e2e model, as data: the policies
//! (Kubernetes objects, written into the manifests dir) and the expected
//! truth table of each step, derived by hand from the Kubernetes
//! NetworkPolicy documentation. Comments say why for the cells that are not
//! obvious.
//!
//! They need enforcement in the datapath, so no lab test runs them yet
//! ([`super::NetpolLab::run_case`] will). The unit test in
//! `netpol/tests.rs` parses every step's manifests with the agent's reader
//! and checks every expected cell against the compiler's reference decision
//! (`PolicyPlan::verdict`, egress at the client's node and ingress at the
//! server's node).
//!
//! Shorthand in the tables: `Pod("x", "a")` is pod x/a; `Ns("y")` every pod
//! of namespace y; `Named("b")` the pod b of every namespace; `OnNode(2)`
//! the pods on node 2 (x/b, y/a, y/c, z/b).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::table::{On, Peer, Reachability};
use super::{Model, PodId, network_policy};
use crate::workload::Proto;

/// One policy case: a name, the points of issue 4 it covers, its theme
/// (which lab test runs it) and its steps.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub covers: &'static str,
    pub theme: Theme,
    pub steps: Vec<Step>,
}

/// The groups the lab tests run the cases in, one lab build each (see
/// `tests/tests/netpol_cases.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Theme {
    /// Default deny, allow-all, policy types, several policies on one pod.
    Isolation,
    /// Pod and namespace peers (AND vs OR), matchExpressions.
    Selectors,
    /// ipBlock with except; ports: numbers, protocols, names, endPort.
    IpBlocksAndPorts,
    /// Services judged on the backend; policy updates and label changes
    /// (with established flows across them).
    ServicesAndChanges,
}

impl Theme {
    pub const ALL: [Theme; 4] = [
        Theme::Isolation,
        Theme::Selectors,
        Theme::IpBlocksAndPorts,
        Theme::ServicesAndChanges,
    ];
}

/// The cases of one theme, for the addresses of `model`.
pub fn cases_of(model: &Model, theme: Theme) -> Vec<Case> {
    all_cases(model)
        .into_iter()
        .filter(|c| c.theme == theme)
        .collect()
}

impl Case {
    /// A case of one step.
    pub fn single(
        name: &'static str,
        covers: &'static str,
        policies: Vec<Value>,
        expected: Reachability,
    ) -> Case {
        let mut step = Step::new("apply", expected);
        step.policies = policies;
        Case {
            name,
            covers,
            // `all_cases` sets each section's theme.
            theme: Theme::Isolation,
            steps: vec![step],
        }
    }
}

/// The cluster's state in one step of a case (complete, not a delta: a
/// policy, label or service absent here is absent in the cluster) and the
/// table expected once every agent has applied it.
#[derive(Debug, Clone)]
pub struct Step {
    pub what: &'static str,
    pub policies: Vec<Value>,
    /// Pods whose labels differ from `pod=<name>`: their full label set.
    pub pod_labels: Vec<(PodId, BTreeMap<String, String>)>,
    /// Labels added to a namespace's `ns=<name>` and name label.
    pub namespace_labels: Vec<(&'static str, BTreeMap<String, String>)>,
    /// Annotations of a namespace (e.g. `weir.io/policy-audit: "true"`).
    pub namespace_annotations: Vec<(&'static str, BTreeMap<String, String>)>,
    /// Services, probed through their VIP from every other pod.
    pub services: Vec<ServiceCheck>,
    /// UDP flows opened before this step is applied (under the previous
    /// step's state, which must allow them) and used again after it.
    pub flows: Vec<FlowCheck>,
    pub expected: Reachability,
}

/// A long-running UDP flow (one socket, one source port, so one conntrack
/// entry) across a change: `alive` = it is still answered after the step
/// is applied. A change re-checks established flows (issue 4: a flow that
/// is no longer allowed stops within 1 s), so `alive` must equal the
/// step's own cell for it; the unit test checks that, and that the
/// previous step allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCheck {
    pub from: PodId,
    pub to: PodId,
    pub port: u16,
    pub alive: bool,
}

impl Step {
    pub fn new(what: &'static str, expected: Reachability) -> Step {
        Step {
            what,
            policies: Vec::new(),
            pod_labels: Vec::new(),
            namespace_labels: Vec::new(),
            namespace_annotations: Vec::new(),
            services: Vec::new(),
            flows: Vec::new(),
            expected,
        }
    }

    /// A UDP flow from `from` to `to:port` opened before this step, which
    /// must (`alive`) or must not be answered after it.
    pub fn flow(mut self, from: PodId, to: PodId, port: u16, alive: bool) -> Step {
        self.flows.push(FlowCheck {
            from,
            to,
            port,
            alive,
        });
        self
    }

    pub fn policy(mut self, policy: Value) -> Step {
        self.policies.push(policy);
        self
    }

    /// Replaces the pod's labels.
    pub fn label_pod(mut self, pod: PodId, labels: &[(&str, &str)]) -> Step {
        self.pod_labels.push((pod, to_map(labels)));
        self
    }

    /// Adds labels to a namespace.
    pub fn label_namespace(mut self, ns: &'static str, labels: &[(&str, &str)]) -> Step {
        self.namespace_labels.push((ns, to_map(labels)));
        self
    }

    /// Adds annotations to a namespace.
    pub fn annotate_namespace(mut self, ns: &'static str, annotations: &[(&str, &str)]) -> Step {
        self.namespace_annotations.push((ns, to_map(annotations)));
        self
    }

    /// The annotations of a namespace in this step.
    pub fn namespace_annotations(&self, ns: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (n, annotations) in &self.namespace_annotations {
            if *n == ns {
                out.extend(annotations.clone());
            }
        }
        out
    }

    pub fn service(mut self, service: ServiceCheck) -> Step {
        self.services.push(service);
        self
    }

    /// The pod's labels in this step.
    pub fn pod_labels(&self, pod: PodId) -> BTreeMap<String, String> {
        self.pod_labels
            .iter()
            .rev()
            .find(|(p, _)| *p == pod)
            .map_or_else(|| pod.default_labels(), |(_, l)| l.clone())
    }

    /// The extra labels of a namespace in this step.
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (n, labels) in &self.namespace_labels {
            if *n == ns {
                out.extend(labels.clone());
            }
        }
        out
    }
}

fn to_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A ClusterIP Service with one backend, exposing 80 and 81 over TCP and
/// UDP (target port = port), and which pods may reach it through the VIP
/// (on every port). Policy is judged on the backend after DNAT, never on
/// the VIP, so this always equals the backend's column of the table; the
/// probes check the datapath does that. The backend itself is not probed
/// (hairpin).
#[derive(Debug, Clone)]
pub struct ServiceCheck {
    pub namespace: &'static str,
    pub name: &'static str,
    pub vip: Ipv4Addr,
    /// The selector (`pod=<value>`) and the one pod it selects.
    pub selector: (&'static str, &'static str),
    pub backend: PodId,
    pub allowed_from: Peer,
}

impl ServiceCheck {
    pub fn object(&self) -> Value {
        let mut ports = Vec::new();
        for port in super::PORTS {
            for proto in Proto::ALL {
                ports.push(json!({
                    "name": super::port_name(port, proto),
                    "protocol": crate::cluster::objects::k8s_protocol(proto),
                    "port": port,
                    "targetPort": port,
                }));
            }
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.vip.to_string(),
                "selector": {self.selector.0: self.selector.1},
                "ports": ports,
            },
        })
    }
}

// ---- shorthand ---------------------------------------------------------------

fn labels(key: &str, value: &str) -> Value {
    json!({"matchLabels": {key: value}})
}

fn pod_sel(value: &str) -> Value {
    labels("pod", value)
}

fn ns_sel(value: &str) -> Value {
    labels("ns", value)
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"matchExpressions": [{"key": key, "operator": op}]})
    } else {
        json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})
    }
}

/// A policy selecting `pod=<target>` in `ns` with these ingress rules.
fn ingress_to(ns: &str, name: &str, target: &str, rules: Value) -> Value {
    network_policy(
        ns,
        name,
        json!({"podSelector": pod_sel(target), "policyTypes": ["Ingress"], "ingress": rules}),
    )
}

/// An Egress-only policy selecting every pod of `ns`.
fn egress_from_ns(ns: &str, name: &str, rules: Value) -> Value {
    network_policy(
        ns,
        name,
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": rules}),
    )
}

fn deny_ingress(ns: &str) -> Value {
    network_policy(
        ns,
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

fn deny_egress(ns: &str) -> Value {
    network_policy(
        ns,
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )
}

fn pod(ns: &'static str, name: &'static str) -> Peer {
    Peer::Pod(ns, name)
}

fn id(ns: &str, name: &str) -> PodId {
    PodId::new(ns, name)
}

fn xa() -> Peer {
    pod("x", "a")
}

fn all() -> Reachability {
    Reachability::all()
}

/// The Service VIPs of the cases (in the lab's 10.96.0.0/12).
const VIP_YB: Ipv4Addr = Ipv4Addr::new(10, 96, 100, 10);

fn web_yb(allowed_from: Peer) -> ServiceCheck {
    ServiceCheck {
        namespace: "y",
        name: "web",
        vip: VIP_YB,
        selector: ("pod", "b"),
        backend: PodId::new("y", "b"),
        allowed_from,
    }
}

/// Every case, for the addresses of `model` (ipBlock cases name pod
/// addresses and the nodes' pod CIDRs).
pub fn all_cases(model: &Model) -> Vec<Case> {
    let node1_cidr = model.node(1).pod_cidr.to_string();
    let node2_cidr = model.node(2).pod_cidr.to_string();
    let ip32 = |ns, name| model.pod_cidr32(PodId::new(ns, name));
    let mut cases = Vec::new();
    // Where the current section starts; `set_theme` tags it at its end.
    let mut section = 0;

    // ---- default deny and allow-all -------------------------------------------

    cases.push(Case::single(
        "deny-all-ingress",
        "default deny ingress (empty podSelector, policyTypes [Ingress])",
        vec![deny_ingress("x")],
        all().deny_ingress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "deny-all-ingress-types-omitted",
        "policyTypes omitted: Ingress always applies, so an empty spec denies ingress",
        vec![network_policy("x", "deny", json!({"podSelector": {}}))],
        all().deny_ingress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "deny-all-egress",
        "default deny egress",
        vec![deny_egress("x")],
        all().deny_egress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "deny-all-both-directions",
        "one policy with policyTypes [Ingress, Egress] and no rules",
        vec![network_policy(
            "x",
            "deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        )],
        all().deny_ingress(Peer::Ns("x")).deny_egress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "deny-ingress-every-namespace",
        "default deny ingress in x, y and z: only loopback is left",
        vec![deny_ingress("x"), deny_ingress("y"), deny_ingress("z")],
        Reachability::none(),
    ));
    cases.push(Case::single(
        "allow-all-ingress",
        "an empty rule (`ingress: [{}]`) allows every peer on every port",
        vec![network_policy(
            "x",
            "allow-all",
            json!({"podSelector": {}, "ingress": [{}]}),
        )],
        all(),
    ));
    cases.push(Case::single(
        "egress-rules-imply-ingress-isolation",
        "policyTypes omitted with egress rules means [Ingress, Egress]",
        // The egress rule allows everything, but without policyTypes the
        // policy also has type Ingress (always), with no ingress rules: it
        // isolates x for ingress. So x accepts nothing and sends anywhere.
        vec![network_policy(
            "x",
            "egress-anywhere",
            json!({"podSelector": {}, "egress": [{}]}),
        )],
        all().deny_ingress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "deny-egress-plus-allow-all-egress",
        "several policies on one pod are a union: an allow-all egress undoes a default deny",
        vec![
            deny_egress("x"),
            egress_from_ns("x", "allow-egress", json!([{}])),
        ],
        all(),
    ));
    cases.push(Case::single(
        "namespace-scoped-allow-within",
        "a policy applies only to pods of its own namespace; podSelector {} peers are own-namespace",
        vec![network_policy(
            "y",
            "within-y",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        )],
        all().only_ingress(Peer::Ns("y"), Peer::Ns("y"), On::ALL),
    ));

    set_theme(&mut cases[section..], Theme::Isolation);
    section = cases.len();

    // ---- peers: pods, namespaces, AND vs OR -------------------------------------

    cases.push(Case::single(
        "allow-from-pod",
        "a podSelector peer without namespaceSelector means the policy's namespace",
        // y/b and z/b carry pod=b too, but live in other namespaces.
        vec![ingress_to(
            "x",
            "a-from-b",
            "a",
            json!([{"from": [{"podSelector": pod_sel("b")}]}]),
        )],
        all().only_ingress(xa(), pod("x", "b"), On::ALL),
    ));
    cases.push(Case::single(
        "allow-from-namespace",
        "a namespaceSelector peer allows every pod of the selected namespaces",
        vec![ingress_to(
            "x",
            "a-from-y",
            "a",
            json!([{"from": [{"namespaceSelector": ns_sel("y")}]}]),
        )],
        all().only_ingress(xa(), Peer::Ns("y"), On::ALL),
    ));
    cases.push(Case::single(
        "namespace-and-pod-in-one-peer",
        "namespaceSelector and podSelector in one peer are ANDed",
        vec![ingress_to(
            "x",
            "a-from-y-b",
            "a",
            json!([{"from": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("b")}]}]),
        )],
        all().only_ingress(xa(), pod("y", "b"), On::ALL),
    ));
    cases.push(Case::single(
        "namespace-or-pod-in-two-peers",
        "two peers in a `from` list are ORed",
        // The podSelector peer is x's own pod=b; the namespace peer all of y.
        vec![ingress_to(
            "x",
            "a-from-y-or-b",
            "a",
            json!([{"from": [{"namespaceSelector": ns_sel("y")}, {"podSelector": pod_sel("b")}]}]),
        )],
        all().only_ingress(
            xa(),
            Peer::AnyOf(vec![Peer::Ns("y"), pod("x", "b")]),
            On::ALL,
        ),
    ));
    cases.push(Case::single(
        "pod-in-every-namespace",
        "an empty namespaceSelector selects every namespace",
        vec![ingress_to(
            "x",
            "a-from-any-b",
            "a",
            json!([{"from": [{"namespaceSelector": {}, "podSelector": pod_sel("b")}]}]),
        )],
        all().only_ingress(xa(), Peer::Named("b"), On::ALL),
    ));
    cases.push(Case::single(
        "egress-to-namespace",
        "egress allowed to one namespace only",
        vec![egress_from_ns(
            "x",
            "to-y",
            json!([{"to": [{"namespaceSelector": ns_sel("y")}]}]),
        )],
        all().only_egress(Peer::Ns("x"), Peer::Ns("y"), On::ALL),
    ));
    cases.push(Case::single(
        "egress-and-ingress-both-needed",
        "a connection needs the client's egress and the server's ingress",
        // x may send only to y; y accepts only from z. So x→y is cut by
        // y's ingress, x→z by x's egress; z→y passes; y→y (other pods)
        // is cut: y's own pods are not in z.
        vec![
            egress_from_ns(
                "x",
                "to-y",
                json!([{"to": [{"namespaceSelector": ns_sel("y")}]}]),
            ),
            network_policy(
                "y",
                "from-z",
                json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("z")}]}]}),
            ),
        ],
        all()
            .only_egress(Peer::Ns("x"), Peer::Ns("y"), On::ALL)
            .and(&all().only_ingress(Peer::Ns("y"), Peer::Ns("z"), On::ALL)),
    ));
    cases.push(Case::single(
        "ingress-rules-are-ored-each-with-its-ports",
        "two ingress rules: each peer only on its own rule's ports",
        vec![ingress_to(
            "x",
            "a-two-rules",
            "a",
            json!([
                {"from": [{"namespaceSelector": ns_sel("y")}], "ports": [{"port": 80, "protocol": "TCP"}]},
                {"from": [{"namespaceSelector": ns_sel("z")}], "ports": [{"port": 81, "protocol": "UDP"}]},
            ]),
        )],
        all()
            .deny_ingress(xa())
            .allow(Peer::Ns("y"), xa(), On::tcp(80))
            .allow(Peer::Ns("z"), xa(), On::udp(81)),
    ));

    set_theme(&mut cases[section..], Theme::Selectors);
    section = cases.len();

    // ---- matchExpressions ------------------------------------------------------------

    cases.push(Case::single(
        "match-expressions-namespace-notin",
        "namespaceSelector matchExpressions NotIn",
        // x's own pods are excluded too: ns NotIn [x].
        vec![ingress_to(
            "x",
            "a-not-from-x",
            "a",
            json!([{"from": [{"namespaceSelector": expr("ns", "NotIn", &["x"])}]}]),
        )],
        all().only_ingress(
            xa(),
            Peer::AnyOf(vec![Peer::Ns("y"), Peer::Ns("z")]),
            On::ALL,
        ),
    ));
    cases.push(Case::single(
        "match-expressions-target-in",
        "podSelector matchExpressions In selects the policy's pods",
        vec![network_policy(
            "x",
            "b-and-c-from-x",
            json!({"podSelector": expr("pod", "In", &["b", "c"]),
                   "ingress": [{"from": [{"podSelector": {}}]}]}),
        )],
        all().only_ingress(
            Peer::AnyOf(vec![pod("x", "b"), pod("x", "c")]),
            Peer::Ns("x"),
            On::ALL,
        ),
    ));
    cases.push(Case::single(
        "match-expressions-exists-and-doesnotexist",
        "Exists selects every labelled pod; a DoesNotExist peer matching no namespace allows nothing",
        // Every model namespace has the `ns` label (only `default` lacks
        // it, and no pod runs there): the rule allows nobody, x is isolated.
        vec![network_policy(
            "x",
            "exists",
            json!({"podSelector": expr("pod", "Exists", &[]),
                   "ingress": [{"from": [{"namespaceSelector": expr("ns", "DoesNotExist", &[])}]}]}),
        )],
        all().deny_ingress(Peer::Ns("x")),
    ));
    cases.push(Case::single(
        "match-expressions-selecting-nobody",
        "a podSelector that selects no pod isolates nobody",
        vec![network_policy(
            "x",
            "nobody",
            json!({"podSelector": expr("pod", "DoesNotExist", &[]), "policyTypes": ["Ingress", "Egress"]}),
        )],
        all(),
    ));
    cases.push(Case::single(
        "match-expressions-in-and-notin",
        "namespace In and pod NotIn in one peer (AND of expressions)",
        vec![ingress_to(
            "x",
            "a-from-yz-not-a",
            "a",
            json!([{"from": [{"namespaceSelector": expr("ns", "In", &["y", "z"]),
                              "podSelector": expr("pod", "NotIn", &["a"])}]}]),
        )],
        all().only_ingress(
            xa(),
            Peer::AnyOf(vec![
                pod("y", "b"),
                pod("y", "c"),
                pod("z", "b"),
                pod("z", "c"),
            ]),
            On::ALL,
        ),
    ));

    set_theme(&mut cases[section..], Theme::Selectors);
    section = cases.len();

    // ---- ipBlock against pod IPs -----------------------------------------------------

    cases.push(Case::single(
        "ipblock-node2-pod-cidr",
        "ipBlock matches pod addresses",
        // x/a runs on node 1; its node-1 neighbours are outside the block.
        vec![ingress_to(
            "x",
            "a-from-node2-pods",
            "a",
            json!([{"from": [{"ipBlock": {"cidr": node2_cidr}}]}]),
        )],
        all().only_ingress(xa(), Peer::OnNode(2), On::ALL),
    ));
    cases.push(Case::single(
        "ipblock-except-one-pod",
        "ipBlock except carves a pod's /32 out of the block",
        vec![ingress_to(
            "x",
            "a-from-all-but-ya",
            "a",
            json!([{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [ip32("y", "a")]}}]}]),
        )],
        all().deny(pod("y", "a"), xa(), On::ALL),
    ));
    cases.push(Case::single(
        "ipblock-egress-except-node1",
        "egress ipBlock with an except that is a whole node's pod CIDR",
        vec![egress_from_ns(
            "x",
            "to-node2",
            json!([{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [node1_cidr]}}]}]),
        )],
        all().only_egress(Peer::Ns("x"), Peer::OnNode(2), On::ALL),
    ));
    cases.push(Case::single(
        "ipblock-or-pod-selector",
        "an ipBlock peer ORed with a podSelector peer",
        vec![ingress_to(
            "x",
            "a-from-zb-or-c",
            "a",
            json!([{"from": [{"ipBlock": {"cidr": ip32("z", "b")}}, {"podSelector": pod_sel("c")}]}]),
        )],
        all().only_ingress(
            xa(),
            Peer::AnyOf(vec![pod("z", "b"), pod("x", "c")]),
            On::ALL,
        ),
    ));
    cases.push(Case::single(
        "ipblock-except-with-port",
        "ipBlock + except + one UDP port, towards a pod on the other node",
        // x/b runs on node 2; the block is node 1's pods except x/a:
        // x/c, y/b, z/a, z/c, and only on UDP 81.
        vec![ingress_to(
            "x",
            "b-from-node1-but-xa",
            "b",
            json!([{"from": [{"ipBlock": {"cidr": node1_cidr, "except": [ip32("x", "a")]}}],
                    "ports": [{"port": 81, "protocol": "UDP"}]}]),
        )],
        all().deny_ingress(pod("x", "b")).allow(
            Peer::AnyOf(vec![
                pod("x", "c"),
                pod("y", "b"),
                pod("z", "a"),
                pod("z", "c"),
            ]),
            pod("x", "b"),
            On::udp(81),
        ),
    ));

    set_theme(&mut cases[section..], Theme::IpBlocksAndPorts);
    section = cases.len();

    // ---- ports: numbers, protocols, names, ranges --------------------------------------

    cases.push(Case::single(
        "port-tcp-80",
        "a numeric port with protocol: only that port and protocol",
        vec![ingress_to(
            "x",
            "a-tcp-80",
            "a",
            json!([{"ports": [{"port": 80, "protocol": "TCP"}]}]),
        )],
        all().only_ingress(xa(), Peer::Any, On::tcp(80)),
    ));
    cases.push(Case::single(
        "port-protocol-defaults-to-tcp",
        "a port without protocol means TCP",
        // UDP 81 is not allowed: the protocol defaults to TCP.
        vec![ingress_to(
            "x",
            "a-81",
            "a",
            json!([{"ports": [{"port": 81}]}]),
        )],
        all().only_ingress(xa(), Peer::Any, On::tcp(81)),
    ));
    cases.push(Case::single(
        "protocol-without-port",
        "a protocol without port allows every port of that protocol",
        vec![ingress_to(
            "x",
            "a-udp",
            "a",
            json!([{"ports": [{"protocol": "UDP"}]}]),
        )],
        all().only_ingress(xa(), Peer::Any, On::proto(Proto::Udp)),
    ));
    cases.push(Case::single(
        "sctp-only",
        "an SCTP port allows no TCP or UDP",
        // x/a is isolated and its one rule names SCTP 80: the model's TCP
        // and UDP traffic is all denied.
        vec![ingress_to(
            "x",
            "a-sctp",
            "a",
            json!([{"ports": [{"port": 80, "protocol": "SCTP"}]}]),
        )],
        all().deny_ingress(xa()),
    ));
    cases.push(Case::single(
        "named-ports-ingress",
        "named ports resolve against the destination pod's container ports",
        vec![ingress_to(
            "x",
            "a-named",
            "a",
            json!([{"ports": [{"port": "serve-81-tcp"}, {"port": "serve-80-udp", "protocol": "UDP"}]}]),
        )],
        all()
            .only_ingress(xa(), Peer::Any, On::tcp(81))
            .allow(Peer::Any, xa(), On::udp(80)),
    ));
    cases.push(Case::single(
        "named-port-protocol-mismatch",
        "a named port matches a container port of that name and protocol only",
        // `serve-80-udp` with the default protocol TCP: the pod's port of
        // that name is UDP, so the name resolves to nothing and the rule
        // allows nothing (x/a stays isolated).
        vec![ingress_to(
            "x",
            "a-named-wrong-proto",
            "a",
            json!([{"ports": [{"port": "serve-80-udp"}]}]),
        )],
        all().deny_ingress(xa()),
    ));
    cases.push(Case::single(
        "named-port-egress",
        "egress named ports resolve per destination pod",
        vec![egress_from_ns(
            "x",
            "to-serve-80-tcp",
            json!([{"ports": [{"port": "serve-80-tcp"}]}]),
        )],
        all().only_egress(Peer::Ns("x"), Peer::Any, On::tcp(80)),
    ));
    cases.push(Case::single(
        "endport-tcp-80-81",
        "endPort: a TCP range covering both ports",
        vec![ingress_to(
            "x",
            "a-tcp-80-81",
            "a",
            json!([{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]),
        )],
        all().only_ingress(xa(), Peer::Any, On::proto(Proto::Tcp)),
    ));
    cases.push(Case::single(
        "endport-udp-81-90",
        "endPort: a UDP range starting at 81 leaves 80 out",
        vec![ingress_to(
            "x",
            "a-udp-81-90",
            "a",
            json!([{"ports": [{"port": 81, "endPort": 90, "protocol": "UDP"}]}]),
        )],
        all().only_ingress(xa(), Peer::Any, On::udp(81)),
    ));

    set_theme(&mut cases[section..], Theme::IpBlocksAndPorts);
    section = cases.len();

    // ---- several policies on one pod --------------------------------------------------

    cases.push(Case::single(
        "several-policies-union",
        "two policies selecting x/a: the union of their rules, each with its own ports",
        vec![
            ingress_to(
                "x",
                "a-from-y-80",
                "a",
                json!([{"from": [{"namespaceSelector": ns_sel("y")}], "ports": [{"port": 80, "protocol": "TCP"}]}]),
            ),
            ingress_to(
                "x",
                "a-from-b-81",
                "a",
                json!([{"from": [{"podSelector": pod_sel("b")}], "ports": [{"port": 81}]}]),
            ),
        ],
        all()
            .deny_ingress(xa())
            .allow(Peer::Ns("y"), xa(), On::tcp(80))
            .allow(pod("x", "b"), xa(), On::tcp(81)),
    ));
    cases.push(Case::single(
        "deny-ingress-x-deny-egress-y",
        "policies of two namespaces and directions combine",
        vec![deny_ingress("x"), deny_egress("y")],
        all().deny_ingress(Peer::Ns("x")).deny_egress(Peer::Ns("y")),
    ));

    set_theme(&mut cases[section..], Theme::Isolation);
    section = cases.len();

    // ---- Services: egress judged on the backend ----------------------------------------

    cases.push(Case {
        name: "service-egress-allowed-by-backend-labels",
        covers: "egress to a Service VIP is judged on the backend's labels (after DNAT)",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new(
                "x may send only to y/b, the backend of y/web",
                all().only_egress(Peer::Ns("x"), pod("y", "b"), On::ALL),
            )
            .policy(egress_from_ns(
                "x",
                "to-y-b",
                json!([{"to": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("b")}]}]),
            ))
            .service(web_yb(Peer::Any)),
        ],
    });
    cases.push(Case {
        name: "service-egress-denied-by-backend-labels",
        covers: "egress to a Service VIP is denied when the backend's labels are not allowed",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new(
                "x may send only to y/a; the backend is y/b",
                all().only_egress(Peer::Ns("x"), pod("y", "a"), On::ALL),
            )
            .policy(egress_from_ns(
                "x",
                "to-y-a",
                json!([{"to": [{"namespaceSelector": ns_sel("y"), "podSelector": pod_sel("a")}]}]),
            ))
            .service(web_yb(Peer::except(Peer::Ns("x")))),
        ],
    });
    cases.push(Case {
        name: "service-egress-ipblock-of-the-vip-range",
        covers: "an ipBlock holding the VIP does not allow service traffic: the peer is the backend",
        theme: Theme::ServicesAndChanges,
        // Kubernetes leaves it undefined whether policy sees the address
        // before or after the service rewrite; Weir's contract (DESIGN.md,
        // docs/policy.md) is after DNAT, so the VIP never matches.
        steps: vec![
            Step::new(
                "x may send only to 10.96.0.0/12",
                all().deny_egress(Peer::Ns("x")),
            )
            .policy(egress_from_ns(
                "x",
                "to-service-range",
                json!([{"to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}]}]),
            ))
            .service(web_yb(Peer::except(Peer::Ns("x")))),
        ],
    });
    cases.push(Case {
        name: "service-ingress-on-the-backend",
        covers: "the backend's ingress policy applies to traffic through the VIP",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new(
                "y/b accepts only from z",
                all().only_ingress(pod("y", "b"), Peer::Ns("z"), On::ALL),
            )
            .policy(ingress_to(
                "y",
                "b-from-z",
                "b",
                json!([{"from": [{"namespaceSelector": ns_sel("z")}]}]),
            ))
            .service(web_yb(Peer::Ns("z"))),
        ],
    });

    set_theme(&mut cases[section..], Theme::ServicesAndChanges);
    section = cases.len();

    // ---- changes: policy updates and label changes --------------------------------------

    cases.push(Case {
        name: "policy-updates",
        covers: "a policy replaced and then removed while the pods keep serving",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new("deny ingress to x", all().deny_ingress(Peer::Ns("x")))
                .policy(deny_ingress("x")),
            // Same policy name, new content: an update, not a second policy.
            Step::new(
                "the same policy now allows from y",
                all().only_ingress(Peer::Ns("x"), Peer::Ns("y"), On::ALL),
            )
            // A flow between y and z, untouched by either version.
            .flow(id("y", "a"), id("z", "b"), 80, true)
            .policy(network_policy(
                "x",
                "deny-ingress",
                json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}]}),
            )),
            Step::new("and narrows to TCP 81", {
                all().only_ingress(Peer::Ns("x"), Peer::Ns("y"), On::tcp(81))
            })
            // Allowed when opened (step 1 allows all of y on every port),
            // no longer allowed: the established flows must stop.
            .flow(id("y", "a"), id("x", "a"), 80, false)
            .flow(id("y", "c"), id("x", "b"), 81, false)
            .flow(id("z", "a"), id("y", "b"), 81, true)
            .policy(network_policy(
                "x",
                "deny-ingress",
                json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}],
                                                       "ports": [{"port": 81, "protocol": "TCP"}]}]}),
            )),
            Step::new("policy removed", all()).flow(id("x", "a"), id("y", "b"), 80, true),
        ],
    });
    cases.push(Case {
        name: "label-change-of-a-peer",
        covers: "relabelling a client pod changes what it may reach",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new(
                "x/a accepts pod=b of x",
                all().only_ingress(xa(), pod("x", "b"), On::ALL),
            )
            .policy(ingress_to(
                "x",
                "a-from-b",
                "a",
                json!([{"from": [{"podSelector": pod_sel("b")}]}]),
            )),
            Step::new(
                "x/c relabelled pod=b",
                all().only_ingress(
                    xa(),
                    Peer::AnyOf(vec![pod("x", "b"), pod("x", "c")]),
                    On::ALL,
                ),
            )
            .policy(ingress_to(
                "x",
                "a-from-b",
                "a",
                json!([{"from": [{"podSelector": pod_sel("b")}]}]),
            ))
            .label_pod(PodId::new("x", "c"), &[("pod", "b")]),
            Step::new(
                "x/b relabelled pod=other",
                all().only_ingress(xa(), pod("x", "c"), On::ALL),
            )
            .policy(ingress_to(
                "x",
                "a-from-b",
                "a",
                json!([{"from": [{"podSelector": pod_sel("b")}]}]),
            ))
            .label_pod(PodId::new("x", "c"), &[("pod", "b")])
            .label_pod(PodId::new("x", "b"), &[("pod", "other")]),
        ],
    });
    cases.push(Case {
        name: "label-change-of-the-selected-pod",
        covers: "relabelling pods changes which pods a policy isolates",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new("deny ingress to pod=a of x", all().deny_ingress(xa())).policy(
                network_policy(
                    "x",
                    "deny-a",
                    json!({"podSelector": pod_sel("a"), "policyTypes": ["Ingress"]}),
                ),
            ),
            Step::new(
                "x/b relabelled pod=a",
                all().deny_ingress(Peer::AnyOf(vec![xa(), pod("x", "b")])),
            )
            .policy(network_policy(
                "x",
                "deny-a",
                json!({"podSelector": pod_sel("a"), "policyTypes": ["Ingress"]}),
            ))
            .label_pod(PodId::new("x", "b"), &[("pod", "a")])
            // x/b becomes isolated: a flow into it established before stops;
            // one into x/c (still pod=c) goes on.
            .flow(id("y", "a"), id("x", "b"), 80, false)
            .flow(id("y", "a"), id("x", "c"), 80, true),
            Step::new("x/a relabelled pod=z, x/b back to pod=b", all())
                .policy(network_policy(
                    "x",
                    "deny-a",
                    json!({"podSelector": pod_sel("a"), "policyTypes": ["Ingress"]}),
                ))
                .label_pod(PodId::new("x", "a"), &[("pod", "z")]),
        ],
    });
    cases.push(Case {
        name: "label-change-of-a-namespace",
        covers: "relabelling a namespace changes what its namespaceSelector peers match",
        theme: Theme::ServicesAndChanges,
        steps: vec![
            Step::new(
                "x/a accepts team=blue namespaces; there are none",
                all().deny_ingress(xa()),
            )
            .policy(ingress_to(
                "x",
                "a-from-blue",
                "a",
                json!([{"from": [{"namespaceSelector": labels("team", "blue")}]}]),
            )),
            Step::new(
                "y labelled team=blue",
                all().only_ingress(xa(), Peer::Ns("y"), On::ALL),
            )
            .policy(ingress_to(
                "x",
                "a-from-blue",
                "a",
                json!([{"from": [{"namespaceSelector": labels("team", "blue")}]}]),
            ))
            .label_namespace("y", &[("team", "blue")]),
        ],
    });
    set_theme(&mut cases[section..], Theme::ServicesAndChanges);

    cases
}

fn set_theme(cases: &mut [Case], theme: Theme) {
    for case in cases {
        case.theme = theme;
    }
}
