//! NetworkPolicy enforcement (docs/policy.md): anti-spoofing, the policy
//! conntrack `weir_polct4_v1` and the verdict on new flows, identical to
//! the agent's reference (`agent/src/policy/verdict.rs`).
//!
//! * **from-pod** (egress): [`check_source`], then [`egress`] finds the
//!   flow in policy conntrack (a reply of an admitted ingress flow, or an
//!   established egress flow) or returns a pending [`Gate`]. The service
//!   pipeline calls [`Gate::admit`] with the backend before it creates its
//!   conntrack entries (a denied flow creates none), and the pod program
//!   admits a non-service flow on its destination.
//! * **to-pod** (ingress): [`ingress`] does the same for packets entering
//!   the pod, judging new flows on their source.
//!
//! Egress entries are keyed on the pod's packets **before** DNAT (pod →
//! VIP), because the replies arrive reverse-NATed (VIP → pod); the entry
//! keeps the judged peer (the backend) for re-checks. Ingress entries are
//! keyed as the packets arrive (after DNAT and any SNAT). Every flow of an
//! endpoint that has a `weir_policy_ep_v1` entry is tracked, isolated or
//! not, so the replies of a non-isolated direction pass an isolated one.
//!
//! An entry admitted under another revision than `weir_policy_cfg_v1`'s
//! is re-judged with its stored peer at its next packet: still allowed, it
//! takes the new revision; denied, it becomes a tombstone (`DENIED`) that
//! drops the flow's packets in both directions until the revision moves
//! again or the entry expires, and the packet is dropped (event flag
//! `RECHECK`). Deleting it instead would let the endpoint's own next packet
//! (a server's retransmission) open the flow anew in the other direction.
//!
//! ICMP echo requests and replies carry their echo id as both ports, so a
//! reply finds its request's entry; ICMP errors (unreachable, time
//! exceeded, parameter problem) pass unjudged, as related packets.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use weir_common::{
    DropReason,
    ct::{tcp_flags, tcp_state, tcp_state_of},
    endpoint::ep_flags,
    policy::{
        IpcacheEntry, POLICY_EGRESS, POLICY_INGRESS, POLICY_PREFIX_FULL, PolicyConfig,
        PolicyCtEntry, PolicyCtKey, PolicyEndpoint, PolicyEvent, ep_policy_flags, event_flags,
        identity, polct_flags, policy_config_flags,
    },
};

use crate::{
    events,
    maps::{
        CONFIG, ENDPOINTS, IPCACHE, POLICY, POLICY_CONFIG, POLICY_CT4, POLICY_ENDPOINTS,
        PolicyKeyData,
    },
    parse::{Flow, IPPROTO_ICMP, IPPROTO_TCP},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

/// A packet as policy sees it: ports in network order (the echo id for
/// ICMP echo, 0 where the packet has none).
#[derive(Clone, Copy)]
pub struct Tuple {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
}

impl Tuple {
    #[inline(always)]
    fn key(&self, direction: u8) -> PolicyCtKey {
        PolicyCtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            direction,
            pad: [0; 2],
        }
    }

    /// The key of the flow this packet would be a reply of.
    #[inline(always)]
    fn reversed_key(&self, direction: u8) -> PolicyCtKey {
        PolicyCtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            direction,
            pad: [0; 2],
        }
    }
}

/// The tuple of `flow`; `None` for an ICMP error (passed as related).
#[inline(always)]
pub fn tuple(ctx: &TcContext, flow: &Flow) -> Option<Tuple> {
    let mut t = Tuple {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: 0,
        dport: 0,
        proto: flow.proto,
        tcp_flags: flow.tcp_flags,
    };
    if flow.proto == IPPROTO_ICMP {
        if !flow.has_l4 {
            return Some(t);
        }
        let Ok(icmp_type) = ctx.load::<u8>(flow.l4_off as usize) else {
            return Some(t);
        };
        match icmp_type {
            ICMP_ECHO | ICMP_ECHO_REPLY => {
                if let Ok(id) = ctx.load::<u16>(flow.l4_off as usize + 4) {
                    t.sport = id;
                    t.dport = id;
                }
            }
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => return None,
            _ => {}
        }
    } else if flow.has_ports {
        t.sport = flow.sport;
        t.dport = flow.dport;
    }
    Some(t)
}

