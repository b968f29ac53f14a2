//! Calling a CNI plugin exactly as a container runtime does: `CNI_*` environment
//! variables, the network config on stdin, the result (or the spec's error object)
//! on stdout. The plugin process always runs inside a node's netns.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::netns::NetNs;
use crate::process::run_with_timeout;

/// How long a single plugin call may take before the lab kills it.
pub const CNI_TIMEOUT: Duration = Duration::from_secs(60);

/// One plugin invocation. Defaults: `CNI_IFNAME=eth0`,
/// `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=<container id>`.
#[derive(Debug, Clone)]
pub struct CniCall {
    /// `CNI_COMMAND`: ADD, DEL, CHECK, VERSION, STATUS or GC.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (a path; may be empty, as containerd sends it on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`; `None` leaves the variable unset.
    pub args: Option<String>,
    /// The bytes sent on stdin (the plugin's network config).
    pub stdin: Vec<u8>,
    /// Extra variables (`Some`) or variables to unset (`None`), applied last.
    pub env: Vec<(String, Option<String>)>,
}

impl CniCall {
    /// A call with the given verb and container id, no netns, ifname `eth0`.
    pub fn new(command: &str, container_id: &str) -> CniCall {
        CniCall {
            command: command.to_string(),
            container_id: container_id.to_string(),
            netns: String::new(),
            ifname: "eth0".to_string(),
            args: Some(default_cni_args("default", container_id)),
            stdin: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets `CNI_NETNS`.
    pub fn netns(mut self, netns: impl Into<String>) -> Self {
        self.netns = netns.into();
        self
    }

    /// Sets `CNI_IFNAME`.
    pub fn ifname(mut self, ifname: impl Into<String>) -> Self {
        self.ifname = ifname.into();
        self
    }

    /// Sets (`Some`) or unsets (`None`) `CNI_ARGS`.
    pub fn args(mut self, args: Option<String>) -> Self {
        self.args = args;
        self
    }

    /// Sets stdin to the JSON text of `config`.
    pub fn config(mut self, config: &Value) -> Self {
        self.stdin = config.to_string().into_bytes();
        self
    }

    /// Sets stdin to raw bytes (e.g. garbage for error tests).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Sets an extra environment variable (overrides the `CNI_*` ones).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Unsets an environment variable, e.g. `CNI_COMMAND`.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_string(), None));
        self
    }

    /// Runs the plugin at `plugin` with process inside `node_ns`. Only spawn
    /// failures and timeouts are errors; a plugin error is a [`CniOutput`].
    pub fn run(&self, node_ns: &NetNs, plugin: &std::path::Path) -> Result<CniOutput> {
        let mut cmd = node_ns.command(plugin);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname);
        if let Some(dir) = plugin.parent() {
            cmd.env("CNI_PATH", dir);
        }
        if let Some(args) = &self.args {
            cmd.env("CNI_ARGS", args);
        }
        if let Some(level) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", level);
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let what = format!(
            "{} {} (container {}) in netns {}",
            plugin.display(),
            self.command,
            self.container_id,
            node_ns.name()
        );
        let done = run_with_timeout(&mut cmd, &self.stdin, CNI_TIMEOUT, &what)?;
        let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
        Ok(CniOutput {
            status: done.status.code().unwrap_or(-1),
            json: serde_json::from_str(stdout.trim()).ok(),
            stdout,
            stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        })
    }
}

/// `CNI_ARGS` as kubelet's runtimes send it.
pub fn default_cni_args(pod_namespace: &str, pod_name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod_name}")
}

/// What a plugin call returned.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// Exit code (-1 when killed by a signal).
    pub status: i32,
    /// Raw stdout.
    pub stdout: String,
    /// Raw stderr (plugins may log there).
    pub stderr: String,
    /// stdout parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl CniOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The spec error object's `code`, when stdout holds one.
    pub fn error_code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    /// The spec error object's `msg` (plus `details`), when stdout holds one.
    pub fn error_msg(&self) -> Option<String> {
        let json = self.json.as_ref()?;
        let msg = json.get("msg")?.as_str()?.to_string();
        match json.get("details").and_then(Value::as_str) {
            Some(details) if !details.is_empty() => Some(format!("{msg}: {details}")),
            _ => Some(msg),
        }
    }

    /// Returns `self` when the call succeeded, else an error with everything the
    /// plugin said.
    pub fn ok(self) -> Result<CniOutput> {
        if self.success() {
            Ok(self)
        } else {
            Err(anyhow::anyhow!("{self}"))
        }
    }
}

impl std::fmt::Display for CniOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI plugin exited with {}", self.status)?;
        if !self.stdout.trim().is_empty() {
            write!(f, "; stdout: {}", self.stdout.trim())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "; stderr: {}", self.stderr.trim())?;
        }
        Ok(())
    }
}
