//! Conntrack: one `weir_ct4_v1` entry per direction of a translated flow
//! (see `weir_common::ct` for the layout and the key derivation).

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32};
use weir_common::{
    DropReason,
    config::DatapathConfig,
    ct::{CT_DIR_FORWARD, CT_DIR_REPLY, Ct4Entry, Ct4Key, tcp_state, tcp_state_of},
};

use crate::{maps::CT4, parse::Flow};

const EEXIST: i32 = 17;
/// SNAT ports tried before giving up on a flow; bounded for the verifier.
const SNAT_TRIES: u32 = 16;

/// The key of `flow`'s packets in `direction`.
#[inline(always)]
pub fn key(flow: &Flow, direction: u8) -> Ct4Key {
    Ct4Key {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        direction,
        pad: [0; 2],
    }
}

/// Looks up the entry of `flow`'s packets in `direction` and records this
/// packet in it. Returns a copy of the record.
#[inline(always)]
pub fn track(flow: &Flow, direction: u8, now: u64) -> Option<Ct4Entry> {
    let entry = CT4.get_ptr_mut(key(flow, direction))?;
    // SAFETY: the pointer comes from a map lookup and stays valid for this
    // program run; racing writers only ever store whole scalar fields.
    unsafe {
        (*entry).last_seen_ns = now;
        if flow.has_l4 && flow.tcp_flags != 0 {
            (*entry).tcp_flags_seen |= flow.tcp_flags;
            let state = tcp_state_of(flow.tcp_flags);
            if state > (*entry).tcp_state {
                (*entry).tcp_state = state;
            }
        }
        Some(*entry)
    }
}

/// Whether a pure SYN hitting a forward entry starts a new connection on a
/// reused tuple (the old one closed) rather than retransmitting.
#[inline(always)]
pub fn reopens(flow: &Flow, entry: &Ct4Entry) -> bool {
    const SYN: u8 = weir_common::ct::tcp_flags::SYN;
    const ACK: u8 = weir_common::ct::tcp_flags::ACK;
    flow.has_l4 && flow.tcp_flags & (SYN | ACK) == SYN && entry.tcp_state >= tcp_state::FIN
}

/// Creates both entries of a new flow. With `nat_flags::SNAT` set and
/// `entry.snat_port == 0`, allocates a free SNAT port (trying `first_port`
/// first when non-zero) and stores it in the record. Returns the record.
#[inline(always)]
pub fn create(
    mut entry: Ct4Entry,
    flow: &Flow,
    config: &DatapathConfig,
    first_port: u16,
) -> Result<Ct4Entry, DropReason> {
    entry.tcp_state = tcp_state::NONE;
    entry.tcp_flags_seen = 0;
    if entry.nat_flags & weir_common::ct::nat_flags::SNAT != 0 {
        allocate_snat_port(&mut entry, config, first_port)?;
    } else {
        // Replaces a stale reply entry of an earlier flow on the same tuple.
        CT4.insert(&entry.reply_key(), &entry, 0)
            .map_err(|_| DropReason::CtFull)?;
    }
    if flow.has_l4 && flow.tcp_flags != 0 {
        entry.tcp_flags_seen = flow.tcp_flags;
        entry.tcp_state = tcp_state_of(flow.tcp_flags);
    }
    let forward = entry.forward_key();
    if CT4.insert(&forward, &entry, 0).is_err() {
        let reply = entry.reply_key();
        // The flow is dropped; an orphaned reply entry would only age out.
        let _orphan_ages_out = CT4.remove(&reply);
        return Err(DropReason::CtFull);
    }
    Ok(entry)
}

/// Finds a SNAT port whose reply key is free and claims it by inserting the
/// reply entry (BPF_NOEXIST makes the claim atomic against other CPUs).
#[inline(always)]
fn allocate_snat_port(
    entry: &mut Ct4Entry,
    config: &DatapathConfig,
    first_port: u16,
) -> Result<(), DropReason> {
    let (min, span) = config.snat_ports();
    // SAFETY: a helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() };
    for i in 0..SNAT_TRIES {
        let port = if i == 0 && first_port != 0 {
            first_port
        } else {
            let host = u32::from(min) + (start.wrapping_add(i) % span);
            (host as u16).to_be()
        };
        entry.snat_port = port;
        match CT4.insert(entry.reply_key(), &*entry, u64::from(BPF_NOEXIST)) {
            Ok(()) => return Ok(()),
            Err(e) if e == -EEXIST => continue,
            Err(_) => return Err(DropReason::CtFull),
        }
    }
    Err(DropReason::SnatPortsExhausted)
}

pub const FORWARD: u8 = CT_DIR_FORWARD;
pub const REPLY: u8 = CT_DIR_REPLY;
