//! NetworkPolicy enforcement beyond the truth tables, on the two-node lab
//! with real agents, real `weir-cni` and real traffic (issue 4 §2, §3):
//! new pods policed from their first packet, host and node traffic,
//! anti-spoofing, audit mode, `weirctl monitor` and its filters, drop
//! metrics per policy, and an established TCP flow cut by an update.
//! Timings are printed, never asserted.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_lab::cluster::{Agent, EchoServer, PodSpec, TcpConn, poll};
use weir_lab::netpol::monitor::{Monitor, json_mentions};
use weir_lab::netpol::{NetpolLab, On, Peer, PodId, Reachability, Step, network_policy};
use weir_lab::{NetNs, ProbeOptions, ProbeOutcome, ProbeResult, Proto};

/// How long a monitor gets to subscribe before traffic starts.
const MONITOR_SETTLE: Duration = Duration::from_millis(500);
/// How long to wait for an event or a counter to show up.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);
/// Counters are read from per-CPU maps the agent walks periodically.
const COUNTER_DEADLINE: Duration = Duration::from_secs(20);

fn id(ns: &str, pod: &str) -> PodId {
    PodId::new(ns, pod)
}

fn deny_ingress(ns: &str) -> Value {
    network_policy(
        ns,
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

fn probe(ns: &NetNs, proto: Proto, ip: Ipv4Addr, port: u16) -> ProbeResult {
    ns.probe_with(
        proto,
        ip,
        port,
        ProbeOptions {
            timeout_ms: 1000,
            count: 1,
        },
    )
    .unwrap()
    .pop()
    .unwrap()
}

fn assert_answered(r: &ProbeResult, by: &str, what: &str) {
    assert!(
        r.result == ProbeOutcome::Connected && r.reply == by,
        "{what}: expected an answer from {by}, got {r:?}"
    );
}

fn assert_dropped(r: &ProbeResult, what: &str) {
    assert_eq!(
        r.result,
        ProbeOutcome::Timeout,
        "{what}: expected a drop (timeout), got {r:?}"
    );
}

fn spoofed_drops(agent: &Agent) -> f64 {
    agent
        .metric_sum("weir_drops_total", &[("reason", "spoofed_source")])
        .unwrap_or(0.0)
}

/// The sum of `weir_policy_drops_total` samples whose labels mention
/// `policy` (`ns/name`, or its namespace and name as separate labels).
fn policy_drops(agent: &Agent, ns: &str, name: &str) -> f64 {
    let body = agent.metrics().unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("weir_policy_drops_total{"))
        .filter(|l| {
            let labels = l.split('}').next().unwrap_or("");
            labels.contains(&format!("\"{ns}/{name}\""))
                || (labels.contains(&format!("\"{ns}\""))
                    && labels.contains(&format!("\"{name}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A pod created under an existing default deny is policed from its first
/// packet: the first connection it attempts, the moment CNI ADD returns
/// (before its Pod object has an address), is dropped by egress policy,
/// while the one peer the policy allows answers it.
#[test]
fn netpol_a_new_pod_is_policed_from_its_first_packet() {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let step = Step::new(
        "x may send only to y/b",
        Reachability::all().only_egress(Peer::Ns("x"), Peer::Pod("y", "b"), On::ALL),
    )
    .policy(network_policy(
        "x",
        "to-y-b",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}},
             "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    ));
    lab.apply(&step).unwrap();
    let ya = lab.model().pod_ip(id("y", "a"));
    let yb = lab.model().pod_ip(id("y", "b"));
    for node in [1, 2] {
        let name = format!("new{node}");
        let spec = PodSpec::new(&name).namespace("x").label("pod", "new");
        let added = Instant::now();
        let (pod, first) = lab
            .cluster()
            .add_pod_declared_first(node, spec, |pod| {
                let cni_add = added.elapsed();
                (cni_add, probe(pod.netns(), Proto::Tcp, ya, 80))
            })
            .unwrap();
        let (cni_add, first) = first;
        println!(
            "node {node}: pod object synced + CNI ADD took {cni_add:?}; first SYN to y/a: {first:?}"
        );
        assert_dropped(&first, &format!("the first connection of x/{name} to y/a"));
        let allowed = probe(pod.netns(), Proto::Tcp, yb, 80);
        assert_answered(&allowed, "y/b", &format!("x/{name} to y/b (allowed)"));
        let udp = probe(pod.netns(), Proto::Udp, ya, 81);
        assert_dropped(&udp, &format!("x/{name} to y/a over UDP"));
        drop(pod);
    }
    lab.check(&step.expected, &[]).unwrap();
}

/// Under an ingress default deny, the pod's own node (its host netns, as
/// kubelet probes come) still reaches it; the other node's host is an
/// ordinary peer, denied until an ipBlock holding its address allows it.
#[test]
fn netpol_host_traffic_own_node_allowed_other_node_only_by_ipblock() {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let (xa, xb) = (id("x", "a"), id("x", "b"));
    assert_eq!((xa.node(), xb.node()), (1, 2));
    let (xa_ip, xb_ip) = (lab.model().pod_ip(xa), lab.model().pod_ip(xb));
    let node2_ip = lab.model().node(2).ip;
    let deny = Step::new(
        "deny ingress to x",
        Reachability::all().deny_ingress(Peer::Ns("x")),
    )
    .policy(deny_ingress("x"));
    lab.apply(&deny).unwrap();
    for proto in Proto::ALL {
        assert_answered(
            &probe(host(&lab, 1), proto, xa_ip, 80),
            "x/a",
            "node1 host -> x/a",
        );
        assert_answered(
            &probe(host(&lab, 2), proto, xb_ip, 80),
            "x/b",
            "node2 host -> x/b",
        );
        assert_dropped(&probe(host(&lab, 2), proto, xa_ip, 80), "node2 host -> x/a");
        assert_dropped(&probe(host(&lab, 1), proto, xb_ip, 80), "node1 host -> x/b");
    }
    let allow = Step::new(
        "x/a also accepts node2's address",
        Reachability::all().deny_ingress(Peer::Ns("x")),
    )
    .policy(deny_ingress("x"))
    .policy(network_policy(
        "x",
        "a-from-node2",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": format!("{node2_ip}/32")}}]}]}),
    ));
    lab.apply(&allow).unwrap();
    for proto in Proto::ALL {
        assert_answered(
            &probe(host(&lab, 2), proto, xa_ip, 80),
            "x/a",
            "node2 host -> x/a (ipBlock)",
        );
        assert_dropped(&probe(host(&lab, 1), proto, xb_ip, 80), "node1 host -> x/b");
        assert_answered(
            &probe(host(&lab, 1), proto, xa_ip, 80),
            "x/a",
            "node1 host -> x/a",
        );
    }
    lab.check(&allow.expected, &[]).unwrap();
}

/// Node `n`'s host netns.
fn host(lab: &NetpolLab, n: usize) -> &NetNs {
    lab.cluster().node(n).netns()
}

/// A pod sending from an address that is not its own (a second address
/// added inside its netns, bound by the client) is dropped on its veth,
/// and the agent counts `spoofed_source` drops; its own address still
/// works.
#[test]
fn netpol_a_spoofed_source_is_dropped_and_counted() {
    weir_lab::require_root();
    let lab = NetpolLab::build().unwrap();
    let (xa, yb) = (id("x", "a"), id("y", "b"));
    let forged = lab.model().node(xa.node()).pod_cidr.nth(250).unwrap();
    assert!(!lab.model().pod_ips.contains(&forged));
    let ns = lab.pod(xa).netns();
    ns.ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"])
        .unwrap();
    let agent = &lab.cluster().agents()[xa.node() - 1];
    let before = spoofed_drops(agent);
    let target = SocketAddrV4::new(lab.model().pod_ip(yb), 80);
    const SENT: usize = 20;
    let sent = ns
        .enter(move || -> std::io::Result<usize> {
            let socket = UdpSocket::bind((forged, 0))?;
            let mut sent = 0;
            for _ in 0..SENT {
                sent += usize::from(socket.send_to(b"ping\n", target).is_ok());
            }
            Ok(sent)
        })
        .unwrap()
        .unwrap();
    assert_eq!(sent, SENT, "the kernel sent every forged datagram");
    // A forged TCP connection is dropped too (no SYN-ACK ever comes back).
    let forged_tcp = ns.enter(move || forged_connect(forged, target)).unwrap();
    assert!(forged_tcp.is_err(), "a TCP connect from {forged} completed");
    let want = before + SENT as f64;
    let took = poll(COUNTER_DEADLINE, || Ok(spoofed_drops(agent) >= want)).unwrap_or_else(|e| {
        panic!(
            "spoofed_source drops: {} before, {} now, want >= {want}: {e:#}",
            before,
            spoofed_drops(agent)
        )
    });
    println!(
        "spoofed_source drops {before} -> {} (counter visible after {took:?})",
        spoofed_drops(agent)
    );
    // The pod's own address still reaches y/b.
    assert_answered(
        &probe(ns, Proto::Udp, lab.model().pod_ip(yb), 80),
        "y/b",
        "x/a from its own address",
    );
}

/// connect(2) from `src` (bound, any port) to `dst`, bounded by a 2 s
/// SO_SNDTIMEO.
fn forged_connect(src: Ipv4Addr, dst: SocketAddrV4) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(2, 0),
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    Ok(())
}

/// Audit mode per namespace: with `weir.io/policy-audit: "true"` on x, a
/// default deny of x drops nothing, and `weirctl monitor -o json` shows the
/// would-be drop as an audit event naming the policy; without the
/// annotation the same policy drops.
#[test]
fn netpol_audit_namespace_passes_would_be_drops_and_reports_them() {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let xa = id("x", "a");
    let socket = lab.cluster().node(xa.node()).agent_socket();
    let audited = Step::new("x audited, deny ingress to x", Reachability::all())
        .policy(deny_ingress("x"))
        .annotate_namespace("x", &[("weir.io/policy-audit", "true")]);
    lab.apply(&audited).unwrap();
    let mut monitor = Monitor::start(&socket, &["-o", "json"], MONITOR_SETTLE).unwrap();
    let mut audit_only = Monitor::start(
        &socket,
        &["--verdict", "audit", "-o", "json"],
        MONITOR_SETTLE,
    )
    .unwrap();
    let za = lab.pod(id("z", "a"));
    assert_answered(
        &probe(za.netns(), Proto::Tcp, lab.model().pod_ip(xa), 80),
        "x/a",
        "z/a -> x/a under audit",
    );
    let event = monitor.wait_for(EVENT_DEADLINE, |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| json_mentions(&v, "x/deny-ingress") && json_mentions(&v, "audit"))
    });
    println!("monitor lines: {:?}", monitor.lines());
    let event = event.expect("an audit event naming x/deny-ingress");
    println!("audit event: {event}");
    let filtered = audit_only.wait_for(EVENT_DEADLINE, |l| l.contains("x/deny-ingress"));
    assert!(
        filtered.is_some(),
        "--verdict audit shows it too: {:?}",
        audit_only.lines()
    );
    // The whole matrix is reachable while x is audited.
    lab.check(&audited.expected, &[]).unwrap();

    let enforced = Step::new(
        "annotation removed",
        Reachability::all().deny_ingress(Peer::Ns("x")),
    )
    .policy(deny_ingress("x"));
    lab.apply(&enforced).unwrap();
    lab.check(&enforced.expected, &[]).unwrap();
}

/// `weirctl monitor` names the deciding policy and rule: drops name the
/// isolating policy, allows (requested per pod with `--pod`) the allowing
/// rule; `--pod` and `--verdict` filter; `/metrics` counts drops per
/// policy in `weir_policy_drops_total`.
#[test]
fn netpol_monitor_names_policy_and_rule_and_filters() {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let (xa, xc, ya, za) = (id("x", "a"), id("x", "c"), id("y", "a"), id("z", "a"));
    assert_eq!((xa.node(), xc.node()), (1, 1));
    let socket = lab.cluster().node(1).agent_socket();
    let step = Step::new(
        "x denies ingress; x/a accepts y on TCP 80",
        Reachability::all().deny_ingress(Peer::Ns("x")).allow(
            Peer::Ns("y"),
            Peer::Pod("x", "a"),
            On::tcp(80),
        ),
    )
    .policy(deny_ingress("x"))
    .policy(network_policy(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                            "ports": [{"port": 80, "protocol": "TCP"}]}]}),
    ));
    lab.apply(&step).unwrap();
    let agent = &lab.cluster().agents()[0];
    let drops_before = policy_drops(agent, "x", "deny-ingress");

    let mut text = Monitor::start(&socket, &["--verdict", "drop"], MONITOR_SETTLE).unwrap();
    let mut drops_json = Monitor::start(
        &socket,
        &["--verdict", "drop", "-o", "json"],
        MONITOR_SETTLE,
    )
    .unwrap();
    let mut xc_only =
        Monitor::start(&socket, &["--pod", "x/c", "-o", "json"], MONITOR_SETTLE).unwrap();
    let mut xa_allows = Monitor::start(
        &socket,
        &["--pod", "x/a", "--verdict", "allow", "-o", "json"],
        MONITOR_SETTLE,
    )
    .unwrap();

    let (xa_ip, xc_ip) = (lab.model().pod_ip(xa), lab.model().pod_ip(xc));
    // x/c is selected by deny-ingress only: a drop naming it.
    assert_dropped(
        &probe(lab.pod(za).netns(), Proto::Tcp, xc_ip, 80),
        "z/a -> x/c",
    );
    // Allowed by from-y's rule 0.
    assert_answered(
        &probe(lab.pod(ya).netns(), Proto::Tcp, xa_ip, 80),
        "x/a",
        "y/a -> x/a TCP 80",
    );
    // A drop into x/a (not x/c).
    assert_dropped(
        &probe(lab.pod(za).netns(), Proto::Udp, xa_ip, 81),
        "z/a -> x/a UDP 81",
    );

    let line = text.wait_for(EVENT_DEADLINE, |l| l.contains("x/deny-ingress"));
    println!("weirctl monitor --verdict drop: {:?}", text.lines());
    let line = line.expect("a drop line naming x/deny-ingress");
    assert!(
        line.contains("ingress") && (line.contains("isolation") || line.contains("default")),
        "the drop line names the direction and the default-deny isolation: {line}"
    );

    let allow = xa_allows.wait_for(EVENT_DEADLINE, |l| l.contains("x/from-y"));
    println!(
        "weirctl monitor --pod x/a --verdict allow: {:?}",
        xa_allows.lines()
    );
    let allow = allow.expect("an allow event for x/a naming x/from-y");
    let v: Value = serde_json::from_str(&allow).unwrap();
    assert!(
        json_mentions(&v, "ingress[0]") || v.to_string().contains("\"rule\":0"),
        "the allow names rule 0: {allow}"
    );

    // Filters: x/c's monitor sees its drop and nothing of x/a; the drop
    // monitor never shows the allow.
    xc_only.wait_for(EVENT_DEADLINE, |l| l.contains("x/deny-ingress"));
    drops_json.drain(Duration::from_secs(2));
    xc_only.drain(Duration::from_secs(1));
    let xc_events = xc_only.json_events();
    assert!(
        !xc_events.is_empty(),
        "--pod x/c saw no event: {:?}",
        xc_only.lines()
    );
    let xa_ip_s = xa_ip.to_string();
    assert!(
        xc_events
            .iter()
            .all(|e| !string_values(e).contains(&xa_ip_s)
                && !string_values(e).iter().any(|s| s == "x/a")),
        "--pod x/c showed an event of x/a: {:?}",
        xc_only.lines()
    );
    let drop_events = drops_json.json_events();
    assert!(!drop_events.is_empty(), "{:?}", drops_json.lines());
    assert!(
        drop_events.iter().all(|e| !json_mentions(e, "x/from-y")),
        "--verdict drop showed an allow: {:?}",
        drops_json.lines()
    );

    let took = poll(COUNTER_DEADLINE, || {
        Ok(policy_drops(agent, "x", "deny-ingress") > drops_before)
    });
    let metrics = agent.metrics().unwrap_or_default();
    let family: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_policy_drops_total"))
        .collect();
    println!("weir_policy_drops_total samples: {family:?}");
    took.unwrap_or_else(|e| panic!("no weir_policy_drops_total for x/deny-ingress: {e:#}"));
}

