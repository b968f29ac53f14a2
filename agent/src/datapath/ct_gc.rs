//! Conntrack garbage collection and flushing.
//!
//! The datapath stamps every entry with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC)
//! of its last packet; the GC compares that with the same clock and expires
//! idle flows with per-protocol, per-TCP-state timeouts, as Cilium does
//! (its defaults: TCP established 21600 s, TCP SYN 60 s, TCP closing 10 s,
//! non-TCP 60 s). A flow's two entries (forward and reply) are judged
//! together and deleted together.
//!
//! Separately, when a backend leaves a frontend, the non-TCP entries of that
//! frontend's flows to it are flushed at once: UDP has no end-of-flow
//! signal, so a client would otherwise keep sending into the void until the
//! idle timeout. TCP entries stay so open connections can finish.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use std::{mem::size_of, os::fd::AsFd};

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData, MapError};
use weir_common::{
    ct::{CT_DIR_FORWARD, Ct4Entry, Ct4Key, tcp_state, timeouts},
    lb::{Lb4AffinityKey, Lb4AffinityValue},
    policy::{POLICY_CT4, PolicyCtEntry, PolicyCtKey},
};

use super::{
    diff::RemovedPair,
    error::{DatapathError, DatapathResult},
    sys,
};

const IPPROTO_TCP: u8 = 6;

/// Idle timeouts per protocol and TCP state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    /// Non-TCP flows (UDP, ICMP).
    pub non_tcp: Duration,
    /// TCP flows that have not completed the handshake in both directions.
    pub tcp_syn: Duration,
    /// TCP flows established in both directions.
    pub tcp_established: Duration,
    /// TCP flows that saw a FIN or RST.
    pub tcp_closing: Duration,
}

impl Default for CtTimeouts {
    /// Cilium's defaults, as recorded in the ABI (`weir_common::ct::timeouts`).
    fn default() -> Self {
        Self {
            non_tcp: Duration::from_secs(timeouts::NON_TCP),
            tcp_syn: Duration::from_secs(timeouts::TCP_SYN),
            tcp_established: Duration::from_secs(timeouts::TCP_ESTABLISHED),
            tcp_closing: Duration::from_secs(timeouts::TCP_CLOSING),
        }
    }
}

impl CtTimeouts {
    /// The idle timeout of a flow from its protocol and the TCP state of
    /// its forward and reply entries ([`tcp_state::NONE`] for a missing
    /// one): closing as soon as either side closed, established only once
    /// both sides are.
    pub fn idle_timeout(&self, proto: u8, forward_state: u8, reply_state: u8) -> Duration {
        if proto != IPPROTO_TCP {
            return self.non_tcp;
        }
        if forward_state.max(reply_state) >= tcp_state::FIN {
            self.tcp_closing
        } else if forward_state.min(reply_state) >= tcp_state::ESTABLISHED {
            self.tcp_established
        } else {
            self.tcp_syn
        }
    }
}

/// What one GC pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CtGcStats {
    /// Entries seen (each flow has up to two).
    pub entries: u64,
    /// Entries seen per IP protocol number.
    pub entries_by_proto: BTreeMap<u8, u64>,
    /// Entries found expired, per IP protocol number.
    pub expired_by_proto: BTreeMap<u8, u64>,
    /// Entries deleted (expired ones, minus those gone meanwhile).
    pub deleted: u64,
    /// Deletes that failed for another reason than "already gone".
    pub delete_failed: u64,
    /// The scan stopped early (the map changed faster than we walked it).
    pub truncated: bool,
    /// Reverse-NAT indices that live entries still name.
    pub referenced_rev_nat: HashSet<u16>,
}

impl CtGcStats {
    pub fn expired(&self) -> u64 {
        self.expired_by_proto.values().sum()
    }
}

#[derive(Default)]
struct FlowAcc {
    proto: u8,
    forward_state: u8,
    reply_state: u8,
    newest_ns: u64,
    keys: Vec<Ct4Key>,
    rev_nat_index: u16,
}

