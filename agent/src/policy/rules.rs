//! A NetworkPolicy object → its parsed form: selector, policy types and
//! rules, with every problem reported and the bad parts failing closed.
//!
//! * A bad `podSelector`: nobody can tell which pods the policy means, so
//!   the policy is skipped.
//! * A bad peer or port: that whole rule is dropped (allows nothing). Only
//!   dropping the bad element could turn `from: [bad]` into `from: []`,
//!   which allows everyone.
//! * An unknown policy type is ignored; with no valid type left the
//!   defaults apply.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use super::error::{PolicyError, Problem};
use super::peers::{Peer, parse_peer};
use super::plan::Direction;
use super::ports::{PortSpec, parse_port};
use super::selector::Selector;
use crate::k8s::{Kind, ObjectKey, ObjectName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPolicy {
    pub name: ObjectName,
    /// Pods of `name.namespace` the policy applies to.
    pub selector: Selector,
    /// `Some` when the policy has the Ingress type (it isolates), with the
    /// valid rules.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl ParsedPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Index in `spec.ingress` / `spec.egress`.
    pub index: u32,
    /// `None`: an empty or missing `from`/`to`, every peer.
    pub peers: Option<Vec<Peer>>,
    /// `None`: an empty or missing `ports`, every port and protocol.
    pub ports: Option<Vec<PortSpec>>,
}

pub fn parse_policy(
    name: &ObjectName,
    policy: &NetworkPolicy,
    errors: &mut Vec<PolicyError>,
) -> Option<ParsedPolicy> {
    let key = ObjectKey::new(Kind::NetworkPolicy, name.clone());
    let mut report =
        |path: String, problem| errors.push(PolicyError::new(key.clone(), path, problem));
    let spec = policy.spec.as_ref();
    let selector = match spec.and_then(|s| s.pod_selector.as_ref()) {
        None => Selector::everything(),
        Some(selector) => match Selector::parse(selector) {
            Ok(selector) => selector,
            Err((at, problem)) => {
                report(format!("spec.podSelector.{at}"), problem);
                return None;
            }
        },
    };

    let ingress_rules = spec.and_then(|s| s.ingress.as_deref()).unwrap_or_default();
    let egress_rules = spec.and_then(|s| s.egress.as_deref()).unwrap_or_default();
    let (mut has_ingress, mut has_egress) = (false, false);
    for (i, policy_type) in spec
        .and_then(|s| s.policy_types.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match policy_type.as_str() {
            "Ingress" => has_ingress = true,
            "Egress" => has_egress = true,
            other => report(
                format!("spec.policyTypes[{i}]"),
                Problem::UnknownPolicyType(other.into()),
            ),
        }
    }
    if !has_ingress && !has_egress {
        // The API server's defaults: Ingress always, Egress with egress rules.
        has_ingress = true;
        has_egress = !egress_rules.is_empty();
    }

    let namespace = name.namespace.as_str();
    let mut parse_rules = |direction: Direction, rules: Vec<RawRule<'_>>| {
        let mut parsed = Vec::new();
        for (i, raw) in rules.into_iter().enumerate() {
            match parse_rule(i as u32, namespace, direction, raw) {
                Ok(rule) => parsed.push(rule),
                Err((path, problem)) => {
                    report(format!("spec.{}[{i}].{path}", direction.field()), problem)
                }
            }
        }
        parsed
    };
    let ingress = has_ingress.then(|| {
        let rules = ingress_rules
            .iter()
            .map(|r| RawRule {
                peers: r.from.as_deref(),
                ports: r.ports.as_deref(),
            })
            .collect();
        parse_rules(Direction::Ingress, rules)
    });
    let egress = has_egress.then(|| {
        let rules = egress_rules
            .iter()
            .map(|r| RawRule {
                peers: r.to.as_deref(),
                ports: r.ports.as_deref(),
            })
            .collect();
        parse_rules(Direction::Egress, rules)
    });
    Some(ParsedPolicy {
        name: name.clone(),
        selector,
        ingress,
        egress,
    })
}

/// An ingress or egress rule as the API has it.
struct RawRule<'a> {
    peers: Option<&'a [NetworkPolicyPeer]>,
    ports: Option<&'a [NetworkPolicyPort]>,
}

fn parse_rule(
    index: u32,
    namespace: &str,
    direction: Direction,
    raw: RawRule<'_>,
) -> Result<Rule, (String, Problem)> {
    let peer_field = match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let peers = match raw.peers {
        None | Some([]) => None,
        Some(peers) => Some(
            peers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    parse_peer(p, namespace)
                        .map_err(|(at, problem)| (join(format!("{peer_field}[{i}]"), &at), problem))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match raw.ports {
        None | Some([]) => None,
        Some(ports) => Some(
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    parse_port(p)
                        .map_err(|(at, problem)| (join(format!("ports[{i}]"), &at), problem))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Rule {
        index,
        peers,
        ports,
    })
}

fn join(prefix: String, rest: &str) -> String {
    if rest.is_empty() {
        prefix
    } else {
        format!("{prefix}.{rest}")
    }
}