/// Every string value in `v`, at any depth.
fn string_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(string_values).collect(),
        Value::Object(map) => map.values().flat_map(string_values).collect(),
        _ => Vec::new(),
    }
}

/// An established TCP connection that a policy update no longer allows
/// stops (the revision re-check at its next packet); the time from the
/// manifest write to the first unanswered request is printed. The flows
/// open before any policy selects x/a.
#[test]
fn netpol_a_long_lived_tcp_flow_stops_after_an_update() {
    weir_lab::require_root();
    let lab = NetpolLab::build().unwrap();
    tcp_flows_cut_by_an_update(lab);
}

/// The same with the flows admitted under a policy already isolating x/a
/// (from y and z), then narrowed to z.
#[test]
fn netpol_a_long_lived_tcp_flow_admitted_under_a_policy_stops_after_an_update() {
    weir_lab::require_root();
    let mut lab = NetpolLab::build().unwrap();
    let before = Step::new(
        "x/a accepts y and z",
        Reachability::all().only_ingress(
            Peer::Pod("x", "a"),
            Peer::AnyOf(vec![Peer::Ns("y"), Peer::Ns("z")]),
            On::ALL,
        ),
    )
    .policy(network_policy(
        "x",
        "a-from-z",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                   {"key": "ns", "operator": "In", "values": ["y", "z"]}]}}]}]}),
    ));
    lab.apply(&before).unwrap();
    tcp_flows_cut_by_an_update(lab);
}

