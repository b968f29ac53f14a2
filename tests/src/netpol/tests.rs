//! Unit tests without root: the table builders, the comparison, and every
//! case cross-checked against the agent's manifest reader and reference
//! policy decision.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use weir_agent::policy::{Direction, PolicyCompiler, PolicyContext, PolicyPlan};

use super::cases::all_cases;
use super::*;
use crate::cluster::objects::yaml_documents;
use crate::workload::ProbeOutcome;

fn id(ns: &str, pod: &str) -> PodId {
    PodId::new(ns, pod)
}

#[test]
fn pod_ids_and_placement() {
    let all: Vec<PodId> = PodId::all().collect();
    assert_eq!(all.len(), 9);
    assert_eq!(all[0].to_string(), "x/a");
    assert_eq!(all[8].to_string(), "z/c");
    assert_eq!(id("y", "b").index(), 4);
    let on1: Vec<String> = all
        .iter()
        .filter(|p| p.node() == 1)
        .map(ToString::to_string)
        .collect();
    assert_eq!(on1, ["x/a", "x/c", "y/b", "z/a", "z/c"]);
    for ns in NAMESPACES {
        let nodes: BTreeSet<usize> = all
            .iter()
            .filter(|p| p.namespace() == ns)
            .map(|p| p.node())
            .collect();
        assert_eq!(nodes.len(), 2, "namespace {ns} spans both nodes");
    }
    let spec = id("y", "c").spec(&id("y", "c").default_labels());
    let names: Vec<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "serve-80-tcp",
            "serve-80-udp",
            "serve-81-tcp",
            "serve-81-udp"
        ]
    );
    assert_eq!(spec.labels["pod"], "c");
}

#[test]
fn builders_set_the_cells_they_name_and_keep_loopback() {
    assert_eq!(Reachability::all().allowed_count(), 9 * 9 * 4);
    assert_eq!(Reachability::none().allowed_count(), 9 * 4, "only loopback");

    let t = Reachability::all().deny_ingress(Peer::Ns("x"));
    // 3 targets × 8 other pods × 4 ports denied.
    assert_eq!(t.allowed_count(), 324 - 3 * 8 * 4);
    assert!(!t.get(id("y", "a"), id("x", "b"), 0));
    assert!(t.get(id("x", "a"), id("x", "a"), 0), "loopback");
    assert!(t.get(id("x", "a"), id("y", "a"), 3), "egress untouched");

    let t = Reachability::all().deny_egress(Peer::Pod("z", "c"));
    assert_eq!(t.allowed_count(), 324 - 8 * 4);
    assert!(!t.get(id("z", "c"), id("x", "a"), 2));

    let t = Reachability::all().only_ingress(Peer::Pod("x", "a"), Peer::Ns("y"), On::tcp(80));
    for from in PodId::all().filter(|p| *p != id("x", "a")) {
        for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
            let want = from.namespace() == "y" && port == 80 && proto == Proto::Tcp;
            assert_eq!(t.get(from, id("x", "a"), i), want, "{from} {port}/{proto}");
        }
    }
    assert_eq!(t.allowed_count(), 324 - 8 * 4 + 3);

    let t = Reachability::all().only_egress(Peer::Ns("x"), Peer::OnNode(2), On::proto(Proto::Udp));
    assert!(
        t.get(id("x", "a"), id("y", "a"), 1),
        "y/a on node 2, UDP 80"
    );
    assert!(!t.get(id("x", "a"), id("y", "a"), 0), "TCP denied");
    assert!(!t.get(id("x", "a"), id("y", "b"), 1), "y/b on node 1");

    let both = Reachability::all()
        .deny_ingress(Peer::Ns("y"))
        .and(&Reachability::all().deny_egress(Peer::Ns("x")));
    assert!(!both.get(id("z", "a"), id("y", "a"), 0));
    assert!(!both.get(id("x", "a"), id("z", "a"), 0));
    assert!(both.get(id("z", "a"), id("x", "a"), 0));

    assert!(Peer::except(Peer::Named("a")).matches(id("y", "b")));
    assert!(!Peer::except(Peer::Named("a")).matches(id("y", "a")));
    assert!(Peer::AnyOf(vec![Peer::Pod("x", "a"), Peer::Ns("z")]).matches(id("z", "c")));
}

