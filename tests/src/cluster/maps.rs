//! Reading a node's pinned service maps (with `bpftool`), to wait until the
//! datapath holds what the manifests ask for, without guessing from traffic.
//!
//! Layouts are `weir_common::lb`'s (`Lb4Key`, `Lb4Service`, `Lb4Backend`):
//! addresses and ports in network byte order, the other fields native.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weir_common::lb::{
    BACKEND_TERMINATING, Lb4Backend, Lb4Key, Lb4Service, SCOPE_EXTERNAL, SCOPE_INTERNAL, svc_flags,
};

use crate::workload::Proto;

const KEY_LEN: usize = size_of::<Lb4Key>();
const SVC_LEN: usize = size_of::<Lb4Service>();
const BACKEND_LEN: usize = size_of::<Lb4Backend>();

/// IP protocol number of `proto`.
pub fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// One backend slot of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendSlot {
    pub id: u32,
    pub addr: SocketAddrV4,
    /// Serving but terminating (used only when nothing is ready).
    pub terminating: bool,
    /// A pod on this node.
    pub local: bool,
}

/// One scope's slot-0 entry of a frontend and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendEntry {
    /// `SCOPE_EXTERNAL` (0) or `SCOPE_INTERNAL` (1).
    pub scope: u8,
    pub count: u16,
    pub flags: u16,
    pub rev_nat_index: u16,
    pub affinity_timeout: u32,
    /// Slots `1..=count`, in slot order (missing ones left out).
    pub backends: Vec<BackendSlot>,
}

impl FrontendEntry {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Everything one node's maps hold for one (address, port, protocol).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontend {
    pub entries: Vec<FrontendEntry>,
}

impl Frontend {
    /// Whether the node has the frontend at all.
    pub fn exists(&self) -> bool {
        !self.entries.is_empty()
    }

    fn scope(&self, scope: u8) -> Option<&FrontendEntry> {
        self.entries.iter().find(|e| e.scope == scope)
    }

    /// The entry a new flow uses, by the datapath's scope rules: traffic
    /// from a local pod or the node (`internal`) prefers the internal
    /// scope; traffic from outside never uses the internal entry of a
    /// two-scope frontend.
    pub fn entry_for(&self, internal: bool) -> Option<&FrontendEntry> {
        if internal {
            return self
                .scope(SCOPE_INTERNAL)
                .or_else(|| self.scope(SCOPE_EXTERNAL));
        }
        self.scope(SCOPE_EXTERNAL).or_else(|| {
            self.scope(SCOPE_INTERNAL)
                .filter(|e| !e.has(svc_flags::TWO_SCOPES))
        })
    }

    /// The backend addresses a new flow may go to (empty: rejected or
    /// dropped, or no frontend).
    pub fn backends_for(&self, internal: bool) -> BTreeSet<SocketAddrV4> {
        self.entry_for(internal)
            .map(|e| e.backends.iter().map(|b| b.addr).collect())
            .unwrap_or_default()
    }
}

