//! `weirctl`: the policy debugging CLI.
//!
//! * `weirctl monitor` streams policy verdict events from the local agent,
//!   naming the deciding policy and rule.
//! * `weirctl datapath` tells whether this build embeds the eBPF object.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use weir_agent::datapath;
use weir_agent::registry::monitor::{MonitorBody, MonitorFilter, MonitorVerdict, parse_pod};
use weir_agent::registry::monitor_client;

/// The agent's default socket (`--state-dir /run/weir`).
const DEFAULT_SOCKET: &str = "/run/weir/agent.sock";

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
    /// Print policy verdict events live, one line each, naming the policy
    /// and rule that decided. Allowed flows show up for pods watched with
    /// --pod, or as sampled by the agent's --policy-allow-sample.
    Monitor(MonitorArgs),
}

#[derive(Debug, clap::Args)]
struct MonitorArgs {
    /// Only events of this local pod (NAMESPACE/NAME); also turns on
    /// events for every flow it is allowed.
    #[arg(long, value_name = "NS/NAME", value_parser = pod_arg)]
    pod: Option<String>,
    /// Only this verdict.
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The agent socket (DIR/agent.sock of the agent's --state-dir).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VerdictArg {
    Drop,
    Allow,
    Audit,
}

impl From<VerdictArg> for MonitorVerdict {
    fn from(v: VerdictArg) -> Self {
        match v {
            VerdictArg::Drop => Self::Drop,
            VerdictArg::Allow => Self::Allow,
            VerdictArg::Audit => Self::Audit,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn pod_arg(text: &str) -> Result<String, String> {
    parse_pod(text).map(|_| text.to_string())
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Datapath => datapath_info(),
        Command::Monitor(args) => monitor(args),
    }
}

fn datapath_info() -> ExitCode {
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

fn monitor(args: MonitorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weirctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = MonitorFilter {
        pod: args.pod.clone(),
        verdict: args.verdict.map(Into::into),
    };
    let output = args.output;
    let streaming = monitor_client::stream(&args.socket, filter, move |body| print(output, body));
    let result = runtime.block_on(async {
        tokio::select! {
            result = streaming => result.map(|()| "the agent closed the stream"),
            _ = tokio::signal::ctrl_c() => Ok("interrupted"),
        }
    });
    match result {
        Ok(why) => {
            eprintln!("weirctl: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(output: Output, body: MonitorBody) {
    let mut stdout = std::io::stdout().lock();
    let written = match (body, output) {
        (MonitorBody::Event(event), Output::Text) => writeln!(stdout, "{event}"),
        (MonitorBody::Event(event), Output::Json) => match serde_json::to_string(&event) {
            Ok(line) => writeln!(stdout, "{line}"),
            Err(e) => {
                eprintln!("weirctl: an event did not encode: {e}");
                Ok(())
            }
        },
        (MonitorBody::Dropped(n), _) => {
            eprintln!("weirctl: {n} events skipped (this terminal read too slowly)");
            Ok(())
        }
    };
    // Line by line, also into a pipe; a closed pipe ends the program.
    if written.and_then(|()| stdout.flush()).is_err() {
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn monitor_args(args: &[&str]) -> Result<MonitorArgs, clap::Error> {
        let all: Vec<&str> = ["weirctl", "monitor"].iter().chain(args).copied().collect();
        match Args::try_parse_from(all)?.command {
            Command::Monitor(m) => Ok(m),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn monitor_defaults() {
        let m = monitor_args(&[]).unwrap();
        assert_eq!(m.pod, None);
        assert_eq!(m.verdict, None);
        assert_eq!(m.output, Output::Text);
        assert_eq!(m.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn monitor_takes_filters_format_and_socket() {
        let m = monitor_args(&[
            "--pod",
            "x/a",
            "--verdict",
            "audit",
            "-o",
            "json",
            "--socket",
            "/run/n1/agent.sock",
        ])
        .unwrap();
        assert_eq!(m.pod.as_deref(), Some("x/a"));
        assert_eq!(
            m.verdict.map(MonitorVerdict::from),
            Some(MonitorVerdict::Audit)
        );
        assert_eq!(m.output, Output::Json);
        assert_eq!(m.socket, PathBuf::from("/run/n1/agent.sock"));
        let long = monitor_args(&["--output", "text", "--verdict", "drop"]).unwrap();
        assert_eq!(long.verdict, Some(VerdictArg::Drop));
    }

    #[test]
    fn monitor_refuses_bad_values() {
        for bad in [
            &["--pod", "x"][..],
            &["--pod", "x/a/b"],
            &["--verdict", "deny"],
            &["-o", "yaml"],
            &["--bogus"],
        ] {
            assert!(monitor_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn datapath_still_parses() {
        assert!(matches!(
            Args::try_parse_from(["weirctl", "datapath"])
                .unwrap()
                .command,
            Command::Datapath
        ));
    }
}
