//! The lab topology: a fabric bridge in a lab netns, nodes as netns on it.
//! See the crate docs for the picture and the naming.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;
use serde_json::{Value, json};

use crate::cni::{CniCall, CniOutput};
use crate::netns::NetNs;
use crate::pod::Pod;
use crate::sweep;
use crate::workload::{ProbeOptions, ProbeResult, Proto, ServeGuard};

/// Name of the bridge in the lab netns.
pub const FABRIC: &str = "fabric";
/// The lab netns' own address on the fabric (the "outside" client address).
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
/// Prefix length of the fabric subnet 192.168.100.0/24.
pub const FABRIC_PREFIX: u8 = 24;
/// CNI network name used in every node's config (and its IPAM dir name).
pub const NETWORK_NAME: &str = "weir";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(1);

/// Builder for [`Lab`]; see [`Lab::builder`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    nodes: usize,
    native_routing: bool,
    cni_plugin: Option<PathBuf>,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            nodes: 2,
            native_routing: true,
            cni_plugin: None,
        }
    }
}

impl LabBuilder {
    /// Number of nodes, 1..=200 (default 2).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Whether the lab installs routes in each node to other nodes' pod CIDRs
    /// (default true). Switch off when an agent programs them.
    pub fn native_routing(mut self, on: bool) -> Self {
        self.native_routing = on;
        self
    }

    /// The CNI plugin binary to call (default `bin_path("weir-cni")`, resolved at
    /// each call).
    pub fn cni_plugin(mut self, path: impl Into<PathBuf>) -> Self {
        self.cni_plugin = Some(path.into());
        self
    }

    /// Sweeps leftovers of dead labs, then builds the topology. On error, what was
    /// built so far is torn down again.
    pub fn build(self) -> Result<Lab> {
        if !crate::is_root() {
            bail!("building a lab needs root (network namespaces)");
        }
        if self.nodes == 0 || self.nodes > 200 {
            bail!("a lab has 1..=200 nodes, not {}", self.nodes);
        }
        let swept = sweep::sweep_dead();
        if !swept.netns.is_empty() || !swept.dirs.is_empty() {
            eprintln!(
                "weir-lab: swept leftovers of dead labs: {} netns, {} dirs",
                swept.netns.len(),
                swept.dirs.len()
            );
        }
        let id = format!(
            "{}-{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = Path::new(sweep::STATE_ROOT).join(&id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating lab state dir {}", dir.display()))?;
        let lab_ns = match NetNs::create(&format!("{}{id}-lab", sweep::NETNS_PREFIX)) {
            Ok(ns) => Arc::new(ns),
            Err(err) => {
                let _ = sweep::remove_state_dir(&dir);
                return Err(err);
            }
        };
        let inner = Arc::new(LabInner {
            id,
            dir,
            lab_ns,
            registry: Mutex::new(Vec::new()),
            torn_down: AtomicBool::new(false),
            cni_plugin: self.cni_plugin,
        });
        // From here on, dropping `lab` on error tears everything down.
        let mut lab = Lab {
            inner,
            nodes: Vec::new(),
            native_routing: false,
        };
        lab.setup_fabric()?;
        for index in 1..=self.nodes {
            let node = lab.add_node(index)?;
            lab.nodes.push(node);
        }
        lab.setup_outside_routes()?;
        lab.set_native_routing(self.native_routing)?;
        Ok(lab)
    }
}

/// State shared by the lab, its nodes and its pods.
#[derive(Debug)]
pub(crate) struct LabInner {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) lab_ns: Arc<NetNs>,
    /// Every node and pod netns, in creation order, for teardown.
    pub(crate) registry: Mutex<Vec<Arc<NetNs>>>,
    pub(crate) torn_down: AtomicBool,
    pub(crate) cni_plugin: Option<PathBuf>,
}

impl LabInner {
    pub(crate) fn register(&self, ns: Arc<NetNs>) {
        if let Ok(mut reg) = self.registry.lock() {
            reg.retain(|n| n.exists());
            reg.push(ns);
        }
    }

    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let namespaces: Vec<Arc<NetNs>> = match self.registry.lock() {
            Ok(mut reg) => std::mem::take(&mut *reg),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for ns in namespaces.iter().rev() {
            ns.delete();
        }
        self.lab_ns.delete();
        if let Err(err) = sweep::remove_state_dir(&self.dir) {
            eprintln!("weir-lab: teardown of lab {}: {err:#}", self.id);
        }
    }
}