/// The harness self-test: a wrong expectation is reported, cell by cell,
/// in the comparison and the rendered table.
#[test]
fn a_wrong_expectation_is_detected() {
    let truth = Reachability::all().deny_ingress(Peer::Pod("x", "a"));
    let observed = Observed::from_expected(&truth);
    assert!(compare(&truth, &observed).is_empty());

    // Expect y/b → x/a TCP 81 allowed, which the "datapath" denies, and
    // z/c → y/a UDP 80 denied, which it allows.
    let wrong = truth
        .clone()
        .allow(Peer::Pod("y", "b"), Peer::Pod("x", "a"), On::tcp(81))
        .deny(Peer::Pod("z", "c"), Peer::Pod("y", "a"), On::udp(80));
    let mismatches = compare(&wrong, &observed);
    assert_eq!(mismatches.len(), 2, "{mismatches:?}");
    let m = &mismatches[0];
    assert_eq!(
        (
            m.from,
            m.to,
            m.port,
            m.proto,
            m.expected,
            m.observed.outcome
        ),
        (
            id("y", "b"),
            id("x", "a"),
            81,
            Proto::Tcp,
            true,
            ProbeOutcome::Timeout
        )
    );
    let m = &mismatches[1];
    assert_eq!(
        (
            m.from,
            m.to,
            m.port,
            m.proto,
            m.expected,
            m.observed.outcome
        ),
        (
            id("z", "c"),
            id("y", "a"),
            80,
            Proto::Udp,
            false,
            ProbeOutcome::Connected
        )
    );
    let table = render(&wrong, &observed);
    assert_eq!(
        table.matches('*').count(),
        2 + 1,
        "two marked cells + legend"
    );
    assert!(table.contains("y/b -> x/a 81/tcp: expected allowed, observed timeout"));
    assert!(table.contains("z/c -> y/a 80/udp: expected denied, observed connected"));
    assert!(table.contains("2 mismatching cells"));

    // Answers that are neither verdict never agree: refused, errors, and
    // an answer from another pod (e.g. the wrong one behind an address).
    let mut odd = Observed::from_expected(&Reachability::all());
    odd.set(id("x", "a"), id("x", "b"), 0, Cell::connected("y/b"));
    odd.set(
        id("x", "a"),
        id("x", "c"),
        0,
        Cell {
            outcome: ProbeOutcome::Refused,
            reply: String::new(),
            detail: None,
        },
    );
    odd.set(
        id("x", "a"),
        id("y", "a"),
        0,
        Cell {
            outcome: ProbeOutcome::Error,
            reply: String::new(),
            detail: Some("No route to host".into()),
        },
    );
    let all = compare(&Reachability::all(), &odd);
    assert_eq!(all.len(), 3);
    let denied = Reachability::all().deny(Peer::Pod("x", "a"), Peer::Any, On::tcp(80));
    assert_eq!(
        compare(&denied, &odd)
            .iter()
            .filter(|m| m.from == id("x", "a") && m.port == 80 && m.proto == Proto::Tcp)
            .count(),
        8,
        "refused and error are not 'denied' either; connected cells mismatch"
    );
    let rendered = render(&Reachability::all(), &odd);
    assert!(rendered.contains("*W") && rendered.contains("*R") && rendered.contains("*E"));
}

