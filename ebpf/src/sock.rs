//! Socket-level LB: cgroup `connect4`/`sendmsg4` translate a service address
//! to a backend once, before any packet exists (TCP and UDP), and
//! `recvmsg4`/`getpeername4` show the application the service address
//! again. Translated sockets address backends directly, so TC never
//! translates their packets a second time.
//!
//! Left to TC on purpose: ClientIP-affinity services (the client address
//! is not known before routing, and TC keys affinity on it), and xTP=Local
//! frontends without local backends (TC drops those, as kube-proxy does).
//! A service without backends fails `connect`/`sendmsg` with ECONNREFUSED,
//! what a client sees after a TCP RST or ICMP port unreachable.

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weir_common::{
    DropReason,
    lb::{Lb4SockRevKey, Lb4SockRevValue, flow_hash, svc_flags},
    metrics::Direction,
};

use crate::{
    lb,
    maps::LB4_SOCK_REVNAT,
    metrics,
    parse::{IPPROTO_TCP, IPPROTO_UDP},
};

const AF_INET: u32 = 2;
const ECONNREFUSED: i32 = 111;
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn weir_sock_connect4(ctx: SockAddrContext) -> i32 {
    verdict(translate(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn weir_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(translate(&ctx))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn weir_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn weir_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

enum Outcome {
    /// Not a service address, or one left to TC.
    Untouched,
    Translated,
}

/// The one place where a socket hook's result becomes its return value.
#[inline(always)]
fn verdict(result: Result<Outcome, DropReason>) -> i32 {
    match result {
        Ok(Outcome::Untouched) => ALLOW,
        Ok(Outcome::Translated) => {
            metrics::count(Direction::Sock, DropReason::Forwarded, 0);
            ALLOW
        }
        Err(DropReason::NoBackend) => {
            metrics::count(Direction::Sock, DropReason::NoBackend, 0);
            // SAFETY: a helper taking a plain integer; connect4 and
            // sendmsg4 may set their return value.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            DENY
        }
        Err(reason) => {
            // Counted; the packets then meet the same state in TC, which
            // decides them with its own verdict.
            metrics::count(Direction::Sock, reason, 0);
            ALLOW
        }
    }
}

#[inline(always)]
fn translate(ctx: &SockAddrContext) -> Result<Outcome, DropReason> {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for the whole run; these are
    // plain context field reads the verifier rewrites.
    let (family, protocol, daddr, port) = unsafe {
        (
            (*sa).user_family,
            (*sa).protocol,
            (*sa).user_ip4,
            (*sa).user_port,
        )
    };
    if family != AF_INET
        || (protocol != u32::from(IPPROTO_TCP) && protocol != u32::from(IPPROTO_UDP))
    {
        return Ok(Outcome::Untouched);
    }
    let proto = protocol as u8;
    // user_port holds the port in network byte order in its low 16 bits.
    let dport = port as u16;
    let Some(fe) = lb::frontend(daddr, dport, proto, true) else {
        return Ok(Outcome::Untouched);
    };
    if fe.svc.count == 0 {
        if fe.has(svc_flags::LOCAL_ONLY) {
            return Ok(Outcome::Untouched);
        }
        return Err(DropReason::NoBackend);
    }
    if fe.has(svc_flags::AFFINITY) {
        return Ok(Outcome::Untouched);
    }
    // SAFETY: helpers taking the program's own context / no arguments.
    let (cookie, now) = unsafe {
        (
            bpf_get_socket_cookie(ctx.sock_addr.cast()),
            bpf_ktime_get_ns(),
        )
    };
    let hash = flow_hash(cookie as u32, daddr, (cookie >> 32) as u16, dport, proto);
    let choice = lb::select(&fe, 0, hash, now)?;

    let key = Lb4SockRevKey {
        cookie,
        address: choice.backend.address,
        port: choice.backend.port,
        pad: 0,
    };
    let value = Lb4SockRevValue {
        address: daddr,
        port: dport,
        rev_nat_index: fe.svc.rev_nat_index,
    };
    // Without this entry getpeername/recvmsg would show the backend, not a
    // broken connection; the LRU map evicts rather than fails.
    LB4_SOCK_REVNAT
        .insert(&key, &value, 0)
        .map_err(|_| DropReason::CtFull)?;
    // SAFETY: connect4/sendmsg4 may write these context fields (4 bytes).
    unsafe {
        (*sa).user_ip4 = choice.backend.address;
        (*sa).user_port = u32::from(choice.backend.port);
    }
    Ok(Outcome::Translated)
}

/// Shows the service address instead of the backend it was translated to.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: as in `translate`.
    let (family, addr, port) = unsafe { ((*sa).user_family, (*sa).user_ip4, (*sa).user_port) };
    if family != AF_INET {
        return;
    }
    // SAFETY: a helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = Lb4SockRevKey {
        cookie,
        address: addr,
        port: port as u16,
        pad: 0,
    };
    // SAFETY: the value is plain data copied out at once.
    if let Some(front) = unsafe { LB4_SOCK_REVNAT.get(&key) }.copied() {
        // SAFETY: recvmsg4/getpeername4 may write these context fields.
        unsafe {
            (*sa).user_ip4 = front.address;
            (*sa).user_port = u32::from(front.port);
        }
    }
}
