//! Weir's eBPF programs: one module per attach point (`pod`, `netdev`,
//! `sock`), the logic in small library modules.
#![no_std]
#![no_main]
// Map keys and values go by reference: a by-value `impl Borrow` argument
// costs a copy on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod csum;
mod ct;
mod events;
mod icmp;
mod lb;
mod maps;
mod metrics;
mod nat;
mod netdev;
mod parse;
mod pod;
mod policy;
mod redirect;
mod reject;
mod service;
mod sock;
mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never entered.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
