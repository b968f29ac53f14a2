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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    //! Dispatcher tests that never reach netlink: they must not need root
    //! and must never touch the network namespace the tests run in.
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;

    struct Call {
        env: HashMap<&'static str, String>,
        stdin: Vec<u8>,
    }

    impl Call {
        fn new(command: &str) -> Self {
            let mut env = HashMap::new();
            env.insert("CNI_COMMAND", command.to_string());
            env.insert("CNI_CONTAINERID", "abc123".to_string());
            env.insert("CNI_NETNS", "/run/netns/weir-unit-test-missing".to_string());
            env.insert("CNI_IFNAME", "eth0".to_string());
            env.insert("CNI_PATH", "/opt/cni/bin".to_string());
            Self {
                env,
                stdin: Vec::new(),
            }
        }
        fn env(mut self, key: &'static str, value: &str) -> Self {
            self.env.insert(key, value.to_string());
            self
        }
        fn without(mut self, key: &'static str) -> Self {
            self.env.remove(key);
            self
        }
        fn config(mut self, config: &Value) -> Self {
            self.stdin = config.to_string().into_bytes();
            self
        }
        fn stdin(mut self, raw: &[u8]) -> Self {
            self.stdin = raw.to_vec();
            self
        }
        fn run(&self) -> (Outcome, Value) {
            let outcome = run(
                |k| self.env.get(k).map(OsString::from),
                &mut self.stdin.as_slice(),
            );
            let json = serde_json::from_str(&outcome.stdout).unwrap_or(Value::Null);
            (outcome, json)
        }
        fn error_code(&self) -> u64 {
            let (outcome, json) = self.run();
            assert_eq!(outcome.exit_code, 1, "{}", outcome.stdout);
            assert!(json["msg"].as_str().is_some_and(|m| !m.is_empty()));
            json["code"].as_u64().unwrap()
        }
    }

    fn config(version: &str, data_dir: &str) -> Value {
        json!({
            "cniVersion": version, "name": "weir", "type": "weir-cni",
            "ipam": {"ranges": [[{"subnet": "10.244.1.0/30"}]], "dataDir": data_dir}
        })
    }

    #[test]
    fn version_ignores_stdin_and_other_env() {
        let (outcome, json) = Call::new("VERSION")
            .without("CNI_CONTAINERID")
            .stdin(b"not json")
            .run();
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(
            json["supportedVersions"],
            json!(["0.4.0", "1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn environment_errors_are_code_4() {
        let conf = config("1.1.0", "/tmp/x");
        assert_eq!(
            Call::new("ADD")
                .without("CNI_COMMAND")
                .config(&conf)
                .error_code(),
            4
        );
        assert_eq!(Call::new("FROB").config(&conf).error_code(), 4);
        assert_eq!(
            Call::new("ADD")
                .without("CNI_PATH")
                .config(&conf)
                .error_code(),
            4
        );
        assert_eq!(
            Call::new("ADD")
                .env("CNI_IFNAME", "a/b")
                .config(&conf)
                .error_code(),
            4
        );
        assert_eq!(
            Call::new("ADD")
                .env("CNI_ARGS", "FOO=bar")
                .config(&conf)
                .error_code(),
            4
        );
    }

    #[test]
    fn decoding_errors_are_code_6() {
        assert_eq!(Call::new("ADD").stdin(b"{").error_code(), 6);
        assert_eq!(Call::new("DEL").stdin(b"").error_code(), 6);
    }

    #[test]
    fn errors_echo_the_config_version() {
        let conf = config("0.4.0", "relative");
        let (_, json) = Call::new("ADD").config(&conf).run();
        assert_eq!(json["code"], 7);
        assert_eq!(json["cniVersion"], "0.4.0");
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        let conf = config("0.3.1", "/tmp/x");
        assert_eq!(Call::new("ADD").config(&conf).error_code(), 1);
        let mut conf = config("1.1.0", "/tmp/x");
        conf.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(Call::new("ADD").config(&conf).error_code(), 1);
    }

    #[test]
    fn status_and_gc_need_1_1_0() {
        for verb in ["STATUS", "GC"] {
            for version in ["0.4.0", "1.0.0"] {
                let code = Call::new(verb)
                    .config(&config(version, "/tmp/x"))
                    .error_code();
                assert_eq!(code, 1, "{verb} {version}");
            }
        }
    }

    #[test]
    fn gc_without_valid_attachments_is_code_7() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = config("1.1.0", tmp.path().to_str().unwrap());
        assert_eq!(Call::new("GC").config(&conf).error_code(), 7);
    }

    #[test]
    fn add_into_a_missing_netns_is_code_3_and_reserves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = config("1.1.0", tmp.path().to_str().unwrap());
        assert_eq!(Call::new("ADD").config(&conf).error_code(), 3);
        assert!(!tmp.path().join("weir").exists());
    }

    #[test]
    fn check_without_prev_result_is_code_7() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = config("1.0.0", tmp.path().to_str().unwrap());
        assert_eq!(Call::new("CHECK").config(&conf).error_code(), 7);
    }

    #[test]
    fn status_reports_50_when_a_range_is_full() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = config("1.1.0", tmp.path().to_str().unwrap());
        let (outcome, _) = Call::new("STATUS")
            .without("CNI_CONTAINERID")
            .config(&conf)
            .run();
        assert_eq!(outcome, Outcome::success(String::new()));
        // 10.244.1.0/30 has one usable address: .2
        std::fs::write(tmp.path().join("weir/10.244.1.2"), "other\r\neth0").unwrap();
        assert_eq!(Call::new("STATUS").config(&conf).error_code(), 50);
    }

    #[test]
    fn status_reports_50_when_the_data_dir_is_unusable() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let conf = config("1.1.0", file.to_str().unwrap());
        assert_eq!(Call::new("STATUS").config(&conf).error_code(), 50);
    }
}
