//! The NetworkPolicy maps, userspace side: writing a [`PolicyPlan`] into
//! `weir_ipcache4_v1`, `weir_policy_v1` and `weir_policy_ep_v1` in the
//! order docs/policy.md requires, the revision and node-wide settings in
//! `weir_policy_cfg_v1`, and reading what the datapath counts (drops per
//! policy, lost events) and emits (the `weir_events_v1` ring buffer).
//!
//! **Diffing.** [`PolicyMaps`] keeps a mirror of what the three content
//! maps hold. The first [`PolicyMaps::apply_policy`] after a start fills it
//! from the pinned maps, so a restarted agent adopts the previous run's
//! entries and writes only the difference (nothing is flushed). After that
//! the mirror follows every successful write; a failed write leaves the
//! mirror as the kernel has it, so the next apply retries it.
//!
//! **Order** (so a packet never sees an endpoint isolated before its allow
//! entries exist, nor an entry naming an identity the ipcache does not hand
//! out yet): ipcache upserts, policy upserts, endpoint upserts, then the
//! deletes (endpoints, policy, ipcache), then the revision, last.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
};
use tracing::{info, warn};
use weir_common::policy::{
    self as names, EventState, IpcacheEntry, IpcacheKey, PolicyConfig, PolicyCtEntry, PolicyCtKey,
    PolicyEndpoint, PolicyEntry, PolicyEvent, PolicyKey, policy_config_flags,
};

use super::{
    error::{DatapathError, DatapathResult},
    pin::PinLayout,
};
use crate::policy::{Capacities, MapChanges, PolicyPlan};

/// The bytes of a [`PolicyKey`] after `prefixlen` (aya's LPM key carries
/// the prefix length itself).
type PolicyKeyData = [u8; 12];

/// What the three content maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyContent {
    pub ipcache: BTreeMap<IpcacheKey, IpcacheEntry>,
    pub policy: BTreeMap<PolicyKey, PolicyEntry>,
    pub endpoints: BTreeMap<u32, PolicyEndpoint>,
}

impl PolicyContent {
    /// The content a plan asks for.
    pub fn of(plan: &PolicyPlan) -> Self {
        Self {
            ipcache: plan.ipcache_entries().collect(),
            policy: plan.policy_entries().collect(),
            endpoints: plan.endpoint_entries().collect(),
        }
    }
}

/// The writes that turn `have` into `want`, per map. Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentDiff {
    pub ipcache: MapChanges<IpcacheKey, IpcacheEntry>,
    pub policy: MapChanges<PolicyKey, PolicyEntry>,
    pub endpoints: MapChanges<u32, PolicyEndpoint>,
}

impl ContentDiff {
    pub fn between(have: &PolicyContent, want: &PolicyContent) -> Self {
        Self {
            ipcache: changes(&have.ipcache, &want.ipcache),
            policy: changes(&have.policy, &want.policy),
            endpoints: changes(&have.endpoints, &want.endpoints),
        }
    }

