//! BPF_PROG_TEST_RUN tests of NetworkPolicy enforcement in the pod
//! programs: a small cluster is compiled by the agent's own compiler
//! (`PolicyCompiler`), written by its own map writer (`PolicyMaps`), and
//! crafted packets are judged by `weir_from_pod` (egress) and `weir_to_pod`
//! (ingress); verdicts are compared with the reference
//! `PolicyPlan::verdict`. Needs root and the real eBPF object.
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::{net::Ipv4Addr, path::Path};

use bpf_support::*;
use weir_agent::{
    datapath::{PolicyEventReader, PolicyMaps},
    k8s::Snapshot,
    policy::{Capacities, Direction as PolicyDirection, PolicyCompiler, PolicyContext, PolicyPlan},
};
use weir_common::{
    DropReason,
    metrics::Direction,
    policy::{self as names, POLICY_EGRESS, POLICY_INGRESS, PolicyEvent, event_flags, polct_flags},
    programs::{FROM_POD, TO_POD},
};

/// This node (n1) and another (n2).
const N1: &str = "192.168.0.1";
const N2: &str = "192.168.0.2";
/// x/a and x/b on n1, x/c on n2, au/a on n1 (audit namespace).
const XA: &str = "10.244.1.10";
const XB: &str = "10.244.1.11";
const XC: &str = "10.244.2.10";
const AUA: &str = "10.244.1.20";
const OUTSIDE: &str = "203.0.113.7";

fn pod(ns: &str, name: &str, node: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: {ns}, name: {name}, labels: {{pod: {name}}}}}\n\
         spec:\n  nodeName: {node}\n  containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 80}}]}}]\n\
         status:\n  phase: Running\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
    )
}

fn cluster() -> String {
    let mut yaml = String::new();
    for (name, ip) in [("n1", N1), ("n2", N2)] {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
             status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
        );
    }
    yaml += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n";
    yaml += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: au, labels: {ns: au}, \
             annotations: {weir.io/policy-audit: \"true\"}}\n";
    yaml += &pod("x", "a", "n1", XA);
    yaml += &pod("x", "b", "n1", XB);
    yaml += &pod("x", "c", "n2", XC);
    yaml += &pod("au", "a", "n1", AUA);
    yaml
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{namespace: {ns}, name: {name}}}\nspec: {{{spec}}}\n"
    )
}

/// x/a: ingress from pod=b on TCP `a_port` (the named port `http` when
/// 80), UDP 81 and SCTP 9000, egress default deny. x/b: egress to pod=a on TCP 80
/// only, ingress default deny. au/*: ingress default deny, in audit mode.
fn policies(a_port: &str) -> String {
    [
        policy(
            "x",
            "web",
            &format!(
                "podSelector: {{matchLabels: {{pod: a}}}}, policyTypes: [Ingress, Egress], \
                 ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}], \
                 ports: [{{port: {a_port}}}, {{protocol: UDP, port: 81}}, \
                 {{protocol: SCTP, port: 9000}}]}}]"
            ),
        ),
        policy(
            "x",
            "client",
            "podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress, Egress], \
             egress: [{to: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80}]}]",
        ),
        policy("au", "deny", "podSelector: {}, policyTypes: [Ingress]"),
    ]
    .concat()
}

