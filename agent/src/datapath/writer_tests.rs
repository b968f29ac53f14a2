//! Unit tests of the map writer against an in-memory store that checks,
//! after every single write, what a concurrent datapath reader would see.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io,
    net::Ipv4Addr,
};

use proptest::prelude::*;
use weir_common::{
    lb::{Lb4Backend, Lb4Service, MAGLEV_TABLE_SIZE, svc_flags},
    maps as names,
};

use super::{
    diff::{MaglevFn, place_stably},
    keys::{BackendKey, FrontendKey},
    state::{LbState, LbStore, Op},
    writer::Writer,
};
use crate::plan::{
    Algorithm, Backend, DesiredState, Frontend, FrontendKind, Protocol, Scope, ServicePortRef,
};

/// An in-memory store with per-map capacities that asserts the reader's
/// invariants after every write.
#[derive(Default)]
struct FakeStore {
    state: LbState,
    caps: HashMap<&'static str, usize>,
    ops: Vec<Op>,
}

impl FakeStore {
    fn with_caps(caps: &[(&'static str, usize)]) -> Self {
        Self {
            caps: caps.iter().copied().collect(),
            ..Self::default()
        }
    }

    fn len(&self, map: &str) -> usize {
        match map {
            names::LB4_BACKENDS => self.state.backends.len(),
            names::LB4_SERVICES => self.state.services.len(),
            names::LB4_REVNAT => self.state.revnat.len(),
            _ => self.state.entry_counts()[3].1 as usize,
        }
    }

    fn is_new_key(&self, op: &Op) -> bool {
        match op {
            Op::PutBackend { id, .. } => !self.state.backends.contains_key(id),
            Op::PutService { key, .. } => !self.state.services.contains_key(key),
            Op::PutRevNat { index, .. } => !self.state.revnat.contains_key(index),
            Op::PutMaglev { key, .. } => self
                .state
                .maglev
                .get(&key.rev_nat_index)
                .is_none_or(|t| t[key.index as usize] == 0),
            _ => false,
        }
    }
}

impl LbStore for FakeStore {
    fn execute(&mut self, op: &Op) -> io::Result<()> {
        if let Some(cap) = self.caps.get(op.map())
            && self.is_new_key(op)
            && self.len(op.map()) >= *cap
        {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        self.state.record(op);
        self.ops.push(*op);
        // A Maglev write changes one entry: check just that one (a full
        // check per entry would make the property tests quadratic).
        let verdict = match op {
            Op::PutMaglev { backend_id, .. } if !self.state.backends.contains_key(backend_id) => {
                Err(format!("Maglev entry names missing backend {backend_id}"))
            }
            Op::PutMaglev { .. } => Ok(()),
            Op::DelMaglev { key } => {
                let flagged = self.state.services.iter().any(|(k, v)| {
                    k.backend_slot == 0
                        && v.rev_nat_index == key.rev_nat_index
                        && v.flags & svc_flags::MAGLEV != 0
                });
                if flagged {
                    Err(format!(
                        "Maglev entry {key:?} deleted under a MAGLEV frontend"
                    ))
                } else {
                    Ok(())
                }
            }
            _ => reader_view_is_consistent(&self.state),
        };
        if let Err(broken) = verdict {
            panic!("after write #{} {op:?}: {broken}", self.ops.len());
        }
        Ok(())
    }
}

/// What the datapath relies on: a frontend's count covers only slots that
/// exist and name existing backends; its reverse-NAT entry exists; with
/// MAGLEV, its whole table exists and names existing backends.
fn reader_view_is_consistent(state: &LbState) -> Result<(), String> {
    for (key, head) in state.services.iter().filter(|(k, _)| k.backend_slot == 0) {
        let fk = FrontendKey::from_abi(key);
        if !state.revnat.contains_key(&head.rev_nat_index) {
            return Err(format!("{fk:?}: rev-NAT {} missing", head.rev_nat_index));
        }
        for slot in 1..=head.count {
            let Some(entry) = state.services.get(&fk.slot(slot)) else {
                return Err(format!("{fk:?}: slot {slot} of {} missing", head.count));
            };
            if !state.backends.contains_key(&entry.backend_id) {
                return Err(format!(
                    "{fk:?}: slot {slot} names missing backend {}",
                    entry.backend_id
                ));
            }
        }
        if head.flags & svc_flags::MAGLEV != 0 {
            let table = state
                .maglev
                .get(&head.rev_nat_index)
                .ok_or_else(|| format!("{fk:?}: Maglev table missing"))?;
            for (i, id) in table.iter().enumerate() {
                if *id == 0 || !state.backends.contains_key(id) {
                    return Err(format!("{fk:?}: Maglev entry {i} names {id}"));
                }
            }
        }
    }
    Ok(())
}

fn maglev() -> Option<MaglevFn<'static>> {
    Some(&crate::maglev::table_for)
}

fn backend(last: u8, port: u16) -> Backend {
    Backend {
        address: Ipv4Addr::new(10, 244, 1, last),
        port,
        terminating: false,
        local: last.is_multiple_of(2),
    }
}

fn frontend(name: &str, vip: u8, port: u16, proto: Protocol, backends: Vec<Backend>) -> Frontend {
    Frontend {
        service: ServicePortRef {
            namespace: "default".into(),
            name: name.into(),
            port_name: String::new(),
        },
        address: Ipv4Addr::new(10, 96, 0, vip),
        port,
        proto,
        scope: Scope::External,
        kind: FrontendKind::ClusterIp,
        local_only: false,
        two_scopes: false,
        affinity_timeout: None,
        algorithm: Algorithm::Random,
        backends,
    }
}

fn plan(frontends: Vec<Frontend>) -> DesiredState {
    let mut frontends = frontends;
    frontends.sort_by_key(|f| (f.address, f.port, f.proto, f.scope));
    DesiredState {
        frontends,
        routes: Vec::new(),
    }
}

/// The backends a frontend's slots name, as (address, port).
fn slot_backends(state: &LbState, f: &Frontend) -> BTreeSet<(Ipv4Addr, u16)> {
    let fk = FrontendKey::of(f);
    let head = state.services[&fk.slot(0)];
    (1..=head.count)
        .map(|s| {
            let id = state.services[&fk.slot(s)].backend_id;
            let b = BackendKey::from_abi(&state.backends[&id]);
            (b.address, b.port)
        })
        .collect()
}

/// The maps hold exactly the plan.
fn assert_matches_plan(state: &LbState, desired: &DesiredState) {
    let mut wanted_entries = 0;
    let mut wanted_backends = HashSet::new();
    for f in &desired.frontends {
        let want: BTreeSet<_> = f.backends.iter().map(|b| (b.address, b.port)).collect();
        assert_eq!(slot_backends(state, f), want, "{:?}", f.service);
        wanted_entries += 1 + f.backends.len();
        for b in &f.backends {
            wanted_backends.insert((b.address, b.port, f.proto.number()));
        }
    }
    assert_eq!(
        state.services.len(),
        wanted_entries,
        "no stale service entries"
    );
    let have: HashSet<_> = state
        .backends
        .values()
        .map(|b| {
            let k = BackendKey::from_abi(b);
            (k.address, k.port, k.proto)
        })
        .collect();
    assert_eq!(have, wanted_backends, "no stale backends");
}

#[test]
fn first_apply_writes_exact_entries_in_order() {
    let web = frontend(
        "web",
        1,
        80,
        Protocol::Tcp,
        vec![backend(2, 8080), backend(3, 8080)],
    );
    let mut dns = frontend("dns", 10, 53, Protocol::Udp, vec![backend(4, 53)]);
    dns.affinity_timeout = Some(10_800);
    let desired = plan(vec![web.clone(), dns.clone()]);
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    let out = writer.apply(&mut store, &desired, maglev());

    assert_eq!(out.stats.frontends, 2);
    assert_eq!(out.stats.services, 2);
    assert_eq!(out.stats.backends, 3);
    assert_eq!(out.stats.writes, 3 + 2 + 5);
    assert_eq!(out.stats.deletes, 0);
    assert!(out.stats.failures.is_empty());
    assert!(out.removed.is_empty());
    assert_eq!(writer.state(), &store.state, "mirror equals the maps");

    // Backends 1..=3 (sorted by identity), rev-NAT 1 and 2 (plan order).
    let s = &store.state;
    let web_key = FrontendKey::of(&web);
    let dns_key = FrontendKey::of(&dns);
    assert_eq!(writer.rev_nat_index(&web_key), Some(1));
    assert_eq!(writer.rev_nat_index(&dns_key), Some(2));
    assert_eq!(
        s.backends[&1],
        Lb4Backend {
            address: u32::from_ne_bytes([10, 244, 1, 2]),
            port: 8080u16.to_be(),
            proto: 6,
            state: 0,
            local: 1,
            pad: [0; 3],
        }
    );
    assert_eq!(s.backends[&3].proto, 17);
    assert_eq!(
        s.services[&web_key.slot(0)],
        Lb4Service {
            backend_id: 0,
            count: 2,
            rev_nat_index: 1,
            flags: svc_flags::CLUSTER_IP,
            pad: 0,
            affinity_timeout: 0,
        }
    );
    assert_eq!(
        s.services[&dns_key.slot(0)].flags,
        svc_flags::CLUSTER_IP | svc_flags::AFFINITY
    );
    assert_eq!(s.services[&dns_key.slot(0)].affinity_timeout, 10_800);
    assert_eq!(s.services[&dns_key.slot(1)].backend_id, 3);
    assert_eq!(s.revnat[&2].port, 53u16.to_be());
    assert_matches_plan(s, &desired);

    // Order: all backends, then rev-NAT, then per frontend slots before head.
    let kinds: Vec<&str> = store
        .ops
        .iter()
        .map(|op| match op {
            Op::PutBackend { .. } => "backend",
            Op::PutRevNat { .. } => "revnat",
            Op::PutService { key, .. } if key.backend_slot == 0 => "head",
            Op::PutService { .. } => "slot",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "backend", "backend", "backend", "revnat", "revnat", "slot", "slot", "head", "slot",
            "head"
        ]
    );
}

#[test]
fn unchanged_plan_and_restart_write_nothing() {
    let desired = plan(vec![
        frontend(
            "a",
            1,
            80,
            Protocol::Tcp,
            vec![backend(2, 80), backend(3, 80)],
        ),
        frontend("b", 2, 53, Protocol::Udp, vec![backend(2, 53)]),
    ]);
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &desired, maglev());
    let again = writer.apply(&mut store, &desired, maglev());
    assert_eq!((again.stats.writes, again.stats.deletes), (0, 0));

    // A restarted agent adopts the same ids and writes nothing.
    let mut restarted = Writer::adopt(store.state.clone());
    assert_eq!(restarted.dry_run(&desired, maglev()), Vec::<Op>::new());
    let out = restarted.apply(&mut store, &desired, maglev());
    assert_eq!((out.stats.writes, out.stats.deletes), (0, 0));
    assert_eq!(out.stats.frontends, 2);
    for f in &desired.frontends {
        let fk = FrontendKey::of(f);
        assert_eq!(restarted.rev_nat_index(&fk), writer.rev_nat_index(&fk));
        for b in &f.backends {
            let bk = BackendKey {
                address: b.address,
                port: b.port,
                proto: f.proto.number(),
            };
            assert_eq!(restarted.backend_id(&bk), writer.backend_id(&bk));
        }
    }
}

#[test]
fn shrinking_writes_head_first_then_deletes_slots_then_backends() {
    let big = frontend(
        "a",
        1,
        80,
        Protocol::Tcp,
        vec![backend(2, 80), backend(3, 80), backend(4, 80)],
    );
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &plan(vec![big.clone()]), maglev());
    let fk = FrontendKey::of(&big);
    // Slots: 1 → .2 (id 1), 2 → .3 (id 2), 3 → .4 (id 3).
    let small = frontend("a", 1, 80, Protocol::Tcp, vec![backend(3, 80)]);
    let planned = writer.dry_run(&plan(vec![small.clone()]), maglev());
    let head = store.state.services[&fk.slot(0)];
    let slot = |backend_id| Lb4Service {
        backend_id,
        rev_nat_index: 1,
        ..Lb4Service::default()
    };
    assert_eq!(
        planned,
        vec![
            // .3 moves into slot 1 (in place, while the count is still 3),
            Op::PutService {
                key: fk.slot(1),
                value: slot(2)
            },
            // then the count drops,
            Op::PutService {
                key: fk.slot(0),
                value: Lb4Service { count: 1, ..head }
            },
            // then the slots beyond it go,
            Op::DelService { key: fk.slot(2) },
            Op::DelService { key: fk.slot(3) },
            // and last the backends nothing names.
            Op::DelBackend { id: 1 },
            Op::DelBackend { id: 3 },
        ]
    );
    let out = writer.apply(&mut store, &plan(vec![small.clone()]), maglev());
    assert_eq!(store.ops[store.ops.len() - 6..], planned[..]);
    let mut removed: Vec<u32> = out.removed.iter().map(|p| p.backend_id).collect();
    removed.sort();
    assert_eq!(removed, vec![1, 3]);
    assert!(out.removed.iter().all(|p| p.rev_nat_index == 1));
    assert_matches_plan(&store.state, &plan(vec![small]));
}