#[inline(always)]
fn policy_config() -> PolicyConfig {
    POLICY_CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the skb pointer is the program's context.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// A verdict: `reason` is `Forwarded` for an allow, else what a drop is
/// counted under (also when audit lets it pass).
#[derive(Clone, Copy)]
struct Verdict {
    reason: DropReason,
    rule_id: u32,
    peer_identity: u32,
    audit: bool,
}

impl Verdict {
    #[inline(always)]
    fn dropped(&self) -> bool {
        self.reason.is_drop()
    }

    /// Whether the packet passes (allowed, or a drop in audit mode).
    #[inline(always)]
    fn passes(&self) -> bool {
        !self.dropped() || self.audit
    }
}

/// The allowing rule of one policy trie lookup.
#[inline(always)]
fn allows(endpoint: u32, peer_identity: u32, direction: u8, proto: u8, dport: u16) -> Option<u32> {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        PolicyKeyData {
            endpoint,
            identity: peer_identity,
            direction,
            proto,
            dport: dport.to_ne_bytes(),
        },
    );
    POLICY.get(&key).map(|entry| entry.rule_id)
}

/// The decision of docs/policy.md for a new flow at `endpoint` with
/// `peer` (address after DNAT) and the destination port after DNAT.
#[inline(always)]
fn judge(
    ep: &PolicyEndpoint,
    endpoint: u32,
    direction: u8,
    peer: u32,
    proto: u8,
    dport: u16,
    config: &PolicyConfig,
) -> Verdict {
    let ip = IPCACHE
        .get(&Key::new(32, peer))
        .copied()
        .unwrap_or(IpcacheEntry {
            identity: identity::WORLD,
            cidr_identity: identity::ANY,
        });
    let mut verdict = Verdict {
        reason: DropReason::Forwarded,
        rule_id: 0,
        peer_identity: ip.identity,
        audit: false,
    };
    let (isolated_by, has_rules) = if direction == POLICY_INGRESS {
        (ep.ingress_isolated_by, ep_policy_flags::INGRESS_HAS_RULES)
    } else {
        (ep.egress_isolated_by, ep_policy_flags::EGRESS_HAS_RULES)
    };
    if isolated_by == 0 {
        return verdict;
    }
    if direction == POLICY_INGRESS && ip.identity == identity::HOST {
        return verdict;
    }
    let mut hit = allows(endpoint, ip.identity, direction, proto, dport);
    if hit.is_none() && ip.cidr_identity != identity::ANY && ip.cidr_identity != ip.identity {
        hit = allows(endpoint, ip.cidr_identity, direction, proto, dport);
    }
    if hit.is_none() {
        hit = allows(endpoint, identity::ANY, direction, proto, dport);
    }
    if let Some(rule_id) = hit {
        verdict.rule_id = rule_id;
        return verdict;
    }
    verdict.rule_id = isolated_by;
    verdict.reason = if ep.flags & has_rules != 0 {
        DropReason::PolicyDenied
    } else {
        DropReason::PolicyDefaultDeny
    };
    verdict.audit = ep.flags & ep_policy_flags::AUDIT != 0
        || config.flags & policy_config_flags::AUDIT_ALL != 0;
    verdict
}

