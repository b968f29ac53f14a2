//! Weir's eBPF programs: one program per attach point, the logic in small
//! library modules.
#![no_std]
#![no_main]

mod maps;
mod metrics;
mod parse;
mod pod;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never entered.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
