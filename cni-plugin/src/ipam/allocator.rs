//! host-local's allocator: one address per range set, round-robin from the
//! last reserved address, skipping the gateway, network and broadcast.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::range::RangeSet;
use super::store::{Attachment, Store, StoreError, lock};

/// One address handed out, with what the result and the wiring need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// The prefix length of the range's subnet (reported like ptp does).
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub range_set: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{ip} has been allocated to {} (ifname {}), duplicate allocation is not allowed",
        owner.container_id, owner.ifname
    )]
    Duplicate { ip: Ipv4Addr, owner: Attachment },
    #[error("no IP addresses available in range set {range_set}")]
    Exhausted { range_set: String },
    #[error("requested IP address {ip} is not available in range set {range_set}")]
    RequestedTaken { ip: Ipv4Addr, range_set: String },
    #[error("requested IP address {ip} is the gateway of range set {range_set}")]
    RequestedIsGateway { ip: Ipv4Addr, range_set: String },
    #[error(
        "failed to allocate all requested IPs: {ips:?} (each must lie in a configured range, one per range set)"
    )]
    RequestedOutsideRanges { ips: Vec<Ipv4Addr> },
}

/// Candidate addresses of a range set in allocation order: starting right
/// after `last` when `last` lies in the set (round-robin), else at the first
/// range's start; every address is visited once, non-allocatable ones are
/// skipped.
pub fn candidates(set: &RangeSet, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let sizes: Vec<u64> = set
        .ranges
        .iter()
        .map(|r| {
            // Range::new guarantees start <= end; saturate anyway.
            (u64::from(u32::from(r.end)) + 1).saturating_sub(u64::from(u32::from(r.start)))
        })
        .collect();
    let total: u64 = sizes.iter().sum();
    // Flat position of the first candidate.
    let start = last
        .and_then(|ip| {
            let (idx, range) = set.range_for(ip)?;
            let before: u64 = sizes.iter().take(idx).sum();
            let offset = u64::from(u32::from(ip)).saturating_sub(u64::from(u32::from(range.start)));
            Some((before + offset + 1) % total.max(1))
        })
        .unwrap_or(0);
    (0..total).filter_map(move |step| {
        let mut pos = (start + step) % total;
        for (range, size) in set.ranges.iter().zip(&sizes) {
            if pos < *size {
                let ip =
                    Ipv4Addr::from(u32::from(range.start).checked_add(u32::try_from(pos).ok()?)?);
                return range.is_allocatable(ip).then_some(ip);
            }
            pos -= size;
        }
        None
    })
}

/// Reserves one address per range set for `owner` under the store lock.
/// `requested` addresses are matched to the set containing them. On any
/// failure nothing stays reserved.
pub fn allocate<S: Store + ?Sized>(
    store: &mut S,
    sets: &[RangeSet],
    owner: &Attachment,
    requested: &[Ipv4Addr],
) -> Result<Vec<Allocation>, AllocError> {
    let mut store = lock(store)?;
    if let Some(ip) = store.get_by_id(owner)?.first() {
        return Err(AllocError::Duplicate {
            ip: *ip,
            owner: owner.clone(),
        });
    }
    let mut unused: Vec<Ipv4Addr> = dedup(requested);
    let mut allocations = Vec::with_capacity(sets.len());
    let outcome = (|| {
        for (idx, set) in sets.iter().enumerate() {
            let wanted = unused.iter().position(|ip| set.contains(*ip));
            let wanted = wanted.map(|pos| unused.remove(pos));
            let allocation = match wanted {
                Some(ip) => reserve_requested(&mut *store, set, idx, owner, ip)?,
                None => reserve_next(&mut *store, set, idx, owner)?,
            };
            allocations.push(allocation);
        }
        if unused.is_empty() {
            Ok(())
        } else {
            Err(AllocError::RequestedOutsideRanges { ips: unused })
        }
    })();
    match outcome {
        Ok(()) => Ok(allocations),
        Err(err) => {
            // The duplicate check above proved the owner held nothing before.
            store.release_by_id(owner)?;
            Err(err)
        }
    }
}

fn dedup(ips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut seen = HashSet::new();
    ips.iter().copied().filter(|ip| seen.insert(*ip)).collect()
}

