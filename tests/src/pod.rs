//! Pods: a netns per pod, wired by the real CNI plugin as a runtime would.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::cni::{CniCall, CniOutput, default_cni_args};
use crate::lab::Node;
use crate::netns::NetNs;
use crate::workload::{ProbeOptions, ProbeResult, Proto, ServeGuard};

/// A pod wired by CNI ADD. Dropping it runs CNI DEL (errors printed, not raised)
/// and removes its netns; [`Pod::delete`] does the same and returns the DEL output.
#[derive(Debug)]
pub struct Pod {
    node: Node,
    name: String,
    namespace: String,
    container_id: String,
    ifname: String,
    ns: Arc<NetNs>,
    config: Value,
    result: Value,
    address: Ipv4Network,
    host_veth: String,
    deleted: bool,
}

impl Pod {
    pub(crate) fn add(node: &Node, namespace: &str, name: &str, config: &Value) -> Result<Pod> {
        validate_k8s_name("pod namespace", namespace)?;
        validate_k8s_name("pod name", name)?;
        // Named after the node netns, so the sweep and the lab teardown find it.
        let ns = node.create_netns(&format!("{namespace}.{name}"))?;
        let container_id = ns
            .name()
            .strip_prefix(crate::sweep::NETNS_PREFIX)
            .unwrap_or(ns.name())
            .to_string();
        let ifname = "eth0".to_string();
        let call = CniCall::new("ADD", &container_id)
            .netns(ns.path_str())
            .ifname(&ifname)
            .args(Some(default_cni_args(namespace, name)))
            .config(config);
        let out = node.cni_call(&call)?;
        if !out.success() {
            ns.delete();
            bail!(
                "CNI ADD of pod {namespace}/{name} on {} failed: {out}",
                node.name()
            );
        }
        let parsed = parse_add_result(&out, &ifname);
        let (address, host_veth) = match parsed {
            Ok(v) => v,
            Err(err) => {
                // Undo the attachment: the result is unusable for the test.
                let _ = node.cni_call(&CniCall {
                    command: "DEL".to_string(),
                    ..call.clone()
                });
                ns.delete();
                return Err(err.context(format!(
                    "CNI ADD of pod {namespace}/{name} returned an unusable result: {}",
                    out.stdout.trim()
                )));
            }
        };
        Ok(Pod {
            node: node.clone(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            container_id,
            ifname,
            ns,
            config: config.clone(),
            result: out.json.unwrap_or(Value::Null),
            address,
            host_veth,
            deleted: false,
        })
    }

    /// Pod name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kubernetes namespace of the pod.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `CNI_CONTAINERID` used for this pod.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// `CNI_IFNAME` (always `eth0`).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The node the pod runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The pod netns.
    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// The pod IP from the ADD result.
    pub fn ip(&self) -> Ipv4Addr {
        self.address.ip()
    }

    /// The address as the result gave it (with its prefix length).
    pub fn address(&self) -> Ipv4Network {
        self.address
    }

    /// Name of the host-side veth in the node netns (from the result's interfaces).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// The ADD result JSON (the `prevResult` of CHECK/DEL).
    pub fn result(&self) -> &Value {
        &self.result
    }

    /// The network config the pod was added with.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The config with `prevResult` set, as a runtime sends it on CHECK and DEL.
    pub fn config_with_prev_result(&self) -> Value {
        let mut config = self.config.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.insert("prevResult".to_string(), self.result.clone());
        }
        config
    }

    /// A [`CniCall`] for this attachment (`command`, container id, netns, ifname,
    /// CNI_ARGS, config with prevResult), for tests that tweak one field.
    pub fn cni_call(&self, command: &str) -> CniCall {
        CniCall::new(command, &self.container_id)
            .netns(self.ns.path_str())
            .ifname(&self.ifname)
            .args(Some(default_cni_args(&self.namespace, &self.name)))
            .config(&self.config_with_prev_result())
    }

