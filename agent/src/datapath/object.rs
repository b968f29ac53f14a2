//! The embedded eBPF object and the layouts of the maps it declares.

use std::collections::BTreeMap;

use super::error::{DatapathError, DatapathResult};

/// The eBPF object `cargo xtask build` compiled; empty in a stub build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir.bpf.o"));

/// Prefix of every map the agent pins (names are `weir_<what>_v<N>`).
pub const MAP_PREFIX: &str = "weir_";

/// Whether this binary carries a real eBPF object.
pub fn has_object() -> bool {
    !OBJECT.is_empty()
}

/// The object's bytes, or [`DatapathError::NoObject`] in a stub build.
pub fn bytes() -> DatapathResult<&'static [u8]> {
    if has_object() {
        Ok(OBJECT)
    } else {
        Err(DatapathError::NoObject)
    }
}

/// A map's layout as the kernel reports it (`bpf_map_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapSpec {
    /// How `pinned` differs from this layout, if it does. Ring buffers and
    /// perf arrays get their sizes from the loader, so only their type and
    /// key size are compared.
    pub fn mismatch(&self, pinned: &MapSpec) -> Option<String> {
        let sized = !matches!(
            self.map_type,
            super::sys::BPF_MAP_TYPE_RINGBUF | super::sys::BPF_MAP_TYPE_PERF_EVENT_ARRAY
        );
        let fields = [
            ("type", self.map_type, pinned.map_type, true),
            ("key size", self.key_size, pinned.key_size, true),
            ("value size", self.value_size, pinned.value_size, sized),
            ("max entries", self.max_entries, pinned.max_entries, sized),
            ("flags", self.flags, pinned.flags, true),
        ];
        let diffs: Vec<String> = fields
            .iter()
            .filter(|(_, want, have, compared)| *compared && want != have)
            .map(|(what, want, have, _)| format!("{what} {have} (want {want})"))
            .collect();
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }

    /// Whether only the capacity differs, so entries can be copied over.
    pub fn migratable_from(&self, pinned: &MapSpec) -> bool {
        matches!(
            self.map_type,
            super::sys::BPF_MAP_TYPE_HASH | super::sys::BPF_MAP_TYPE_LRU_HASH
        ) && self.map_type == pinned.map_type
            && self.key_size == pinned.key_size
            && self.value_size == pinned.value_size
            && self.flags == pinned.flags
    }
}

/// The `weir_*` maps of the object, by name, with `max_entries` overrides
/// applied (as the loader will create them).
pub fn map_specs(
    object: &[u8],
    max_entries: &BTreeMap<String, u32>,
) -> DatapathResult<BTreeMap<String, MapSpec>> {
    let parsed =
        aya_obj::Object::parse(object).map_err(|e| DatapathError::ParseObject(Box::new(e)))?;
    Ok(parsed
        .maps
        .iter()
        .filter(|(name, _)| name.starts_with(MAP_PREFIX))
        .map(|(name, map)| {
            let spec = MapSpec {
                name: name.clone(),
                map_type: map.map_type(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: max_entries
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| map.max_entries()),
                flags: map.map_flags(),
            };
            (name.clone(), spec)
        })
        .collect())
}

/// Names of the programs in the object.
pub fn program_names(object: &[u8]) -> DatapathResult<Vec<String>> {
    let parsed =
        aya_obj::Object::parse(object).map_err(|e| DatapathError::ParseObject(Box::new(e)))?;
    let mut names: Vec<String> = parsed.programs.keys().cloned().collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MapSpec {
        MapSpec {
            name: "weir_x_v1".into(),
            map_type: super::super::sys::BPF_MAP_TYPE_HASH,
            key_size: 12,
            value_size: 16,
            max_entries: 100,
            flags: 1,
        }
    }

    #[test]
    fn mismatch_names_every_differing_field() {
        let want = spec();
        assert_eq!(want.mismatch(&want.clone()), None);
        let pinned = MapSpec {
            value_size: 8,
            max_entries: 50,
            ..spec()
        };
        assert_eq!(
            want.mismatch(&pinned).as_deref(),
            Some("value size 8 (want 16), max entries 50 (want 100)")
        );
        assert!(!want.migratable_from(&pinned));
        let bigger = MapSpec {
            max_entries: 1000,
            ..spec()
        };
        assert!(want.mismatch(&bigger).is_some());
        assert!(want.migratable_from(&bigger));
    }

    #[test]
    fn ring_buffers_compare_only_type_and_key() {
        let want = MapSpec {
            map_type: super::super::sys::BPF_MAP_TYPE_RINGBUF,
            key_size: 0,
            value_size: 0,
            max_entries: 4096,
            ..spec()
        };
        let pinned = MapSpec {
            max_entries: 8192,
            ..want.clone()
        };
        assert_eq!(want.mismatch(&pinned), None);
        assert!(!want.migratable_from(&pinned));
    }
}