/// The event of a verdict on the flow keyed `key` (in its own direction),
/// judged against `(peer, judged_dport)`.
#[inline(always)]
fn report(
    key: &PolicyCtKey,
    (peer, judged_dport): (u32, u16),
    verdict: &Verdict,
    flags: u8,
    ifindex: u32,
    config: &PolicyConfig,
    now: u64,
) {
    let egress = key.direction == POLICY_EGRESS;
    let mut event = PolicyEvent {
        saddr: key.saddr,
        daddr: if egress { peer } else { key.daddr },
        sport: key.sport,
        dport: if egress { judged_dport } else { key.dport },
        proto: key.proto,
        direction: key.direction,
        reason: verdict.reason as u8,
        flags,
        endpoint: if egress { key.saddr } else { key.daddr },
        rule_id: verdict.rule_id,
        peer_identity: verdict.peer_identity,
        ifindex,
        orig_daddr: key.daddr,
        orig_dport: key.dport,
        ..PolicyEvent::default()
    };
    if verdict.dropped() && verdict.audit {
        event.flags |= event_flags::AUDIT;
    }
    events::emit(&mut event, config, now);
}

/// What a new flow is judged against.
struct NewFlow {
    /// The local endpoint (pod IP).
    endpoint: u32,
    /// The peer after DNAT (the pod itself for hairpin flows).
    peer: u32,
    /// The destination port after DNAT.
    judged_dport: u16,
    /// [`polct_flags`] for the entry.
    flags: u8,
}

/// Judges a new flow, tracks it when it passes, counts and reports.
#[inline(always)]
fn admit_new(
    ctx: &TcContext,
    ep: &PolicyEndpoint,
    tuple: &Tuple,
    direction: u8,
    new: &NewFlow,
) -> Result<(), DropReason> {
    let config = policy_config();
    let now = now();
    let verdict = judge(
        ep,
        new.endpoint,
        direction,
        new.peer,
        tuple.proto,
        new.judged_dport,
        &config,
    );
    let key = tuple.key(direction);
    if verdict.passes() {
        let mut flags = new.flags;
        if verdict.dropped() {
            flags |= polct_flags::AUDIT;
        }
        let entry = PolicyCtEntry {
            last_seen_ns: now,
            revision: config.revision,
            rule_id: verdict.rule_id,
            peer_addr: new.peer,
            peer_identity: verdict.peer_identity,
            judged_dport: new.judged_dport,
            flags,
            tcp_state: if tuple.proto == IPPROTO_TCP && tuple.tcp_flags != 0 {
                tcp_state_of(tuple.tcp_flags)
            } else {
                tcp_state::NONE
            },
            pad: 0,
        };
        // A full LRU evicts the coldest flow; a failed insert only means
        // the next packet is judged again, with the same verdict.
        let _judged_again_next_packet = POLICY_CT4.insert(&key, &entry, 0);
    } else {
        events::count_drop(verdict.rule_id);
    }
    let sampled = verdict.dropped()
        || ep.flags & ep_policy_flags::EMIT_ALLOWS != 0
        || (config.allow_sample != 0
            // SAFETY: a helper without arguments.
            && unsafe { bpf_get_prandom_u32() } % config.allow_sample == 0);
    if sampled {
        report(
            &key,
            (new.peer, new.judged_dport),
            &verdict,
            0,
            ifindex(ctx),
            &config,
            now,
        );
    }
    if verdict.passes() {
        Ok(())
    } else {
        Err(verdict.reason)
    }
}