fn reserve_requested<S: Store + ?Sized>(
    store: &mut S,
    set: &RangeSet,
    idx: usize,
    owner: &Attachment,
    ip: Ipv4Addr,
) -> Result<Allocation, AllocError> {
    let Some((_, range)) = set.range_for(ip) else {
        return Err(AllocError::RequestedOutsideRanges { ips: vec![ip] });
    };
    if ip == range.gateway {
        return Err(AllocError::RequestedIsGateway {
            ip,
            range_set: set.to_string(),
        });
    }
    if !range.is_allocatable(ip) || !store.reserve(owner, ip, idx)? {
        return Err(AllocError::RequestedTaken {
            ip,
            range_set: set.to_string(),
        });
    }
    Ok(Allocation {
        ip,
        prefix: range.subnet.prefix(),
        gateway: range.gateway,
        range_set: idx,
    })
}

fn reserve_next<S: Store + ?Sized>(
    store: &mut S,
    set: &RangeSet,
    idx: usize,
    owner: &Attachment,
) -> Result<Allocation, AllocError> {
    let last = store.last_reserved_ip(idx)?;
    for ip in candidates(set, last) {
        if store.reserve(owner, ip, idx)? {
            let Some((_, range)) = set.range_for(ip) else {
                continue;
            };
            return Ok(Allocation {
                ip,
                prefix: range.subnet.prefix(),
                gateway: range.gateway,
                range_set: idx,
            });
        }
    }
    Err(AllocError::Exhausted {
        range_set: set.to_string(),
    })
}

