//! The seam to `weir-agent`. With `agentSocket` set, ADD will register the
//! pod with the agent (and fail with code 11 when it is unreachable) and
//! DEL will deregister it; that protocol lands together with the agent's
//! endpoint API. Until then both configurations use [`NoAgent`]: the plugin
//! wires and addresses the pod on its own, as a plain CNI plugin does.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::CniError;

/// Everything the agent needs to know about a wired pod (DESIGN.md,
/// "Endpoints").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub host_ifname: &'a str,
    pub host_ifindex: u32,
    pub ips: Vec<Ipv4Addr>,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
}

pub trait AgentClient {
    /// Called by ADD once the pod is wired; an error rolls the ADD back.
    fn register(&self, endpoint: &PodEndpoint<'_>) -> Result<(), CniError>;
    /// Called by DEL and GC; must succeed for unknown attachments.
    fn deregister(&self, container_id: &str, ifname: &str) -> Result<(), CniError>;
}

/// No agent to tell: every call succeeds without doing anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAgent;

impl AgentClient for NoAgent {
    fn register(&self, _endpoint: &PodEndpoint<'_>) -> Result<(), CniError> {
        Ok(())
    }
    fn deregister(&self, _container_id: &str, _ifname: &str) -> Result<(), CniError> {
        Ok(())
    }
}

/// The client for a config's `agentSocket`. Registration is not part of
/// this release, so a configured socket is accepted and not contacted yet.
pub fn for_socket(_agent_socket: Option<&Path>) -> Box<dyn AgentClient> {
    Box::new(NoAgent)
}
