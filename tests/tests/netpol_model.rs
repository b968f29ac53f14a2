//! The Kubernetes e2e NetworkPolicy model on the cluster lab (issue 4's
//! truth tables), with what is true today, before enforcement: with no
//! policy the whole 9×9 × {80, 81} × {TCP, UDP} matrix is reachable, on one
//! node and across nodes, also through a Service VIP and after label
//! changes. The policy cases (`weir_lab::netpol::cases`) run here once the
//! datapath enforces policy; their tables are already cross-checked
//! against the agent's reference decision by `cargo test -p weir-lab --lib
//! netpol`.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use weir_lab::netpol::{
    Case, NetpolLab, Observed, On, PodId, Reachability, ServiceCheck, Step, compare, render,
};
use weir_lab::{ProbeOutcome, Proto};

fn require_root() {
    assert!(
        weir_lab::is_root(),
        "the netpol lab tests need root (netns, bpffs, tcx); run them as root, \
         e.g. through `cargo xtask test`"
    );
}

/// No policy: every pod reaches every pod on TCP and UDP 80 and 81, and the
/// harness tells a wrong expectation from the real outcome.
#[test]
fn netpol_without_policies_the_whole_matrix_is_reachable() {
    require_root();
    let mut lab = NetpolLab::build().unwrap();
    let report = lab.check(&Reachability::all(), &[]).unwrap();
    println!(
        "full matrix: {} cells in {:.0} ms",
        report.cells,
        report.matrix_time.as_secs_f64() * 1e3
    );
    assert_eq!(report.cells, 9 * 9 * 4);
    // Pairs on one node and across nodes are both in it.
    let (xa, xc, xb) = (
        PodId::new("x", "a"),
        PodId::new("x", "c"),
        PodId::new("x", "b"),
    );
    assert_eq!(xa.node(), xc.node());
    assert_ne!(xa.node(), xb.node());

    // The same real outcome against a wrong expectation: every cell into
    // x/a but loopback is reported, as connected where a timeout was
    // expected.
    let wrong = Reachability::all().deny_ingress(weir_lab::netpol::Peer::Pod("x", "a"));
    let mismatches = compare(&wrong, &report.observed);
    assert_eq!(
        mismatches.len(),
        8 * 4,
        "{}",
        render(&wrong, &report.observed)
    );
    assert!(
        mismatches
            .iter()
            .all(|m| m.to == xa && !m.expected && m.observed.outcome == ProbeOutcome::Connected)
    );

    // Applying states through the manifests dir: a Service whose VIP is
    // probed from every other pod, a namespace label and pod relabels
    // (which move no traffic without policies), then back.
    let service = ServiceCheck {
        namespace: "y",
        name: "web",
        vip: Ipv4Addr::new(10, 96, 100, 10),
        selector: ("pod", "b"),
        backend: PodId::new("y", "b"),
        allowed_from: weir_lab::netpol::Peer::Any,
    };
    let case = Case {
        name: "no-policy-changes",
        covers: "the harness's apply / wait / probe / reset path, true without enforcement",
        theme: weir_lab::netpol::Theme::ServicesAndChanges,
        steps: vec![
            Step::new("a service, labels changed", Reachability::all())
                .service(service.clone())
                .label_namespace("y", &[("team", "blue")])
                .label_pod(PodId::new("x", "c"), &[("pod", "b")]),
            Step::new("service kept, labels back", Reachability::all())
                .service(service)
                // UDP flows opened before the change, on one node and across.
                .flow(PodId::new("x", "a"), PodId::new("x", "c"), 80, true)
                .flow(PodId::new("y", "a"), PodId::new("z", "a"), 81, true),
        ],
    };
    lab.run_case(&case).unwrap();
    let report = lab.check(&Reachability::all(), &[]).unwrap();
    println!(
        "after reset: {} cells in {:.0} ms",
        report.cells,
        report.matrix_time.as_secs_f64() * 1e3
    );
}

/// The comparison itself, on synthetic results (no traffic, no root): a
/// deliberately wrong expected-deny cell and expected-allow cell are both
/// reported, and the rendered table marks exactly them.
#[test]
fn netpol_a_wrong_expectation_is_reported() {
    let truth = Reachability::all().deny_ingress(weir_lab::netpol::Peer::Ns("y"));
    let observed = Observed::from_expected(&truth);
    assert!(compare(&truth, &observed).is_empty());
    let wrong = truth
        .clone()
        .deny(
            weir_lab::netpol::Peer::Pod("x", "a"),
            weir_lab::netpol::Peer::Pod("z", "b"),
            On::tcp(80),
        )
        .allow(
            weir_lab::netpol::Peer::Pod("z", "c"),
            weir_lab::netpol::Peer::Pod("y", "c"),
            On::udp(81),
        );
    let mismatches = compare(&wrong, &observed);
    let cells: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    assert_eq!(
        cells,
        [
            "x/a -> z/b 80/tcp: expected denied, observed connected (reply \"z/b\")",
            "z/c -> y/c 81/udp: expected allowed, observed timeout",
        ]
    );
    let table = render(&wrong, &observed);
    println!("{table}");
    assert_eq!(table.matches("*.").count(), 1);
    assert_eq!(table.matches("*X").count(), 1);
    assert!(mismatches.iter().any(|m| m.proto == Proto::Udp));
}
