//! `weirctl`: the policy debugging CLI.
//!
//! Its verdict and monitor commands arrive with policy enforcement; today it
//! reads the datapath's packet counters from a live object.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_agent::datapath;

#[derive(Debug, Parser)]
#[command(version, about = "Weir debugging CLI")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print whether this build embeds the eBPF datapath, and its programs.
    Datapath,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Datapath => {
            if datapath::has_object() {
                println!("eBPF datapath: embedded");
                println!(
                    "programs: {} {}",
                    datapath::PROG_FROM_POD,
                    datapath::PROG_TO_POD
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("eBPF datapath: not embedded (build with `cargo xtask build`)");
                ExitCode::FAILURE
            }
        }
    }
}
