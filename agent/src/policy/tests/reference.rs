//! Random policies over the model, the compiled plan's verdicts against a
//! direct reading of the NetworkPolicy objects (the Kubernetes semantics,
//! written plainly and independently of the compiler's parsers).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::k8s::Snapshot;

const SELECTORS: [&str; 4] = [
    "{}",
    "{matchLabels: {pod: a}}",
    "{matchExpressions: [{key: pod, operator: In, values: [a, b]}]}",
    "{matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}",
];
const TYPES: [&str; 4] = [
    "",
    "policyTypes: [Ingress], ",
    "policyTypes: [Egress], ",
    "policyTypes: [Ingress, Egress], ",
];
const PEERS: [&str; 7] = [
    "{podSelector: {matchLabels: {pod: b}}}",
    "{namespaceSelector: {matchLabels: {ns: z}}}",
    "{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}",
    "{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}, \
     podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}}",
    "{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.8/30]}}",
    "{ipBlock: {cidr: 192.168.0.0/24}}",
    "{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.2.0/24]}}",
];
const PORTS: [&str; 6] = [
    "{port: 80}",
    "{port: 81, protocol: UDP}",
    "{port: serve-80-tcp}",
    "{port: serve-81-udp, protocol: UDP}",
    "{port: 79, endPort: 81}",
    "{protocol: SCTP}",
];
const PROBE_PEERS: [&str; 9] = [XA, XB, ZA, ZB, N1, N2, OUTSIDE, "10.244.1.9", "10.244.3.3"];
const PROBE_PORTS: [(u8, u16); 5] = [(TCP, 80), (TCP, 81), (UDP, 81), (UDP, 80), (SCTP, 5)];

/// (peers, ports): `None` omits the field, `Some([])` writes `[]`.
type RuleChoice = (Option<Vec<usize>>, Option<Vec<usize>>);

fn rule() -> impl Strategy<Value = RuleChoice> {
    (
        proptest::option::of(proptest::collection::vec(0..PEERS.len(), 0..3)),
        proptest::option::of(proptest::collection::vec(0..PORTS.len(), 0..3)),
    )
}

fn rules_yaml(field: &str, peer_field: &str, rules: &[RuleChoice]) -> String {
    let list = |choices: &[usize], table: &[&str]| {
        let items: Vec<&str> = choices.iter().map(|&i| table[i]).collect();
        format!("[{}]", items.join(", "))
    };
    let rules: Vec<String> = rules
        .iter()
        .map(|(peers, ports)| {
            let mut fields = Vec::new();
            if let Some(peers) = peers {
                fields.push(format!("{peer_field}: {}", list(peers, &PEERS)));
            }
            if let Some(ports) = ports {
                fields.push(format!("ports: {}", list(ports, &PORTS)));
            }
            format!("{{{}}}", fields.join(", "))
        })
        .collect();
    format!("{field}: [{}]", rules.join(", "))
}

fn policy_yaml(
    index: usize,
    (ns, selector, types, ingress, egress): &(
        usize,
        usize,
        usize,
        Vec<RuleChoice>,
        Vec<RuleChoice>,
    ),
) -> String {
    let ns = ["x", "z"][*ns];
    let mut spec = format!("podSelector: {}, {}", SELECTORS[*selector], TYPES[*types]);
    spec += &rules_yaml("ingress", "from", ingress);
    if !egress.is_empty() {
        spec += ", ";
        spec += &rules_yaml("egress", "to", egress);
    }
    policy(ns, &format!("p{index}"), &spec)
}

// The plain reading.

/// A rule's (peers, ports) as the API has them.
type RawRule<'p> = (
    Option<&'p Vec<NetworkPolicyPeer>>,
    Option<&'p Vec<NetworkPolicyPort>>,
);

fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let labelled = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => !have.is_some_and(|v| values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("generator made operator {other}"),
        }
    });
    labelled && expressions
}

struct Facts<'s> {
    snapshot: &'s Snapshot,
}