fn compile(compiler: &mut PolicyCompiler, yaml: &str) -> PolicyPlan {
    let parsed = weir_agent::manifests::parse_yaml(Path::new("test.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let snapshot = Snapshot::from_objects(parsed.objects.into_iter().map(|p| p.object));
    let ctx = PolicyContext {
        node_name: "n1".into(),
        ..PolicyContext::default()
    };
    let plan = compiler.compile(&snapshot, &ctx);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    plan
}

/// A datapath with the plan written by the agent's writer.
struct Policed {
    dp: Datapath,
    maps: PolicyMaps,
    events: PolicyEventReader,
    compiler: PolicyCompiler,
    plan: PolicyPlan,
}

impl Policed {
    fn new(a_port: &str) -> Self {
        let mut dp = Datapath::load();
        let mut maps = PolicyMaps::take(&mut dp.ebpf, Capacities::default()).unwrap();
        let events = PolicyEventReader::from_map(dp.ebpf.take_map(names::EVENTS).unwrap()).unwrap();
        let mut compiler = PolicyCompiler::new();
        let plan = compile(&mut compiler, &(cluster() + &policies(a_port)));
        let stats = maps.apply_policy(&plan).unwrap();
        assert_eq!(stats.failed, 0);
        assert!(stats.adopted, "the first apply reads the maps");
        assert_eq!(stats.policy_entries, plan.policy_entries().count());
        Self {
            dp,
            maps,
            events,
            compiler,
            plan,
        }
    }

    /// Recompiles with another x/a port and applies it (a new revision).
    fn change(&mut self, a_port: &str) {
        let plan = compile(&mut self.compiler, &(cluster() + &policies(a_port)));
        assert_ne!(plan.revision, self.plan.revision);
        let stats = self.maps.apply_policy(&plan).unwrap();
        assert_eq!(stats.failed, 0);
        assert!(!stats.adopted);
        assert!(stats.written() + stats.deleted() > 0);
        assert_eq!(self.maps.policy_config().unwrap().revision, plan.revision);
        self.plan = plan;
    }

    fn events(&mut self) -> Vec<PolicyEvent> {
        std::iter::from_fn(|| self.events.try_next()).collect()
    }

    fn drops(&self) -> Vec<(u32, u64)> {
        self.maps.policy_drops().unwrap()
    }

    /// The reference verdict as a TC code.
    fn expected(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        peer: &str,
        proto: u8,
        port: u16,
    ) -> u32 {
        let verdict = self
            .plan
            .verdict(addr(endpoint), direction, addr(peer), proto, port)
            .unwrap_or_else(|| panic!("{endpoint} is not a local endpoint"));
        if verdict.is_allowed() {
            TC_ACT_OK
        } else {
            TC_ACT_SHOT
        }
    }

    fn isolation(&self, endpoint: &str, direction: PolicyDirection) -> u32 {
        let ep = &self.plan.endpoints[&addr(endpoint)];
        ep.direction(direction).isolated_by.unwrap()
    }
}

fn addr(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

const SCTP: u8 = 132;

fn packet(proto: u8, src: (&str, u16), dst: (&str, u16)) -> Vec<u8> {
    match proto {
        TCP => Builder::tcp(src, dst, SYN).build(),
        UDP => Builder::udp(src, dst).build(),
        SCTP => {
            // An SCTP common header: ports, verification tag, checksum.
            let mut header = Vec::new();
            header.extend_from_slice(&src.1.to_be_bytes());
            header.extend_from_slice(&dst.1.to_be_bytes());
            header.extend_from_slice(&[0; 8]);
            let mut b = Builder::icmp(src.0, dst.0, &header);
            b.proto = SCTP;
            b.build()
        }
        _ => unreachable!(),
    }
}

#[test]
fn new_flows_get_the_reference_verdict_in_both_directions() {
    in_netns(|| {
        let mut p = Policed::new("http");
        let mut sport = 30000;
        let mut checked = 0;
        // Ingress at x/a and x/b (to-pod), from pods, nodes and outside.
        for endpoint in [XA, XB] {
            for peer in [XA, XB, XC, AUA, N1, N2, OUTSIDE] {
                if peer == endpoint {
                    continue;
                }
                for (proto, port) in [
                    (TCP, 80),
                    (TCP, 81),
                    (UDP, 81),
                    (UDP, 80),
                    (SCTP, 9000),
                    (SCTP, 9001),
                ] {
                    sport += 1;
                    let want = p.expected(endpoint, PolicyDirection::Ingress, peer, proto, port);
                    let run =
                        p.dp.run(TO_POD, &packet(proto, (peer, sport), (endpoint, port)));
                    assert_eq!(
                        run.verdict, want,
                        "ingress {peer} -> {endpoint}:{port}/{proto}"
                    );
                    checked += 1;
                }
            }
        }
        // Egress at x/a and x/b (from-pod).
        for endpoint in [XA, XB] {
            for peer in [XA, XB, XC, AUA, N1, OUTSIDE] {
                if peer == endpoint {
                    continue;
                }
                for (proto, port) in [(TCP, 80), (TCP, 81), (UDP, 81)] {
                    sport += 1;
                    let want = p.expected(endpoint, PolicyDirection::Egress, peer, proto, port);
                    let run =
                        p.dp.run(FROM_POD, &packet(proto, (endpoint, sport), (peer, port)));
                    assert_eq!(
                        run.verdict, want,
                        "egress {endpoint} -> {peer}:{port}/{proto}"
                    );
                    checked += 1;
                }
            }
        }
        // Both outcomes occurred, so the comparison means something.
        let allowed = p.dp.count(Direction::ToPod, DropReason::Forwarded)
            + p.dp.count(Direction::FromPod, DropReason::Forwarded);
        assert!(
            allowed > 5 && allowed < checked,
            "{allowed} of {checked} allowed"
        );
        // SCTP is matched by protocol and port (the LB ignores it).
        let run = p.dp.run(TO_POD, &packet(SCTP, (XB, 40000), (XA, 9000)));
        assert_eq!(run.verdict, TC_ACT_OK, "SCTP 9000 from x/b");
        let run = p.dp.run(TO_POD, &packet(SCTP, (XB, 40000), (XA, 9001)));
        assert_eq!(run.verdict, TC_ACT_SHOT, "SCTP 9001");
        // The node itself reaches x/a on any port (kubelet probes).
        let run = p.dp.run(TO_POD, &packet(TCP, (N1, 40000), (XA, 9999)));
        assert_eq!(run.verdict, TC_ACT_OK, "host-origin ingress");
        let run = p.dp.run(TO_POD, &packet(TCP, (N2, 40000), (XA, 9999)));
        assert_eq!(run.verdict, TC_ACT_SHOT, "another node is an ordinary peer");
    });
}

#[test]
fn a_denied_flow_is_dropped_counted_and_reported() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // x/c -> x/a:80: x/a has ingress rules, none for c.
        let run = p.dp.run(TO_POD, &packet(TCP, (XC, 40000), (XA, 80)));
        assert_eq!(run.verdict, TC_ACT_SHOT);
        // x/a -> outside: x/a's egress is a default deny.
        let run = p.dp.run(FROM_POD, &packet(UDP, (XA, 40001), (OUTSIDE, 53)));
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_eq!(p.dp.count(Direction::ToPod, DropReason::PolicyDenied), 1);
        assert_eq!(
            p.dp.count(Direction::FromPod, DropReason::PolicyDefaultDeny),
            1
        );

        let events = p.events();
        assert_eq!(events.len(), 2, "{events:?}");
        let ingress = events[0];
        assert_eq!(
            (
                ingress.saddr,
                ingress.daddr,
                ingress.sport,
                ingress.dport,
                ingress.proto
            ),
            (
                be_addr(addr(XC)),
                be_addr(addr(XA)),
                be_port(40000),
                be_port(80),
                TCP
            )
        );
        assert_eq!(ingress.direction, POLICY_INGRESS);
        assert_eq!(ingress.reason, DropReason::PolicyDenied as u8);
        assert_eq!(ingress.endpoint, be_addr(addr(XA)));
        let a_ingress = p.isolation(XA, PolicyDirection::Ingress);
        assert_eq!(ingress.rule_id, a_ingress);
        assert_eq!(ingress.peer_identity, p.plan.lookup_ip(addr(XC)).identity);
        assert_eq!(ingress.flags, 0);
        assert_eq!(ingress.kind, names::EVENT_POLICY_VERDICT);
        assert!(ingress.timestamp_ns > 0);
        let egress = events[1];
        assert_eq!(egress.direction, POLICY_EGRESS);
        assert_eq!(egress.reason, DropReason::PolicyDefaultDeny as u8);
        assert_eq!(egress.endpoint, be_addr(addr(XA)));
        let a_egress = p.isolation(XA, PolicyDirection::Egress);
        assert_eq!(egress.rule_id, a_egress);
        assert_eq!(
            (egress.daddr, egress.dport),
            (be_addr(addr(OUTSIDE)), be_port(53))
        );

        let mut want = vec![(a_ingress, 1), (a_egress, 1)];
        want.sort();
        assert_eq!(p.drops(), want);
        assert_eq!(p.maps.policy_events_lost().unwrap(), 0);
    });
}

