//! Pieces the benchmark binaries share (`weir-bench-lb`, `weir-bench-policy`):
//! raw `BPF_PROG_TEST_RUN` and the no-op floor program ([`bpf_sys`]), test
//! frames ([`packet`]), medians / trimmed means / a small RNG
//! ([`numbers`]), the PNG canvas of their plots ([`plot`]) and their
//! progress lines ([`progress`]).

pub mod bpf_sys;
pub mod numbers;
pub mod packet;
pub mod plot;
pub mod progress;
