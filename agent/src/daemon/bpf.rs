//! The real datapath behind the daemon's [`Datapath`](super::seams::Datapath)
//! seam: [`crate::datapath::Datapath`] (pinned maps and links under
//! `--bpffs`). The agent process lives in the node's netns, so interface
//! indices and attachments here are the node's.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_common::endpoint::{EndpointInfo, ep_flags};
use weir_common::policy::PolicyEvent;

use super::bpf_walks::PinnedWalks;
use super::seams::{
    self, ApplyStats, DatapathStats, GcStats, MapFill, PacketCount, PolicyApplyStats,
    PolicyCounters, PolicyEventSource, PolicySettings,
};
use crate::datapath::{self as dp, LoadOptions};
use crate::plan::DesiredState;
use crate::policy::{Capacities, PolicyPlan};
use crate::registry::EndpointRecord;
use crate::registry::record::parse_mac;

/// The pinned eBPF datapath of this node.
pub struct BpfDatapath {
    inner: dp::Datapath,
}

impl BpfDatapath {
    /// Loads (adopting pins under `bpffs`), writes the node settings and
    /// attaches the node-wide programs: NodePort & co. on `netdev`, socket
    /// LB on `cgroup` when given.
    pub fn start(
        bpffs: &Path,
        netdev: &str,
        node_ipv4: Option<Ipv4Addr>,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut inner = dp::Datapath::load(&LoadOptions::new(bpffs))?;
        let mut config = inner.node_config().unwrap_or_default();
        if let Some(ip) = node_ipv4 {
            config.node_ipv4 = u32::from_ne_bytes(ip.octets());
        }
        inner.set_node_config(&config)?;
        inner.attach_netdev(netdev).map_err(|e| {
            anyhow::anyhow!("attaching the NodePort programs to --netdev {netdev}: {e}")
        })?;
        info!(netdev, node_ip = ?node_ipv4, "node programs attached");
        if let Some(cgroup) = cgroup {
            inner.attach_cgroup(cgroup).map_err(|e| {
                anyhow::anyhow!(
                    "attaching the socket LB programs to --cgroup {}: {e}",
                    cgroup.display()
                )
            })?;
            info!(cgroup = %cgroup.display(), "socket LB programs attached");
        }
        Ok(Self { inner })
    }

    fn upsert_endpoints(&mut self, pod: &EndpointRecord) -> anyhow::Result<()> {
        let info = endpoint_info(pod);
        for ip in &pod.endpoint.ips {
            self.inner
                .upsert_endpoint(*ip, &info)
                .map_err(|e| anyhow::anyhow!("endpoint entry of {ip} (pod {}): {e}", pod.pod()))?;
        }
        Ok(())
    }
}

/// The endpoint map value of a registered pod.
pub fn endpoint_info(pod: &EndpointRecord) -> EndpointInfo {
    let mac = |m: &Option<String>| m.as_deref().and_then(parse_mac).unwrap_or_default();
    EndpointInfo {
        ifindex: pod.endpoint.host_ifindex,
        flags: ep_flags::LOCAL_POD,
        pad: 0,
        identity: 0,
        mac: mac(&pod.endpoint.mac),
        node_mac: mac(&pod.endpoint.host_mac),
    }
}

/// The name of interface `index` in this netns, if there is one.
fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; it
    // writes a NUL-terminated name there or returns NULL.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

impl seams::Datapath for BpfDatapath {
    fn attach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()> {
        self.inner
            .attach_pod(pod.endpoint.host_ifindex)
            .map_err(|e| {
                anyhow::anyhow!(
                    "attaching the pod programs to {} (index {}): {e}",
                    pod.endpoint.host_ifname,
                    pod.endpoint.host_ifindex
                )
            })?;
        self.upsert_endpoints(pod)
    }

    fn detach_pod(&mut self, pod: &EndpointRecord) -> anyhow::Result<()> {
        let index = pod.endpoint.host_ifindex;
        for ip in &pod.endpoint.ips {
            // Only this pod's entry: the address may already be another's.
            let owned = self
                .inner
                .maps()
                .endpoints
                .get(&dp::keys::addr_to_abi(*ip), 0)
                .map(|info| info.ifindex == index)
                .unwrap_or(false);
            if owned {
                self.inner.remove_endpoint(*ip)?;
            }
        }
        // The link usually went with the pod; if its index now names
        // another interface, its programs are not ours to detach.
        match interface_name(index) {
            Some(name) if name != pod.endpoint.host_ifname => {}
            _ => {
                self.inner.detach_pod(index)?;
            }
        }
        Ok(())
    }

    fn retain_pods(&mut self, pods: &[EndpointRecord]) -> anyhow::Result<()> {
        let wanted: BTreeSet<Ipv4Addr> = pods
            .iter()
            .flat_map(|p| p.endpoint.ips.iter().copied())
            .collect();
        for (ip, info) in self.inner.endpoints()? {
            if !wanted.contains(&ip) {
                info!(%ip, ifindex = info.ifindex, "removing the endpoint entry of a pod that is gone");
                self.inner.remove_endpoint(ip)?;
            }
        }
        for pod in pods {
            seams::Datapath::attach_pod(self, pod)?;
        }
        let pruned = self.inner.prune_links()?;
        if pruned > 0 {
            info!(pruned, "unpinned program links of interfaces that are gone");
        }
        Ok(())
    }