/// The keys of expired flows among `entries` at time `now_ns`, and the
/// pass's counts. Pure.
pub fn plan_expiry(
    entries: &[(Ct4Key, Ct4Entry)],
    now_ns: u64,
    timeouts: &CtTimeouts,
) -> (Vec<Ct4Key>, CtGcStats) {
    let mut stats = CtGcStats::default();
    let mut flows: HashMap<Ct4Key, FlowAcc> = HashMap::new();
    for (key, entry) in entries {
        stats.entries += 1;
        *stats.entries_by_proto.entry(key.proto).or_default() += 1;
        // Both entries of a flow carry the same record, so the forward key
        // names the flow; an entry whose key matches neither of its record's
        // keys is judged on its own.
        let consistent = *key == entry.forward_key() || *key == entry.reply_key();
        let flow_id = if consistent {
            entry.forward_key()
        } else {
            *key
        };
        let acc = flows.entry(flow_id).or_default();
        acc.proto = key.proto;
        acc.rev_nat_index = entry.rev_nat_index;
        if key.direction == CT_DIR_FORWARD {
            acc.forward_state = entry.tcp_state;
        } else {
            acc.reply_state = entry.tcp_state;
        }
        acc.newest_ns = acc.newest_ns.max(entry.last_seen_ns);
        acc.keys.push(*key);
    }
    let mut expired = Vec::new();
    for acc in flows.values() {
        let timeout = timeouts.idle_timeout(acc.proto, acc.forward_state, acc.reply_state);
        let idle = now_ns.saturating_sub(acc.newest_ns);
        if u128::from(idle) > timeout.as_nanos() {
            *stats.expired_by_proto.entry(acc.proto).or_default() += acc.keys.len() as u64;
            expired.extend(acc.keys.iter().copied());
        } else if acc.rev_nat_index != 0 {
            stats.referenced_rev_nat.insert(acc.rev_nat_index);
        }
    }
    expired.sort_by_key(|k| (k.saddr, k.daddr, k.sport, k.dport, k.proto, k.direction));
    (expired, stats)
}

/// The non-TCP entries of flows from a frontend to a backend that left it.
/// Pure.
pub fn plan_flush(entries: &[(Ct4Key, Ct4Entry)], removed: &[RemovedPair]) -> Vec<Ct4Key> {
    let pairs: HashSet<(u16, u32, u32, u16)> = removed
        .iter()
        .map(|p| {
            (
                p.rev_nat_index,
                p.backend_id,
                p.backend.address,
                p.backend.port,
            )
        })
        .collect();
    entries
        .iter()
        .filter(|(key, e)| {
            key.proto != IPPROTO_TCP
                && pairs.contains(&(
                    e.rev_nat_index,
                    e.backend_id,
                    e.backend_addr,
                    e.backend_port,
                ))
        })
        .map(|(key, _)| *key)
        .collect()
}

/// Affinity entries that pin a client of a frontend to a backend that left
/// it. Pure.
pub fn plan_affinity_flush(
    entries: &[(Lb4AffinityKey, Lb4AffinityValue)],
    removed: &[RemovedPair],
) -> Vec<Lb4AffinityKey> {
    let pairs: HashSet<(u16, u32)> = removed
        .iter()
        .map(|p| (p.rev_nat_index, p.backend_id))
        .collect();
    entries
        .iter()
        .filter(|(k, v)| pairs.contains(&(k.rev_nat_index, v.backend_id)))
        .map(|(k, _)| *k)
        .collect()
}

/// What one policy conntrack GC pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolCtGcStats {
    pub entries: u64,
    pub entries_by_proto: BTreeMap<u8, u64>,
    pub expired: u64,
    pub deleted: u64,
    pub delete_failed: u64,
    pub truncated: bool,
}