fn parse_step(model: &Model, step: &Step, what: &str) -> weir_agent::k8s::Snapshot {
    let text = yaml_documents(&model.objects(step));
    let parsed = weir_agent::manifests::parse_yaml(Path::new("case.yaml"), &text);
    assert!(
        parsed.errors.is_empty(),
        "{what}: the agent's reader rejects documents: {:?}",
        parsed.errors
    );
    let want = model.objects(step).len();
    assert_eq!(parsed.objects.len(), want, "{what}: objects read");
    let path = Path::new("case.yaml");
    let (snapshot, errors) = weir_agent::manifests::assemble([(path, &parsed)]);
    assert!(errors.is_empty(), "{what}: {errors:?}");
    assert_eq!(
        snapshot.network_policies.len(),
        step.policies.len(),
        "{what}: every policy read"
    );
    snapshot
}

fn plans(model: &Model, snapshot: &weir_agent::k8s::Snapshot, what: &str) -> Vec<PolicyPlan> {
    model
        .nodes
        .iter()
        .map(|node| {
            let ctx = PolicyContext {
                node_name: node.name.clone(),
                ..PolicyContext::default()
            };
            let plan = PolicyCompiler::new().compile(snapshot, &ctx);
            assert!(
                plan.errors.is_empty(),
                "{what}: compile errors: {:?}",
                plan.errors
            );
            plan
        })
        .collect()
}

fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// The reference decision for a new flow from `from` to `to`: egress at
/// the client's node, ingress at the server's node (after DNAT: `to` is
/// the backend for VIP traffic).
fn reference(model: &Model, plans: &[PolicyPlan], from: PodId, to: PodId, pp: usize) -> bool {
    let (port, proto) = PORT_PROTOS[pp];
    let (src, dst) = (model.pod_ip(from), model.pod_ip(to));
    let egress = plans[from.node() - 1]
        .verdict(src, Direction::Egress, dst, proto_number(proto), port)
        .unwrap_or_else(|| panic!("{from} is not an endpoint of node{}", from.node()));
    let ingress = plans[to.node() - 1]
        .verdict(dst, Direction::Ingress, src, proto_number(proto), port)
        .unwrap_or_else(|| panic!("{to} is not an endpoint of node{}", to.node()));
    egress.is_allowed() && ingress.is_allowed()
}

#[test]
fn the_cases_cover_issue_4() {
    let cases = all_cases(&Model::synthetic());
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let text: String = cases
        .iter()
        .flat_map(|c| c.steps.iter().flat_map(|s| s.policies.iter()))
        .map(ToString::to_string)
        .collect();
    for needle in [
        "\"ipBlock\"",
        "\"except\"",
        "\"endPort\"",
        "\"matchExpressions\"",
        "\"NotIn\"",
        "\"In\"",
        "\"Exists\"",
        "\"DoesNotExist\"",
        "\"serve-81-tcp\"",
        "\"SCTP\"",
        "\"Egress\"",
        "\"namespaceSelector\"",
    ] {
        assert!(text.contains(needle), "no case uses {needle}");
    }
    assert!(
        cases
            .iter()
            .any(|c| c.steps.iter().any(|s| !s.services.is_empty()))
    );
    assert!(
        cases
            .iter()
            .any(|c| c.steps.iter().any(|s| !s.pod_labels.is_empty()))
    );
    assert!(
        cases
            .iter()
            .any(|c| c.steps.iter().any(|s| !s.namespace_labels.is_empty()))
    );
    assert!(cases.iter().any(|c| c.steps.len() > 2), "policy updates");
    let flows: Vec<_> = cases
        .iter()
        .flat_map(|c| c.steps.iter().flat_map(|s| s.flows.iter()))
        .collect();
    assert!(flows.iter().any(|f| f.alive) && flows.iter().any(|f| !f.alive));
    // No case is the trivial table by accident, except the ones that say so.
    for case in &cases {
        for step in &case.steps {
            if step.expected == Reachability::all() {
                println!("{} / {}: everything reachable", case.name, step.what);
            }
        }
    }
}

