//! `weir-agent`: the node agent.
//!
//! The object watchers and map programming arrive with service load
//! balancing; today the agent verifies that the kernel accepts its datapath.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use tracing::{error, info};
use weir_agent::datapath;

/// Flags follow the contract in DESIGN.md.
#[derive(Debug, Parser)]
#[command(version, about = "Weir node agent")]
struct Args {
    /// Standalone mode: read Kubernetes manifests from this directory instead of a cluster.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Name of the local node.
    #[arg(long, env = "WEIR_NODE_NAME")]
    node_name: Option<String>,
    /// Pin root for maps and programs.
    #[arg(long, default_value = "/sys/fs/bpf/weir")]
    bpffs: PathBuf,
    /// Holds the agent socket and the endpoint records.
    #[arg(long, default_value = "/run/weir")]
    state_dir: PathBuf,
    /// Load and verify the datapath programs, print them, and exit.
    #[arg(long)]
    check_datapath: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.check_datapath {
        return match check_datapath() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "datapath check failed");
                ExitCode::FAILURE
            }
        };
    }
    error!(
        node = ?args.node_name,
        manifests = ?args.manifests,
        bpffs = %args.bpffs.display(),
        state_dir = %args.state_dir.display(),
        "the agent's object watchers are not built yet; only --check-datapath works in this version"
    );
    ExitCode::from(2)
}

fn check_datapath() -> weir_agent::Result<()> {
    let mut ebpf = datapath::open()?;
    for name in [datapath::PROG_FROM_POD, datapath::PROG_TO_POD] {
        datapath::load_classifier(&mut ebpf, name)?;
        info!(program = name, "verified by the kernel");
    }
    Ok(())
}