/// The policy conntrack's expired keys at `now_ns`. Each entry stands for
/// a whole flow direction at one endpoint (both directions of the packets
/// refresh it) and keeps the highest TCP state seen, so it is judged alone
/// with the same timeouts as service conntrack (as if both sides were in
/// that state). Pure.
pub fn plan_polct_expiry(
    entries: &[(PolicyCtKey, PolicyCtEntry)],
    now_ns: u64,
    timeouts: &CtTimeouts,
) -> (Vec<PolicyCtKey>, PolCtGcStats) {
    let mut stats = PolCtGcStats::default();
    let mut expired = Vec::new();
    for (key, entry) in entries {
        stats.entries += 1;
        *stats.entries_by_proto.entry(key.proto).or_default() += 1;
        let timeout = timeouts.idle_timeout(key.proto, entry.tcp_state, entry.tcp_state);
        let idle = now_ns.saturating_sub(entry.last_seen_ns);
        if u128::from(idle) > timeout.as_nanos() {
            expired.push(*key);
        }
    }
    stats.expired = expired.len() as u64;
    expired.sort_unstable();
    (expired, stats)
}

/// Scans the policy conntrack, expires idle entries.
pub fn polct_pass(
    map: &mut BpfHashMap<MapData, PolicyCtKey, PolicyCtEntry>,
    now_ns: u64,
    timeouts: &CtTimeouts,
    limit: u64,
) -> DatapathResult<PolCtGcStats> {
    let (entries, truncated) = scan(map, limit).map_err(|e| DatapathError::map(POLICY_CT4, e))?;
    let (expired, mut stats) = plan_polct_expiry(&entries, now_ns, timeouts);
    let (deleted, failed) = delete_keys(map, &expired);
    stats.deleted = deleted;
    stats.delete_failed = failed;
    stats.truncated = truncated;
    Ok(stats)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively
    // borrowed `ts`; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Reads every entry of a hash map: one `BPF_MAP_LOOKUP_BATCH` walk when
/// the kernel offers it, else key by key, stopping after `limit` keys
/// (reported as truncated): an LRU map that evicts the key we stand on
/// makes the kernel restart a key-by-key walk from the first key.
pub fn scan<K: aya::Pod, V: aya::Pod>(
    map: &BpfHashMap<MapData, K, V>,
    limit: u64,
) -> Result<(Vec<(K, V)>, bool), MapError> {
    let fd = map.map().fd().as_fd();
    if let Ok((keys, values)) = sys::lookup_batch(fd, size_of::<K>(), size_of::<V>(), 4096) {
        return Ok((from_bytes(&keys, &values), false));
    }
    let mut out = Vec::new();
    for (visited, item) in map.iter().enumerate() {
        if visited as u64 >= limit {
            return Ok((out, true));
        }
        out.push(item?);
    }
    Ok((out, false))
}

/// Pairs raw key and value bytes from a batch lookup.
fn from_bytes<K: aya::Pod, V: aya::Pod>(keys: &[u8], values: &[u8]) -> Vec<(K, V)> {
    keys.chunks_exact(size_of::<K>())
        .zip(values.chunks_exact(size_of::<V>()))
        .map(|(k, v)| {
            // SAFETY: each chunk has exactly size_of::<T>() bytes, read
            // unaligned; `Pod` types are valid for every byte pattern.
            unsafe {
                (
                    std::ptr::read_unaligned(k.as_ptr().cast::<K>()),
                    std::ptr::read_unaligned(v.as_ptr().cast::<V>()),
                )
            }
        })
        .collect()
}

/// Deletes `keys`; returns (deleted, failed). A key already gone counts as
/// neither. Uses `BPF_MAP_DELETE_BATCH` where it can; a batch stops at a
/// key that is gone, and the rest are retried one by one.
pub fn delete_keys<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    keys: &[K],
) -> (u64, u64) {
    let (mut deleted, mut failed) = (0, 0);
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(4096)];
        // SAFETY: `chunk` is a slice of `Pod` values, so viewing its memory
        // as bytes is sound; the byte slice borrows `chunk`.
        let bytes =
            unsafe { std::slice::from_raw_parts(chunk.as_ptr().cast::<u8>(), size_of_val(chunk)) };
        let fd = map.map().fd().as_fd();
        let done = sys::delete_batch(fd, bytes, chunk.len()).unwrap_or(0);
        deleted += done as u64;
        rest = &rest[done..];
        if done < chunk.len() {
            // The key at `done` is gone or the batch failed: one by one.
            if let Some(key) = rest.first() {
                match map.remove(key) {
                    Ok(()) => deleted += 1,
                    Err(MapError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(_) => failed += 1,
                }
                rest = &rest[1..];
            }
        }
    }
    (deleted, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::{
        ct::{CT_DIR_REPLY, nat_flags},
        lb::Lb4Backend,
    };

    const SEC: u64 = 1_000_000_000;

    fn flow(proto: u8, sport: u16, last_seen_ns: u64, states: (u8, u8)) -> Vec<(Ct4Key, Ct4Entry)> {
        let record = Ct4Entry {
            last_seen_ns,
            orig_saddr: 0x0100_000a,
            orig_daddr: 0x0100_600a,
            orig_sport: sport,
            orig_dport: 80,
            backend_addr: 0x0501_f40a,
            backend_port: 8080,
            backend_id: 7,
            rev_nat_index: 3,
            nat_flags: nat_flags::DNAT,
            proto,
            ..Ct4Entry::default()
        };
        let forward = Ct4Entry {
            tcp_state: states.0,
            ..record
        };
        let reply = Ct4Entry {
            tcp_state: states.1,
            ..record
        };
        vec![(record.forward_key(), forward), (record.reply_key(), reply)]
    }

    #[test]
    fn timeouts_follow_cilium_and_agree_with_the_abi() {
        let t = CtTimeouts::default();
        use tcp_state::*;
        let states = [NONE, SYN, ESTABLISHED, FIN, RST];
        for proto in [6u8, 17, 1] {
            for f in states {
                for r in states {
                    assert_eq!(
                        t.idle_timeout(proto, f, r).as_secs(),
                        weir_common::ct::idle_timeout_secs(proto, f, r),
                        "proto {proto} states {f}/{r}"
                    );
                }
            }
        }
        assert_eq!(
            t.idle_timeout(6, ESTABLISHED, ESTABLISHED).as_secs(),
            21_600
        );
        assert_eq!(t.idle_timeout(6, SYN, NONE).as_secs(), 60);
        assert_eq!(t.idle_timeout(6, FIN, ESTABLISHED).as_secs(), 10);
        assert_eq!(t.idle_timeout(17, NONE, NONE).as_secs(), 60);
    }

    #[test]
    fn expiry_judges_both_entries_of_a_flow_together() {
        let now = 100_000 * SEC;
        let t = CtTimeouts::default();
        use tcp_state::*;
        let mut entries = Vec::new();
        // UDP idle 61 s: expired; UDP idle 59 s: kept.
        entries.extend(flow(17, 1, now - 61 * SEC, (NONE, NONE)));
        entries.extend(flow(17, 2, now - 59 * SEC, (NONE, NONE)));
        // TCP established both ways, idle 1 h: kept.
        entries.extend(flow(6, 3, now - 3600 * SEC, (ESTABLISHED, ESTABLISHED)));
        // TCP half-open, idle 61 s: expired.
        entries.extend(flow(6, 4, now - 61 * SEC, (ESTABLISHED, SYN)));
        // TCP closing, idle 11 s: expired.
        entries.extend(flow(6, 5, now - 11 * SEC, (FIN, ESTABLISHED)));
        // A lone forward entry (reply evicted), established, idle 61 s:
        // judged as half-open, expired.
        entries.push(flow(6, 6, now - 61 * SEC, (ESTABLISHED, ESTABLISHED))[0]);
        // One direction recent keeps the whole flow.
        let mut split = flow(17, 7, now - 500 * SEC, (NONE, NONE));
        split[1].1.last_seen_ns = now - SEC;
        entries.extend(split);
        // A timestamp in the future (never idle).
        entries.extend(flow(17, 8, now + SEC, (NONE, NONE)));

        let (expired, stats) = plan_expiry(&entries, now, &t);
        let mut sports: Vec<(u16, u8)> = expired
            .iter()
            .map(|k| {
                let sport = if k.direction == CT_DIR_REPLY {
                    k.dport
                } else {
                    k.sport
                };
                (sport, k.direction)
            })
            .collect();
        sports.sort();
        assert_eq!(
            sports,
            vec![(1, 0), (1, 1), (4, 0), (4, 1), (5, 0), (5, 1), (6, 0)]
        );
        assert_eq!(stats.entries, 15);
        assert_eq!(stats.entries_by_proto.get(&6), Some(&7));
        assert_eq!(stats.entries_by_proto.get(&17), Some(&8));
        assert_eq!(stats.expired_by_proto.get(&17), Some(&2));
        assert_eq!(stats.expired_by_proto.get(&6), Some(&5));
        assert_eq!(stats.expired(), 7);
        assert!(stats.referenced_rev_nat.contains(&3));
    }

    #[test]
    fn policy_conntrack_expires_per_protocol_and_tcp_state() {
        let now = 100_000 * SEC;
        let t = CtTimeouts::default();
        let entry = |proto: u8, sport: u16, idle: u64, state: u8| {
            (
                PolicyCtKey {
                    saddr: 1,
                    daddr: 2,
                    sport,
                    dport: 80,
                    proto,
                    direction: 0,
                    pad: [0; 2],
                },
                PolicyCtEntry {
                    last_seen_ns: now - idle * SEC,
                    tcp_state: state,
                    ..PolicyCtEntry::default()
                },
            )
        };
        use tcp_state::*;
        let entries = [
            entry(17, 1, 61, NONE),
            entry(17, 2, 59, NONE),
            entry(1, 3, 61, NONE),
            entry(6, 4, 3600, ESTABLISHED),
            entry(6, 5, 61, SYN),
            entry(6, 6, 11, FIN),
            entry(6, 7, 9, RST),
        ];
        let (expired, stats) = plan_polct_expiry(&entries, now, &t);
        let sports: Vec<u16> = expired.iter().map(|k| k.sport).collect();
        assert_eq!(sports, vec![1, 3, 5, 6]);
        assert_eq!(stats.entries, 7);
        assert_eq!(stats.expired, 4);
        assert_eq!(stats.entries_by_proto.get(&6), Some(&4));
    }

    #[test]
    fn flush_takes_non_tcp_flows_of_the_removed_pair_only() {
        let now = 1000 * SEC;
        let mut entries = Vec::new();
        entries.extend(flow(17, 1, now, (0, 0)));
        entries.extend(flow(6, 2, now, (2, 2)));
        entries.extend(flow(1, 3, now, (0, 0)));
        // Same backend, another frontend: stays.
        let mut other = flow(17, 4, now, (0, 0));
        for (_, e) in &mut other {
            e.rev_nat_index = 9;
        }
        entries.extend(other);
        let removed = [RemovedPair {
            rev_nat_index: 3,
            backend_id: 7,
            backend: Lb4Backend {
                address: 0x0501_f40a,
                port: 8080,
                proto: 17,
                ..Lb4Backend::default()
            },
        }];
        let flushed = plan_flush(&entries, &removed);
        let mut got: Vec<(u8, u8)> = flushed.iter().map(|k| (k.proto, k.direction)).collect();
        got.sort();
        assert_eq!(got, vec![(1, 0), (1, 1), (17, 0), (17, 1)]);
        assert!(plan_flush(&entries, &[]).is_empty());
    }

    #[test]
    fn affinity_flush_matches_frontend_and_backend() {
        let entry = |client, rev_nat_index, backend_id| {
            (
                Lb4AffinityKey {
                    client,
                    rev_nat_index,
                    pad: 0,
                },
                Lb4AffinityValue {
                    backend_id,
                    ..Lb4AffinityValue::default()
                },
            )
        };
        let entries = [entry(1, 3, 7), entry(2, 3, 8), entry(3, 4, 7)];
        let removed = [RemovedPair {
            rev_nat_index: 3,
            backend_id: 7,
            backend: Lb4Backend::default(),
        }];
        let keys = plan_affinity_flush(&entries, &removed);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].client, 1);
    }
}