    /// Runs CNI CHECK with `prevResult`. Returns the output; a drift is a failed
    /// output (`!success()`), not an `Err`.
    pub fn check(&self) -> Result<CniOutput> {
        self.node.cni_call(&self.cni_call("CHECK"))
    }

    /// Runs CNI DEL now, then removes the pod netns. Returns the DEL output
    /// (also when DEL failed, so tests can look at it).
    pub fn delete(mut self) -> Result<CniOutput> {
        self.deleted = true;
        let out = self.node.cni_call(&self.cni_call("DEL"));
        self.ns.delete();
        out
    }

    /// Starts `weir-serve --name <pod name>` on TCP and UDP `ports` in the pod.
    pub fn serve(&self, ports: &[u16]) -> Result<ServeGuard> {
        self.ns.serve(&self.name, ports, ports)
    }

    /// One probe from inside the pod.
    pub fn probe(&self, proto: Proto, addr: impl Into<IpAddr>, port: u16) -> Result<ProbeResult> {
        self.ns.probe(proto, addr, port)
    }

    /// Probes with options from inside the pod.
    pub fn probe_with(
        &self,
        proto: Proto,
        addr: impl Into<IpAddr>,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<Vec<ProbeResult>> {
        self.ns.probe_with(proto, addr, port, opts)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        if !self.node.lab_torn_down() && self.node.netns().exists() {
            match self.node.cni_call(&self.cni_call("DEL")) {
                Ok(out) if out.success() => {}
                Ok(out) => eprintln!("weir-lab: DEL of pod {}: {out}", self.name),
                Err(err) => eprintln!("weir-lab: DEL of pod {}: {err:#}", self.name),
            }
        }
        self.ns.delete();
    }
}

/// Pulls the pod address and the host-side interface name out of an ADD result
/// (0.4.0 and 1.x have the same shape for these fields).
fn parse_add_result(out: &CniOutput, ifname: &str) -> Result<(Ipv4Network, String)> {
    let json = out.json.as_ref().context("ADD printed no JSON result")?;
    let interfaces = json
        .get("interfaces")
        .and_then(Value::as_array)
        .context("result has no interfaces")?;
    let host_veth = interfaces
        .iter()
        .find(|i| {
            i.get("sandbox")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && i.get("name").and_then(Value::as_str) != Some(ifname)
        })
        .and_then(|i| i.get("name")?.as_str())
        .context("result lists no host-side interface (one without sandbox)")?
        .to_string();
    let address = json
        .get("ips")
        .and_then(Value::as_array)
        .and_then(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address")?.as_str()?.parse::<Ipv4Network>().ok())
                .next()
        })
        .context("result has no IPv4 address in ips")?;
    Ok((address, host_veth))
}

fn validate_k8s_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid {what} {name:?}: use [a-z0-9-], at most 40 characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn output(json: &str) -> CniOutput {
        CniOutput {
            status: 0,
            stdout: json.to_string(),
            stderr: String::new(),
            json: serde_json::from_str(json).ok(),
        }
    }

    #[test]
    fn parses_a_1_1_result() {
        let out = output(
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"weir1234","mac":"aa:bb:cc:dd:ee:ff"},
            {"name":"eth0","mac":"aa:bb:cc:dd:ee:00","sandbox":"/run/netns/x"}],
            "ips":[{"address":"10.244.1.2/32","gateway":"10.244.1.1","interface":1}]}"#,
        );
        let (addr, veth) = parse_add_result(&out, "eth0").unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(veth, "weir1234");
    }

    #[test]
    fn rejects_a_result_without_host_interface() {
        let out = output(
            r#"{"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.0.0.2/24"}]}"#,
        );
        assert!(parse_add_result(&out, "eth0").is_err());
    }

    #[test]
    fn validates_names() {
        assert!(validate_k8s_name("pod", "a-1").is_ok());
        assert!(validate_k8s_name("pod", "A").is_err());
        assert!(validate_k8s_name("pod", "a/b").is_err());
        assert!(validate_k8s_name("pod", "").is_err());
    }
}
