//! The CNI entry point: environment + stdin in, stdout + exit status out.
//! Validation happens in libcni's skel order so runtimes and tests see the
//! same error codes as with the reference plugins.

use std::ffi::OsString;
use std::io::Read;

use crate::cni_args;
use crate::commands::{self, Invocation};
use crate::config;
use crate::env::{self, Command};
use crate::error::CniError;
use crate::version::{self, CniVersion};

/// What to print on stdout and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

impl Outcome {
    fn success(stdout: String) -> Self {
        Self {
            stdout,
            exit_code: 0,
        }
    }

    fn failure(err: &CniError, cni_version: &str) -> Self {
        Self {
            stdout: err.to_json(cni_version),
            exit_code: 1,
        }
    }
}

/// Runs one CNI call. `lookup` reads environment variables; `stdin` is read
/// for every command but VERSION.
pub fn run(lookup: impl Fn(&str) -> Option<OsString>, stdin: &mut dyn Read) -> Outcome {
    let env = match env::from_lookup(lookup) {
        Ok(env) => env,
        Err(err) => return Outcome::failure(&err, version::LATEST),
    };
    if env.command == Command::Version {
        return Outcome::success(version::version_reply());
    }
    let mut input = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut input) {
        let err = CniError::io(format!("cannot read the network config from stdin: {e}"));
        return Outcome::failure(&err, version::LATEST);
    }
    let doc = match config::parse_document(&input) {
        Ok(doc) => doc,
        Err(err) => return Outcome::failure(&err, version::LATEST),
    };
    let echo_version = config::raw_version(&doc)
        .filter(|v| !v.is_empty())
        .unwrap_or(version::LATEST)
        .to_string();
    match dispatch(env, &doc) {
        Ok(stdout) => Outcome::success(stdout),
        Err(err) => Outcome::failure(&err, &echo_version),
    }
}

fn dispatch(
    env: env::CniEnv,
    doc: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, CniError> {
    config::check_name(doc)?;
    let cni_version = CniVersion::parse(config::raw_version(doc))?;
    let verb = match env.command {
        Command::Status => Some("STATUS"),
        Command::Gc => Some("GC"),
        _ => None,
    };
    if let Some(verb) = verb
        && !cni_version.has_status_and_gc()
    {
        return Err(CniError::incompatible_version(format!(
            "config version {} does not allow {verb} (needs 1.1.0)",
            cni_version.as_str()
        )));
    }
    let conf = config::parse(doc, cni_version)?;
    match env.command {
        Command::Status => commands::status::run(&conf).map(|()| String::new()),
        Command::Gc => commands::gc::run(&conf).map(|()| String::new()),
        Command::Add | Command::Del | Command::Check => {
            let args = cni_args::parse(&env.args)?;
            let inv = Invocation { env, conf, args };
            match inv.env.command {
                Command::Add => commands::add::run(&inv),
                Command::Del => commands::del::run(&inv).map(|()| String::new()),
                _ => commands::check::run(&inv).map(|()| String::new()),
            }
        }
        // Handled before stdin is read.
        Command::Version => Ok(version::version_reply()),
    }
}