/// A lab: the fabric and its nodes. Dropping it tears down everything (pods,
/// nodes, the lab netns, processes inside them, the state dir), also during a
/// panic.
#[derive(Debug)]
pub struct Lab {
    inner: Arc<LabInner>,
    nodes: Vec<Node>,
    native_routing: bool,
}

impl Lab {
    /// A lab with the defaults: 2 nodes, native routing.
    pub fn new() -> Result<Lab> {
        LabBuilder::default().build()
    }

    /// A builder to choose the number of nodes and more.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The lab id `<pid>-<counter>` (part of every netns name).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// `/run/weir-lab/<id>`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The lab netns (the fabric's owner, "outside the cluster").
    pub fn outside(&self) -> &NetNs {
        &self.inner.lab_ns
    }

    /// All nodes, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (1-based). Panics when out of range.
    pub fn node(&self, index: usize) -> &Node {
        match index.checked_sub(1).and_then(|i| self.nodes.get(i)) {
            Some(node) => node,
            None => panic!(
                "lab {} has nodes 1..={}, not {index}",
                self.inner.id,
                self.nodes.len()
            ),
        }
    }

    /// Probes `addr:port` from the lab netns (outside the cluster).
    pub fn probe_outside(
        &self,
        proto: Proto,
        addr: impl Into<IpAddr>,
        port: u16,
    ) -> Result<ProbeResult> {
        self.outside().probe(proto, addr, port)
    }

