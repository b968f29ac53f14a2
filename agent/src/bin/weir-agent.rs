//! `weir-agent`: the node agent. See `weir_agent::daemon` for what it
//! does and DESIGN.md ("Agent") for the flags.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use weir_agent::daemon::{Config, Flags, config::LogFormat};
use weir_agent::datapath;

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_tracing(flags.log_format);
    if flags.check_datapath {
        return match check_datapath() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "datapath check failed");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_flags(&flags) {
        Ok(config) => config,
        Err(e) => {
            error!(error = %format!("{e:#}"), "bad configuration");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-agent")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weir_agent::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %format!("{e:#}"), "weir-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check_datapath() -> weir_agent::Result<()> {
    let mut ebpf = datapath::open()?;
    for name in [datapath::PROG_FROM_POD, datapath::PROG_TO_POD] {
        datapath::load_classifier(&mut ebpf, name)?;
        info!(program = name, "verified by the kernel");
    }
    Ok(())
}
