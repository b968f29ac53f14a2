//! Reading a Service's spec with the API server's defaults applied, and
//! Weir's own annotation.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use crate::plan::Algorithm;

/// Per-Service choice of backend selection: `maglev` or `random`.
pub const LB_ALGORITHM_ANNOTATION: &str = "weir.io/lb-algorithm";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The API server's upper bound for the affinity timeout (1 day).
const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// `spec.type`, ClusterIP when unset.
pub fn service_type(spec: &ServiceSpec) -> Result<ServiceType, String> {
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => Ok(ServiceType::ClusterIp),
        "NodePort" => Ok(ServiceType::NodePort),
        "LoadBalancer" => Ok(ServiceType::LoadBalancer),
        "ExternalName" => Ok(ServiceType::ExternalName),
        other => Err(format!("unknown spec.type {other:?}")),
    }
}

/// The Service's IPv4 ClusterIP, as kube-proxy's IPv4 proxier picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterIp {
    V4(Ipv4Addr),
    /// `None`: headless, no virtual IP, nothing to program.
    Headless,
    /// Empty: the API server would have allocated one; standalone mode has
    /// no allocator, so the manifest must carry it.
    Unset,
    /// Only IPv6 ClusterIPs.
    NoIpv4,
}

pub fn cluster_ip(spec: &ServiceSpec) -> Result<ClusterIp, String> {
    let primary = spec.cluster_ip.as_deref().unwrap_or("");
    if primary == "None" {
        return Ok(ClusterIp::Headless);
    }
    let listed: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ if primary.is_empty() => return Ok(ClusterIp::Unset),
        _ => vec![primary],
    };
    let mut any = false;
    for ip in listed {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => return Ok(ClusterIp::V4(v4)),
            Ok(IpAddr::V6(_)) => any = true,
            Err(_) if ip == "None" => return Ok(ClusterIp::Headless),
            Err(_) => return Err(format!("unparsable clusterIP {ip:?}")),
        }
    }
    Ok(if any {
        ClusterIp::NoIpv4
    } else {
        ClusterIp::Unset
    })
}

/// `externalTrafficPolicy: Local`, which only NodePort and LoadBalancer
/// Services have (kube-proxy's `ExternalPolicyLocal`).
pub fn external_policy_local(spec: &ServiceSpec, service_type: ServiceType) -> bool {
    matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) && spec.external_traffic_policy.as_deref() == Some("Local")
}

/// `internalTrafficPolicy: Local`.
pub fn internal_policy_local(spec: &ServiceSpec) -> bool {
    spec.internal_traffic_policy.as_deref() == Some("Local")
}

/// `sessionAffinity: ClientIP` → its timeout in seconds.
pub fn affinity_timeout(spec: &ServiceSpec, warn: &mut dyn FnMut(String)) -> Option<u32> {
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "ClientIP" => {}
        "None" => return None,
        other => {
            warn(format!(
                "unknown spec.sessionAffinity {other:?}, using None"
            ));
            return None;
        }
    }
    let configured = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match configured {
        None => Some(DEFAULT_AFFINITY_TIMEOUT),
        Some(t) => match u32::try_from(t) {
            Ok(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => Some(t),
            _ => {
                warn(format!(
                    "sessionAffinityConfig.clientIP.timeoutSeconds {t} is outside 1..={MAX_AFFINITY_TIMEOUT}, \
                     using {DEFAULT_AFFINITY_TIMEOUT}"
                ));
                Some(DEFAULT_AFFINITY_TIMEOUT)
            }
        },
    }
}

/// The `weir.io/lb-algorithm` annotation, else the agent-wide default.
pub fn algorithm(service: &Service, default: Algorithm, warn: &mut dyn FnMut(String)) -> Algorithm {
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION));
    match annotation.map(String::as_str) {
        None => default,
        Some("maglev") => Algorithm::Maglev,
        Some("random") => Algorithm::Random,
        Some(other) => {
            warn(format!(
                "annotation {LB_ALGORITHM_ANNOTATION}: unknown value {other:?} (want maglev or random), \
                 using {default:?}"
            ));
            default
        }
    }
}
