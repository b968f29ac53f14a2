//! The real `weir-agent` in a lab node (standalone mode, its own pin root and state dir), and
//! read access to the service maps it pins, to see exactly when a change is in the datapath.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use weir_common::lb::{Lb4Backend, Lb4Key, Lb4Service, SCOPE_EXTERNAL};
use weir_common::maps as names;
use weir_lab::Node;

/// The agent's HTTP port (its default; every node has its own netns).
const HTTP_PORT: u16 = 9962;

/// A running agent; killed (and reaped) on drop.
pub struct Agent {
    node: Node,
    child: Option<Child>,
    log: PathBuf,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Agent {
    /// Starts `weir-agent --manifests DIR --node-name <node>` inside the node's netns.
    pub fn start(node: &Node, manifests: &Path) -> Result<Agent> {
        let exe = weir_lab::try_bin_path("weir-agent")?;
        let log = node.dir().join("agent.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let spawned = Instant::now();
        let child = node
            .netns()
            .command(&exe)
            .arg("--manifests")
            .arg(manifests)
            .args(["--node-name", node.name()])
            .arg("--bpffs")
            .arg(node.bpffs_dir())
            .arg("--state-dir")
            .arg(node.agent_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} in {}", exe.display(), node.name()))?;
        Ok(Agent {
            node: node.clone(),
            child: Some(child),
            log,
            spawned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error with the log's tail when the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            bail!(
                "weir-agent on {} exited ({status}); log tail:\n{}",
                self.node.name(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (the first full sync is done); returns the time since
    /// spawn.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive()?;
            if matches!(self.get("/readyz"), Some((200, _))) {
                return Ok(self.spawned.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "weir-agent on {} not ready after {limit:?}; log tail:\n{}",
                    self.node.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` on the agent's HTTP port from inside its netns: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let path = path.to_string();
        self.node
            .netns()
            .enter(move || http_get(Ipv4Addr::LOCALHOST, HTTP_PORT, &path))
            .ok()
            .flatten()
    }

    /// The value of the unlabelled sample `name` in `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `weir_sync_duration_seconds` (sum, count) so far.
    pub fn sync_totals(&self) -> Option<(f64, f64)> {
        Some((
            self.metric("weir_sync_duration_seconds_sum")?,
            self.metric("weir_sync_duration_seconds_count")?,
        ))
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VmHWM in {path}"))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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

/// A minimal HTTP/1.1 GET; `None` when nothing answers.
fn http_get(addr: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
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

/// The agent's pinned service and backend maps, opened read-only by pin path.
pub struct PinnedLb {
    services: HashMap<MapData, Lb4Key, Lb4Service>,
    backends: HashMap<MapData, u32, Lb4Backend>,
}

impl PinnedLb {
    /// Opens the maps pinned under `bpffs`; an error while the agent has not pinned them yet.
    pub fn open(bpffs: &Path) -> Result<PinnedLb> {
        Ok(PinnedLb {
            services: open_hash(&bpffs.join(names::LB4_SERVICES))?,
            backends: open_hash(&bpffs.join(names::LB4_BACKENDS))?,
        })
    }

    /// Opens the maps once they are pinned, waiting at most `limit`.
    pub fn wait_open(bpffs: &Path, agent: &mut Agent, limit: Duration) -> Result<PinnedLb> {
        let deadline = Instant::now() + limit;
        loop {
            match PinnedLb::open(bpffs) {
                Ok(maps) => return Ok(maps),
                Err(err) if Instant::now() > deadline => return Err(err),
                Err(_) => {
                    agent.check_alive()?;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn key(vip: Ipv4Addr, port: u16, slot: u16) -> Lb4Key {
        Lb4Key {
            address: u32::from_ne_bytes(vip.octets()),
            dport: port.to_be(),
            backend_slot: slot,
            proto: 6,
            scope: SCOPE_EXTERNAL,
            pad: [0; 2],
        }
    }

    /// The backend count in the frontend entry (slot 0) of a TCP ClusterIP.
    pub fn count(&self, vip: Ipv4Addr, port: u16) -> Option<u16> {
        self.services
            .get(&Self::key(vip, port, 0), 0)
            .ok()
            .map(|s| s.count)
    }

    /// The backend addresses a frontend's slots name, as the datapath would resolve them.
    pub fn backend_addresses(&self, vip: Ipv4Addr, port: u16) -> Option<Vec<Ipv4Addr>> {
        let count = self.count(vip, port)?;
        let mut out = Vec::with_capacity(usize::from(count));
        for slot in 1..=count {
            let id = self
                .services
                .get(&Self::key(vip, port, slot), 0)
                .ok()?
                .backend_id;
            let backend = self.backends.get(&id, 0).ok()?;
            out.push(Ipv4Addr::from(backend.address.to_ne_bytes()));
        }
        Some(out)
    }
}

fn open_hash<K: aya::Pod, V: aya::Pod>(path: &Path) -> Result<HashMap<MapData, K, V>> {
    let data = MapData::from_pin(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    let map = Map::from_map_data(data)
        .with_context(|| format!("pinned map {} has an unknown type", path.display()))?;
    HashMap::try_from(map)
        .with_context(|| format!("pinned map {} is not the expected hash", path.display()))
}
