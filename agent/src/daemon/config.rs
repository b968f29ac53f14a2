//! The agent's flags (DESIGN.md, "Agent") and the settings derived from
//! them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use super::seams::PolicySettings;
use crate::plan::Algorithm;

/// `weir-agent` command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "weir-agent",
    version,
    about = "Weir node agent: Kubernetes services in eBPF"
)]
pub struct Flags {
    /// Standalone mode: read Kubernetes manifests (YAML/JSON) from this
    /// directory instead of a cluster. Without it the agent watches the API
    /// server (in-cluster config or KUBECONFIG).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Name of the local node (decides local endpoints and NodePort
    /// addresses). Defaults to the host name, as the kubelet's does.
    #[arg(long, env = "WEIR_NODE_NAME")]
    pub node_name: Option<String>,

    /// Pin root for maps and programs; a bpffs is mounted there when DIR is
    /// not on one already.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/weir")]
    pub bpffs: PathBuf,

    /// Holds the registration socket (DIR/agent.sock) and the endpoint
    /// records (DIR/endpoints/).
    #[arg(long, value_name = "DIR", default_value = "/run/weir")]
    pub state_dir: PathBuf,

    /// Address of the HTTP endpoint: /metrics, /healthz, /readyz.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:9962")]
    pub metrics_addr: SocketAddr,

    /// Backend selection for Services without the `weir.io/lb-algorithm`
    /// annotation.
    #[arg(long, value_enum, default_value_t = LbAlgorithm::Random)]
    pub lb_algorithm: LbAlgorithm,

    /// cgroup (v2 directory) to attach the socket-level LB programs to.
    /// Without it there is no socket-level LB.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// The node's uplink, where NodePort, LoadBalancer and externalIP
    /// traffic arrives.
    #[arg(long, value_name = "IFNAME", default_value = "eth0")]
    pub netdev: String,

    /// Addresses NodePorts answer on, comma-separated (default: the local
    /// Node's InternalIPs), like kube-proxy's --nodeport-addresses.
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    pub nodeport_addresses: Vec<Ipv4Addr>,

    /// NetworkPolicy audit mode for the whole node: would-be drops pass
    /// and are reported as audit events (per namespace:
    /// the `weir.io/policy-audit: "true"` annotation).
    #[arg(long)]
    pub policy_audit: bool,

    /// Policy verdict events per second per CPU; more are counted as lost
    /// (`weir_policy_events_lost_total`). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub policy_events_per_sec: u32,

    /// Emit an event for one in N allowed new flows (0: none; `weirctl
    /// monitor --pod` still sees every allow of its pod).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub policy_allow_sample: u32,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Load and verify the datapath programs, print them, and exit.
    #[arg(long)]
    pub check_datapath: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LbAlgorithm {
    Random,
    Maglev,
}

impl From<LbAlgorithm> for Algorithm {
    fn from(value: LbAlgorithm) -> Self {
        match value {
            LbAlgorithm::Random => Algorithm::Random,
            LbAlgorithm::Maglev => Algorithm::Maglev,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the objects come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Manifests(PathBuf),
    Cluster,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: SourceKind,
    pub node_name: String,
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    pub default_algorithm: Algorithm,
    pub cgroup: Option<PathBuf>,
    pub netdev: String,
    pub nodeport_addresses: Option<Vec<Ipv4Addr>>,
    pub policy: PolicySettings,
}

impl Config {
    pub fn from_flags(flags: &Flags) -> anyhow::Result<Self> {
        let node_name = match &flags.node_name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("--node-name is not set and the host name is unreadable")
                })?,
        };
        if flags.netdev.is_empty() {
            anyhow::bail!("--netdev must name an interface");
        }
        Ok(Self {
            source: match &flags.manifests {
                Some(dir) => SourceKind::Manifests(dir.clone()),
                None => SourceKind::Cluster,
            },
            node_name,
            bpffs: flags.bpffs.clone(),
            state_dir: flags.state_dir.clone(),
            metrics_addr: flags.metrics_addr,
            default_algorithm: flags.lb_algorithm.into(),
            cgroup: flags.cgroup.clone(),
            netdev: flags.netdev.clone(),
            nodeport_addresses: (!flags.nodeport_addresses.is_empty())
                .then(|| flags.nodeport_addresses.clone()),
            policy: PolicySettings {
                audit_all: flags.policy_audit,
                events_per_sec: flags.policy_events_per_sec,
                allow_sample: flags.policy_allow_sample,
            },
        })
    }

    /// `DIR/agent.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }

    /// `DIR/endpoints`.
    pub fn records_dir(&self) -> PathBuf {
        self.state_dir.join("endpoints")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let flags = Flags::try_parse_from(["weir-agent", "--node-name", "n1"]).unwrap();
        let config = Config::from_flags(&flags).unwrap();
        assert_eq!(config.source, SourceKind::Cluster);
        assert_eq!(config.bpffs, PathBuf::from("/sys/fs/bpf/weir"));
        assert_eq!(config.socket_path(), PathBuf::from("/run/weir/agent.sock"));
        assert_eq!(config.records_dir(), PathBuf::from("/run/weir/endpoints"));
        assert_eq!(config.metrics_addr, "0.0.0.0:9962".parse().unwrap());
        assert_eq!(config.default_algorithm, Algorithm::Random);
        assert_eq!(config.netdev, "eth0");
        assert_eq!(config.cgroup, None);
        assert_eq!(config.nodeport_addresses, None);
        assert_eq!(
            config.policy,
            PolicySettings {
                audit_all: false,
                events_per_sec: 1000,
                allow_sample: 0,
            }
        );
    }

    #[test]
    fn every_flag_parses() {
        let flags = Flags::try_parse_from([
            "weir-agent",
            "--manifests",
            "/m",
            "--node-name",
            "node2",
            "--bpffs",
            "/run/b",
            "--state-dir",
            "/run/s",
            "--metrics-addr",
            "127.0.0.1:9000",
            "--lb-algorithm",
            "maglev",
            "--cgroup",
            "/sys/fs/cgroup/x",
            "--netdev",
            "ens3",
            "--nodeport-addresses",
            "10.0.0.1,10.0.0.2",
            "--log-format",
            "json",
            "--policy-audit",
            "--policy-events-per-sec",
            "50",
            "--policy-allow-sample",
            "100",
        ])
        .unwrap();
        let config = Config::from_flags(&flags).unwrap();
        assert_eq!(config.source, SourceKind::Manifests("/m".into()));
        assert_eq!(config.node_name, "node2");
        assert_eq!(config.socket_path(), PathBuf::from("/run/s/agent.sock"));
        assert_eq!(config.default_algorithm, Algorithm::Maglev);
        assert_eq!(config.cgroup, Some("/sys/fs/cgroup/x".into()));
        assert_eq!(
            config.nodeport_addresses,
            Some(vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)])
        );
        assert_eq!(flags.log_format, LogFormat::Json);
        assert_eq!(
            config.policy,
            PolicySettings {
                audit_all: true,
                events_per_sec: 50,
                allow_sample: 100,
            }
        );
        assert!(Flags::try_parse_from(["weir-agent", "--lb-algorithm", "roundrobin"]).is_err());
        assert!(Flags::try_parse_from(["weir-agent", "--policy-events-per-sec", "-1"]).is_err());
    }
}
