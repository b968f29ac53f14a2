//! The agent daemon: wires the sources, the registration socket, the
//! datapath, the routes and the HTTP endpoint around the main loop
//! ([`reconciler`]).
//!
//! Start-up order matters for a restart that must not disturb traffic:
//! load the datapath adopting its pins, rebuild the endpoint list from the
//! records and the live links, and only then serve the socket and apply
//! plans (and those only once the sources synced).
//!
//! SIGTERM/SIGINT: the socket closes, the in-flight sync finishes, waiting
//! registrations get their answer, and the process exits 0 with every pin
//! and attachment left in place. A second signal exits at once.

pub mod bpf;
mod bpf_walks;
pub mod cluster;
pub mod config;
pub mod events;
pub mod policy_sync;
pub mod reconciler;
pub mod seams;
pub mod source;
pub mod walker;

use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::registry::{MonitorHub, RecordStore, server};
use crate::routes::RouteProgrammer;

pub use config::{Config, Flags, SourceKind};
pub use reconciler::{Context, PlanSettings, Reconciler, Timing};

/// Registration requests queued for the main loop before the socket
/// pushes back.
const REQUEST_QUEUE: usize = 256;

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    info!(
        node = %config.node_name, source = ?config.source, bpffs = %config.bpffs.display(),
        state_dir = %config.state_dir.display(), metrics = %config.metrics_addr,
        netdev = %config.netdev, cgroup = ?config.cgroup, algorithm = ?config.default_algorithm,
        "weir-agent starting"
    );
    // Installed first: a SIGTERM during start-up then means "stop once
    // started", never the default action of dying half-way.
    let term = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("installing the SIGTERM handler: {e}"))?;
    let int = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("installing the SIGINT handler: {e}"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .map_err(|e| anyhow::anyhow!("creating --state-dir {}: {e}", config.state_dir.display()))?;
    let store = RecordStore::open(config.records_dir())?;
    // The source first: a missing cluster config fails before anything is
    // attached. Applying still waits for its first full view. A manifest
    // directory is parsed on its own thread meanwhile, overlapping the
    // datapath load (10k files take longer than verifying the programs).
    let starting = match &config.source {
        SourceKind::Manifests(dir) => {
            let dir = dir.clone();
            StartingSource::Manifests(tokio::task::spawn_blocking(move || {
                source::ManifestSource::start(&dir)
            }))
        }
        SourceKind::Cluster => StartingSource::Cluster(cluster::ClusterSource::start().await?),
    };

    // The process lives in the node's netns: this connection sees its
    // links and routes, and no thread ever needs setns.
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| anyhow::anyhow!("opening an rtnetlink socket: {e}"))?;
    tokio::spawn(connection);
    let node_ip = match interface_ipv4(&handle, &config.netdev).await {
        Ok(Some(ip)) => Some(ip),
        Ok(None) => {
            warn!(netdev = %config.netdev, "the uplink has no IPv4 address; SNAT for NodePorts falls back to the frontend address");
            None
        }
        Err(e) => {
            warn!(netdev = %config.netdev, error = %format!("{e:#}"), "reading the uplink's address failed");
            None
        }
    };

    let started = std::time::Instant::now();
    let datapath = tokio::task::block_in_place(|| {
        bpf::BpfDatapath::start(
            &config.bpffs,
            &config.netdev,
            node_ip,
            config.cgroup.as_deref(),
        )
    })?;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "node datapath started"
    );
    let objects = starting.started().await?;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "object source started (first view loaded)"
    );

    let ctx = Context {
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::default()),
    };
    ctx.health.beat();
    let settings = PlanSettings {
        node_name: config.node_name.clone(),
        default_algorithm: config.default_algorithm,
        nodeport_addresses: config.nodeport_addresses.clone(),
        policy: config.policy,
    };
    let hub = MonitorHub::default();
    let mut reconciler = Reconciler::new(
        ctx.clone(),
        settings,
        Timing::default(),
        datapath,
        seams::NetlinkLinks(handle.clone()),
        RouteProgrammer::new(handle),
        store,
    )
    .with_monitor(hub.clone());
    reconciler.adopt().await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(wait_for_signals(term, int, stop_tx));

    let socket_path = config.socket_path();
    let listener = server::bind(&socket_path).await?;
    let (request_tx, request_rx) = mpsc::channel(REQUEST_QUEUE);
    let socket = tokio::spawn(server::serve(
        listener,
        socket_path.clone(),
        request_tx,
        Some(hub),
        stop_rx.clone(),
    ));
    info!(socket = %socket_path.display(), "registration socket open");

    let http_listener = http::bind(config.metrics_addr).await?;
    let shared = http::Shared {
        metrics: ctx.metrics.clone(),
        health: ctx.health.clone(),
    };
    let http_server = tokio::spawn(http::serve(http_listener, shared, stop_rx.clone()));
    info!(addr = %config.metrics_addr, "serving /metrics, /healthz, /readyz");

    reconciler.run(objects, request_rx, stop_rx).await;
    for (what, task) in [("socket", socket), ("http", http_server)] {
        if let Err(e) = task.await {
            error!(task = what, error = %e, "server task failed");
        }
    }
    info!("stopped; BPF pins and program attachments stay in place");
    Ok(())
}

/// The configured source while it starts.
enum StartingSource {
    Manifests(tokio::task::JoinHandle<anyhow::Result<source::ManifestSource>>),
    Cluster(cluster::ClusterSource),
}

impl StartingSource {
    async fn started(self) -> anyhow::Result<AnySource> {
        Ok(match self {
            Self::Manifests(loading) => AnySource::Manifests(
                loading
                    .await
                    .map_err(|e| anyhow::anyhow!("loading the manifest directory: {e}"))??,
            ),
            Self::Cluster(source) => AnySource::Cluster(source),
        })
    }
}

/// The configured source.
enum AnySource {
    Manifests(source::ManifestSource),
    Cluster(cluster::ClusterSource),
}

impl seams::Source for AnySource {
    async fn changed(&mut self) -> bool {
        match self {
            Self::Manifests(s) => s.changed().await,
            Self::Cluster(s) => s.changed().await,
        }
    }

    fn current(&mut self) -> seams::SourceView {
        match self {
            Self::Manifests(s) => s.current(),
            Self::Cluster(s) => s.current(),
        }
    }
}

/// Turns the first SIGTERM/SIGINT into a graceful stop; a second one
/// exits at once.
async fn wait_for_signals(mut term: Signal, mut int: Signal, stop: watch::Sender<bool>) {
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "stopping gracefully"),
        _ = int.recv() => info!(signal = "SIGINT", "stopping gracefully"),
    }
    let _ = stop.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting now");
    std::process::exit(1);
}

/// The first IPv4 address of interface `name`. Streams are read to the
/// end: dropping one early makes netlink-proto warn about orphaned replies.
async fn interface_ipv4(
    handle: &rtnetlink::Handle,
    name: &str,
) -> anyhow::Result<Option<Ipv4Addr>> {
    let links: Vec<_> = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("looking up interface {name}: {e}"))?;
    let Some(link) = links.first() else {
        return Ok(None);
    };
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("listing the addresses of {name}: {e}"))?;
    Ok(addresses
        .iter()
        .flat_map(|m| m.attributes.iter())
        .find_map(|a| match a {
            AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        }))
}