/// Opens TCP flows y/a -> x/a and y/b -> x/a, keeps them busy, applies
/// "x/a accepts only z" (policy x/a-from-z) and checks both stop.
fn tcp_flows_cut_by_an_update(mut lab: NetpolLab) {
    let (xa, ya, yb) = (id("x", "a"), id("y", "a"), id("y", "b"));
    const PORT: u16 = 7000;
    let _echo = EchoServer::start(lab.pod(xa).netns(), "x/a", PORT).unwrap();
    // Across nodes (y/a on node 2) and on one node (y/b on node 1).
    let mut flows = Vec::new();
    for client in [ya, yb] {
        let mut conn =
            TcpConn::connect(lab.pod(client).netns(), lab.model().pod_ip(xa), PORT).unwrap();
        assert_eq!(conn.exchange("hello").unwrap(), "x/a hello");
        flows.push((client, conn));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = flows
        .into_iter()
        .map(|(client, mut conn)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // (send time of the last answered request, of the first unanswered one)
                let mut last_ok = None;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let sent = start.elapsed();
                    n += 1;
                    match conn.exchange(&format!("req{n}")) {
                        Ok(_) => last_ok = Some(sent),
                        Err(_) => return (client, last_ok, Some(sent), n),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (client, last_ok, None, n)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let written = start.elapsed();
    let step = Step::new(
        "x/a accepts only z",
        Reachability::all().only_ingress(Peer::Pod("x", "a"), Peer::Ns("z"), On::ALL),
    )
    .policy(network_policy(
        "x",
        "a-from-z",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    ));
    let sync = lab.apply(&step).unwrap();
    let synced = written + sync;
    // Give the flows 5 s past the sync to stop (their read timeout is 3 s).
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let mut never_stopped = Vec::new();
    for worker in workers {
        let (client, last_ok, failed, n) = worker.join().unwrap();
        let ms = |d: Duration| (d.as_secs_f64() - written.as_secs_f64()) * 1e3;
        println!(
            "{client} -> x/a:{PORT}: {n} requests; policy written at 0 ms, agents synced at {:.0} ms, \
             last answered request sent at {:.0} ms, first unanswered at {:?} ms",
            ms(synced),
            last_ok.map_or(f64::NAN, ms),
            failed.map(ms).map(|v| v.round())
        );
        match failed {
            Some(failed) => assert!(
                failed > written,
                "{client}: the flow failed before the update"
            ),
            None => never_stopped.push(format!("{client} (node {})", client.node())),
        }
    }
    assert!(
        never_stopped.is_empty(),
        "established TCP flows into x/a (node 1) that the update no longer allows kept being answered: {never_stopped:?}"
    );
    lab.check(&step.expected, &[]).unwrap();
}