#[test]
fn replies_and_later_packets_pass_on_policy_conntrack() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // x/b -> x/a:80: b's egress allows it, a's ingress too.
        let syn = Builder::tcp((XB, 40000), (XA, 80), SYN).build();
        assert_eq!(p.dp.run(FROM_POD, &syn).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(TO_POD, &syn).verdict, TC_ACT_OK);
        // The reply leaves x/a (egress default deny) and enters x/b
        // (ingress default deny): both pass as replies.
        let syn_ack = Builder::tcp((XA, 80), (XB, 40000), SYN | ACK).build();
        assert_eq!(p.dp.run(FROM_POD, &syn_ack).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(TO_POD, &syn_ack).verdict, TC_ACT_OK);
        let ack = Builder::tcp((XB, 40000), (XA, 80), ACK).build();
        assert_eq!(p.dp.run(FROM_POD, &ack).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(TO_POD, &ack).verdict, TC_ACT_OK);
        // The same packets as new flows would be dropped.
        let fresh = Builder::tcp((XA, 80), (XB, 40001), SYN | ACK).build();
        assert_eq!(p.dp.run(FROM_POD, &fresh).verdict, TC_ACT_SHOT);
        assert_eq!(p.dp.run(TO_POD, &fresh).verdict, TC_ACT_SHOT);
        // ICMP echo: x/b pings x/a (b's egress allows TCP 80 only).
        let echo = Builder::icmp_echo(XB, XA).build();
        assert_eq!(p.dp.run(FROM_POD, &echo).verdict, TC_ACT_SHOT);
        assert_eq!(
            p.dp.count(Direction::ToPod, DropReason::PolicyDefaultDeny)
                + p.dp
                    .count(Direction::FromPod, DropReason::PolicyDefaultDeny),
            2
        );
        assert_eq!(p.dp.count(Direction::FromPod, DropReason::PolicyDenied), 1);
        let entries = p.maps.polct.iter().count();
        assert_eq!(entries, 2, "one egress (b) and one ingress (a) entry");
    });
}

