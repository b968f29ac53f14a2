//! `weir-bench-lb`: Weir's service load-balancing benchmarks. Run through `cargo xtask bench lb`.
//!
//! * **a. datapath** ([`datapath`]): ns per packet of `weir_from_pod` under `BPF_PROG_TEST_RUN`
//!   with 1 to 100k services, next to a no-op classifier.
//! * **b. end to end** ([`e2e`]): new TCP connections per second and request latency from a
//!   client pod to a 3-backend ClusterIP in the lab, with 10 and 10k services, through weir,
//!   straight to the pod IP, and through kube-proxy's iptables and nftables layouts.
//! * **c. control plane** ([`control`]): the real agent with 10k services x 10 endpoints from
//!   manifests: time to program, endpoint-change latency, peak RSS.
//!
//! Results are printed and, with `--out`, written to the "Service load balancing" section of
//! the benchmarks document, with PNG plots under `bench/` next to it.
//!
//! `loadgen` and `serve` are the workloads of part b, started inside pod namespaces.

mod agent;
mod control;
mod datapath;
mod e2e;
mod kube_proxy;
mod loadgen;
mod manifests;
mod plot;
mod report;

// Shared with weir-bench-policy; kept under their old names here.
use weir_lab::bench::{bpf_sys, numbers as stats, packet};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use weir_lab::bench::progress::{elapsed, heading};

#[derive(Parser)]
#[command(
    name = "weir-bench-lb",
    about = "Weir's service load-balancing benchmarks (run via `cargo xtask bench lb`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmarks (all parts unless --parts says otherwise).
    Run(RunOptions),
    /// Load generator (part b): new connections, one request each, for a fixed time.
    #[command(hide = true)]
    Loadgen(loadgen::LoadOptions),
    /// Backend server (part b): answers one request per connection.
    #[command(hide = true)]
    Serve(loadgen::ServeOptions),
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunOptions {
    /// Parts to run, comma-separated: datapath, e2e, control.
    #[arg(long, value_delimiter = ',', default_value = "datapath,e2e,control")]
    parts: Vec<Part>,
    /// The eBPF object for part a (`cargo xtask build` builds it; also read from WEIR_EBPF_OBJ).
    #[arg(long, env = "WEIR_EBPF_OBJ")]
    ebpf_object: Option<PathBuf>,
    /// Markdown file whose "Service load balancing" section is (re)written; plots go to `bench/`
    /// next to it. Without it, results are only printed.
    #[arg(long)]
    out: Option<PathBuf>,

    /// a: service counts.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000,100000")]
    dp_services: Vec<u32>,
    /// a: backends per service.
    #[arg(long, default_value_t = 10)]
    dp_backends: u32,
    /// a: measurement rounds per service count (medians are reported).
    #[arg(long, default_value_t = 7)]
    dp_rounds: u32,
    /// a: runs per BPF_PROG_TEST_RUN call for the amortised figures.
    #[arg(long, default_value_t = 500_000)]
    dp_repeat: u32,
    /// a: packets (one call each) per round for the new-flow figures.
    #[arg(long, default_value_t = 20_000)]
    dp_calls: u32,

    /// b: service counts.
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    e2e_services: Vec<u32>,
    /// b: rounds; each round runs every mechanism once per service count, interleaved.
    #[arg(long, default_value_t = 7)]
    e2e_rounds: u32,
    /// b: seconds per load-generator run.
    #[arg(long, default_value_t = 2.5)]
    e2e_seconds: f64,
    /// b: concurrent connections of the load generator.
    #[arg(long, default_value_t = 4)]
    e2e_concurrency: u32,

    /// c: services (10 endpoints each).
    #[arg(long, default_value_t = 10_000)]
    cp_services: u32,
    /// c: endpoint changes timed.
    #[arg(long, default_value_t = 100)]
    cp_changes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Datapath,
    E2e,
    Control,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(options) => run(&options),
        Command::Loadgen(options) => loadgen::load(&options),
        Command::Serve(options) => loadgen::serve(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir-bench-lb: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &RunOptions) -> Result<()> {
    if !weir_lab::is_root() {
        bail!("the load-balancing benchmarks need root (BPF, network namespaces)");
    }
    let started = Instant::now();
    let machine = report::machine();
    let mut results = report::Results::default();

    if options.parts.contains(&Part::Datapath) {
        heading("a. datapath: ns per packet (BPF_PROG_TEST_RUN)");
        let path = options.ebpf_object.as_ref().context(
            "part a needs the eBPF object: pass --ebpf-object or set WEIR_EBPF_OBJ \
             (`cargo xtask bench lb` does)",
        )?;
        let object = std::fs::read(path)
            .with_context(|| format!("reading the eBPF object {}", path.display()))?;
        let opts = datapath::Options {
            levels: options.dp_services.clone(),
            backends: options.dp_backends,
            rounds: options.dp_rounds,
            repeat: options.dp_repeat,
            calls: options.dp_calls,
        };
        results.datapath = Some(datapath::run(object, opts)?);
        elapsed(started);
    }
    if options.parts.contains(&Part::E2e) {
        heading("b. end to end in the lab: connections per second, latency");
        let opts = e2e::Options {
            services: options.e2e_services.clone(),
            rounds: options.e2e_rounds,
            seconds: options.e2e_seconds,
            concurrency: options.e2e_concurrency,
        };
        results.e2e = Some(e2e::run(&opts)?);
        elapsed(started);
    }
    if options.parts.contains(&Part::Control) {
        heading("c. control plane: programming time, endpoint changes, RSS");
        let opts = control::Options {
            services: options.cp_services,
            endpoints: 10,
            changes: options.cp_changes,
        };
        results.control = Some(control::run(&opts)?);
        elapsed(started);
    }

    heading("results");
    println!("{}", report::text(&results));
    if let Some(out) = &options.out {
        report::write(out, &results, &machine)?;
        println!("wrote {} and its plots", out.display());
    }
    Ok(())
}
