//! The two raw bpf(2) calls the datapath bench needs beyond aya:
//!
//! * loading a two-instruction no-op TC classifier (`r0 = 0; exit`), the floor every program is
//!   measured against;
//! * `BPF_PROG_TEST_RUN` returning the kernel's own per-run time, used for *every* program (the
//!   no-op and weir's), so all figures come from the same call and the same timer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `struct bpf_insn`: opcode, dst/src registers (4 bits each), offset, immediate.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`; the kernel
/// zero-extends shorter attributes.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr` (kernel 5.10+ layout, padded to 8 bytes).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union bpf_attr` for `cmd`,
    // and its size is passed, so the kernel reads and writes only within it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `r0 = 0 (TC_ACT_OK); exit` as a `BPF_PROG_TYPE_SCHED_CLS` program.
pub fn load_noop_classifier() -> io::Result<OwnedFd> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 0,
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut name = [0u8; 16];
    let label = b"weir_bench_noop";
    name[..label.len()].copy_from_slice(label);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("BPF_PROG_LOAD returned no fd"))?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What one `BPF_PROG_TEST_RUN` call reports.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Kernel-measured time per run in ns (total / `repeat`), excluding the packet setup.
    pub duration_ns: u32,
    /// Bytes written to `out`.
    pub data_size_out: u32,
}

/// Runs the program `prog` `repeat` times on one skb made from `data` (the kernel reuses that
/// skb: a program that rewrites the packet sees its own output on the next run), copying the
/// final packet to `out` when given.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
) -> io::Result<TestRun> {
    let (data_out, data_size_out) = match out {
        Some(buf) => (buf.as_mut_ptr() as u64, buf.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out,
        data_in: data.as_ptr() as u64,
        data_out,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
        data_size_out: attr.data_size_out,
    })
}