#[test]
fn icmp_echo_replies_pass_on_the_echo_id() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // x/b's ingress is a default deny, its egress allows only x/a:80;
        // x/a's egress is a default deny. Only the node may ping: x/a's
        // reply to the node passes on the request's entry.
        let echo = Builder::icmp_echo(N1, XA).build();
        assert_eq!(p.dp.run(TO_POD, &echo).verdict, TC_ACT_OK, "host-origin");
        let mut reply = Builder::icmp_echo(XA, N1);
        reply.payload[0] = 0; // echo reply, same id
        let reply = reply.build();
        assert_eq!(p.dp.run(FROM_POD, &reply).verdict, TC_ACT_OK, "the reply");
        // Another echo id is a new flow, denied.
        let mut other = Builder::icmp_echo(XA, N1);
        other.payload[4] = 9;
        assert_eq!(p.dp.run(FROM_POD, &other.build()).verdict, TC_ACT_SHOT);
    });
}

#[test]
fn a_spoofed_source_is_dropped_and_counted() {
    in_netns(|| {
        let mut p = Policed::new("http");
        p.dp.auto_pods = false;
        p.dp.endpoint(XB, LO_IFINDEX, CLIENT_MAC, GATEWAY_MAC);
        p.dp.endpoint(XA, 4242, CLIENT_MAC, GATEWAY_MAC);
        // x/b's own address on its own veth: judged by policy (allowed).
        let own = packet(TCP, (XB, 40000), (XA, 80));
        assert_eq!(p.dp.run(FROM_POD, &own).verdict, TC_ACT_OK);
        // An address nobody has, and x/a's address behind x/b's veth.
        for src in ["10.244.1.99", XA] {
            let spoofed = packet(TCP, (src, 40001), (XC, 80));
            assert_eq!(p.dp.run(FROM_POD, &spoofed).verdict, TC_ACT_SHOT, "{src}");
        }
        assert_eq!(p.dp.count(Direction::FromPod, DropReason::SpoofedSource), 2);
        assert!(p.events().is_empty(), "dropped before any policy lookup");
        assert_eq!(p.maps.polct.iter().count(), 1, "only x/b's own flow");
    });
}

#[test]
fn audit_mode_passes_would_be_drops_and_marks_their_events() {
    in_netns(|| {
        let mut p = Policed::new("http");
        let run = p.dp.run(TO_POD, &packet(TCP, (XB, 40000), (AUA, 80)));
        assert_eq!(run.verdict, TC_ACT_OK, "audit namespace");
        let events = p.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, DropReason::PolicyDefaultDeny as u8);
        assert_eq!(events[0].flags, event_flags::AUDIT);
        assert_eq!(
            events[0].rule_id,
            p.isolation(AUA, PolicyDirection::Ingress)
        );
        assert!(p.drops().is_empty(), "no drop happened");
        // Node-wide audit: x/a's would-be drops pass too.
        let drop = packet(TCP, (XC, 40001), (XA, 80));
        assert_eq!(p.dp.run(TO_POD, &drop).verdict, TC_ACT_SHOT);
        p.maps.set_policy_settings(true, 0, 0).unwrap();
        let audit = packet(TCP, (XC, 40002), (XA, 80));
        assert_eq!(p.dp.run(TO_POD, &audit).verdict, TC_ACT_OK);
        let events = p.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].flags, event_flags::AUDIT);
        assert_eq!(p.maps.policy_config().unwrap().revision, p.plan.revision);
    });
}

