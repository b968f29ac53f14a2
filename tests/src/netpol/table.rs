//! The truth table of the e2e netpol model: which pod may reach which, per
//! port and protocol ([`Reachability`]), what the probes saw ([`Observed`]),
//! and their comparison ([`compare`], [`render`]).
//!
//! Pod-to-itself cells (loopback) are always allowed: a pod reaching its own
//! IP never leaves its netns, so no CNI polices it (the e2e framework
//! allows loopback the same way). The builders never change them.

use std::fmt::Write as _;

use crate::workload::{ProbeOutcome, Proto};

use super::{NAMESPACES, POD_COUNT, PODS, PodId};

/// The four (port, protocol) pairs every pod serves, in table order.
pub const PORT_PROTOS: [(u16, Proto); 4] = [
    (80, Proto::Tcp),
    (80, Proto::Udp),
    (81, Proto::Tcp),
    (81, Proto::Udp),
];

/// Index of `(port, proto)` in [`PORT_PROTOS`].
pub fn port_proto_index(port: u16, proto: Proto) -> Option<usize> {
    PORT_PROTOS.iter().position(|&pp| pp == (port, proto))
}

/// Which pods a builder call applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Every pod.
    Any,
    /// Every pod of a namespace (`"x"`).
    Ns(&'static str),
    /// One pod (`"x"`, `"a"`).
    Pod(&'static str, &'static str),
    /// The pod of that name in every namespace.
    Named(&'static str),
    /// The pods on lab node 1 or 2 (see [`PodId::node`]).
    OnNode(usize),
    /// Any of these.
    AnyOf(Vec<Peer>),
    /// Every pod but these.
    Not(Box<Peer>),
}

impl Peer {
    pub fn except(peer: Peer) -> Peer {
        Peer::Not(Box::new(peer))
    }

    pub fn matches(&self, pod: PodId) -> bool {
        match self {
            Peer::Any => true,
            Peer::Ns(ns) => pod.namespace() == *ns,
            Peer::Pod(ns, name) => pod.namespace() == *ns && pod.name() == *name,
            Peer::Named(name) => pod.name() == *name,
            Peer::OnNode(node) => pod.node() == *node,
            Peer::AnyOf(peers) => peers.iter().any(|p| p.matches(pod)),
            Peer::Not(peer) => !peer.matches(pod),
        }
    }
}

/// Which (port, protocol) cells a builder call applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct On {
    pub port: Option<u16>,
    pub proto: Option<Proto>,
}

impl On {
    /// Every port and protocol.
    pub const ALL: On = On {
        port: None,
        proto: None,
    };

    /// Both protocols on `port`.
    pub const fn port(port: u16) -> On {
        On {
            port: Some(port),
            proto: None,
        }
    }

    pub const fn tcp(port: u16) -> On {
        On {
            port: Some(port),
            proto: Some(Proto::Tcp),
        }
    }

    pub const fn udp(port: u16) -> On {
        On {
            port: Some(port),
            proto: Some(Proto::Udp),
        }
    }

    /// Every port of one protocol.
    pub const fn proto(proto: Proto) -> On {
        On {
            port: None,
            proto: Some(proto),
        }
    }

    pub fn matches(&self, port: u16, proto: Proto) -> bool {
        self.port.is_none_or(|p| p == port) && self.proto.is_none_or(|p| p == proto)
    }
}

/// Expected reachability: `cells[from][to][port_proto]`, true = a new
/// connection (TCP) or request (UDP) is answered by the target pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    cells: [[[bool; 4]; POD_COUNT]; POD_COUNT],
}

impl Reachability {
    /// Everything reachable (no policy).
    pub fn all() -> Self {
        Reachability {
            cells: [[[true; 4]; POD_COUNT]; POD_COUNT],
        }
    }

    /// Nothing reachable but loopback.
    pub fn none() -> Self {
        Reachability::all().deny(Peer::Any, Peer::Any, On::ALL)
    }

    /// Sets every cell from a `from` pod to a `to` pod on `on` (loopback
    /// excepted).
    pub fn set(mut self, from: &Peer, to: &Peer, on: On, allowed: bool) -> Self {
        for f in PodId::all() {
            for t in PodId::all() {
                if f == t || !from.matches(f) || !to.matches(t) {
                    continue;
                }
                for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
                    if on.matches(port, proto) {
                        self.cells[f.index()][t.index()][i] = allowed;
                    }
                }
            }
        }
        self
    }

    pub fn allow(self, from: Peer, to: Peer, on: On) -> Self {
        self.set(&from, &to, on, true)
    }

    pub fn deny(self, from: Peer, to: Peer, on: On) -> Self {
        self.set(&from, &to, on, false)
    }

    /// Nothing reaches `to` (on any port).
    pub fn deny_ingress(self, to: Peer) -> Self {
        self.deny(Peer::Any, to, On::ALL)
    }

    /// `from` reaches nothing.
    pub fn deny_egress(self, from: Peer) -> Self {
        self.deny(from, Peer::Any, On::ALL)
    }

    /// Only `from` reaches `to`, on `on` only: every other cell into `to`
    /// is denied.
    pub fn only_ingress(self, to: Peer, from: Peer, on: On) -> Self {
        self.deny_ingress(to.clone()).allow(from, to, on)
    }

    /// `from` reaches only `to`, on `on` only.
    pub fn only_egress(self, from: Peer, to: Peer, on: On) -> Self {
        self.deny_egress(from.clone()).allow(from, to, on)
    }

    /// Cell-wise AND (traffic needs the egress side and the ingress side).
    pub fn and(mut self, other: &Reachability) -> Self {
        for f in 0..POD_COUNT {
            for t in 0..POD_COUNT {
                for i in 0..4 {
                    self.cells[f][t][i] &= other.cells[f][t][i];
                }
            }
        }
        self
    }

    pub fn get(&self, from: PodId, to: PodId, port_proto: usize) -> bool {
        self.cells[from.index()][to.index()][port_proto]
    }

    /// Number of allowed cells (loopback included).
    pub fn allowed_count(&self) -> usize {
        self.cells
            .iter()
            .flatten()
            .flatten()
            .filter(|c| **c)
            .count()
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub outcome: ProbeOutcome,
    /// The server's answer ("x/a") when connected.
    pub reply: String,
    /// Error detail, if any.
    pub detail: Option<String>,
}

