//! 50 allocators racing on one disk store, each with its own open store
//! (own lock file descriptor), the way 50 parallel ADD processes do.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};

use weir_cni::ipam::{Attachment, DiskStore, Range, RangeSet, Store, allocate};

fn range_set(subnet: &str) -> RangeSet {
    RangeSet::new(vec![
        Range::new(subnet.parse().unwrap(), None, None, None).unwrap(),
    ])
    .unwrap()
}

#[test]
fn fifty_threads_get_fifty_distinct_addresses() {
    const N: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let sets = Arc::new(vec![range_set("10.244.1.0/24")]);
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let dir = tmp.path().to_path_buf();
            let sets = Arc::clone(&sets);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut store = DiskStore::open(&dir, "weir").unwrap();
                let owner = Attachment::new(format!("container-{i}"), "eth0");
                barrier.wait();
                let got = allocate(&mut store, &sets, &owner, &[]).unwrap();
                (owner, got[0].ip)
            })
        })
        .collect();
    let results: Vec<(Attachment, Ipv4Addr)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();

    let ips: HashSet<Ipv4Addr> = results.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(ips.len(), N, "duplicate addresses handed out: {results:?}");
    // Round-robin from an empty store under a correct lock hands out
    // exactly .2 ..= .51 (the gateway .1 is skipped), whatever the order.
    let want: HashSet<Ipv4Addr> = (2..2 + N as u8)
        .map(|n| Ipv4Addr::new(10, 244, 1, n))
        .collect();
    assert_eq!(ips, want);

    // The store agrees with what the threads were told.
    let store = DiskStore::open(tmp.path(), "weir").unwrap();
    let mut on_disk: Vec<(Attachment, Ipv4Addr)> = store
        .reservations()
        .unwrap()
        .into_iter()
        .map(|r| (r.owner, r.ip))
        .collect();
    let mut told = results;
    on_disk.sort();
    told.sort();
    assert_eq!(on_disk, told);
    let last = store.last_reserved_ip(0).unwrap().unwrap();
    assert!(want.contains(&last));
}

#[test]
fn concurrent_allocate_and_release_keep_the_store_consistent() {
    const N: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    // 10 usable addresses (.2-.11 of a /28 minus .12-.14 by rangeEnd) for 20
    // threads that each allocate, release and allocate again.
    let sets = Arc::new(vec![
        RangeSet::new(vec![
            Range::new(
                "10.9.0.0/28".parse().unwrap(),
                None,
                Some(Ipv4Addr::new(10, 9, 0, 11)),
                None,
            )
            .unwrap(),
        ])
        .unwrap(),
    ]);
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let dir = tmp.path().to_path_buf();
            let sets = Arc::clone(&sets);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut store = DiskStore::open(&dir, "weir").unwrap();
                let owner = Attachment::new(format!("c{i}"), "eth0");
                barrier.wait();
                let mut held = 0;
                for _ in 0..5 {
                    if allocate(&mut store, &sets, &owner, &[]).is_ok() {
                        held += 1;
                        store.lock().unwrap();
                        let released = store.release_by_id(&owner).unwrap();
                        store.unlock().unwrap();
                        assert_eq!(released.len(), 1);
                    }
                }
                held
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    let store = DiskStore::open(tmp.path(), "weir").unwrap();
    assert!(store.reservations().unwrap().is_empty());
}