#[test]
fn a_revision_change_rechecks_established_flows() {
    in_netns(|| {
        let mut p = Policed::new("http");
        let tcp = Builder::tcp((XB, 40000), (XA, 80), ACK).build();
        let udp = Builder::udp((XB, 40001), (XA, 81)).build();
        for flow in [&tcp, &udp] {
            assert_eq!(p.dp.run(TO_POD, flow).verdict, TC_ACT_OK);
        }
        assert!(p.events().is_empty());
        // x/a now allows TCP 8080 instead of 80; UDP 81 stays.
        p.change("8080");
        assert_eq!(p.dp.run(TO_POD, &udp).verdict, TC_ACT_OK, "still allowed");
        assert_eq!(
            p.dp.run(TO_POD, &tcp).verdict,
            TC_ACT_SHOT,
            "no longer allowed"
        );
        let events = p.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].flags, event_flags::RECHECK);
        assert_eq!(events[0].reason, DropReason::PolicyDenied as u8);
        assert_eq!(events[0].dport, be_port(80));
        // Both entries took the revision; the denied one is a tombstone.
        let mut entries: Vec<_> = p.maps.polct.iter().map(|r| r.unwrap()).collect();
        entries.sort_by_key(|(key, _)| key.proto);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0.proto, TCP);
        assert_ne!(entries[0].1.flags & polct_flags::DENIED, 0);
        assert_eq!(entries[1].0.proto, UDP);
        assert_eq!(entries[1].1.flags & polct_flags::DENIED, 0);
        for (_, entry) in &entries {
            assert_eq!(entry.revision, p.plan.revision);
        }
        assert_eq!(p.dp.run(TO_POD, &tcp).verdict, TC_ACT_SHOT, "stays denied");
    });
}

#[test]
fn egress_to_a_service_is_judged_on_the_backend() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // Two ClusterIPs: one backed by x/a:80 (x/b may reach it), one by
        // x/c:80 (x/b may not).
        p.dp.service(&Service::new("10.96.0.10", 80, TCP, 1).backends(&[Backend::new(1, XA, 80)]));
        p.dp.service(&Service::new("10.96.0.11", 80, TCP, 2).backends(&[Backend::new(2, XC, 80)]));
        let allowed = Builder::tcp((XB, 40000), ("10.96.0.10", 80), SYN).build();
        let run = p.dp.run(FROM_POD, &allowed);
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(run.view().dst(), (addr(XA), 80), "translated");
        assert_eq!(p.dp.ct().len(), 2, "a service flow");
        let denied = Builder::tcp((XB, 40001), ("10.96.0.11", 80), SYN).build();
        assert_eq!(p.dp.run(FROM_POD, &denied).verdict, TC_ACT_SHOT);
        assert_eq!(
            p.dp.ct().len(),
            2,
            "a denied flow creates no service conntrack"
        );
        let events = p.events();
        assert_eq!(events.len(), 1);
        let e = events[0];
        assert_eq!(
            (e.daddr, e.dport),
            (be_addr(addr(XC)), be_port(80)),
            "the backend"
        );
        assert_eq!(
            (e.orig_daddr, e.orig_dport),
            (be_addr(addr("10.96.0.11")), be_port(80)),
            "the VIP"
        );
        assert_eq!(e.rule_id, p.isolation(XB, PolicyDirection::Egress));
        // The allowed flow's reply comes back reverse-NATed (VIP -> x/b) and
        // passes x/b's ingress default deny on the egress entry.
        let reply = Builder::tcp(("10.96.0.10", 80), (XB, 40000), SYN | ACK).build();
        assert_eq!(p.dp.run(TO_POD, &reply).verdict, TC_ACT_OK);
        let stranger = Builder::tcp(("10.96.0.10", 80), (XB, 40009), SYN | ACK).build();
        assert_eq!(p.dp.run(TO_POD, &stranger).verdict, TC_ACT_SHOT);
    });
}

