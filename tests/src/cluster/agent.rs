//! One real `weir-agent` process per node, started inside the node's netns
//! (setns of the net namespace only, so its bpffs mount under the lab's
//! state dir lives in the machine's mount namespace).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Node;

/// The agent's HTTP port (its default; every node has its own netns).
pub const METRICS_PORT: u16 = 9962;

/// How long an agent may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `weir-agent` in standalone mode on one node. Killed (SIGKILL) on drop.
///
/// The one way the lab, the demo, the benchmarks and the agent's daemon
/// tests run the agent.
#[derive(Debug)]
pub struct Agent {
    node: Node,
    manifests: PathBuf,
    args: Vec<String>,
    /// `RUST_LOG` of the process.
    log_level: String,
    child: Option<Child>,
    log: PathBuf,
    /// When the process was last spawned.
    spawned: Instant,
}

impl Agent {
    /// Starts `weir-agent --manifests DIR --node-name <node> --bpffs
    /// <node bpffs dir> --state-dir <node agent dir> ARGS...` in the node.
    pub fn start(node: &Node, manifests: &Path, args: &[String]) -> Result<Agent> {
        Self::start_with_log_level(node, manifests, args, "info")
    }

    /// Like [`Agent::start`] with `RUST_LOG=<log_level>` (`info` there).
    pub fn start_with_log_level(
        node: &Node,
        manifests: &Path,
        args: &[String],
        log_level: &str,
    ) -> Result<Agent> {
        let mut agent = Agent {
            node: node.clone(),
            manifests: manifests.to_path_buf(),
            args: args.to_vec(),
            log_level: log_level.to_string(),
            child: None,
            log: node.dir().join("agent.log"),
            spawned: Instant::now(),
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = crate::try_bin_path("weir-agent")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        self.spawned = Instant::now();
        let child = self
            .node
            .netns()
            .command(&bin)
            .arg("--manifests")
            .arg(&self.manifests)
            .args(["--node-name", self.node.name()])
            .arg("--bpffs")
            .arg(self.node.bpffs_dir())
            .arg("--state-dir")
            .arg(self.node.agent_dir())
            .args(&self.args)
            .env("RUST_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} on {}", bin.display(), self.node.name()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The node this agent runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The extra arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// When the process was last spawned (by [`Agent::start`] or a restart).
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// Pid of the running agent.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// An error naming the exit status, with the log's last lines, when the
    /// process has exited on its own (not after [`Agent::kill`] or
    /// [`Agent::terminate`]).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            bail!(
                "weir-agent on {} exited ({status}); log tail:\n{}",
                self.node.name(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("the agent is not running")?;
        child.kill().context("killing the agent")?;
        child.wait().context("reaping the agent")?;
        Ok(())
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("the agent is not running")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).context("pid")?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("SIGTERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().context("waiting for the agent")? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the agent on {} ignored SIGTERM for 30 s", self.node.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again (same arguments) after [`Agent::kill`] or
    /// [`Agent::terminate`].
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("the agent on {} is still running", self.node.name());
        }
        self.spawn()
    }

    /// Like [`Agent::restart`] with other extra arguments.
    pub fn restart_with(&mut self, args: &[String]) -> Result<()> {
        self.args = args.to_vec();
        self.restart()
    }

    /// Leaves the process running when this handle drops (for a kept demo lab).
    pub fn detach(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    /// Path of the agent's log (stderr, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the agent's HTTP port from inside the node:
    /// `(status, body)`, or `None` when nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        self.node
            .netns()
            .enter(move || http_get(Ipv4Addr::LOCALHOST, METRICS_PORT, &path))
            .ok()
            .flatten()
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        matches!(self.get("/readyz"), Some((200, _)))
    }

    /// Waits until `/readyz` answers 200; an error with the log when the
    /// agent exits or is not ready within [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) -> Result<Duration> {
        self.wait_ready_within(READY_TIMEOUT)
    }

    /// Like [`Agent::wait_ready`], at most `limit`; returns how long it
    /// waited.
    pub fn wait_ready_within(&mut self, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !self.is_running() {
                bail!(
                    "the agent on {} exited before it was ready; its log:\n{}",
                    self.node.name(),
                    self.log_tail(60)
                );
            }
            if self.ready() {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "the agent on {} was not ready within {limit:?}; its log:\n{}",
            self.node.name(),
            self.log_tail(60)
        )
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        match self.get("/metrics") {
            Some((200, body)) => Ok(body),
            Some((status, _)) => bail!("/metrics on {} answered {status}", self.node.name()),
            None => bail!("/metrics on {}: nothing answers", self.node.name()),
        }
    }

    /// The value of the sample written exactly as `sample` (name plus
    /// labels, e.g. `weir_ready` or `weir_sync_total{result="ok"}`).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let body = self.metrics().ok()?;
        metric_value(&body, sample)
    }

    /// The sum of every sample of family `name` whose labels contain all
    /// of `labels` (`("reason", "no_backend")`, ...).
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let body = self.metrics().ok()?;
        Some(metric_sum(&body, name, labels))
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the sample written exactly as `sample` in a Prometheus text.
pub fn metric_value(body: &str, sample: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum over samples of family `name` carrying all of `labels`.
pub fn metric_sum(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelset, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, v)| labelset.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A minimal HTTP/1.1 GET; `None` when the connection fails.
pub fn http_get(addr: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BODY: &str = "# HELP x\nweir_ready 1\nweir_sync_total{result=\"ok\"} 4\n\
        weir_drops_total{direction=\"from_pod\",reason=\"no_backend\"} 2\n\
        weir_drops_total{direction=\"from_netdev\",reason=\"no_backend\"} 3\n\
        weir_drops_total{direction=\"from_netdev\",reason=\"ct_full\"} 7\n";

    #[test]
    fn reads_samples() {
        assert_eq!(metric_value(BODY, "weir_ready"), Some(1.0));
        assert_eq!(
            metric_value(BODY, "weir_sync_total{result=\"ok\"}"),
            Some(4.0)
        );
        assert_eq!(metric_value(BODY, "weir_sync"), None);
        assert_eq!(
            metric_sum(BODY, "weir_drops_total", &[("reason", "no_backend")]),
            5.0
        );
        assert_eq!(metric_sum(BODY, "weir_drops_total", &[]), 12.0);
        assert_eq!(metric_sum(BODY, "weir_ready", &[]), 1.0);
    }
}
