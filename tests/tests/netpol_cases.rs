//! Issue 4's NetworkPolicy truth tables on the real datapath: every case of
//! `weir_lab::netpol::cases` on the two-node lab (real agents, real
//! `weir-cni`, real traffic), grouped by theme so one lab build serves a
//! dozen cases. Each case applies its steps through the manifests dir,
//! waits for both agents, probes the whole 9×9 × {80, 81} × {TCP, UDP}
//! matrix (and its Service VIPs and established flows), then resets.
//!
//! A group runs all its cases and fails at the end naming every failed
//! case, each with the rendered table of its mismatching cells.
#![allow(clippy::unwrap_used)]

use weir_lab::netpol::{Case, Model, NetpolLab, Theme, cases_of};

/// Builds the lab, runs `theme`'s cases, and fails naming every failed
/// case (with its table) after running them all.
fn run_theme(theme: Theme) {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let cases: Vec<Case> = cases_of(lab.model(), theme);
    assert!(!cases.is_empty(), "no cases of {theme:?}");
    println!("{theme:?}: {} cases", cases.len());
    let run = lab.run_cases(&cases);
    if let Err(err) = run.into_result() {
        lab.cluster().print_agent_logs(40);
        panic!("{theme:?}: {err:#}");
    }
}

#[test]
fn netpol_cases_isolation() {
    run_theme(Theme::Isolation);
}

#[test]
fn netpol_cases_selectors() {
    run_theme(Theme::Selectors);
}

#[test]
fn netpol_cases_ipblocks_and_ports() {
    run_theme(Theme::IpBlocksAndPorts);
}

#[test]
fn netpol_cases_services_and_changes() {
    run_theme(Theme::ServicesAndChanges);
}

/// Every case is in exactly one theme, so the four tests above run all of
/// them (no root: the synthetic model has the lab's layout).
#[test]
fn netpol_cases_every_case_has_a_theme_test() {
    let model = Model::synthetic();
    let all = weir_lab::netpol::all_cases(&model);
    let themed: usize = Theme::ALL.iter().map(|t| cases_of(&model, *t).len()).sum();
    assert_eq!(themed, all.len());
    assert!(all.len() >= 30, "issue 4 asks for at least 30 cases");
    for theme in Theme::ALL {
        assert!(!cases_of(&model, theme).is_empty(), "{theme:?} is empty");
    }
}