/// `bpftool -j map dump pinned PATH` → (key bytes, value bytes) pairs.
pub fn dump(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(path)
        .output()
        .context("running bpftool (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "bpftool map dump pinned {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing bpftool's dump of {}", path.display()))?;
    let entries = json
        .as_array()
        .with_context(|| format!("bpftool's dump of {} is no array", path.display()))?;
    entries
        .iter()
        .map(|e| Ok((hex_bytes(&e["key"])?, hex_bytes(&e["value"])?)))
        .collect()
}

/// bpftool's `["0x0a","0x60",...]` → bytes.
fn hex_bytes(value: &Value) -> Result<Vec<u8>> {
    value
        .as_array()
        .context("not a byte array")?
        .iter()
        .map(|b| {
            let text = b.as_str().context("byte is no string")?;
            u8::from_str_radix(text.trim_start_matches("0x"), 16)
                .with_context(|| format!("bad byte {text:?}"))
        })
        .collect()
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn port_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A decoded `Lb4Key`: (address, port, slot, proto, scope).
type Key = (Ipv4Addr, u16, u16, u8, u8);

fn decode_key(b: &[u8]) -> Option<Key> {
    (b.len() == KEY_LEN).then(|| (addr_at(b, 0), port_at(b, 4), u16_ne(b, 6), b[8], b[9]))
}

/// Reads what `bpffs` (a node's pin root) holds for `addr:port/proto`.
pub fn frontend(bpffs: &Path, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<Frontend> {
    let proto = proto_number(proto);
    let svc = dump(&bpffs.join(weir_common::maps::LB4_SERVICES))?;
    let mut slot0 = Vec::new();
    let mut slots = Vec::new();
    for (k, v) in &svc {
        let Some((a, p, slot, pr, scope)) = decode_key(k) else {
            bail!("service map key of {} bytes, expected {KEY_LEN}", k.len());
        };
        if a != addr || p != port || pr != proto {
            continue;
        }
        if v.len() != SVC_LEN {
            bail!("service map value of {} bytes, expected {SVC_LEN}", v.len());
        }
        if slot == 0 {
            slot0.push((scope, v.clone()));
        } else {
            slots.push((scope, slot, u32_ne(v, 0)));
        }
    }
    if slot0.is_empty() {
        return Ok(Frontend::default());
    }
    let backends = backends(bpffs)?;
    let mut entries = Vec::new();
    for (scope, v) in slot0 {
        let count = u16_ne(&v, 4);
        let mut chosen: Vec<(u16, u32)> = slots
            .iter()
            .filter(|(s, slot, _)| *s == scope && *slot <= count)
            .map(|(_, slot, id)| (*slot, *id))
            .collect();
        chosen.sort_unstable();
        entries.push(FrontendEntry {
            scope,
            count,
            rev_nat_index: u16_ne(&v, 6),
            flags: u16_ne(&v, 8),
            affinity_timeout: u32_ne(&v, 12),
            backends: chosen
                .into_iter()
                .filter_map(|(_, id)| backends.iter().find(|b| b.id == id).copied())
                .collect(),
        });
    }
    entries.sort_by_key(|e| e.scope);
    Ok(Frontend { entries })
}

/// Every backend in a node's backends map.
pub fn backends(bpffs: &Path) -> Result<Vec<BackendSlot>> {
    dump(&bpffs.join(weir_common::maps::LB4_BACKENDS))?
        .into_iter()
        .map(|(k, v)| {
            if k.len() != 4 || v.len() != BACKEND_LEN {
                bail!(
                    "backend map entry of {}+{} bytes, expected 4+{BACKEND_LEN}",
                    k.len(),
                    v.len()
                );
            }
            Ok(BackendSlot {
                id: u32_ne(&k, 0),
                addr: SocketAddrV4::new(addr_at(&v, 0), port_at(&v, 4)),
                terminating: v[7] == BACKEND_TERMINATING,
                local: v[8] != 0,
            })
        })
        .collect()
}

/// Number of entries of a pinned map (e.g. conntrack).
pub fn entry_count(path: &Path) -> Result<usize> {
    Ok(dump(path)?.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_keys_in_the_abi_layout() {
        assert_eq!(KEY_LEN, 12);
        let key = [10, 96, 0, 10, 0, 80, 2, 0, 6, 1, 0, 0];
        let slot = u16::from_ne_bytes([2, 0]);
        assert_eq!(
            decode_key(&key),
            Some((Ipv4Addr::new(10, 96, 0, 10), 80, slot, 6, 1))
        );
        assert_eq!(decode_key(&key[..11]), None);
    }

    #[test]
    fn parses_bpftool_bytes() {
        let v: Value = serde_json::json!(["0x0a", "0xff", "0x00"]);
        assert_eq!(hex_bytes(&v).unwrap(), [10, 255, 0]);
        assert!(hex_bytes(&serde_json::json!(["zz"])).is_err());
    }

    #[test]
    fn scope_rules_follow_the_datapath() {
        let entry = |scope, flags, addr: [u8; 4]| FrontendEntry {
            scope,
            count: 1,
            flags,
            rev_nat_index: 1,
            affinity_timeout: 0,
            backends: vec![BackendSlot {
                id: 1,
                addr: SocketAddrV4::new(addr.into(), 80),
                terminating: false,
                local: false,
            }],
        };
        let two = svc_flags::TWO_SCOPES;
        let both = Frontend {
            entries: vec![
                entry(SCOPE_EXTERNAL, two, [1, 1, 1, 1]),
                entry(SCOPE_INTERNAL, two, [2, 2, 2, 2]),
            ],
        };
        assert_eq!(both.entry_for(true).unwrap().scope, SCOPE_INTERNAL);
        assert_eq!(both.entry_for(false).unwrap().scope, SCOPE_EXTERNAL);
        let internal_only = Frontend {
            entries: vec![entry(SCOPE_INTERNAL, two, [2, 2, 2, 2])],
        };
        assert!(internal_only.entry_for(false).is_none());
        let single = Frontend {
            entries: vec![entry(SCOPE_INTERNAL, 0, [2, 2, 2, 2])],
        };
        assert!(single.entry_for(false).is_some());
    }
}