    /// Like [`Lab::probe_outside`] with options.
    pub fn probe_outside_with(
        &self,
        proto: Proto,
        addr: impl Into<IpAddr>,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<Vec<ProbeResult>> {
        self.outside().probe_with(proto, addr, port, opts)
    }

    /// Whether the nodes carry routes to each other's pod CIDRs right now.
    pub fn native_routing(&self) -> bool {
        self.native_routing
    }

    /// Installs (`true`) or removes (`false`) the routes in each node to other
    /// nodes' pod CIDRs via their node IPs.
    pub fn set_native_routing(&mut self, on: bool) -> Result<()> {
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.index() != node.index()) {
                let cidr = other.pod_cidr().to_string();
                let via = other.ip().to_string();
                if on {
                    node.netns()
                        .ip(&["route", "replace", &cidr, "via", &via, "dev", "eth0"])?;
                } else if self.native_routing {
                    node.netns().ip(&["route", "del", &cidr])?;
                }
            }
        }
        self.native_routing = on;
        Ok(())
    }

    /// Tears the lab down now (also what `Drop` does).
    pub fn teardown(self) {
        drop(self);
    }

    /// Leaves the lab up after this process exits (for `weir-demo --keep`): no
    /// teardown on drop, no CNI DEL when its pods drop, and a `keep` marker in its
    /// state dir that makes [`sweep::sweep_dead`] spare it. Remove it later with
    /// [`sweep::remove_lab`]. Returns the lab id.
    pub fn keep(self) -> Result<String> {
        let marker = self.inner.dir.join(sweep::KEEP_MARKER);
        std::fs::write(&marker, b"kept by weir-lab\n")
            .with_context(|| format!("writing {}", marker.display()))?;
        self.inner.torn_down.store(true, Ordering::SeqCst);
        if let Ok(reg) = self.inner.registry.lock() {
            for ns in reg.iter() {
                ns.disarm();
            }
        }
        self.inner.lab_ns.disarm();
        Ok(self.inner.id.clone())
    }

    fn setup_fabric(&self) -> Result<()> {
        let ns = self.outside();
        let addr = format!("{OUTSIDE_IP}/{FABRIC_PREFIX}");
        ns.ip(&["link", "add", FABRIC, "type", "bridge"])?;
        ns.ip(&["addr", "add", &addr, "dev", FABRIC])?;
        ns.ip(&["link", "set", FABRIC, "up"])?;
        Ok(())
    }

    fn setup_outside_routes(&self) -> Result<()> {
        for node in &self.nodes {
            let cidr = node.pod_cidr().to_string();
            let via = node.ip().to_string();
            self.outside()
                .ip(&["route", "replace", &cidr, "via", &via, "dev", FABRIC])?;
        }
        Ok(())
    }

    fn add_node(&self, index: usize) -> Result<Node> {
        let octet = u8::try_from(index).context("node index")?;
        let name = format!("node{index}");
        let ns = Arc::new(NetNs::create(&format!(
            "{}{}-n{index}",
            sweep::NETNS_PREFIX,
            self.inner.id
        ))?);
        self.inner.register(ns.clone());
        let ip = Ipv4Addr::new(192, 168, 100, 10 + octet);
        let pod_cidr = Ipv4Network::new(Ipv4Addr::new(10, 244, octet, 0), 24)?;

        // The veth is created in the lab netns; its peer goes straight into the node.
        let uplink = format!("n{index}");
        let lab_ns = self.outside();
        lab_ns.ip(&[
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        lab_ns.ip(&["link", "set", &uplink, "master", FABRIC, "up"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip}/{FABRIC_PREFIX}"),
            "dev",
            "eth0",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.sysctl("net/ipv4/ip_forward", "1")?;

        let dir = self.inner.dir.join(&name);
        let node = Node {
            inner: Arc::new(NodeInner {
                lab: self.inner.clone(),
                index,
                name,
                ns,
                ip,
                pod_cidr,
                dir,
            }),
        };
        for sub in [
            node.cni_data_dir(),
            node.cni_conf_dir(),
            node.agent_dir(),
            node.bpffs_dir(),
        ] {
            std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let conf = node.cni_conf_dir().join("10-weir.conf");
        std::fs::write(&conf, format!("{:#}\n", node.cni_config()))
            .with_context(|| format!("writing {}", conf.display()))?;
        Ok(node)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.inner.teardown();
    }
}

#[derive(Debug)]
struct NodeInner {
    lab: Arc<LabInner>,
    index: usize,
    name: String,
    ns: Arc<NetNs>,
    ip: Ipv4Addr,
    pod_cidr: Ipv4Network,
    dir: PathBuf,
}

/// A node: a netns with `eth0` on the fabric. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// 1-based index.
    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// Kubernetes node name, `node<index>`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node's netns (its "host" namespace).
    pub fn netns(&self) -> &NetNs {
        &self.inner.ns
    }

    /// Node IP on the fabric, 192.168.100.(10+index).
    pub fn ip(&self) -> Ipv4Addr {
        self.inner.ip
    }

    /// Pod CIDR, `10.244.<index>.0/24`.
    pub fn pod_cidr(&self) -> Ipv4Network {
        self.inner.pod_cidr
    }

    /// The pods' gateway: the first address of the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        let net = u32::from(self.inner.pod_cidr.network());
        Ipv4Addr::from(net.saturating_add(1))
    }

    /// The lab id this node belongs to.
    pub fn lab_id(&self) -> &str {
        &self.inner.lab.id
    }

    /// `/run/weir-lab/<id>/node<index>`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// IPAM `dataDir` of this node's CNI config.
    pub fn cni_data_dir(&self) -> PathBuf {
        self.inner.dir.join("cni-data")
    }

    /// Where the lab writes this node's CNI config (`10-weir.conf`).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.inner.dir.join("cni-conf")
    }

    /// State dir for this node's agent (`--state-dir`).
    pub fn agent_dir(&self) -> PathBuf {
        self.inner.dir.join("agent")
    }

    /// The registration socket of this node's agent (`<agent_dir>/agent.sock`).
    pub fn agent_socket(&self) -> PathBuf {
        self.agent_dir().join("agent.sock")
    }

    /// Pin root for this node's agent (`--bpffs`), outside /sys on purpose.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.inner.dir.join("bpffs")
    }

    /// The IPAM directory of the network: `<cni_data_dir>/weir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.cni_data_dir().join(NETWORK_NAME)
    }

    /// The IPAM allocation file of `ip` (host-local layout: `<ipam_dir>/<ip>`,
    /// holding `CONTAINERID\r\nIFNAME`).
    pub fn ip_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.ipam_dir().join(ip.to_string())
    }

    /// Addresses with an allocation file in [`Node::ipam_dir`] (sorted).
    pub fn allocated_ips(&self) -> Vec<Ipv4Addr> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir()) else {
            return Vec::new();
        };
        let mut ips: Vec<Ipv4Addr> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        ips.sort();
        ips
    }

    /// Names of all links in the node netns (e.g. to check for leaked host veths).
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.netns().ip(&["-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }

    /// The plugin's network config for this node (cniVersion 1.1.0), as a runtime
    /// passes it on stdin. Change `cniVersion` etc. on the returned value as needed.
    pub fn cni_config(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": NETWORK_NAME,
            "type": "weir-cni",
            "ipam": {
                "ranges": [[{"subnet": self.pod_cidr().to_string()}]],
                "dataDir": self.cni_data_dir().display().to_string(),
            }
        })
    }

    /// [`Node::cni_config`] with `agentSocket` pointing at this node's agent,
    /// so ADD registers the pod and DEL deregisters it.
    pub fn cni_config_with_agent(&self) -> Value {
        let mut config = self.cni_config();
        config["agentSocket"] = self.agent_socket().display().to_string().into();
        config
    }

    /// The plugin binary the lab calls.
    pub fn cni_plugin(&self) -> Result<PathBuf> {
        match &self.inner.lab.cni_plugin {
            Some(path) => Ok(path.clone()),
            None => crate::try_bin_path("weir-cni"),
        }
    }

    /// Runs one plugin call with its process inside this node's netns.
    pub fn cni_call(&self, call: &CniCall) -> Result<CniOutput> {
        call.run(self.netns(), &self.cni_plugin()?)
    }

    /// Low-level plugin call: `CNI_COMMAND=command`, `CNI_CONTAINERID`,
    /// `CNI_NETNS=netns` (may be ""), `CNI_IFNAME`, `config` on stdin (any bytes).
    pub fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
        config: &str,
    ) -> Result<CniOutput> {
        let call = CniCall::new(command, container_id)
            .netns(netns)
            .ifname(ifname)
            .stdin(config);
        self.cni_call(&call)
    }

    /// A bare command for the plugin, inside this node's netns, with a clean
    /// environment (only `PATH` and `CNI_PATH`): for hand-made bad environments.
    pub fn cni_command(&self) -> Result<std::process::Command> {
        let plugin = self.cni_plugin()?;
        let mut cmd = self.netns().command(&plugin);
        cmd.env_clear().env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        if let Some(dir) = plugin.parent() {
            cmd.env("CNI_PATH", dir);
        }
        Ok(cmd)
    }

    /// Creates pod `name` in namespace "default": a pod netns wired by a real
    /// CNI ADD with [`Node::cni_config`].
    pub fn add_pod(&self, name: &str) -> Result<Pod> {
        Pod::add(self, "default", name, &self.cni_config())
    }

    /// Like [`Node::add_pod`] with a Kubernetes namespace (`K8S_POD_NAMESPACE`).
    pub fn add_pod_in(&self, namespace: &str, name: &str) -> Result<Pod> {
        Pod::add(self, namespace, name, &self.cni_config())
    }

    /// Like [`Node::add_pod`] with a custom network config (e.g. another cniVersion).
    pub fn add_pod_with_config(&self, name: &str, config: &Value) -> Result<Pod> {
        Pod::add(self, "default", name, config)
    }

    /// A fresh, unwired netns belonging to this node's lab (torn down with it),
    /// named `wlab-<id>-n<index>.<suffix>`: for tests that call the plugin by hand.
    pub fn create_netns(&self, suffix: &str) -> Result<Arc<NetNs>> {
        let ns = Arc::new(NetNs::create(&format!(
            "{}.{suffix}",
            self.inner.ns.name()
        ))?);
        self.inner.lab.register(ns.clone());
        Ok(ns)
    }

    /// Starts `weir-serve --name <node name>` on TCP and UDP `ports` in the node netns.
    pub fn serve(&self, ports: &[u16]) -> Result<ServeGuard> {
        self.netns().serve(self.name(), ports, ports)
    }

    /// Probes `addr:port` from the node's own netns (host processes, kubelet).
    pub fn probe(&self, proto: Proto, addr: impl Into<IpAddr>, port: u16) -> Result<ProbeResult> {
        self.netns().probe(proto, addr, port)
    }

    /// Like [`Node::probe`] with options.
    pub fn probe_with(
        &self,
        proto: Proto,
        addr: impl Into<IpAddr>,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<Vec<ProbeResult>> {
        self.netns().probe_with(proto, addr, port, opts)
    }

    pub(crate) fn lab_torn_down(&self) -> bool {
        self.inner.lab.torn_down.load(Ordering::SeqCst)
    }
}
