//! Part c: the real agent in a one-node lab with N services x 10 endpoints from manifests (one
//! file per Service + EndpointSlice):
//!
//! * time from spawning the agent until every frontend's slot 0 in the pinned service map holds
//!   its full backend count (the writer writes slot 0 last, so the whole service is in place),
//!   and until `/readyz` answers 200;
//! * endpoint changes: one endpoint address of one service replaced by rewriting that service's
//!   file, timed from the rename until the pinned maps resolve the service to the new address
//!   (and no longer to the old one), sequentially over many changes spread across services;
//! * the agent's peak RSS (VmHWM) at the end.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_lab::Lab;

use crate::agent::{Agent, PinnedLb};
use crate::manifests;
use crate::stats;

#[derive(Clone, Debug)]
pub struct Options {
    pub services: u32,
    pub endpoints: u32,
    pub changes: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub services: u32,
    pub endpoints: u32,
    /// Spawn until every frontend is programmed.
    pub programmed_secs: f64,
    /// Spawn until `/readyz` is 200.
    pub ready_secs: f64,
    /// Endpoint change until in the map, ms, sorted.
    pub change_ms: Vec<f64>,
    /// The agent's own `weir_sync_duration_seconds` (plan, apply, routes): its syncs until
    /// everything was programmed (sum, count), and during the changes (sum, count).
    pub first_syncs: Option<(f64, f64)>,
    pub change_syncs: Option<(f64, f64)>,
    pub peak_rss_kib: u64,
}

impl Results {
    pub fn change_p50(&self) -> f64 {
        stats::percentile_sorted(&self.change_ms, 50.0)
    }
    pub fn change_p99(&self) -> f64 {
        stats::percentile_sorted(&self.change_ms, 99.0)
    }
    pub fn change_max(&self) -> f64 {
        self.change_ms.last().copied().unwrap_or(f64::NAN)
    }
}

pub fn run(opts: &Options) -> Result<Results> {
    let lab = Lab::builder()
        .nodes(1)
        .build()
        .context("building the control-plane lab")?;
    let node = lab.node(1);
    let dir = lab.dir().join("manifests-control");
    let mut services =
        manifests::numbered(opts.services, opts.endpoints, Ipv4Addr::new(10, 200, 0, 0));
    println!(
        "control: writing {} services x {} endpoints ({} files)",
        opts.services,
        opts.endpoints,
        opts.services + 1
    );
    manifests::write_dir(&dir, node, &services)?;

    let mut agent = Agent::start(node, &dir)?;
    let maps = PinnedLb::wait_open(&node.bpffs_dir(), &mut agent, Duration::from_secs(60))?;
    let (programmed, ready) = wait_programmed(&mut agent, &maps, &services, opts.endpoints)?;
    println!(
        "control: all {} services programmed {:.2} s after spawning the agent (ready {:.2} s)",
        opts.services,
        programmed.as_secs_f64(),
        ready.as_secs_f64()
    );
    for probe in [services.first(), services.last()].into_iter().flatten() {
        let got = maps.backend_addresses(probe.vip, probe.port);
        let mut want = probe.endpoints.clone();
        want.sort();
        if got.as_ref().map(|g| sorted(g)) != Some(want) {
            bail!(
                "service {} resolves to {got:?}, not its endpoints",
                probe.name
            );
        }
    }

    let first_syncs = agent.sync_totals();
    let mut change_ms = Vec::with_capacity(opts.changes as usize);
    let total = services.len().max(1);
    for c in 0..opts.changes {
        // Spread over the services (a stride coprime with typical counts).
        let index = (c as usize * 7919) % total;
        let slot = c as usize % opts.endpoints.max(1) as usize;
        let fresh = Ipv4Addr::new(10, 210, (c / 250) as u8, (c % 250) as u8 + 1);
        let service = services
            .get_mut(index)
            .context("service index out of range")?;
        let Some(old) = service
            .endpoints
            .get_mut(slot)
            .map(|e| std::mem::replace(e, fresh))
        else {
            bail!("service {} has no endpoint {slot}", service.name);
        };
        let service = service.clone();
        let started = Instant::now();
        weir_lab::write_atomic(&dir, &service.file_name(), &service.yaml())?;
        wait_change(&mut agent, &maps, &service, fresh, old)?;
        change_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if (c + 1) % 25 == 0 {
            let mut sofar = change_ms.clone();
            sofar.sort_by(f64::total_cmp);
            println!(
                "control: endpoint change {}/{}: p50 {:.1} ms, max {:.1} ms",
                c + 1,
                opts.changes,
                stats::percentile_sorted(&sofar, 50.0),
                sofar.last().copied().unwrap_or(f64::NAN)
            );
        }
        // Let the agent go idle, so every change is timed on its own.
        std::thread::sleep(Duration::from_millis(20));
    }
    change_ms.sort_by(f64::total_cmp);
    let change_syncs = match (first_syncs, agent.sync_totals()) {
        (Some((sum0, count0)), Some((sum1, count1))) => Some((sum1 - sum0, count1 - count0)),
        _ => None,
    };
    let peak_rss_kib = agent.peak_rss_kib()?;
    agent.check_alive()?;
    Ok(Results {
        services: opts.services,
        endpoints: opts.endpoints,
        programmed_secs: programmed.as_secs_f64(),
        ready_secs: ready.as_secs_f64(),
        change_ms,
        first_syncs,
        change_syncs,
        peak_rss_kib,
    })
}

fn sorted(v: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Polls until every service's slot 0 holds `endpoints`; returns (programmed, ready) times
/// since spawn. Programmed frontends stay, so the scan resumes at the first missing one.
fn wait_programmed(
    agent: &mut Agent,
    maps: &PinnedLb,
    services: &[manifests::Service],
    endpoints: u32,
) -> Result<(Duration, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next = 0;
    let mut ready = None;
    let mut last_ready_check = Instant::now();
    let mut last_report = Instant::now();
    let programmed = loop {
        while let Some(service) = services.get(next) {
            if maps.count(service.vip, service.port) != Some(endpoints as u16) {
                break;
            }
            next += 1;
        }
        if next == services.len() {
            break agent.spawned.elapsed();
        }
        if ready.is_none() && last_ready_check.elapsed() > Duration::from_millis(20) {
            if matches!(agent.get("/readyz"), Some((200, _))) {
                ready = Some(agent.spawned.elapsed());
            }
            last_ready_check = Instant::now();
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "control: {next}/{} services programmed after {:.1} s",
                services.len(),
                agent.spawned.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
            agent.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!(
                "only {next}/{} services programmed after 300 s; agent log tail:\n{}",
                services.len(),
                agent.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let ready = match ready {
        Some(ready) => ready,
        None => agent.wait_ready(Duration::from_secs(60))?,
    };
    Ok((programmed, ready))
}

/// Polls (every 200 µs) until the service resolves to `fresh` and no longer to `old`.
fn wait_change(
    agent: &mut Agent,
    maps: &PinnedLb,
    service: &manifests::Service,
    fresh: Ipv4Addr,
    old: Ipv4Addr,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addresses) = maps.backend_addresses(service.vip, service.port)
            && addresses.contains(&fresh)
            && !addresses.contains(&old)
            && addresses.len() == service.endpoints.len()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            agent.check_alive()?;
            bail!(
                "the endpoint change of {} ({old} -> {fresh}) is not in the maps after 30 s; \
                 agent log tail:\n{}",
                service.name,
                agent.log_tail()
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
