//! `weir-bench-policy`: Weir's NetworkPolicy benchmarks. Run through `cargo xtask bench policy`.
//!
//! * **a. datapath** ([`datapath`]): ns per packet of `weir_from_pod` (egress) and `weir_to_pod`
//!   (ingress) under `BPF_PROG_TEST_RUN`, for an allowed new flow and an established one, with 1
//!   and with 1,000 policies selecting the pods, next to a no-op classifier timed in the same run.
//! * **b. programming** ([`program`]): 1,000 pods over 3 nodes with 200 policies
//!   ([`objects::scale`]): compile each node's plan with `weir_agent::policy` and write it into
//!   real maps with the agent's datapath writer; the time, the plan's map-memory estimate and
//!   the kernel's own memory figure for the maps.
//!
//! Results are printed and, with `--out`, written to the "NetworkPolicy" section of the
//! benchmarks document with a PNG plot under `bench/` next to it.

mod datapath;
mod objects;
mod program;
mod report;
mod scratch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use weir_lab::bench::progress::{elapsed, heading};

#[derive(Parser)]
#[command(
    name = "weir-bench-policy",
    about = "Weir's NetworkPolicy benchmarks (run via `cargo xtask bench policy`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmarks (both parts unless --parts says otherwise).
    Run(RunOptions),
}

#[derive(clap::Args, Clone, Debug)]
struct RunOptions {
    /// Parts to run, comma-separated: datapath, program.
    #[arg(long, value_delimiter = ',', default_value = "datapath,program")]
    parts: Vec<Part>,
    /// The eBPF object (`cargo xtask build` builds it; also read from WEIR_EBPF_OBJ).
    #[arg(long, env = "WEIR_EBPF_OBJ")]
    ebpf_object: Option<PathBuf>,
    /// Markdown file whose "NetworkPolicy" section is (re)written; the plot goes to `bench/`
    /// next to it. Without it, results are only printed.
    #[arg(long)]
    out: Option<PathBuf>,

    /// a: policy counts.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    dp_policies: Vec<u32>,
    /// a: measurement rounds per policy count (medians are reported).
    #[arg(long, default_value_t = 7)]
    dp_rounds: u32,
    /// a: runs per BPF_PROG_TEST_RUN call for the established figures.
    #[arg(long, default_value_t = 500_000)]
    dp_repeat: u32,
    /// a: packets (one call each) per round for the new-flow figures.
    #[arg(long, default_value_t = 20_000)]
    dp_calls: u32,

    /// b: pods.
    #[arg(long, default_value_t = 1000)]
    pods: u32,
    /// b: nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// b: policies.
    #[arg(long, default_value_t = 200)]
    policies: u32,
    /// b: rounds (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Datapath,
    Program,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(options) => run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir-bench-policy: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &RunOptions) -> Result<()> {
    if !weir_lab::is_root() {
        bail!("the policy benchmarks need root (BPF maps and programs, a bpffs mount)");
    }
    let started = Instant::now();
    let machine = report::machine();
    let path = options.ebpf_object.as_ref().context(
        "the benchmarks need the eBPF object: pass --ebpf-object or set WEIR_EBPF_OBJ \
         (`cargo xtask bench policy` does)",
    )?;
    let object = std::fs::read(path)
        .with_context(|| format!("reading the eBPF object {}", path.display()))?;
    let mut results = report::Results::default();

    if options.parts.contains(&Part::Datapath) {
        heading("a. datapath: ns per packet with 1 vs 1,000 policies (BPF_PROG_TEST_RUN)");
        let opts = datapath::Options {
            levels: options.dp_policies.clone(),
            rounds: options.dp_rounds,
            repeat: options.dp_repeat,
            calls: options.dp_calls,
        };
        results.datapath = Some(datapath::run(object.clone(), opts)?);
        elapsed(started);
    }
    if options.parts.contains(&Part::Program) {
        heading("b. compile and program: pods x nodes x policies into real maps");
        let opts = program::Options {
            scale: objects::Scale {
                pods: options.pods,
                nodes: options.nodes,
                policies: options.policies,
            },
            rounds: options.rounds,
        };
        results.program = Some(program::run(object, &opts)?);
        elapsed(started);
    }

    heading("results");
    println!("{}", report::text(&results));
    if let Some(out) = &options.out {
        report::write(out, &results, &machine)?;
        println!("wrote {} and its plot", out.display());
    }
    Ok(())
}
