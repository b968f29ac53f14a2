//! Batched writes to one hash map (`BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`) with one result per entry, as single writes
//! would give. A batch stops at the first entry that fails; that one is
//! retried alone (for its own error) and the batch resumes after it.

use std::io;
use std::mem::size_of_val;
use std::os::fd::AsFd;

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};

use super::super::sys;
use super::{ignore_missing, syscall_error};

/// Entries per syscall: bounds the kernel's time without a reschedule
/// point and our buffers.
const CHUNK: usize = 4096;

/// The kernel's own "not supported" errno (524), which libc does not name.
const ENOTSUPP: i32 = 524;

/// Writes `entries` in order; one result per entry.
pub fn put<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    entries: &[(K, V)],
) -> Vec<io::Result<()>> {
    let mut results = Vec::with_capacity(entries.len());
    let mut batching = true;
    let mut rest = entries;
    while !rest.is_empty() {
        let mut done = 0;
        if batching {
            let chunk = &rest[..rest.len().min(CHUNK)];
            let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
            let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
            let fd = map.map().fd().as_fd();
            let (written, error) = sys::update_batch(fd, bytes(&keys), bytes(&values), chunk.len());
            // A kernel without batch updates: one by one from here on.
            batching = !(written == 0 && error.as_ref().is_some_and(unsupported));
            done = written;
        }
        results.extend((0..done).map(|_| Ok(())));
        rest = &rest[done..];
        // The entry at `done` failed (or batching is off): it alone.
        if let Some(((key, value), after)) = rest.split_first() {
            results.push(map.insert(key, value, 0).map_err(syscall_error));
            rest = after;
        }
    }
    results
}

/// Deletes `keys` in order; a key already gone counts as deleted.
pub fn delete<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    keys: &[K],
) -> Vec<io::Result<()>> {
    let mut results = Vec::with_capacity(keys.len());
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let fd = map.map().fd().as_fd();
        let done = sys::delete_batch(fd, bytes(chunk), chunk.len()).unwrap_or(0);
        results.extend((0..done).map(|_| Ok(())));
        rest = &rest[done..];
        // The key at `done` is gone or the batch failed: it alone.
        if let Some((key, after)) = rest.split_first() {
            results.push(ignore_missing(map.remove(key)));
            rest = after;
        }
    }
    results
}

fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP)
    )
}

fn bytes<T: aya::Pod>(items: &[T]) -> &[u8] {
    // SAFETY: `Pod` types are plain data without implicit padding (the ABI
    // crate spells out every byte), so their memory is initialised bytes;
    // the result borrows `items`.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), size_of_val(items)) }
}
