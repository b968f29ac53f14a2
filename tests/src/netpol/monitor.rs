//! `weirctl monitor` in the background: a child process whose stdout lines
//! are collected on a thread, so a test can start it, cause traffic, and
//! wait for the line it expects (or see every line it printed).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

/// A running `weirctl monitor`; killed and reaped on drop.
#[derive(Debug)]
pub struct Monitor {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    what: String,
}

impl Monitor {
    /// Starts `weirctl monitor --socket <socket> <args>` (e.g. `-o json`,
    /// `--pod x/a`, `--verdict drop`) and gives it `settle` to subscribe.
    pub fn start(socket: &Path, args: &[&str], settle: Duration) -> Result<Monitor> {
        let bin = crate::try_bin_path("weirctl")?;
        let mut cmd = Command::new(&bin);
        cmd.arg("monitor")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("weirctl monitor {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let tag = what.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    eprintln!("[{tag}] {line}");
                }
            });
        }
        std::thread::sleep(settle);
        let mut monitor = Monitor {
            child,
            lines: rx,
            seen: Vec::new(),
            what,
        };
        if let Some(status) = monitor.child.try_wait().context("polling weirctl")? {
            monitor.drain(Duration::ZERO);
            anyhow::bail!(
                "{} exited at once ({status}); it printed {:?}",
                monitor.what,
                monitor.seen
            );
        }
        Ok(monitor)
    }

    /// Waits up to `deadline` for a line `matches` accepts; returns it.
    pub fn wait_for(
        &mut self,
        deadline: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return Some(line.clone());
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = matches(&line);
                    self.seen.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Collects what arrives within `wait`.
    pub fn drain(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
    }

    /// Every line printed so far (after [`Monitor::wait_for`] or
    /// [`Monitor::drain`] collected them).
    pub fn lines(&self) -> &[String] {
        &self.seen
    }

    /// The collected lines that parse as JSON objects.
    pub fn json_events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether any string in `value` (at any depth, keys excluded) contains
/// `needle`: event fields are checked by content, not by field name.
pub fn json_mentions(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| json_mentions(v, needle)),
        Value::Object(map) => map.values().any(|v| json_mentions(v, needle)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mentions_look_into_nested_values() {
        let v = serde_json::json!({"policy": {"name": "x/deny-ingress"}, "rules": ["ingress[0]"], "n": 3});
        assert!(json_mentions(&v, "x/deny-ingress"));
        assert!(json_mentions(&v, "ingress[0]"));
        assert!(!json_mentions(&v, "policy"), "keys are not values");
        assert!(!json_mentions(&v, "3"));
    }
}
