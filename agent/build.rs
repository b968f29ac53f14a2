//! Embeds the eBPF object named by `WEIR_EBPF_OBJ` (set by `cargo xtask build`).
//!
//! Without it we embed an empty stub, so `cargo check`, `clippy` and the unit
//! tests work without the BPF toolchain; loading the datapath from a stub
//! binary fails with a clear error instead.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=WEIR_EBPF_OBJ");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("weir.bpf.o");
    match env::var_os("WEIR_EBPF_OBJ") {
        Some(source) => {
            let source = PathBuf::from(source);
            println!("cargo::rerun-if-changed={}", source.display());
            fs::copy(&source, &dest)
                .unwrap_or_else(|e| panic!("WEIR_EBPF_OBJ: cannot copy {}: {e}", source.display()));
        }
        None => fs::write(&dest, b"").expect("write the eBPF stub object"),
    }
}
