//! Compiler tests: Kubernetes semantics checked through the verdicts a plan
//! gives (the reference model of the datapath), plus the map entries
//! themselves where their shape matters. This module holds the shared
//! cluster model and helpers.
#![allow(clippy::unwrap_used)]

mod changes;
mod errors;
mod parsers;
mod reference;
mod scale;
mod semantics;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use weir_common::policy::{
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, ep_policy_flags, identity,
};

use super::diff::diff;
use super::peers::{Cidr, CidrBlock, Peer, parse_cidr, parse_ip_block};
use super::selector::Selector;
use super::*;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::k8s::{Kind, ObjectKey, ObjectName};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
use Direction::{Egress, Ingress};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn ctx() -> PolicyContext {
    PolicyContext {
        node_name: "n1".into(),
        ..PolicyContext::default()
    }
}

fn namespace(name: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
    )
}

/// A NetworkPolicy; `spec` is a YAML flow mapping body.
fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{namespace: {ns}, name: {name}}}\nspec: {{{spec}}}\n"
    )
}

/// The e2e netpol model, shrunk: namespaces x and z (`ns=x|z`), pods a and
/// b in each (`pod=a|b`). n1 is this node; z/a runs on n2.
const XA: &str = "10.244.1.10";
const XB: &str = "10.244.1.11";
const ZA: &str = "10.244.2.10";
const ZB: &str = "10.244.1.12";
const N1: &str = "192.168.0.1";
const N2: &str = "192.168.0.2";
const OUTSIDE: &str = "203.0.113.7";

fn model() -> String {
    let ports = ["serve-80-tcp:80", "serve-81-udp:81/UDP"];
    [
        node("n1", N1, Some("10.244.1.0/24")),
        node("n2", N2, Some("10.244.2.0/24")),
        namespace("x", "ns: x"),
        namespace("z", "ns: z"),
        pod("x", "a", "pod: a", "n1", XA, true, &ports),
        pod("x", "b", "pod: b", "n1", XB, true, &ports),
        pod("z", "a", "pod: a", "n2", ZA, true, &ports),
        pod("z", "b", "pod: b", "n1", ZB, true, &ports),
    ]
    .concat()
}

fn compile(yaml: &str) -> PolicyPlan {
    let plan = PolicyCompiler::new().compile(&snapshot(yaml), &ctx());
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    plan
}

fn allowed(
    plan: &PolicyPlan,
    endpoint: &str,
    direction: Direction,
    peer: &str,
    proto: u8,
    port: u16,
) -> bool {
    plan.verdict(ip(endpoint), direction, ip(peer), proto, port)
        .unwrap_or_else(|| panic!("{endpoint} is not a local endpoint"))
        .is_allowed()
}

/// Which of the given peers may reach `endpoint` (ingress) on port 80/TCP.
fn ingress_from<'p>(plan: &PolicyPlan, endpoint: &str, peers: &[&'p str]) -> Vec<&'p str> {
    peers
        .iter()
        .copied()
        .filter(|peer| allowed(plan, endpoint, Ingress, peer, TCP, 80))
        .collect()
}

const PODS: [&str; 4] = [XA, XB, ZA, ZB];