    fn apply(&mut self, desired: &DesiredState) -> anyhow::Result<ApplyStats> {
        let stats = self.inner.apply(desired);
        if stats.failed_writes() > 0 {
            warn!(
                failures = ?stats.failures,
                frontends_failed = stats.frontends_failed,
                "some map writes failed; the frontends concerned keep their previous state"
            );
        }
        Ok(ApplyStats {
            services: stats.services as u64,
            frontends: stats.frontends as u64,
            backends: stats.backends as u64,
            map_writes: stats.writes + stats.deletes,
            failed_writes: stats.failed_writes(),
            ct_flushed: stats.ct_flushed,
        })
    }

    fn stats(&mut self) -> anyhow::Result<DatapathStats> {
        let m = self.inner.metrics()?;
        Ok(DatapathStats {
            maps: m
                .maps
                .iter()
                .map(|f| MapFill {
                    name: f.name.clone(),
                    entries: f.entries,
                    capacity: u64::from(f.max_entries),
                })
                .collect(),
            packets: m
                .verdicts
                .iter()
                .map(|(key, value)| PacketCount {
                    direction: key.direction,
                    reason: key.reason,
                    packets: value.packets,
                    bytes: value.bytes,
                })
                .collect(),
            ct_entries: m.last_gc.as_ref().map(|g| g.entries),
        })
    }

    fn walks(&self) -> anyhow::Result<Option<Box<dyn seams::Walks>>> {
        let mirrored = self.mirrored_fill().into_iter().map(|f| f.name).collect();
        let walks = PinnedWalks::open(self.inner.pins(), self.inner.map_specs(), mirrored)?;
        Ok(Some(Box::new(walks)))
    }

    fn mirrored_fill(&self) -> Vec<MapFill> {
        let specs = self.inner.map_specs();
        self.inner
            .writer()
            .state()
            .entry_counts()
            .into_iter()
            .map(|(name, entries)| MapFill {
                name: name.to_string(),
                entries,
                capacity: specs.get(name).map_or(0, |s| u64::from(s.max_entries)),
            })
            .collect()
    }

    fn release_rev_nat(&mut self, referenced: &HashSet<u16>) -> u64 {
        self.inner.release_rev_nat(referenced)
    }

    fn collect_garbage(&mut self) -> anyhow::Result<GcStats> {
        let gc = self.inner.ct_gc()?;
        Ok(GcStats {
            scanned: gc.entries,
            expired: gc.deleted,
        })
    }

    fn policy_revision(&mut self) -> anyhow::Result<u32> {
        Ok(self.inner.policy_config()?.revision)
    }

    fn policy_capacities(&self) -> Capacities {
        self.inner.policy().capacities()
    }

    fn set_policy_settings(&mut self, settings: &PolicySettings) -> anyhow::Result<()> {
        self.inner.set_policy_settings(
            settings.audit_all,
            settings.events_per_sec,
            settings.allow_sample,
        )?;
        Ok(())
    }

    fn apply_policy(&mut self, plan: &PolicyPlan) -> anyhow::Result<PolicyApplyStats> {
        let stats = self.inner.apply_policy(plan)?;
        if stats.failed > 0 {
            // Some entries are missing: the pods concerned are not policed
            // as planned. The caller retries (and fails waiting ADDs).
            anyhow::bail!(
                "{} policy map writes failed (revision {})",
                stats.failed,
                stats.revision
            );
        }
        if stats.adopted {
            info!(
                revision = stats.revision,
                "policy maps adopted from their pins"
            );
        }
        Ok(PolicyApplyStats {
            map_writes: stats.written() + stats.deleted(),
            revision: stats.revision,
        })
    }

    fn policy_counters(&mut self) -> anyhow::Result<PolicyCounters> {
        Ok(PolicyCounters {
            drops: self.inner.policy_drops()?,
            events_lost: self.inner.policy_events_lost()?,
        })
    }

    fn policy_events(&mut self) -> anyhow::Result<Option<Box<dyn PolicyEventSource>>> {
        let reader = self.inner.policy_event_reader()?;
        Ok(Some(Box::new(RingEvents {
            reader,
            next_warning: Instant::now(),
        })))
    }
}

/// The pinned event ring as a [`PolicyEventSource`].
struct RingEvents {
    reader: dp::PolicyEventReader,
    next_warning: Instant,
}

impl PolicyEventSource for RingEvents {
    fn next(&mut self, timeout: Duration) -> Option<PolicyEvent> {
        match self.reader.next(timeout) {
            Ok(event) => event,
            Err(e) => {
                // A failing poll must not spin the thread or flood the log.
                if Instant::now() >= self.next_warning {
                    warn!(error = %e, "reading the policy event ring failed");
                    self.next_warning = Instant::now() + Duration::from_secs(60);
                }
                std::thread::sleep(timeout);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EndpointSpec;

    #[test]
    fn endpoint_info_carries_index_and_macs() {
        let record = EndpointRecord::new(EndpointSpec {
            container_id: "c".into(),
            netns: "/n".into(),
            ifname: "eth0".into(),
            host_ifindex: 42,
            host_ifname: "weir1".into(),
            ips: vec![Ipv4Addr::new(10, 244, 1, 5)],
            mac: Some("0a:58:0a:f4:01:05".into()),
            host_mac: None,
            pod_namespace: "default".into(),
            pod_name: "a".into(),
        });
        let info = endpoint_info(&record);
        assert_eq!(info.ifindex, 42);
        assert_eq!(info.flags, ep_flags::LOCAL_POD);
        assert_eq!(info.mac, [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]);
        assert_eq!(
            info.node_mac, [0; 6],
            "unknown host MAC: delivery left to the kernel"
        );
    }

    #[test]
    fn loopback_has_a_name() {
        assert_eq!(interface_name(1).as_deref(), Some("lo"));
        assert_eq!(interface_name(u32::MAX), None);
    }
}