impl Facts<'_> {
    fn pod_at(&self, addr: Ipv4Addr) -> Option<&k8s_openapi::api::core::v1::Pod> {
        self.snapshot.pods.values().map(AsRef::as_ref).find(|p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(&addr.to_string())
        })
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let name = crate::k8s::ObjectName::cluster(ns);
        self.snapshot.namespaces[&name]
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
    }

    fn peer_matches(&self, policy_ns: &str, peer: &NetworkPolicyPeer, addr: Ipv4Addr) -> bool {
        if let Some(block) = &peer.ip_block {
            let inside = |cidr: &str| {
                cidr.parse::<ipnetwork::Ipv4Network>()
                    .unwrap()
                    .contains(addr)
            };
            return inside(&block.cidr) && !block.except.iter().flatten().any(|e| inside(e));
        }
        let Some(pod) = self.pod_at(addr) else {
            return false;
        };
        let pod_ns = pod.metadata.namespace.as_deref().unwrap();
        let ns_ok = match &peer.namespace_selector {
            None => pod_ns == policy_ns,
            Some(selector) => selects(Some(selector), &self.namespace_labels(pod_ns)),
        };
        ns_ok
            && selects(
                peer.pod_selector.as_ref(),
                pod.metadata.labels.as_ref().unwrap(),
            )
    }

    fn port_matches(
        &self,
        port: &NetworkPolicyPort,
        destination: Ipv4Addr,
        proto: u8,
        number: u16,
    ) -> bool {
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => TCP,
            "UDP" => UDP,
            _ => SCTP,
        };
        if protocol != proto {
            return false;
        }
        match &port.port {
            None => true,
            Some(IntOrString::Int(first)) => {
                let last = port.end_port.unwrap_or(*first);
                (*first..=last).contains(&i32::from(number))
            }
            Some(IntOrString::String(name)) => self.pod_at(destination).is_some_and(|pod| {
                pod.spec
                    .as_ref()
                    .unwrap()
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .any(|p| {
                        p.name.as_deref() == Some(name.as_str())
                            && p.protocol.as_deref().unwrap_or("TCP")
                                == port.protocol.as_deref().unwrap_or("TCP")
                            && p.container_port == i32::from(number)
                    })
            }),
        }
    }

    /// Kubernetes' answer for a new flow at `endpoint`.
    fn allows(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> bool {
        let pod = self.pod_at(endpoint).unwrap();
        let ns = pod.metadata.namespace.as_deref().unwrap();
        let labels = pod.metadata.labels.as_ref().unwrap();
        let has_type = |p: &NetworkPolicy| {
            let spec = p.spec.as_ref().unwrap();
            match (&spec.policy_types, direction) {
                (Some(types), Ingress) => types.iter().any(|t| t == "Ingress"),
                (Some(types), Egress) => types.iter().any(|t| t == "Egress"),
                (None, Ingress) => true,
                (None, Egress) => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            }
        };
        let selecting: Vec<&NetworkPolicy> = self
            .snapshot
            .network_policies
            .iter()
            .filter(|(name, p)| {
                name.namespace == ns
                    && selects(p.spec.as_ref().unwrap().pod_selector.as_ref(), labels)
                    && has_type(p)
            })
            .map(|(_, p)| p.as_ref())
            .collect();
        if selecting.is_empty() || (direction == Ingress && peer == ip(N1)) {
            return true;
        }
        let destination = if direction == Ingress { endpoint } else { peer };
        selecting.iter().any(|p| {
            let spec = p.spec.as_ref().unwrap();
            let policy_ns = p.metadata.namespace.as_deref().unwrap();
            let rules: Vec<RawRule<'_>> = match direction {
                Ingress => spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                    .collect(),
                Egress => spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                    .collect(),
            };
            rules.into_iter().any(|(peers, ports)| {
                let peer_ok = match peers {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers.iter().any(|x| self.peer_matches(policy_ns, x, peer)),
                };
                let port_ok = match ports {
                    None => true,
                    Some(ports) if ports.is_empty() => true,
                    Some(ports) => ports
                        .iter()
                        .any(|x| self.port_matches(x, destination, proto, port)),
                };
                peer_ok && port_ok
            })
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn compiled_verdicts_match_the_plain_reading_of_the_policies(
        policies in proptest::collection::vec(
            (0..2usize, 0..SELECTORS.len(), 0..TYPES.len(),
             proptest::collection::vec(rule(), 0..3), proptest::collection::vec(rule(), 0..3)),
            0..4,
        ),
    ) {
        let mut yaml = model();
        for (i, choice) in policies.iter().enumerate() {
            yaml += &policy_yaml(i, choice);
        }
        let snapshot = snapshot(&yaml);
        let plan = PolicyCompiler::new().compile(&snapshot, &ctx());
        prop_assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let facts = Facts { snapshot: &snapshot };
        let mut mismatches = Vec::new();
        for endpoint in [XA, XB, ZB] {
            for direction in [Ingress, Egress] {
                for peer in PROBE_PEERS {
                    for (proto, port) in PROBE_PORTS {
                        let got = plan.verdict(ip(endpoint), direction, ip(peer), proto, port).unwrap();
                        let want = facts.allows(ip(endpoint), direction, ip(peer), proto, port);
                        if got.is_allowed() != want {
                            mismatches.push(format!("{endpoint} {direction:?} {peer} {proto}/{port}: plan {got:?}, kubernetes {want}"));
                        }
                    }
                }
            }
        }
        prop_assert!(mismatches.is_empty(), "{yaml}\n{}", mismatches.join("\n"));
    }
}
