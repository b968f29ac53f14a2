//! Workloads, like Kubernetes' agnhost: `weir-serve` answers every TCP connection
//! and UDP datagram with a name and a newline; `weir-probe` connects once (or
//! `--count` times) and prints one JSON line per attempt:
//!
//! ```text
//! {"result":"connected","reply":"b","elapsed_ms":0.412}
//! {"result":"refused","reply":"","elapsed_ms":0.101}
//! {"result":"timeout","reply":"","elapsed_ms":1000.3}
//! {"result":"error","reply":"","elapsed_ms":0.05,"error":"No route to host (os error 113)"}
//! ```
//!
//! For UDP, "connected" means a reply came back, "refused" an ICMP port
//! unreachable, "timeout" nothing.
//!
//! The helpers here run both inside any [`NetNs`] ([`NetNs::serve`],
//! [`NetNs::probe`]); `Pod`, `Node` and `Lab` (outside) forward to them.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::netns::NetNs;
use crate::process::run_with_timeout;

/// Transport protocol of a probe or a served port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Both protocols, for loops.
    pub const ALL: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// `"tcp"` or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one probe attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeOutcome {
    /// TCP handshake completed / UDP reply received.
    Connected,
    /// TCP RST / ICMP port unreachable.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Anything else (no route, host unreachable, ...); see `error`.
    Error,
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeOutcome::Connected => "connected",
            ProbeOutcome::Refused => "refused",
            ProbeOutcome::Timeout => "timeout",
            ProbeOutcome::Error => "error",
        })
    }
}

/// One line of `weir-probe` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// connected | refused | timeout | error.
    pub result: ProbeOutcome,
    /// The first line the server sent, without the newline ("" when none).
    #[serde(default)]
    pub reply: String,
    /// Wall time of the attempt.
    pub elapsed_ms: f64,
    /// Detail for `error` (and sometimes for other outcomes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProbeResult {
    /// `result == connected`.
    pub fn is_connected(&self) -> bool {
        self.result == ProbeOutcome::Connected
    }
}

/// Options of [`NetNs::probe_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Per-attempt timeout in ms (default 1000).
    pub timeout_ms: u64,
    /// Number of attempts, each with a fresh socket and source port (default 1).
    pub count: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout_ms: 1000,
            count: 1,
        }
    }
}

/// A running `weir-serve`; killed (and reaped) on drop. The namespace's own
/// teardown kills it too, should the guard outlive the lab.
#[derive(Debug)]
pub struct ServeGuard {
    child: Child,
    netns: String,
}

impl ServeGuard {
    /// Pid of the server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the server run on after the guard (and this process) is gone.
    pub fn detach(self) -> u32 {
        let pid = self.child.id();
        std::mem::forget(self);
        pid
    }

    /// Stops the server now.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Display for ServeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "weir-serve pid {} in {}", self.child.id(), self.netns)
    }
}

/// How long `weir-serve` may take to bind its ports.
const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(10);

impl NetNs {
    /// Starts `weir-serve --name <name>` with the given TCP and UDP ports inside
    /// this namespace and returns once every socket is bound and listening.
    pub fn serve(&self, name: &str, tcp: &[u16], udp: &[u16]) -> Result<ServeGuard> {
        let bin = crate::try_bin_path("weir-serve")?;
        let mut cmd = self.command(&bin);
        cmd.arg("--name").arg(name);
        if !tcp.is_empty() {
            cmd.arg("--tcp").arg(join_ports(tcp));
        }
        if !udp.is_empty() {
            cmd.arg("--udp").arg(join_ports(udp));
        }
        // stderr is piped and forwarded (not inherited), so a server detached for a
        // kept lab does not hold our caller's stdout/stderr open forever.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {} in netns {}", bin.display(), self.name()))?;
        if let Some(stderr) = child.stderr.take() {
            let tag = format!("weir-serve {name} in {}", self.name());
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    eprintln!("[{tag}] {line}");
                }
            });
        }
        let stdout = child.stdout.take();
        let mut guard = ServeGuard {
            child,
            netns: self.name().to_string(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first.and_then(|l| l.ok()));
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(SERVE_READY_TIMEOUT) {
            Ok(Some(line)) if line.trim() == "ready" => Ok(guard),
            Ok(other) => {
                guard.kill();
                bail!(
                    "weir-serve in netns {} did not become ready (said {other:?}; see its stderr above)",
                    self.name()
                )
            }
            Err(_) => {
                guard.kill();
                bail!(
                    "weir-serve in netns {} not ready within {SERVE_READY_TIMEOUT:?}",
                    self.name()
                )
            }
        }
    }

    /// One probe attempt from inside this namespace to `addr:port`.
    pub fn probe(&self, proto: Proto, addr: impl Into<IpAddr>, port: u16) -> Result<ProbeResult> {
        let mut results = self.probe_with(proto, addr, port, ProbeOptions::default())?;
        results.pop().context("weir-probe printed no result line")
    }

    /// `opts.count` probe attempts from inside this namespace to `addr:port`.
    pub fn probe_with(
        &self,
        proto: Proto,
        addr: impl Into<IpAddr>,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<Vec<ProbeResult>> {
        let addr = addr.into();
        let bin = crate::try_bin_path("weir-probe")?;
        let target = std::net::SocketAddr::new(addr, port).to_string();
        let mut cmd = self.command(&bin);
        cmd.arg(format!("--{proto}"))
            .arg(&target)
            .arg("--timeout-ms")
            .arg(opts.timeout_ms.to_string())
            .arg("--count")
            .arg(opts.count.to_string());
        let budget = Duration::from_millis(opts.timeout_ms.saturating_mul(u64::from(opts.count)))
            + Duration::from_secs(10);
        let what = format!("weir-probe --{proto} {target} in netns {}", self.name());
        let done = run_with_timeout(&mut cmd, b"", budget, &what)?;
        if !done.status.success() {
            bail!(
                "{what} failed ({}): {}",
                done.status,
                String::from_utf8_lossy(&done.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&done.stdout);
        let results = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<ProbeResult>(l)
                    .with_context(|| format!("parsing weir-probe output line {l:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if results.len() != opts.count as usize {
            bail!(
                "{what} printed {} result lines, expected {}",
                results.len(),
                opts.count
            );
        }
        Ok(results)
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
