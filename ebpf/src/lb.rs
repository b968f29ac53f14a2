//! Service lookup and backend selection (the reading side of the contract
//! in `weir_common::lb`).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use weir_common::{
    DropReason,
    lb::{
        Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4MaglevKey, Lb4Service,
        SCOPE_EXTERNAL, SCOPE_INTERNAL, flow_hash, maglev_index, random_slot, svc_flags,
    },
};

use crate::{
    maps::{LB4_AFFINITY, LB4_BACKENDS, LB4_MAGLEV, LB4_SERVICES},
    parse::Flow,
};

/// A frontend's slot-0 entry and the key it was found under.
#[derive(Clone, Copy)]
pub struct Frontend {
    pub key: Lb4Key,
    pub svc: Lb4Service,
}

impl Frontend {
    #[inline(always)]
    pub fn has(&self, flag: u16) -> bool {
        self.svc.flags & flag != 0
    }
}

#[inline(always)]
fn slot0(address: u32, dport: u16, proto: u8, scope: u8) -> Option<Frontend> {
    let key = Lb4Key {
        address,
        dport,
        backend_slot: 0,
        proto,
        scope,
        pad: [0; 2],
    };
    // SAFETY: the value is plain data copied out at once.
    let svc = unsafe { LB4_SERVICES.get(&key) }.copied()?;
    Some(Frontend { key, svc })
}

/// The frontend a new flow addresses, by the scope rules of
/// `weir_common::lb`: internal traffic prefers the internal scope, external
/// traffic never uses an internal entry of a two-scope service.
#[inline(always)]
pub fn frontend(address: u32, dport: u16, proto: u8, internal: bool) -> Option<Frontend> {
    if internal {
        if let Some(fe) = slot0(address, dport, proto, SCOPE_INTERNAL) {
            return Some(fe);
        }
        return slot0(address, dport, proto, SCOPE_EXTERNAL);
    }
    if let Some(fe) = slot0(address, dport, proto, SCOPE_EXTERNAL) {
        return Some(fe);
    }
    let fe = slot0(address, dport, proto, SCOPE_INTERNAL)?;
    if fe.has(svc_flags::TWO_SCOPES) {
        return None;
    }
    Some(fe)
}

/// The chosen backend of a new flow.
#[derive(Clone, Copy)]
pub struct Choice {
    pub id: u32,
    pub backend: Lb4Backend,
}

#[inline(always)]
fn backend(id: u32) -> Option<Lb4Backend> {
    // SAFETY: the value is plain data copied out at once.
    unsafe { LB4_BACKENDS.get(&id) }.copied()
}

/// Picks the backend for a new flow to `fe` (count > 0): a live ClientIP
/// affinity entry, else Maglev when flagged, else uniform random. `client`
/// is the affinity identity (the client's address); `hash` the flow hash.
#[inline(always)]
pub fn select(fe: &Frontend, client: u32, hash: u32, now: u64) -> Result<Choice, DropReason> {
    let affinity = fe.has(svc_flags::AFFINITY);
    let affinity_key = Lb4AffinityKey {
        client,
        rev_nat_index: fe.svc.rev_nat_index,
        pad: 0,
    };
    if affinity {
        // SAFETY: the value is plain data copied out at once.
        if let Some(seen) = unsafe { LB4_AFFINITY.get(&affinity_key) }.copied() {
            let timeout_ns = u64::from(fe.svc.affinity_timeout) * 1_000_000_000;
            if now.wrapping_sub(seen.last_used_ns) <= timeout_ns
                && let Some(backend) = backend(seen.backend_id)
            {
                remember(&affinity_key, seen.backend_id, now);
                return Ok(Choice {
                    id: seen.backend_id,
                    backend,
                });
            }
        }
    }

    let id = if fe.has(svc_flags::MAGLEV) {
        match maglev(fe, hash) {
            Some(id) => id,
            // No table written (yet): still a defined, balanced choice.
            None => random_backend_id(fe)?,
        }
    } else {
        random_backend_id(fe)?
    };
    let backend = backend(id).ok_or(DropReason::BackendMissing)?;
    if affinity {
        remember(&affinity_key, id, now);
    }
    Ok(Choice { id, backend })
}

#[inline(always)]
fn remember(key: &Lb4AffinityKey, backend_id: u32, now: u64) {
    let value = Lb4AffinityValue {
        last_used_ns: now,
        backend_id,
        pad: 0,
    };
    // A lost affinity entry only means the next flow picks afresh; the LRU
    // map evicts rather than fails.
    let _next_flow_picks_afresh = LB4_AFFINITY.insert(key, &value, 0);
}

#[inline(always)]
fn maglev(fe: &Frontend, hash: u32) -> Option<u32> {
    let key = Lb4MaglevKey {
        rev_nat_index: fe.svc.rev_nat_index,
        pad: 0,
        index: maglev_index(hash),
    };
    // SAFETY: the value is plain data copied out at once.
    unsafe { LB4_MAGLEV.get(&key) }.copied()
}

#[inline(always)]
fn random_backend_id(fe: &Frontend) -> Result<u32, DropReason> {
    // SAFETY: a helper without arguments.
    let random = unsafe { bpf_get_prandom_u32() };
    let key = Lb4Key {
        backend_slot: random_slot(random, fe.svc.count),
        ..fe.key
    };
    // SAFETY: the value is plain data copied out at once.
    let slot = unsafe { LB4_SERVICES.get(&key) }.ok_or(DropReason::BackendMissing)?;
    Ok(slot.backend_id)
}

/// The Maglev hash of a packet's flow.
#[inline(always)]
pub fn hash(flow: &Flow) -> u32 {
    flow_hash(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto)
}