    pub fn len(&self) -> usize {
        self.ipcache.len() + self.policy.len() + self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn changes<K: Ord + Copy, V: PartialEq + Copy>(
    have: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> MapChanges<K, V> {
    MapChanges {
        upserts: want
            .iter()
            .filter(|(k, v)| have.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        deletes: have
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect(),
    }
}

/// What one [`PolicyMaps::apply_policy`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyApplyStats {
    /// The revision now in `weir_policy_cfg_v1`.
    pub revision: u32,
    /// This apply started from the pinned maps' content (first after start).
    pub adopted: bool,
    pub ipcache_written: u64,
    pub policy_written: u64,
    pub endpoints_written: u64,
    pub ipcache_deleted: u64,
    pub policy_deleted: u64,
    pub endpoints_deleted: u64,
    /// Writes or deletes the kernel refused (retried by the next apply).
    pub failed: u64,
    /// Entries per map after the apply (as the mirror has them).
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    pub endpoints: usize,
    /// Kernel memory estimate of the plan ([`crate::policy::PlanStats::map_bytes`]).
    pub map_bytes: usize,
    pub elapsed: Duration,
}

impl PolicyApplyStats {
    pub fn written(&self) -> u64 {
        self.ipcache_written + self.policy_written + self.endpoints_written
    }

    pub fn deleted(&self) -> u64 {
        self.ipcache_deleted + self.policy_deleted + self.endpoints_deleted
    }
}

/// Handles on the policy maps, taken from the loaded object (or opened from
/// their pins with [`PolicyMaps::open`], for a thread of its own).
pub struct PolicyMaps {
    ipcache: LpmTrie<MapData, u32, IpcacheEntry>,
    policy: LpmTrie<MapData, PolicyKeyData, PolicyEntry>,
    endpoints: BpfHashMap<MapData, u32, PolicyEndpoint>,
    config: Array<MapData, PolicyConfig>,
    event_state: PerCpuArray<MapData, EventState>,
    drops: PerCpuHashMap<MapData, u32, u64>,
    /// The policy conntrack (the GC walks it).
    pub polct: BpfHashMap<MapData, PolicyCtKey, PolicyCtEntry>,
    capacities: Capacities,
    /// What the content maps hold; `None` until the first apply reads them.
    mirror: Option<PolicyContent>,
}

fn convert<T: TryFrom<Map, Error = MapError>>(name: &str, map: Map) -> DatapathResult<T> {
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

fn open_pinned(pins: &PinLayout, name: &str) -> DatapathResult<Map> {
    let data = MapData::from_pin(pins.map(name)).map_err(|e| DatapathError::map(name, e))?;
    Map::from_map_data(data).map_err(|e| DatapathError::map(name, e))
}

impl PolicyMaps {
    /// Takes the policy maps out of a loaded object (all but the ring
    /// buffer, which [`PolicyEventReader`] opens on its own).
    pub fn take(ebpf: &mut Ebpf, capacities: Capacities) -> DatapathResult<Self> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| DatapathError::MissingMap(name.to_string()))
        };
        Ok(Self {
            ipcache: convert(names::IPCACHE, take(names::IPCACHE)?)?,
            policy: convert(names::POLICY, take(names::POLICY)?)?,
            endpoints: convert(names::POLICY_ENDPOINTS, take(names::POLICY_ENDPOINTS)?)?,
            config: convert(names::POLICY_CONFIG, take(names::POLICY_CONFIG)?)?,
            event_state: convert(names::EVENT_STATE, take(names::EVENT_STATE)?)?,
            drops: convert(names::POLICY_DROPS, take(names::POLICY_DROPS)?)?,
            polct: convert(names::POLICY_CT4, take(names::POLICY_CT4)?)?,
            capacities,
            mirror: None,
        })
    }

    /// Opens the pinned policy maps (handles of their own, e.g. for the
    /// daemon's walker thread).
    pub fn open(pins: &PinLayout, capacities: Capacities) -> DatapathResult<Self> {
        let open = |name: &'static str| open_pinned(pins, name);
        Ok(Self {
            ipcache: convert(names::IPCACHE, open(names::IPCACHE)?)?,
            policy: convert(names::POLICY, open(names::POLICY)?)?,
            endpoints: convert(names::POLICY_ENDPOINTS, open(names::POLICY_ENDPOINTS)?)?,
            config: convert(names::POLICY_CONFIG, open(names::POLICY_CONFIG)?)?,
            event_state: convert(names::EVENT_STATE, open(names::EVENT_STATE)?)?,
            drops: convert(names::POLICY_DROPS, open(names::POLICY_DROPS)?)?,
            polct: convert(names::POLICY_CT4, open(names::POLICY_CT4)?)?,
            capacities,
            mirror: None,
        })
    }

    pub fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// The mirror of the content maps, once an apply has run.
    pub fn mirror(&self) -> Option<&PolicyContent> {
        self.mirror.as_ref()
    }

    /// Reads what the three content maps hold.
    pub fn read_content(&self) -> DatapathResult<PolicyContent> {
        let mut content = PolicyContent::default();
        for item in self.ipcache.iter() {
            let (key, value) = item.map_err(|e| DatapathError::map(names::IPCACHE, e))?;
            let key = IpcacheKey {
                prefixlen: key.prefix_len(),
                addr: key.data(),
            };
            content.ipcache.insert(key, value);
        }
        for item in self.policy.iter() {
            let (key, value) = item.map_err(|e| DatapathError::map(names::POLICY, e))?;
            content
                .policy
                .insert(policy_key_from(key.prefix_len(), key.data()), value);
        }
        for item in self.endpoints.iter() {
            let (key, value) = item.map_err(|e| DatapathError::map(names::POLICY_ENDPOINTS, e))?;
            content.endpoints.insert(key, value);
        }
        Ok(content)
    }

    /// Makes the policy maps hold `plan`, writing only what differs from
    /// what they hold, then the revision (last). Refuses a plan that does
    /// not fit the maps, writing nothing. Failed single writes are counted
    /// (and logged), not fatal: the next apply retries them.
    pub fn apply_policy(&mut self, plan: &PolicyPlan) -> DatapathResult<PolicyApplyStats> {
        let start = Instant::now();
        let plan_stats = plan.stats();
        let over = plan_stats.over_capacity(&self.capacities);
        if !over.is_empty() {
            let what: Vec<String> = over
                .iter()
                .map(|(map, entries, cap)| format!("{map}: {entries} entries > capacity {cap}"))
                .collect();
            return Err(DatapathError::Invalid(format!(
                "policy plan (revision {}) does not fit the maps, nothing written: {}",
                plan.revision,
                what.join("; ")
            )));
        }
        let mut stats = PolicyApplyStats {
            map_bytes: plan_stats.map_bytes(),
            ..PolicyApplyStats::default()
        };
        let mut mirror = match self.mirror.take() {
            Some(mirror) => mirror,
            None => {
                stats.adopted = true;
                self.read_content()?
            }
        };
        let want = PolicyContent::of(plan);
        let diff = ContentDiff::between(&mirror, &want);
        self.write(&diff, &mut mirror, &mut stats);
        stats.ipcache_entries = mirror.ipcache.len();
        stats.policy_entries = mirror.policy.len();
        stats.endpoints = mirror.endpoints.len();
        self.mirror = Some(mirror);

        let mut config = self.policy_config()?;
        config.revision = plan.revision;
        set_flag(&mut config, policy_config_flags::AUDIT_ALL, plan.audit_all);
        self.write_config(&config)?;
        stats.revision = plan.revision;
        stats.elapsed = start.elapsed();
        if stats.failed > 0 {
            warn!(
                failed = stats.failed,
                revision = plan.revision,
                "some policy map writes failed; the next apply retries them"
            );
        }
        if stats.adopted || !diff.is_empty() {
            info!(
                revision = stats.revision,
                adopted = stats.adopted,
                written = stats.written(),
                deleted = stats.deleted(),
                policy_entries = stats.policy_entries,
                ipcache_entries = stats.ipcache_entries,
                endpoints = stats.endpoints,
                elapsed_ms = stats.elapsed.as_millis() as u64,
                "policy maps applied"
            );
        }
        Ok(stats)
    }

    /// The writes of `diff` in the required order, following them in
    /// `mirror`.
    fn write(
        &mut self,
        diff: &ContentDiff,
        mirror: &mut PolicyContent,
        stats: &mut PolicyApplyStats,
    ) {
        for (key, value) in &diff.ipcache.upserts {
            let lpm = LpmKey::new(key.prefixlen, key.addr);
            match self.ipcache.insert(&lpm, value, 0) {
                Ok(()) => {
                    mirror.ipcache.insert(*key, *value);
                    stats.ipcache_written += 1;
                }
                Err(e) => failed(stats, names::IPCACHE, &e),
            }
        }
        for (key, value) in &diff.policy.upserts {
            let lpm = LpmKey::new(key.prefixlen, policy_key_data(key));
            match self.policy.insert(&lpm, value, 0) {
                Ok(()) => {
                    mirror.policy.insert(*key, *value);
                    stats.policy_written += 1;
                }
                Err(e) => failed(stats, names::POLICY, &e),
            }
        }
        for (key, value) in &diff.endpoints.upserts {
            match self.endpoints.insert(key, value, 0) {
                Ok(()) => {
                    mirror.endpoints.insert(*key, *value);
                    stats.endpoints_written += 1;
                }
                Err(e) => failed(stats, names::POLICY_ENDPOINTS, &e),
            }
        }
        for key in &diff.endpoints.deletes {
            match gone_is_fine(self.endpoints.remove(key)) {
                Ok(()) => {
                    mirror.endpoints.remove(key);
                    stats.endpoints_deleted += 1;
                }
                Err(e) => failed(stats, names::POLICY_ENDPOINTS, &e),
            }
        }
        for key in &diff.policy.deletes {
            let lpm = LpmKey::new(key.prefixlen, policy_key_data(key));
            match gone_is_fine(self.policy.remove(&lpm)) {
                Ok(()) => {
                    mirror.policy.remove(key);
                    stats.policy_deleted += 1;
                }
                Err(e) => failed(stats, names::POLICY, &e),
            }
        }
        for key in &diff.ipcache.deletes {
            let lpm = LpmKey::new(key.prefixlen, key.addr);
            match gone_is_fine(self.ipcache.remove(&lpm)) {
                Ok(()) => {
                    mirror.ipcache.remove(key);
                    stats.ipcache_deleted += 1;
                }
                Err(e) => failed(stats, names::IPCACHE, &e),
            }
        }
    }

    /// `weir_policy_cfg_v1[0]`: the pinned revision (seed of
    /// `PolicyCompiler::starting_at`) and the node-wide settings.
    pub fn policy_config(&self) -> DatapathResult<PolicyConfig> {
        self.config
            .get(&0, 0)
            .map_err(|e| DatapathError::map(names::POLICY_CONFIG, e))
    }

    fn write_config(&mut self, config: &PolicyConfig) -> DatapathResult<()> {
        self.config
            .set(0, config, 0)
            .map_err(|e| DatapathError::map(names::POLICY_CONFIG, e))
    }

    /// Node-wide audit, the per-CPU event rate limit (0: none) and the
    /// allow sampling (one in `allow_sample` new flows, 0: none). Keeps the
    /// revision. Note that [`Self::apply_policy`] also sets the audit bit,
    /// from `PolicyPlan::audit_all`: both come from the agent's one flag.
    pub fn set_policy_settings(
        &mut self,
        audit_all: bool,
        events_per_sec: u32,
        allow_sample: u32,
    ) -> DatapathResult<()> {
        let mut config = self.policy_config()?;
        set_flag(&mut config, policy_config_flags::AUDIT_ALL, audit_all);
        config.events_per_sec = events_per_sec;
        config.allow_sample = allow_sample;
        self.write_config(&config)
    }

    /// Policy drops per isolation rule id (policy and direction), summed
    /// over CPUs, sorted by rule id.
    pub fn policy_drops(&self) -> DatapathResult<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for item in self.drops.iter() {
            let (rule, per_cpu) = item.map_err(|e| DatapathError::map(names::POLICY_DROPS, e))?;
            out.push((rule, per_cpu.iter().sum()));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Events the datapath could not send (rate limit or a full ring),
    /// summed over CPUs.
    pub fn policy_events_lost(&self) -> DatapathResult<u64> {
        let per_cpu = self
            .event_state
            .get(&0, 0)
            .map_err(|e| DatapathError::map(names::EVENT_STATE, e))?;
        Ok(per_cpu.iter().map(|s| s.lost).sum())
    }
}

fn set_flag(config: &mut PolicyConfig, bit: u32, on: bool) {
    if on {
        config.flags |= bit;
    } else {
        config.flags &= !bit;
    }
}

fn failed(stats: &mut PolicyApplyStats, map: &str, error: &MapError) {
    stats.failed += 1;
    // One line per failure would flood the log on a full map: debug only,
    // the count is warned about once per apply.
    tracing::debug!(map, error = %error, "policy map write failed");
}

fn gone_is_fine(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// The trie bytes of a policy key (everything after `prefixlen`).
pub fn policy_key_data(key: &PolicyKey) -> PolicyKeyData {
    let mut data = [0u8; 12];
    data[0..4].copy_from_slice(&key.endpoint.to_ne_bytes());
    data[4..8].copy_from_slice(&key.identity.to_ne_bytes());
    data[8] = key.direction;
    data[9] = key.proto;
    data[10..12].copy_from_slice(&key.dport);
    data
}

/// The inverse of [`policy_key_data`].
pub fn policy_key_from(prefixlen: u32, data: PolicyKeyData) -> PolicyKey {
    let word = |at: usize| u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    PolicyKey {
        prefixlen,
        endpoint: word(0),
        identity: word(4),
        direction: data[8],
        proto: data[9],
        dport: [data[10], data[11]],
    }
}

// ------------------------------------------------------------------ events

/// The consumer of `weir_events_v1`. Owns the ring buffer; meant to live
/// on a thread of its own ([`Self::next`] blocks in `poll(2)`). There must
/// be one reader per ring: readers share the kernel's consumer position.
pub struct PolicyEventReader {
    ring: RingBuf<MapData>,
    /// Records too short to be an event (never expected; counted).
    pub malformed: u64,
}

impl PolicyEventReader {
    /// Opens the pinned ring buffer.
    pub fn open(pins: &PinLayout) -> DatapathResult<Self> {
        Self::from_map(open_pinned(pins, names::EVENTS)?)
    }

    /// Opens the ring buffer pinned at `path`.
    pub fn open_path(path: &Path) -> DatapathResult<Self> {
        let data = MapData::from_pin(path).map_err(|e| DatapathError::map(names::EVENTS, e))?;
        let map = Map::from_map_data(data).map_err(|e| DatapathError::map(names::EVENTS, e))?;
        Self::from_map(map)
    }

    /// Wraps a ring buffer map (e.g. taken from an unpinned object in tests).
    pub fn from_map(map: Map) -> DatapathResult<Self> {
        Ok(Self {
            ring: convert(names::EVENTS, map)?,
            malformed: 0,
        })
    }

    /// The next event, waiting up to `timeout` for one; `None` on timeout.
    pub fn next(&mut self, timeout: Duration) -> DatapathResult<Option<PolicyEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_next() {
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait(left)?;
        }
    }

    /// An event already in the ring, without waiting.
    pub fn try_next(&mut self) -> Option<PolicyEvent> {
        loop {
            let item = self.ring.next()?;
            if let Some(event) = parse_event(&item) {
                return Some(event);
            }
            self.malformed += 1;
        }
    }

    fn wait(&self, timeout: Duration) -> DatapathResult<()> {
        use std::os::fd::AsRawFd;
        let millis = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut fd = libc::pollfd {
            fd: self.ring.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd we own, for the duration of the call.
        let rc = unsafe { libc::poll(&mut fd, 1, millis) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(DatapathError::sys("poll", names::EVENTS, error));
            }
        }
        Ok(())
    }
}

/// An event from a ring record (`None` when it is too short).
pub fn parse_event(bytes: &[u8]) -> Option<PolicyEvent> {
    if bytes.len() < size_of::<PolicyEvent>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<PolicyEvent>() bytes, read
    // unaligned; PolicyEvent is plain integers, valid for any byte pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PolicyEvent>()) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(endpoint: u32, identity: u32, port: u16) -> PolicyKey {
        PolicyKey::lookup(endpoint, identity, 0, 6, port.to_be())
    }

    #[test]
    fn trie_bytes_round_trip_and_match_the_abi_layout() {
        let k = PolicyKey {
            prefixlen: 90,
            endpoint: 0x0a01_0203,
            identity: 300,
            direction: 1,
            proto: 17,
            dport: [0x1f, 0x90],
        };
        let data = policy_key_data(&k);
        assert_eq!(policy_key_from(90, data), k);
        // The same bytes as the ABI struct after its prefixlen.
        // SAFETY: PolicyKey is repr(C) plain data of 16 bytes.
        let raw: [u8; 16] = unsafe { std::mem::transmute(k) };
        assert_eq!(&raw[4..], &data[..]);
    }

    #[test]
    fn diff_writes_only_what_differs_and_deletes_the_rest() {
        let mut have = PolicyContent::default();
        have.policy.insert(
            key(1, 2, 80),
            PolicyEntry {
                rule_id: 5,
                flags: 0,
            },
        );
        have.policy.insert(
            key(1, 2, 81),
            PolicyEntry {
                rule_id: 5,
                flags: 0,
            },
        );
        have.endpoints.insert(1, PolicyEndpoint::default());
        let mut want = have.clone();
        want.policy.remove(&key(1, 2, 81));
        want.policy.insert(
            key(1, 2, 80),
            PolicyEntry {
                rule_id: 6,
                flags: 0,
            },
        );
        want.policy.insert(
            key(1, 3, 80),
            PolicyEntry {
                rule_id: 7,
                flags: 0,
            },
        );
        let d = ContentDiff::between(&have, &want);
        assert_eq!(d.policy.upserts.len(), 2);
        assert_eq!(d.policy.deletes, vec![key(1, 2, 81)]);
        assert!(d.endpoints.is_empty() && d.ipcache.is_empty());
        assert!(ContentDiff::between(&want, &want).is_empty());
        // From empty maps: everything is an upsert.
        let full = ContentDiff::between(&PolicyContent::default(), &want);
        assert_eq!(full.policy.upserts.len(), want.policy.len());
        assert!(full.policy.deletes.is_empty());
    }

    /// A plan with two endpoints, one rule each, by hand.
    pub(crate) fn small_plan(revision: u32) -> PolicyPlan {
        use crate::policy::{DirectionPolicy, EndpointPolicy, PeerPort, ports::PortMatch};
        use std::net::Ipv4Addr;
        let mut plan = PolicyPlan {
            revision,
            ..PolicyPlan::default()
        };
        plan.ipcache.insert(
            "0.0.0.0/0".parse().unwrap(),
            IpcacheEntry {
                identity: weir_common::policy::identity::WORLD,
                cidr_identity: 0,
            },
        );
        for (i, ip) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
            let ip: Ipv4Addr = ip.parse().unwrap();
            plan.ipcache.insert(
                ipnetwork::Ipv4Network::new(ip, 32).unwrap(),
                IpcacheEntry {
                    identity: 256 + i as u32,
                    cidr_identity: 0,
                },
            );
            let mut ingress = DirectionPolicy {
                isolated_by: Some(1),
                ..DirectionPolicy::default()
            };
            let port = PortMatch {
                proto: 6,
                port: 80,
                port_bits: 16,
            };
            ingress.allows.insert(
                PeerPort {
                    identity: 256,
                    port,
                },
                2,
            );
            plan.endpoints.insert(
                ip,
                EndpointPolicy {
                    identity: 256 + i as u32,
                    ingress,
                    ..EndpointPolicy::default()
                },
            );
        }
        plan
    }