/// A packet of a tracked flow: refreshes the entry and re-judges the flow
/// when the revision moved on.
#[inline(always)]
fn refresh(
    ctx: &TcContext,
    ep: &PolicyEndpoint,
    endpoint: u32,
    key: &PolicyCtKey,
    entry: *mut PolicyCtEntry,
    tuple: &Tuple,
) -> Result<(), DropReason> {
    let config = policy_config();
    let now = now();
    // SAFETY: the pointer comes from a map lookup and stays valid for this
    // program run; racing writers only ever store whole scalar fields.
    let (revision, peer, judged_dport, flags, rule_id) = unsafe {
        (*entry).last_seen_ns = now;
        if tuple.proto == IPPROTO_TCP && tuple.tcp_flags != 0 {
            let state = tcp_state_of(tuple.tcp_flags);
            if state > (*entry).tcp_state {
                (*entry).tcp_state = state;
            }
        }
        (
            (*entry).revision,
            (*entry).peer_addr,
            (*entry).judged_dport,
            (*entry).flags,
            (*entry).rule_id,
        )
    };
    if revision == config.revision {
        if flags & polct_flags::DENIED == 0 {
            return Ok(());
        }
        // A flow a re-check denied: its packets stay dropped, both ways.
        events::count_drop(rule_id);
        return Err(tombstone_reason(flags));
    }
    let verdict = judge(
        ep,
        endpoint,
        key.direction,
        peer,
        key.proto,
        judged_dport,
        &config,
    );
    if verdict.passes() {
        // SAFETY: as above.
        unsafe {
            (*entry).revision = config.revision;
            (*entry).rule_id = verdict.rule_id;
            (*entry).peer_identity = verdict.peer_identity;
            (*entry).flags &= !(polct_flags::DENIED | polct_flags::DEFAULT_DENY);
            if verdict.dropped() {
                (*entry).flags |= polct_flags::AUDIT;
            } else {
                (*entry).flags &= !polct_flags::AUDIT;
            }
        }
        if verdict.dropped() {
            report(
                key,
                (peer, judged_dport),
                &verdict,
                event_flags::RECHECK,
                ifindex(ctx),
                &config,
                now,
            );
        }
        return Ok(());
    }
    // Kept as a tombstone rather than deleted: without an entry, the
    // endpoint's next packet of this flow (a retransmission, say) would be
    // judged as a new flow in its own direction and could reopen it there.
    // SAFETY: as above.
    unsafe {
        (*entry).revision = config.revision;
        (*entry).rule_id = verdict.rule_id;
        (*entry).peer_identity = verdict.peer_identity;
        (*entry).flags &= !polct_flags::AUDIT;
        (*entry).flags |= polct_flags::DENIED;
        if verdict.reason == DropReason::PolicyDefaultDeny {
            (*entry).flags |= polct_flags::DEFAULT_DENY;
        } else {
            (*entry).flags &= !polct_flags::DEFAULT_DENY;
        }
    }
    events::count_drop(verdict.rule_id);
    report(
        key,
        (peer, judged_dport),
        &verdict,
        event_flags::RECHECK,
        ifindex(ctx),
        &config,
        now,
    );
    Err(verdict.reason)
}

/// A pure SYN on the tuple of a closed or denied TCP flow opens a new
/// flow, which is judged afresh (its service backend may differ).
#[inline(always)]
fn reopens(tuple: &Tuple, entry: *const PolicyCtEntry) -> bool {
    // SAFETY: as in `refresh`; two byte reads.
    let (state, flags) = unsafe { ((*entry).tcp_state, (*entry).flags) };
    tuple.proto == IPPROTO_TCP
        && tuple.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
        && (state >= tcp_state::FIN || flags & polct_flags::DENIED != 0)
}

/// The drop reason a tombstone's packets are counted under.
#[inline(always)]
fn tombstone_reason(flags: u8) -> DropReason {
    if flags & polct_flags::DEFAULT_DENY != 0 {
        DropReason::PolicyDefaultDeny
    } else {
        DropReason::PolicyDenied
    }
}

/// Finds the packet's flow: a reply (reversed tuple, other direction) or
/// an established flow (own tuple). `None`: a new flow.
#[inline(always)]
fn established(
    ctx: &TcContext,
    ep: &PolicyEndpoint,
    endpoint: u32,
    tuple: &Tuple,
    direction: u8,
) -> Option<Result<(), DropReason>> {
    let other = if direction == POLICY_INGRESS {
        POLICY_EGRESS
    } else {
        POLICY_INGRESS
    };
    let reply = tuple.reversed_key(other);
    if let Some(entry) = POLICY_CT4.get_ptr_mut(&reply) {
        return Some(refresh(ctx, ep, endpoint, &reply, entry, tuple));
    }
    let own = tuple.key(direction);
    let entry = POLICY_CT4.get_ptr_mut(&own)?;
    if reopens(tuple, entry) {
        return None;
    }
    Some(refresh(ctx, ep, endpoint, &own, entry, tuple))
}

