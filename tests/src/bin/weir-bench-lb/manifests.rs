//! The services under test, and the standalone-mode manifests the agent reads for them:
//! selector-less Services with one explicit EndpointSlice each, one file per Service (an
//! endpoint change rewrites one small file, as one API watch event would carry one object).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use weir_lab::Node;

pub const NAMESPACE: &str = "bench";
pub const PORT_NAME: &str = "http";

/// One ClusterIP service port and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub endpoints: Vec<Ipv4Addr>,
}

impl Service {
    /// kube-proxy's service port name: `namespace/name:port`.
    pub fn port_name(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }

    /// The file this service lives in.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.name)
    }

    /// The Service and its EndpointSlice as YAML documents.
    pub fn yaml(&self) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
             spec:\n  clusterIP: {vip}\n  ports: [{{name: {PORT_NAME}, port: {port}, \
             targetPort: {target}, protocol: TCP}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: {NAMESPACE}, \
             labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: {PORT_NAME}, port: {target}, protocol: TCP}}]\n\
             endpoints:\n",
            name = self.name,
            vip = self.vip,
            port = self.port,
            target = self.target_port,
        );
        for address in &self.endpoints {
            let _ = writeln!(
                out,
                "- {{addresses: [\"{address}\"], conditions: {{ready: true}}}}"
            );
        }
        out
    }
}

/// `count` services `svc-00000`... with addresses from 10.96.0.1 up and `per` endpoints each
/// from `endpoint_base` up (addresses nothing answers on unless replaced).
pub fn numbered(count: u32, per: u32, endpoint_base: Ipv4Addr) -> Vec<Service> {
    let first_vip = u32::from(Ipv4Addr::new(10, 96, 0, 1));
    let base = u32::from(endpoint_base);
    (0..count)
        .map(|i| Service {
            name: format!("svc-{i:05}"),
            vip: Ipv4Addr::from(first_vip + i),
            port: 80,
            target_port: 8080,
            endpoints: (0..per)
                .map(|k| Ipv4Addr::from(base + i * per + k))
                .collect(),
        })
        .collect()
}

/// A Node object for `node` (podCIDR and InternalIP), as the agent expects to find its own.
pub fn node_yaml(node: &Node) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nspec: {{podCIDR: {}}}\n\
         status: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
        node.name(),
        node.pod_cidr(),
        node.ip()
    )
}

/// A manifests directory holding `node`'s Node object and one file per service.
pub fn write_dir(dir: &Path, node: &Node, services: &[Service]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    weir_lab::write_atomic(dir, "node.yaml", &node_yaml(node))?;
    for service in services {
        weir_lab::write_atomic(dir, &service.file_name(), &service.yaml())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numbered_services_are_distinct_and_sized() {
        let services = numbered(3, 10, Ipv4Addr::new(10, 200, 0, 0));
        assert_eq!(services.len(), 3);
        assert_eq!(services[2].vip, Ipv4Addr::new(10, 96, 0, 3));
        assert_eq!(services[2].endpoints[0], Ipv4Addr::new(10, 200, 0, 20));
        assert!(services.iter().all(|s| s.endpoints.len() == 10));
        assert_eq!(services[1].port_name(), "bench/svc-00001:http");
    }

    #[test]
    fn yaml_names_the_slice_after_the_service() {
        let service = numbered(1, 2, Ipv4Addr::new(10, 200, 0, 0)).remove(0);
        let yaml = service.yaml();
        assert!(
            yaml.contains("kubernetes.io/service-name: svc-00000"),
            "{yaml}"
        );
        assert!(yaml.contains("clusterIP: 10.96.0.1"), "{yaml}");
        assert_eq!(yaml.matches("addresses:").count(), 2, "{yaml}");
        assert_eq!(yaml.matches("\n---\n").count(), 1, "{yaml}");
    }
}
