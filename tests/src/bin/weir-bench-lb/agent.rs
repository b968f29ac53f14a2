//! The real `weir-agent` in a lab node (standalone mode, its own pin root and state dir), and
//! read access to the service maps it pins, to see exactly when a change is in the datapath.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use weir_common::lb::{Lb4Backend, Lb4Key, Lb4Service, SCOPE_EXTERNAL};
use weir_common::maps as names;
use weir_lab::Node;

/// The lab's agent ([`weir_lab::cluster::agent::Agent`]) as the benchmarks run it: quiet
/// (`RUST_LOG=warn`), timed from its spawn. Killed (and reaped) on drop.
pub struct Agent {
    inner: weir_lab::cluster::agent::Agent,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Agent {
    /// Starts `weir-agent --manifests DIR --node-name <node>` inside the node's netns.
    pub fn start(node: &Node, manifests: &Path) -> Result<Agent> {
        let inner =
            weir_lab::cluster::agent::Agent::start_with_log_level(node, manifests, &[], "warn")?;
        Ok(Agent {
            spawned: inner.spawned(),
            inner,
        })
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid().unwrap_or(0)
    }

    /// An error with the log's tail when the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.inner.check_alive()
    }

    /// Waits until `/readyz` answers 200 (the first full sync is done); returns the time since
    /// spawn.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        self.inner.wait_ready_within(limit)?;
        Ok(self.spawned.elapsed())
    }

    /// `GET path` on the agent's HTTP port from inside its netns: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.inner.get(path)
    }

    /// `weir_sync_duration_seconds` (sum, count) so far.
    pub fn sync_totals(&self) -> Option<(f64, f64)> {
        Some((
            self.inner.metric("weir_sync_duration_seconds_sum")?,
            self.inner.metric("weir_sync_duration_seconds_count")?,
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

    /// The last 20 lines of the agent's log.
    pub fn log_tail(&self) -> String {
        self.inner.log_tail(20)
    }
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