#[test]
fn growing_writes_slots_before_the_count() {
    let one = frontend("a", 1, 80, Protocol::Tcp, vec![backend(2, 80)]);
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &plan(vec![one]), maglev());
    let two = frontend(
        "a",
        1,
        80,
        Protocol::Tcp,
        vec![backend(2, 80), backend(3, 80)],
    );
    let fk = FrontendKey::of(&two);
    let planned = writer.dry_run(&plan(vec![two]), maglev());
    assert_eq!(planned.len(), 3);
    assert!(matches!(planned[0], Op::PutBackend { id: 2, .. }));
    assert!(
        matches!(planned[1], Op::PutService { key, value } if key == fk.slot(2) && value.backend_id == 2)
    );
    assert!(
        matches!(planned[2], Op::PutService { key, value } if key == fk.slot(0) && value.count == 2)
    );
}

#[test]
fn stale_frontends_go_head_first_and_keep_their_rev_nat_until_released() {
    let a = frontend("a", 1, 80, Protocol::Tcp, vec![backend(2, 80)]);
    let b = frontend(
        "b",
        2,
        80,
        Protocol::Tcp,
        vec![backend(3, 80), backend(4, 80)],
    );
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &plan(vec![a.clone(), b.clone()]), maglev());
    let bk = FrontendKey::of(&b);
    let out = writer.apply(&mut store, &plan(vec![a.clone()]), maglev());
    let tail = &store.ops[store.ops.len() - 5..];
    assert_eq!(
        tail,
        [
            Op::DelService { key: bk.slot(0) },
            Op::DelService { key: bk.slot(1) },
            Op::DelService { key: bk.slot(2) },
            Op::DelBackend { id: 2 },
            Op::DelBackend { id: 3 },
        ]
    );
    assert_eq!(out.removed.len(), 2);
    assert!(out.removed.iter().all(|p| p.rev_nat_index == 2));
    // The rev-NAT entry stays while conntrack may still name it.
    assert!(store.state.revnat.contains_key(&2));
    assert_eq!(writer.release_rev_nat(&mut store, &HashSet::from([2])), 0);
    assert!(store.state.revnat.contains_key(&2));
    // The frontend comes back before release: same index.
    writer.apply(&mut store, &plan(vec![a.clone(), b.clone()]), maglev());
    assert_eq!(writer.rev_nat_index(&bk), Some(2));
    // Gone again and unreferenced: deleted and freed.
    writer.apply(&mut store, &plan(vec![a]), maglev());
    assert_eq!(writer.release_rev_nat(&mut store, &HashSet::new()), 1);
    assert!(!store.state.revnat.contains_key(&2));
    assert_eq!(store.state.revnat.len(), 1);
}

