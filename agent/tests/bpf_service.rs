//! BPF_PROG_TEST_RUN tests of ClusterIP service translation in
//! `weir_from_pod`: crafted packets in, translated packets out, checksums
//! recomputed byte by byte, conntrack and metrics read back.
//! Needs root and the real eBPF object (`cargo xtask test` sets WEIR_EBPF_OBJ).
#![allow(clippy::unwrap_used)]

mod bpf_support;

use bpf_support::*;
use weir_common::{DropReason, metrics::Direction, programs};

const VIP: &str = "10.96.0.10";
const CLIENT: &str = "10.244.1.2";

#[test]
fn every_program_passes_the_verifier() {
    in_netns(|| {
        let mut dp = Datapath::load();
        for name in programs::TC {
            let program: &mut aya::programs::SchedClassifier =
                dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load().unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        }
        for name in programs::SOCK {
            let program: &mut aya::programs::CgroupSockAddr =
                dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load().unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        }
        for name in weir_common::maps::ALL {
            assert!(dp.ebpf.map(name).is_some(), "the object lacks map {name}");
        }
    });
}