/// Every step of every case: its manifests parse with the agent's reader,
/// and every expected cell (and VIP expectation) agrees with the agent's
/// reference decision. All disagreements are listed before failing.
#[test]
fn every_case_agrees_with_the_reference_decision() {
    let model = Model::synthetic();
    let cases = all_cases(&model);
    let mut disagreements = Vec::new();
    let mut cells = 0usize;
    for case in &cases {
        for (s, step) in case.steps.iter().enumerate() {
            let what = format!("{} step {s} ({})", case.name, step.what);
            let snapshot = parse_step(&model, step, &what);
            let plans = plans(&model, &snapshot, &what);
            let mut bad = Vec::new();
            for from in PodId::all() {
                for to in PodId::all().filter(|t| *t != from) {
                    for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
                        cells += 1;
                        let want = step.expected.get(from, to, i);
                        let reference = reference(&model, &plans, from, to, i);
                        if want != reference {
                            bad.push(format!(
                                "    {from} -> {to} {port}/{proto}: table {want}, reference {reference}"
                            ));
                        }
                    }
                }
            }
            for svc in &step.services {
                for from in PodId::all().filter(|p| *p != svc.backend) {
                    for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
                        let want = svc.allowed_from.matches(from);
                        let column = step.expected.get(from, svc.backend, i);
                        let reference = reference(&model, &plans, from, svc.backend, i);
                        if want != column || want != reference {
                            bad.push(format!(
                                "    {from} -> VIP {}:{port}/{proto} (backend {}): expected {want}, \
                                 backend column {column}, reference {reference}",
                                svc.vip, svc.backend
                            ));
                        }
                    }
                }
            }
            for flow in &step.flows {
                let i = super::table::port_proto_index(flow.port, Proto::Udp).unwrap();
                let before = match s.checked_sub(1) {
                    Some(p) => case.steps[p].expected.get(flow.from, flow.to, i),
                    None => true,
                };
                let now = step.expected.get(flow.from, flow.to, i);
                let reference = reference(&model, &plans, flow.from, flow.to, i);
                if !before || flow.alive != now || flow.alive != reference {
                    bad.push(format!(
                        "    flow {} -> {} {}/udp: allowed when opened {before}, alive {}, \
                         table {now}, reference {reference}",
                        flow.from, flow.to, flow.port, flow.alive
                    ));
                }
            }
            if !bad.is_empty() {
                disagreements.push(format!(
                    "  {what}: {} cells\n{}\n{}",
                    bad.len(),
                    bad.join("\n"),
                    render_expected(&step.expected)
                ));
            }
        }
    }
    let steps: usize = cases.iter().map(|c| c.steps.len()).sum();
    println!(
        "{} cases, {steps} steps, {cells} cells checked against the reference",
        cases.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} steps disagree with the reference decision:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// The cross-check can fail: a deliberately wrong table is caught.
#[test]
fn the_cross_check_catches_a_wrong_table() {
    let model = Model::synthetic();
    let step = Step::new("wrong", Reachability::all()).policy(network_policy(
        "x",
        "deny",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ));
    let snapshot = parse_step(&model, &step, "wrong");
    let plans = plans(&model, &snapshot, "wrong");
    assert!(!reference(&model, &plans, id("y", "a"), id("x", "b"), 0));
    assert!(reference(&model, &plans, id("x", "a"), id("y", "b"), 0));
    // Same node (x/a and x/c on node 1) and across nodes (y/a on node 2).
    assert!(!reference(&model, &plans, id("x", "a"), id("x", "c"), 3));
}

/// Objects are JSON documents: the namespace `y` and the label value `y`
/// stay strings for the YAML 1.1 reader.
#[test]
fn namespace_y_survives_the_yaml_reader() {
    let model = Model::synthetic();
    let step = Step::new("y", Reachability::all()).label_pod(id("y", "a"), &[("pod", "y")]);
    let snapshot = parse_step(&model, &step, "y");
    assert_eq!(snapshot.counts().pods, 9);
}