#[test]
fn backend_ids_are_not_reused_right_away() {
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(
        &mut store,
        &plan(vec![frontend(
            "a",
            1,
            80,
            Protocol::Tcp,
            vec![backend(2, 80)],
        )]),
        maglev(),
    );
    writer.apply(
        &mut store,
        &plan(vec![frontend(
            "a",
            1,
            80,
            Protocol::Tcp,
            vec![backend(3, 80)],
        )]),
        maglev(),
    );
    assert_eq!(
        store.state.backends.keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
    writer.apply(
        &mut store,
        &plan(vec![frontend(
            "a",
            1,
            80,
            Protocol::Tcp,
            vec![backend(4, 80)],
        )]),
        maglev(),
    );
    assert_eq!(
        store.state.backends.keys().copied().collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn full_backend_map_programs_what_fits_and_counts_the_rest() {
    let f = frontend(
        "a",
        1,
        80,
        Protocol::Tcp,
        vec![backend(2, 80), backend(3, 80), backend(4, 80)],
    );
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::with_caps(&[(names::LB4_BACKENDS, 2)]);
    let out = writer.apply(&mut store, &plan(vec![f.clone()]), maglev());
    assert_eq!(out.stats.failures.get(names::LB4_BACKENDS), Some(&1));
    assert_eq!(out.stats.failed_writes(), 1);
    assert_eq!(out.stats.frontends, 1);
    assert_eq!(out.stats.backends, 2);
    assert_eq!(store.state.services[&FrontendKey::of(&f).slot(0)].count, 2);
    assert_eq!(writer.totals().failures.get(names::LB4_BACKENDS), Some(&1));
}

#[test]
fn full_service_map_leaves_the_frontend_unwritten_and_applies_the_rest() {
    let a = frontend("a", 1, 80, Protocol::Tcp, vec![backend(2, 80)]);
    let b = frontend(
        "b",
        2,
        80,
        Protocol::Tcp,
        vec![backend(3, 80), backend(4, 80)],
    );
    let c = frontend("c", 3, 80, Protocol::Tcp, vec![backend(5, 80)]);
    let mut writer = Writer::adopt(LbState::default());
    // Room for a (2 entries) + b's first slot + ...: b cannot complete.
    let mut store = FakeStore::with_caps(&[(names::LB4_SERVICES, 3)]);
    let out = writer.apply(
        &mut store,
        &plan(vec![a.clone(), b.clone(), c.clone()]),
        maglev(),
    );
    assert_eq!(out.stats.frontends, 1);
    assert_eq!(out.stats.frontends_failed, 2);
    assert_eq!(out.stats.failures.get(names::LB4_SERVICES), Some(&2));
    assert!(
        !store
            .state
            .services
            .contains_key(&FrontendKey::of(&b).slot(0))
    );
    // Room again: the next apply completes both.
    store.caps.clear();
    let out = writer.apply(
        &mut store,
        &plan(vec![a.clone(), b.clone(), c.clone()]),
        maglev(),
    );
    assert_eq!(out.stats.frontends, 3);
    assert_matches_plan(&store.state, &plan(vec![a, b, c]));
}

#[test]
fn maglev_tables_are_written_before_the_flag_and_removed_after_it() {
    let mut f = frontend(
        "m",
        1,
        80,
        Protocol::Tcp,
        vec![backend(2, 80), backend(3, 80), backend(4, 80)],
    );
    f.algorithm = Algorithm::Maglev;
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    let out = writer.apply(&mut store, &plan(vec![f.clone()]), maglev());
    let fk = FrontendKey::of(&f);
    let head = store.state.services[&fk.slot(0)];
    assert_ne!(head.flags & svc_flags::MAGLEV, 0);
    assert_eq!(
        out.stats.writes,
        3 + 1 + 3 + u64::from(MAGLEV_TABLE_SIZE) + 1
    );
    let table = &store.state.maglev[&head.rev_nat_index];
    let expected: Vec<u32> = crate::maglev::table_for(&f.backends)
        .iter()
        .map(|i| *i + 1)
        .collect();
    assert_eq!(table, &expected, "entry i names backends[table[i]]");

    // One backend fewer: only the entries that change are rewritten.
    f.backends.remove(0);
    let planned = writer.dry_run(&plan(vec![f.clone()]), maglev());
    let rewrites = planned
        .iter()
        .filter(|op| matches!(op, Op::PutMaglev { .. }))
        .count();
    assert!(
        rewrites > 0 && rewrites < MAGLEV_TABLE_SIZE as usize / 2,
        "{rewrites}"
    );
    writer.apply(&mut store, &plan(vec![f.clone()]), maglev());

    // Back to random: the flag goes first, then the table.
    f.algorithm = Algorithm::Random;
    let before = store.ops.len();
    writer.apply(&mut store, &plan(vec![f.clone()]), maglev());
    let ops = &store.ops[before..];
    assert!(
        matches!(ops[0], Op::PutService { key, value } if key == fk.slot(0) && value.flags & svc_flags::MAGLEV == 0)
    );
    assert_eq!(ops[1..].len(), MAGLEV_TABLE_SIZE as usize);
    assert!(ops[1..].iter().all(|op| matches!(op, Op::DelMaglev { .. })));
    assert!(store.state.maglev.is_empty());
}

#[test]
fn no_backends_means_count_zero_without_maglev() {
    let mut f = frontend("empty", 1, 80, Protocol::Tcp, vec![]);
    f.algorithm = Algorithm::Maglev;
    f.local_only = true;
    f.two_scopes = true;
    f.scope = Scope::Internal;
    f.kind = FrontendKind::NodePort;
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &plan(vec![f.clone()]), maglev());
    let head = store.state.services[&FrontendKey::of(&f).slot(0)];
    assert_eq!(head.count, 0);
    assert_eq!(
        head.flags,
        svc_flags::NODE_PORT | svc_flags::LOCAL_ONLY | svc_flags::TWO_SCOPES
    );
    assert!(store.state.maglev.is_empty());
}

#[test]
fn shared_backends_get_one_id_and_merged_flags() {
    let mut b1 = backend(2, 80);
    b1.terminating = true;
    let b2 = backend(2, 80);
    let desired = plan(vec![
        frontend("a", 1, 80, Protocol::Tcp, vec![b1]),
        frontend("b", 2, 80, Protocol::Tcp, vec![b2]),
    ]);
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &desired, maglev());
    assert_eq!(store.state.backends.len(), 1);
    assert_eq!(
        store.state.backends[&1].state,
        weir_common::lb::BACKEND_ACTIVE
    );
}

#[test]
fn after_a_clean_apply_only_changed_frontends_are_written() {
    let many: Vec<Frontend> = (1..=50u8)
        .map(|i| {
            frontend(
                &format!("s{i}"),
                i,
                80,
                Protocol::Tcp,
                vec![backend(i, 80), backend(i + 100, 80)],
            )
        })
        .collect();
    let mut writer = Writer::adopt(LbState::default());
    let mut store = FakeStore::default();
    writer.apply(&mut store, &plan(many.clone()), maglev());
    let mut changed = many.clone();
    changed[20].backends[1].port = 81;
    changed.remove(30);
    let before = store.ops.len();
    let out = writer.apply(&mut store, &plan(changed.clone()), maglev());
    let ops = &store.ops[before..];
    let fk20 = FrontendKey::of(&changed[20]);
    let fk30 = FrontendKey::of(&many[30]);
    let slot_of_new = ops
        .iter()
        .position(|op| matches!(op, Op::PutService { key, .. } if *key == fk20.slot(2)));
    // New backend, its slot; the gone frontend (head, 2 slots); 3 unused backends.
    assert_eq!(ops.len(), 8, "{ops:?}");
    assert!(
        matches!(ops[0], Op::PutBackend { .. }),
        "the new backend first"
    );
    assert_eq!(slot_of_new, Some(1));
    assert_eq!(
        ops[2],
        Op::DelService { key: fk30.slot(0) },
        "the removed frontend, head first"
    );
    assert_eq!(out.stats.frontends, 49);
    assert_eq!(out.stats.services, 49);
    assert_eq!(out.stats.backends, 98);
    assert_eq!(out.removed.len(), 3);
    assert_matches_plan(&store.state, &plan(changed.clone()));
    // A writer that adopted the maps (full diff) agrees nothing is left.
    assert!(
        Writer::adopt(store.state.clone())
            .dry_run(&plan(changed), maglev())
            .is_empty()
    );
}

#[test]
fn stable_placement_keeps_slots() {
    assert_eq!(
        place_stably(&[Some(1), Some(2), Some(3)], &[1, 2, 3]),
        vec![1, 2, 3]
    );
    assert_eq!(
        place_stably(&[Some(1), Some(2), Some(3)], &[1, 3]),
        vec![1, 3]
    );
    assert_eq!(
        place_stably(&[Some(1), Some(2), Some(3)], &[2, 3]),
        vec![3, 2]
    );
    assert_eq!(place_stably(&[Some(1), Some(2)], &[2, 4, 5]), vec![4, 2, 5]);
    assert_eq!(place_stably(&[None, Some(2)], &[2, 7]), vec![7, 2]);
    assert_eq!(place_stably(&[], &[3, 1]), vec![3, 1]);
    assert_eq!(place_stably(&[Some(1)], &[]), Vec::<u32>::new());
}

/// A small universe of frontends and backends to draw plans from.
fn arb_plan() -> impl Strategy<Value = DesiredState> {
    let spec = (
        0u8..4,
        prop::bool::ANY,
        prop::collection::btree_set(1u8..8, 0..6),
        prop::bool::ANY,
        prop::bool::ANY,
    );
    prop::collection::vec(spec, 0..5).prop_map(|specs| {
        let mut seen = HashSet::new();
        let frontends = specs
            .into_iter()
            .filter(|(vip, udp, ..)| seen.insert((*vip, *udp)))
            .map(|(vip, udp, backends, maglev_on, terminating)| {
                let proto = if udp { Protocol::Udp } else { Protocol::Tcp };
                let mut f = frontend(
                    &format!("s{vip}"),
                    vip + 1,
                    80,
                    proto,
                    backends
                        .into_iter()
                        .map(|b| Backend {
                            terminating,
                            ..backend(b, 8080)
                        })
                        .collect(),
                );
                if maglev_on {
                    f.algorithm = Algorithm::Maglev;
                }
                f
            })
            .collect();
        plan(frontends)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of plans: every intermediate state is consistent for a
    /// reader (checked by the store after each write), each apply ends with
    /// exactly the plan, and an adopting writer agrees there is nothing to do.
    #[test]
    fn any_plan_sequence_keeps_readers_consistent(plans in prop::collection::vec(arb_plan(), 1..6)) {
        let mut writer = Writer::adopt(LbState::default());
        let mut store = FakeStore::default();
        for desired in &plans {
            let out = writer.apply(&mut store, desired, maglev());
            prop_assert!(out.stats.failures.is_empty());
            assert_matches_plan(&store.state, desired);
            prop_assert_eq!(writer.state(), &store.state);
            let restarted = Writer::adopt(store.state.clone());
            prop_assert_eq!(restarted.dry_run(desired, maglev()), Vec::<Op>::new());
        }
    }

    /// With tiny maps, writes fail but readers still never see a broken
    /// service, and nothing panics.
    #[test]
    fn full_maps_never_break_readers(plans in prop::collection::vec(arb_plan(), 1..6), svc in 1usize..12, be in 1usize..6) {
        let mut writer = Writer::adopt(LbState::default());
        let mut store = FakeStore::with_caps(&[(names::LB4_SERVICES, svc), (names::LB4_BACKENDS, be), (names::LB4_MAGLEV, 1500)]);
        for desired in &plans {
            writer.apply(&mut store, desired, maglev());
            prop_assert_eq!(writer.state(), &store.state);
        }
        // Room again: the next apply converges on the plan, the one after
        // has nothing left to do.
        store.caps.clear();
        let last = plans.last().unwrap();
        let out = writer.apply(&mut store, last, maglev());
        prop_assert!(out.stats.failures.is_empty());
        assert_matches_plan(&store.state, last);
        let again = writer.apply(&mut store, last, maglev());
        prop_assert_eq!((again.stats.writes, again.stats.deletes), (0, 0));
    }
}
