//! Weir's developer tasks, run as `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! Kept to std, anyhow, clap and a minimal `object`: this crate is compiled on every call.

mod bench;
mod compile;
mod demo;
mod paths;
mod privilege;
mod proc;
mod setup;
mod test_log;
mod test_run;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Weir's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: rust-src, bpf-linker (against rustc's libLLVM), Debian packages.
    Setup,
    /// Build the eBPF object, then weir-agent, weirctl, weir-cni and the lab binaries with the
    /// object embedded.
    Build {
        /// Build the host binaries in the dev profile (target/debug); the eBPF object is always
        /// built in release.
        #[arg(long)]
        debug: bool,
    },
    /// Lint, setup, build, unit tests, then the root-only integration tests (needs root).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy -D warnings` (for quick iteration).
        #[arg(long)]
        no_lint: bool,
        /// Arguments for every test binary, after `--` (e.g. a test name filter).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Setup, build, then a 2-node lab showing pod traffic within and across nodes (needs root).
    Demo {
        /// Leave the lab up and print how to enter and remove it.
        #[arg(long)]
        keep: bool,
    },
    /// Benchmarks; results go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// ADD+DEL latency of weir-cni against the reference ptp + host-local plugins (needs root).
    Cni {
        /// Measured ADD+DEL pairs per plugin.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        pairs: u32,
    },
    /// Service load balancing: datapath ns/packet, end-to-end connections/s against kube-proxy's
    /// iptables and nftables layouts, control-plane latency and RSS (needs root).
    Lb {
        /// Arguments for weir-bench-lb, after `--` (e.g. `-- --parts datapath`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// NetworkPolicy: datapath ns/packet with 1 vs 1,000 policies, compile-and-program time and
    /// map memory at 1,000 pods x 3 nodes x 200 policies (needs root).
    Policy {
        /// Arguments for weir-bench-policy, after `--` (e.g. `-- --parts program`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, without anyhow's backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::run(),
        Task::Build { debug } => compile::run(debug, compile::Scope::Binaries).map(drop),
        Task::Test { no_lint, test_args } => test_run::run(&test_run::Options {
            lint: !no_lint,
            test_args,
        }),
        Task::Demo { keep } => demo::run(keep),
        Task::Bench {
            bench: Bench::Cni { pairs },
        } => bench::cni(pairs),
        Task::Bench {
            bench: Bench::Lb { args },
        } => bench::lb(&args),
        Task::Bench {
            bench: Bench::Policy { args },
        } => bench::policy(&args),
    }
}