    #[test]
    fn content_of_a_plan_agrees_with_the_plan_diff_from_empty() {
        use crate::policy::diff::diff;
        let plan = small_plan(1);
        let content = PolicyContent::of(&plan);
        let from_empty = diff(&PolicyPlan::default(), &plan);
        assert_eq!(content.policy.len(), 2);
        assert_eq!(content.policy.len(), from_empty.policy.upserts.len());
        assert_eq!(content.endpoints.len(), from_empty.endpoints.upserts.len());
        assert_eq!(content.ipcache.len(), from_empty.ipcache.upserts.len());
        // A changed plan: the content diff equals the plan diff.
        let mut next = plan.clone();
        next.endpoints.remove(&"10.0.0.2".parse().unwrap());
        let by_plan = diff(&plan, &next);
        let by_content = ContentDiff::between(&content, &PolicyContent::of(&next));
        assert_eq!(by_content.policy.deletes, by_plan.policy.deletes);
        assert_eq!(by_content.endpoints.deletes, by_plan.endpoints.deletes);
        assert!(by_content.policy.upserts.is_empty() && by_plan.policy.upserts.is_empty());
    }

    #[test]
    fn events_parse_from_ring_records() {
        let event = PolicyEvent {
            saddr: 1,
            dport: 80,
            reason: 13,
            rule_id: 9,
            ..PolicyEvent::default()
        };
        // SAFETY: PolicyEvent is repr(C) plain data of 48 bytes.
        let bytes: [u8; 48] = unsafe { std::mem::transmute(event) };
        assert_eq!(parse_event(&bytes), Some(event));
        assert_eq!(parse_event(&bytes[..47]), None);
    }
}
