//! ABI shared by Weir's eBPF programs and its userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding and fixed-size fields
//! (no `bool`, enums or `Option`), because the kernel side and the user side
//! read the same bytes. The `user` feature adds `aya::Pod` impls.
#![no_std]

pub mod config;
pub mod ct;
pub mod endpoint;
pub mod lb;
pub mod maps;
pub mod metrics;
pub mod policy;
pub mod programs;
pub mod reason;

pub use reason::DropReason;