/// Anti-spoofing on from-pod: the source must be the address of the pod
/// behind this veth.
#[inline(always)]
pub fn check_source(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    // SAFETY: the value is plain data copied out at once.
    let ep = unsafe { ENDPOINTS.get(&flow.saddr) };
    match ep {
        Some(ep) if ep.flags & ep_flags::LOCAL_POD != 0 && ep.ifindex == ifindex(ctx) => Ok(()),
        _ => Err(DropReason::SpoofedSource),
    }
}

/// A pod's new egress flow waiting for its peer (the destination after
/// DNAT), or nothing to judge (`pending == false`).
pub struct Gate {
    pending: bool,
    ep: PolicyEndpoint,
    tuple: Tuple,
}

impl Gate {
    /// Nothing to judge (not a policed pod, or not a pod at all).
    #[inline(always)]
    pub fn open() -> Self {
        Self {
            pending: false,
            ep: PolicyEndpoint::default(),
            tuple: Tuple {
                saddr: 0,
                daddr: 0,
                sport: 0,
                dport: 0,
                proto: 0,
                tcp_flags: 0,
            },
        }
    }

    /// The packet is a reply of a tracked (service) flow: it passes.
    #[inline(always)]
    pub fn reply(&mut self) {
        self.pending = false;
    }

    /// Judges the pending flow against its peer after DNAT; tracks it when
    /// it passes. Does nothing when nothing is pending.
    #[inline(always)]
    pub fn admit(&mut self, ctx: &TcContext, peer: u32, port: u16) -> Result<(), DropReason> {
        if !self.pending {
            return Ok(());
        }
        self.pending = false;
        let new = NewFlow {
            endpoint: self.tuple.saddr,
            peer,
            judged_dport: port,
            flags: 0,
        };
        admit_new(ctx, &self.ep, &self.tuple, POLICY_EGRESS, &new)
    }

    /// Judges a pending flow that no service translated, on its own
    /// destination.
    #[inline(always)]
    pub fn admit_untranslated(&mut self, ctx: &TcContext) -> Result<(), DropReason> {
        let (daddr, dport) = (self.tuple.daddr, self.tuple.dport);
        self.admit(ctx, daddr, dport)
    }
}

/// Egress of a pod's packet (from-pod, after [`check_source`]): an error
/// drops it, a pending [`Gate`] must be admitted before the packet leaves.
#[inline(always)]
pub fn egress(ctx: &TcContext, flow: &Flow) -> Result<Gate, DropReason> {
    // SAFETY: the value is plain data copied out at once.
    let Some(ep) = (unsafe { POLICY_ENDPOINTS.get(&flow.saddr) }).copied() else {
        return Ok(Gate::open());
    };
    let Some(tuple) = tuple(ctx, flow) else {
        return Ok(Gate::open());
    };
    if let Some(result) = established(ctx, &ep, flow.saddr, &tuple, POLICY_EGRESS) {
        result?;
        return Ok(Gate::open());
    }
    Ok(Gate {
        pending: true,
        ep,
        tuple,
    })
}

/// Ingress of a packet entering a pod (to-pod; already translated).
#[inline(always)]
pub fn ingress(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    // SAFETY: the value is plain data copied out at once.
    let Some(ep) = (unsafe { POLICY_ENDPOINTS.get(&flow.daddr) }).copied() else {
        return Ok(());
    };
    let Some(tuple) = tuple(ctx, flow) else {
        return Ok(());
    };
    if let Some(result) = established(ctx, &ep, flow.daddr, &tuple, POLICY_INGRESS) {
        return result;
    }
    // A hairpin flow arrives from the hairpin address: it is the pod itself.
    let hairpin_addr = CONFIG.get(0).copied().unwrap_or_default().hairpin_addr();
    let hairpin = flow.saddr == hairpin_addr;
    let new = NewFlow {
        endpoint: flow.daddr,
        peer: if hairpin { flow.daddr } else { flow.saddr },
        judged_dport: tuple.dport,
        flags: if hairpin { polct_flags::HAIRPIN } else { 0 },
    };
    admit_new(ctx, &ep, &tuple, POLICY_INGRESS, &new)
}