/// For STATUS: whether every range set still has a free address.
pub fn first_full_set<S: Store + ?Sized>(
    store: &S,
    sets: &[RangeSet],
) -> Result<Option<String>, StoreError> {
    let taken: HashSet<Ipv4Addr> = store.reservations()?.into_iter().map(|r| r.ip).collect();
    for set in sets {
        if !candidates(set, None).any(|ip| !taken.contains(&ip)) {
            return Ok(Some(set.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipam::memory::MemoryStore;
    use crate::ipam::range::Range;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// (subnet, rangeStart, rangeEnd, gateway)
    type RangeSpec<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn set(specs: &[RangeSpec<'_>]) -> RangeSet {
        RangeSet::new(
            specs
                .iter()
                .map(|(subnet, start, end, gw)| {
                    Range::new(
                        subnet.parse().unwrap(),
                        start.map(ip),
                        end.map(ip),
                        gw.map(ip),
                    )
                    .unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    fn owner(i: usize) -> Attachment {
        Attachment::new(format!("c{i}"), "eth0")
    }

    #[test]
    fn first_allocation_skips_the_gateway() {
        let sets = [set(&[("10.0.0.0/24", None, None, None)])];
        let mut store = MemoryStore::new();
        let got = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        assert_eq!(
            got,
            vec![Allocation {
                ip: ip("10.0.0.2"),
                prefix: 24,
                gateway: ip("10.0.0.1"),
                range_set: 0
            }]
        );
        assert!(!store.is_locked());
        assert_eq!(store.lock_count, 1);
    }

    #[test]
    fn round_robin_continues_after_last_reserved() {
        let sets = [set(&[("10.0.0.0/24", None, None, None)])];
        let mut store = MemoryStore::new();
        let a = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        let b = allocate(&mut store, &sets, &owner(1), &[]).unwrap();
        assert_eq!(b[0].ip, ip("10.0.0.3"));
        // Releasing .2 does not make it the next one: round-robin goes on.
        lock(&mut store).unwrap().release_by_id(&owner(0)).unwrap();
        let c = allocate(&mut store, &sets, &owner(2), &[]).unwrap();
        assert_eq!(c[0].ip, ip("10.0.0.4"));
        assert_eq!(a[0].ip, ip("10.0.0.2"));
    }

    #[test]
    fn wraps_around_and_never_hands_out_network_gateway_broadcast() {
        // /29: network .0, gateway .1, hosts .2-.6, broadcast .7
        let sets = [set(&[("10.0.0.0/29", None, None, None)])];
        let mut store = MemoryStore::new();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(allocate(&mut store, &sets, &owner(i), &[]).unwrap()[0].ip);
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
        assert_eq!(got, want);
        let err = allocate(&mut store, &sets, &owner(9), &[]).unwrap_err();
        assert!(matches!(err, AllocError::Exhausted { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.1-10.0.0.6"), "{err}");
        // Free one in the middle: the wrap-around finds it.
        lock(&mut store).unwrap().release_by_id(&owner(1)).unwrap();
        let again = allocate(&mut store, &sets, &owner(9), &[]).unwrap();
        assert_eq!(again[0].ip, ip("10.0.0.3"));
    }

    #[test]
    fn gateway_in_the_middle_is_skipped() {
        let sets = [set(&[(
            "10.0.0.0/24",
            Some("10.0.0.10"),
            Some("10.0.0.12"),
            Some("10.0.0.11"),
        )])];
        let mut store = MemoryStore::new();
        let a = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        let b = allocate(&mut store, &sets, &owner(1), &[]).unwrap();
        assert_eq!((a[0].ip, b[0].ip), (ip("10.0.0.10"), ip("10.0.0.12")));
        assert_eq!(a[0].gateway, ip("10.0.0.11"));
        assert!(allocate(&mut store, &sets, &owner(2), &[]).is_err());
    }

    #[test]
    fn range_start_and_end_bound_the_allocation() {
        let sets = [set(&[(
            "10.0.0.0/24",
            Some("10.0.0.100"),
            Some("10.0.0.101"),
            None,
        )])];
        let mut store = MemoryStore::new();
        let a = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        let b = allocate(&mut store, &sets, &owner(1), &[]).unwrap();
        assert_eq!((a[0].ip, b[0].ip), (ip("10.0.0.100"), ip("10.0.0.101")));
        assert_eq!(a[0].gateway, ip("10.0.0.1"));
        assert!(matches!(
            allocate(&mut store, &sets, &owner(2), &[]).unwrap_err(),
            AllocError::Exhausted { .. }
        ));
    }

    #[test]
    fn last_reserved_outside_the_set_restarts_at_the_beginning() {
        let sets = [set(&[("10.0.0.0/24", Some("10.0.0.50"), None, None)])];
        let mut store = MemoryStore::new();
        lock(&mut store)
            .unwrap()
            .reserve(&owner(7), ip("10.9.9.9"), 0)
            .unwrap();
        let got = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        assert_eq!(got[0].ip, ip("10.0.0.50"));
    }

    #[test]
    fn round_robin_moves_across_ranges_of_a_set() {
        let sets = [set(&[
            ("10.0.0.0/24", Some("10.0.0.2"), Some("10.0.0.3"), None),
            ("10.0.5.0/24", Some("10.0.5.7"), Some("10.0.5.8"), None),
        ])];
        let mut store = MemoryStore::new();
        let got: Vec<Ipv4Addr> = (0..4)
            .map(|i| allocate(&mut store, &sets, &owner(i), &[]).unwrap()[0].ip)
            .collect();
        assert_eq!(
            got,
            vec![
                ip("10.0.0.2"),
                ip("10.0.0.3"),
                ip("10.0.5.7"),
                ip("10.0.5.8")
            ]
        );
        let second_range = allocate(&mut store, &sets, &owner(9), &[]);
        assert!(second_range.is_err());
        lock(&mut store).unwrap().release_by_id(&owner(0)).unwrap();
        let wrapped = allocate(&mut store, &sets, &owner(9), &[]).unwrap();
        assert_eq!(wrapped[0].ip, ip("10.0.0.2"));
    }

    #[test]
    fn one_address_per_range_set() {
        let sets = [
            set(&[("10.0.0.0/24", None, None, None)]),
            set(&[("10.1.0.0/24", None, None, Some("10.1.0.254"))]),
        ];
        let mut store = MemoryStore::new();
        let got = allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].ip, got[0].range_set), (ip("10.0.0.2"), 0));
        assert_eq!((got[1].ip, got[1].range_set), (ip("10.1.0.1"), 1));
        assert_eq!(got[1].gateway, ip("10.1.0.254"));
        assert_eq!(store.last_reserved_ip(1).unwrap(), Some(ip("10.1.0.1")));
    }

    #[test]
    fn failure_in_a_later_set_releases_the_earlier_ones() {
        let sets = [
            set(&[("10.0.0.0/24", None, None, None)]),
            set(&[("10.1.0.0/30", None, None, None)]),
        ];
        let mut store = MemoryStore::new();
        // 10.1.0.0/30 has one usable address (.2); take it.
        allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        let err = allocate(&mut store, &sets, &owner(1), &[]).unwrap_err();
        assert!(matches!(err, AllocError::Exhausted { .. }));
        assert!(store.get_by_id(&owner(1)).unwrap().is_empty());
        assert!(!store.is_locked());
    }

    #[test]
    fn requested_ip_is_honoured() {
        let sets = [set(&[("10.0.0.0/24", None, None, None)])];
        let mut store = MemoryStore::new();
        let got = allocate(&mut store, &sets, &owner(0), &[ip("10.0.0.77")]).unwrap();
        assert_eq!(got[0].ip, ip("10.0.0.77"));
        assert_eq!(store.last_reserved_ip(0).unwrap(), Some(ip("10.0.0.77")));
        let err = allocate(&mut store, &sets, &owner(1), &[ip("10.0.0.77")]).unwrap_err();
        assert!(matches!(err, AllocError::RequestedTaken { .. }), "{err}");
        let err = allocate(&mut store, &sets, &owner(1), &[ip("10.0.0.1")]).unwrap_err();
        assert!(
            matches!(err, AllocError::RequestedIsGateway { .. }),
            "{err}"
        );
        let err = allocate(&mut store, &sets, &owner(1), &[ip("10.0.0.255")]).unwrap_err();
        assert!(
            matches!(err, AllocError::RequestedOutsideRanges { .. }),
            "{err}"
        );
        let err = allocate(&mut store, &sets, &owner(1), &[ip("192.168.0.1")]).unwrap_err();
        assert!(
            matches!(err, AllocError::RequestedOutsideRanges { .. }),
            "{err}"
        );
        assert!(store.get_by_id(&owner(1)).unwrap().is_empty());
    }

    #[test]
    fn requested_ips_go_to_their_own_sets() {
        let sets = [
            set(&[("10.0.0.0/24", None, None, None)]),
            set(&[("10.1.0.0/24", None, None, None)]),
        ];
        let mut store = MemoryStore::new();
        let got = allocate(&mut store, &sets, &owner(0), &[ip("10.1.0.9")]).unwrap();
        assert_eq!(got[0].ip, ip("10.0.0.2"));
        assert_eq!(got[1].ip, ip("10.1.0.9"));
        // Two requests in one set: only one can be served.
        let err = allocate(
            &mut store,
            &sets,
            &owner(1),
            &[ip("10.0.0.5"), ip("10.0.0.6")],
        )
        .unwrap_err();
        assert!(
            matches!(err, AllocError::RequestedOutsideRanges { ref ips } if ips == &[ip("10.0.0.6")])
        );
        assert!(store.get_by_id(&owner(1)).unwrap().is_empty());
    }

    #[test]
    fn second_add_for_same_attachment_is_refused() {
        let sets = [set(&[("10.0.0.0/24", None, None, None)])];
        let mut store = MemoryStore::new();
        allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        let err = allocate(&mut store, &sets, &owner(0), &[]).unwrap_err();
        assert!(matches!(err, AllocError::Duplicate { .. }), "{err}");
        assert_eq!(store.get_by_id(&owner(0)).unwrap(), vec![ip("10.0.0.2")]);
        // Same container, other interface: fine.
        let other_if = Attachment::new("c0", "eth1");
        assert_eq!(
            allocate(&mut store, &sets, &other_if, &[]).unwrap()[0].ip,
            ip("10.0.0.3")
        );
    }

    #[test]
    fn full_set_is_reported_for_status() {
        let sets = [set(&[("10.0.0.0/30", None, None, None)])];
        let mut store = MemoryStore::new();
        assert_eq!(first_full_set(&store, &sets).unwrap(), None);
        allocate(&mut store, &sets, &owner(0), &[]).unwrap();
        assert_eq!(
            first_full_set(&store, &sets).unwrap().as_deref(),
            Some("10.0.0.1-10.0.0.2")
        );
    }

    #[test]
    fn candidates_visit_each_address_once() {
        let s = set(&[("10.0.0.0/28", None, None, None)]);
        let from_mid: Vec<_> = candidates(&s, Some(ip("10.0.0.9"))).collect();
        assert_eq!(from_mid.len(), 13); // .2-.14
        assert_eq!(from_mid[0], ip("10.0.0.10"));
        assert_eq!(*from_mid.last().unwrap(), ip("10.0.0.9"));
        let unique: HashSet<_> = from_mid.iter().collect();
        assert_eq!(unique.len(), 13);
    }
}
