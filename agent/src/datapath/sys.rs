//! The few `bpf(2)` commands aya 0.14 does not expose: object info of a
//! pinned map or link, link update and detach, and byte-level map access for
//! migrating a map whose layout aya cannot know.
//!
//! Each command gets its own small `#[repr(C)]` attribute struct: the kernel
//! copies `min(size, sizeof(union bpf_attr))` bytes and zero-fills the rest,
//! so a prefix of the union is a valid argument.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_link_type` values we tell apart.
pub const BPF_LINK_TYPE_CGROUP: u32 = 3;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// `enum bpf_map_type` values with special size rules.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` prefix of
    // `union bpf_attr` for `cmd`, and we pass its exact size; the kernel reads
    // and writes only within that size. Pointers inside `attr` (paths,
    // buffers) are set by our callers to buffers that outlive this call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `BPF_OBJ_GET`: opens the map, program or link pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info<T: Default>(fd: BorrowedFd<'_>) -> io::Result<T> {
    let mut info = T::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: &mut info as *mut T as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// The prefix of `struct bpf_map_info` we need.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a map.
pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    obj_info(fd)
}

/// `struct bpf_link_info` up to the largest union member we read (the union
/// starts at offset 16: it holds 64-bit members).
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    union: [u32; 8],
}

/// What a link is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A tcx link; `ifindex` 0 once its device is gone.
    Tcx {
        ifindex: u32,
        attach_type: u32,
    },
    /// A cgroup link; `cgroup_id` 0 once the cgroup is gone.
    Cgroup {
        cgroup_id: u64,
        attach_type: u32,
    },
    Other {
        link_type: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub target: LinkTarget,
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a link.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let raw: RawLinkInfo = obj_info(fd)?;
    let target = match raw.link_type {
        BPF_LINK_TYPE_TCX => LinkTarget::Tcx {
            ifindex: raw.union[0],
            attach_type: raw.union[1],
        },
        BPF_LINK_TYPE_CGROUP => LinkTarget::Cgroup {
            cgroup_id: {
                let (lo, hi) = (raw.union[0].to_ne_bytes(), raw.union[1].to_ne_bytes());
                u64::from_ne_bytes([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]])
            },
            attach_type: raw.union[2],
        },
        link_type => LinkTarget::Other { link_type },
    };
    Ok(LinkInfo {
        id: raw.id,
        prog_id: raw.prog_id,
        target,
    })
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `BPF_LINK_UPDATE`: atomically swaps the program behind a link; packets
/// see either the old or the new program, never none.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..LinkUpdateAttr::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `BPF_LINK_DETACH`: detaches a link even while pins or fds still hold it.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `BPF_MAP_GET_NEXT_KEY` on raw bytes: `Ok(false)` after the last key.
pub fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_LOOKUP_ELEM` on raw bytes: `Ok(false)` when the key is gone.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_UPDATE_ELEM` on raw bytes (`BPF_ANY`).
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Copies every entry of the hash map `from` into `to` (same key and value
/// sizes). Returns (copied, failed). Stops after `2 * limit` keys, so a map
/// that changes under us cannot keep us looping.
pub fn copy_hash_entries(
    from: impl AsFd,
    to: impl AsFd,
    key_size: usize,
    value_size: usize,
    limit: u64,
) -> io::Result<(u64, u64)> {
    let (from, to) = (from.as_fd(), to.as_fd());
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut value = vec![0u8; value_size];
    let (mut copied, mut failed, mut visited) = (0u64, 0u64, 0u64);
    let mut first = true;
    while visited < limit.saturating_mul(2) {
        let more = map_next_key(from, (!first).then_some(&key[..]), &mut next)?;
        if !more {
            break;
        }
        first = false;
        visited += 1;
        key.copy_from_slice(&next);
        if !map_lookup(from, &key, &mut value)? {
            continue;
        }
        match map_update(to, &key, &value) {
            Ok(()) => copied += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((copied, failed))
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a (non-per-CPU) hash map with `BPF_MAP_LOOKUP_BATCH`, as
/// raw key and value bytes, `chunk` entries per call. One consistent walk
/// over the buckets, far fewer syscalls than get-next-key + lookup.
/// `Err` with `EINVAL`/`ENOTSUP` when the kernel or map type lacks it.
pub fn lookup_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    chunk: usize,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut chunk = chunk.max(1);
    // Hash maps use a u32 bucket index as the batch token.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let start = keys.len();
        keys.resize(start + chunk * key_size, 0);
        values.resize(values.len() + chunk * value_size, 0);
        let vstart = values.len() - chunk * value_size;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys[start..].as_mut_ptr() as u64,
            values: values[vstart..].as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count as usize;
        keys.truncate(start + got * key_size);
        values.truncate(vstart + got * value_size);
        match result {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((keys, values)),
            // One bucket holds more entries than fit: retry it bigger.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                chunk *= 2;
                continue;
            }
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Deletes raw `keys` (`count` keys of `key_size` bytes) with
/// `BPF_MAP_DELETE_BATCH`. Returns how many were deleted; stops at the
/// first key that is gone (`ENOENT`), so callers retry the rest one by one.
pub fn delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: usize) -> io::Result<usize> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(_) => Ok(attr.count as usize),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(attr.count as usize),
        Err(e) => Err(e),
    }
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Writes raw `keys` and `values` (`count` entries) with
/// `BPF_MAP_UPDATE_BATCH`: one syscall instead of `count`. Returns how many
/// were written, in order, and the error that stopped the batch at the
/// next one (also when the kernel lacks batch updates: then 0 written).
pub fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> (usize, Option<io::Error>) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) => (attr.count as usize, None),
        // A batch refused before its first entry leaves `count` as we set
        // it: nothing was written then.
        Err(e) => {
            let written = attr.count as usize;
            (if written >= count { 0 } else { written }, Some(e))
        }
    }
}