#[test]
fn allowed_flows_are_sampled_and_events_rate_limited() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // Every allowed new flow, at most 3 events per second.
        p.maps.set_policy_settings(false, 3, 1).unwrap();
        for sport in 0..5 {
            let run =
                p.dp.run(TO_POD, &packet(TCP, (XB, 41000 + sport), (XA, 80)));
            assert_eq!(run.verdict, TC_ACT_OK);
        }
        let events = p.events();
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.reason == DropReason::Forwarded as u8)
        );
        assert_ne!(events[0].rule_id, 0, "names the allowing rule");
        assert_eq!(p.maps.policy_events_lost().unwrap(), 2);
    });
}

#[test]
fn a_flow_admitted_before_any_isolation_stops_when_a_policy_isolates() {
    in_netns(|| {
        let mut p = Policed::new("http");
        // Start without policies: nothing is isolated.
        let open = compile(&mut p.compiler, &cluster());
        p.maps.apply_policy(&open).unwrap();
        let from_c = Builder::tcp((XC, 40000), (XA, 7000), ACK).build();
        let reply = Builder::tcp((XA, 7000), (XC, 40000), ACK).build();
        assert_eq!(p.dp.run(TO_POD, &from_c).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(FROM_POD, &reply).verdict, TC_ACT_OK);
        // x/web isolates x/a (x/c is not allowed): both directions stop.
        let isolating = compile(&mut p.compiler, &(cluster() + &policies("http")));
        assert_ne!(isolating.revision, open.revision);
        p.maps.apply_policy(&isolating).unwrap();
        assert_eq!(p.dp.run(TO_POD, &from_c).verdict, TC_ACT_SHOT);
        assert_eq!(p.dp.run(FROM_POD, &reply).verdict, TC_ACT_SHOT);
    });
}

/// A flow a re-check denies stays dead in both directions: the server's
/// own next packet (a retransmission, from-pod, egress not isolated) must
/// not reopen it as an egress flow whose replies would then pass.
#[test]
fn a_rechecked_denied_flow_is_not_reopened_by_the_other_side() {
    in_netns(|| {
        let mut p = Policed::new("http");
        let open = compile(&mut p.compiler, &cluster());
        p.maps.apply_policy(&open).unwrap();
        let from_c = Builder::tcp((XC, 40001), (XA, 7000), ACK).build();
        let reply = Builder::tcp((XA, 7000), (XC, 40001), ACK).build();
        assert_eq!(p.dp.run(TO_POD, &from_c).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(FROM_POD, &reply).verdict, TC_ACT_OK);
        // Ingress only: x/a's egress stays open, x/c may no longer reach it.
        let ingress_only = policy(
            "x",
            "from-b",
            "podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], \
             ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
        );
        let isolating = compile(&mut p.compiler, &(cluster() + &ingress_only));
        p.maps.apply_policy(&isolating).unwrap();
        assert_eq!(p.dp.run(TO_POD, &from_c).verdict, TC_ACT_SHOT);
        for round in 0..3 {
            assert_eq!(
                p.dp.run(FROM_POD, &reply).verdict,
                TC_ACT_SHOT,
                "server retransmission {round}"
            );
            assert_eq!(
                p.dp.run(TO_POD, &from_c).verdict,
                TC_ACT_SHOT,
                "client packet {round}"
            );
        }
        // A new connection of x/c on the same tuple is judged afresh (and
        // denied); one from x/b is allowed.
        let syn_c = Builder::tcp((XC, 40001), (XA, 7000), SYN).build();
        assert_eq!(p.dp.run(TO_POD, &syn_c).verdict, TC_ACT_SHOT);
        let syn_b = Builder::tcp((XB, 40001), (XA, 7000), SYN).build();
        assert_eq!(p.dp.run(TO_POD, &syn_b).verdict, TC_ACT_OK);
        // Allowed again by a later revision: the tombstone is re-judged.
        let reopened = compile(&mut p.compiler, &cluster());
        p.maps.apply_policy(&reopened).unwrap();
        assert_eq!(p.dp.run(TO_POD, &from_c).verdict, TC_ACT_OK);
        assert_eq!(p.dp.run(FROM_POD, &reply).verdict, TC_ACT_OK);
    });
}