impl Cell {
    pub fn connected(reply: &str) -> Cell {
        Cell {
            outcome: ProbeOutcome::Connected,
            reply: reply.to_string(),
            detail: None,
        }
    }

    pub fn timeout() -> Cell {
        Cell {
            outcome: ProbeOutcome::Timeout,
            reply: String::new(),
            detail: None,
        }
    }

    /// Whether the cell agrees with `allowed` for target `to`: allowed
    /// needs the target's own answer; denied needs a timeout (a dropped
    /// SYN or datagram). Refused, errors and answers from another pod
    /// agree with neither.
    pub fn agrees(&self, allowed: bool, to: PodId) -> bool {
        if allowed {
            self.outcome == ProbeOutcome::Connected && self.reply == to.to_string()
        } else {
            self.outcome == ProbeOutcome::Timeout
        }
    }

    /// One character for the table: `.` answered by the target, `X`
    /// timeout, `R` refused, `E` error, `W` answered by someone else.
    pub fn symbol(&self, to: PodId) -> char {
        match self.outcome {
            ProbeOutcome::Connected if self.reply == to.to_string() => '.',
            ProbeOutcome::Connected => 'W',
            ProbeOutcome::Timeout => 'X',
            ProbeOutcome::Refused => 'R',
            ProbeOutcome::Error => 'E',
        }
    }
}

/// The probes' results: `cells[from][to][port_proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub cells: Vec<Vec<Vec<Cell>>>,
}

impl Observed {
    /// A synthetic result: what a datapath enforcing `expected` exactly
    /// would give (for tests of the comparison).
    pub fn from_expected(expected: &Reachability) -> Observed {
        let mut cells = Vec::new();
        for f in PodId::all() {
            let mut row = Vec::new();
            for t in PodId::all() {
                row.push(
                    (0..4)
                        .map(|i| {
                            if expected.get(f, t, i) {
                                Cell::connected(&t.to_string())
                            } else {
                                Cell::timeout()
                            }
                        })
                        .collect(),
                );
            }
            cells.push(row);
        }
        Observed { cells }
    }

    pub fn get(&self, from: PodId, to: PodId, port_proto: usize) -> &Cell {
        &self.cells[from.index()][to.index()][port_proto]
    }

    pub fn set(&mut self, from: PodId, to: PodId, port_proto: usize, cell: Cell) {
        self.cells[from.index()][to.index()][port_proto] = cell;
    }
}

/// A cell where the probe disagrees with the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub from: PodId,
    pub to: PodId,
    pub port: u16,
    pub proto: Proto,
    pub expected: bool,
    pub observed: Cell,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}: expected {}, observed {}",
            self.from,
            self.to,
            self.port,
            self.proto,
            if self.expected { "allowed" } else { "denied" },
            self.observed.outcome
        )?;
        if !self.observed.reply.is_empty() {
            write!(f, " (reply {:?})", self.observed.reply)?;
        }
        if let Some(detail) = &self.observed.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// Every cell where `observed` disagrees with `expected`.
pub fn compare(expected: &Reachability, observed: &Observed) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for from in PodId::all() {
        for to in PodId::all() {
            for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
                let want = expected.get(from, to, i);
                let cell = observed.get(from, to, i);
                if !cell.agrees(want, to) {
                    out.push(Mismatch {
                        from,
                        to,
                        port,
                        proto,
                        expected: want,
                        observed: cell.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The whole observed table, one 9×9 grid per (port, protocol), rows =
/// from, columns = to; a mismatching cell is shown as `*<symbol>`, others
/// as ` <symbol>`. Then the legend and the list of mismatches.
pub fn render(expected: &Reachability, observed: &Observed) -> String {
    let mismatches = compare(expected, observed);
    let mut out = String::new();
    for (i, &(port, proto)) in PORT_PROTOS.iter().enumerate() {
        let _ = write!(out, "{port}/{proto:<4}");
        for to in PodId::all() {
            let _ = write!(out, " {to:>4}");
        }
        out.push('\n');
        for from in PodId::all() {
            let _ = write!(out, "{from:<8}");
            for to in PodId::all() {
                let cell = observed.get(from, to, i);
                let mark = if cell.agrees(expected.get(from, to, i), to) {
                    ' '
                } else {
                    '*'
                };
                let _ = write!(out, "   {mark}{}", cell.symbol(to));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(
        "legend: . answered by the target, X timeout (dropped), R refused, E error, \
         W answered by another pod; * = differs from the expectation\n",
    );
    let _ = writeln!(out, "{} mismatching cells:", mismatches.len());
    for m in &mismatches {
        let _ = writeln!(out, "  {m}");
    }
    out
}

/// The expected table alone, in the same layout (`.` allowed, `X` denied).
pub fn render_expected(expected: &Reachability) -> String {
    render(expected, &Observed::from_expected(expected))
        .lines()
        .take_while(|l| !l.starts_with("legend"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl std::fmt::Display for PodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = format!("{}/{}", NAMESPACES[self.ns], PODS[self.pod]);
        f.pad(&s)
    }
}
