//! The service maps' contents as plain data ([`LbState`]), the single map
//! writes the writer plans ([`Op`]), and the seam that executes them
//! ([`LbStore`]): the real BPF maps, or an in-memory map in tests.

use std::{collections::HashMap, io};

use weir_common::{
    lb::{Lb4Backend, Lb4Key, Lb4MaglevKey, Lb4RevNat, Lb4Service, MAGLEV_TABLE_SIZE},
    maps as names,
};

/// What the service maps hold. The writer keeps one as a mirror of the
/// kernel maps: read once at start, then updated by every write that
/// succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: HashMap<Lb4Key, Lb4Service>,
    pub backends: HashMap<u32, Lb4Backend>,
    pub revnat: HashMap<u16, Lb4RevNat>,
    /// Maglev tables by reverse-NAT index; entry 0 means "no entry" (backend
    /// ids start at 1).
    pub maglev: HashMap<u16, Vec<u32>>,
}

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    PutBackend { id: u32, value: Lb4Backend },
    DelBackend { id: u32 },
    PutRevNat { index: u16, value: Lb4RevNat },
    DelRevNat { index: u16 },
    PutService { key: Lb4Key, value: Lb4Service },
    DelService { key: Lb4Key },
    PutMaglev { key: Lb4MaglevKey, backend_id: u32 },
    DelMaglev { key: Lb4MaglevKey },
}

impl Op {
    /// The map this op writes.
    pub fn map(&self) -> &'static str {
        match self {
            Op::PutBackend { .. } | Op::DelBackend { .. } => names::LB4_BACKENDS,
            Op::PutRevNat { .. } | Op::DelRevNat { .. } => names::LB4_REVNAT,
            Op::PutService { .. } | Op::DelService { .. } => names::LB4_SERVICES,
            Op::PutMaglev { .. } | Op::DelMaglev { .. } => names::LB4_MAGLEV,
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::DelBackend { .. }
                | Op::DelRevNat { .. }
                | Op::DelService { .. }
                | Op::DelMaglev { .. }
        )
    }
}

/// Executes map writes. A delete of a missing key succeeds.
pub trait LbStore {
    fn execute(&mut self, op: &Op) -> io::Result<()>;

    /// Executes `ops` in order, each succeeding or failing on its own; one
    /// result per op. Stores that can write many entries per syscall
    /// override this.
    fn execute_batch(&mut self, ops: &[Op]) -> Vec<io::Result<()>> {
        ops.iter().map(|op| self.execute(op)).collect()
    }
}

impl LbState {
    /// Records a write that succeeded.
    pub fn record(&mut self, op: &Op) {
        match *op {
            Op::PutBackend { id, value } => {
                self.backends.insert(id, value);
            }
            Op::DelBackend { id } => {
                self.backends.remove(&id);
            }
            Op::PutRevNat { index, value } => {
                self.revnat.insert(index, value);
            }
            Op::DelRevNat { index } => {
                self.revnat.remove(&index);
            }
            Op::PutService { key, value } => {
                self.services.insert(key, value);
            }
            Op::DelService { key } => {
                self.services.remove(&key);
            }
            Op::PutMaglev { key, backend_id } => {
                if let Some(entry) = self
                    .maglev
                    .entry(key.rev_nat_index)
                    .or_insert_with(empty_table)
                    .get_mut(key.index as usize)
                {
                    *entry = backend_id;
                }
            }
            Op::DelMaglev { key } => {
                if let Some(table) = self.maglev.get_mut(&key.rev_nat_index) {
                    if let Some(entry) = table.get_mut(key.index as usize) {
                        *entry = 0;
                    }
                    if table.iter().all(|e| *e == 0) {
                        self.maglev.remove(&key.rev_nat_index);
                    }
                }
            }
        }
    }

    /// Adds a Maglev entry read from the kernel (ignores out-of-range ones).
    pub fn insert_maglev(&mut self, key: &Lb4MaglevKey, backend_id: u32) {
        if key.index < MAGLEV_TABLE_SIZE {
            self.record(&Op::PutMaglev {
                key: *key,
                backend_id,
            });
        }
    }

    /// Number of entries per map, as the mirror sees them.
    pub fn entry_counts(&self) -> [(&'static str, u64); 4] {
        let maglev = self
            .maglev
            .values()
            .map(|t| t.iter().filter(|e| **e != 0).count() as u64)
            .sum();
        [
            (names::LB4_SERVICES, self.services.len() as u64),
            (names::LB4_BACKENDS, self.backends.len() as u64),
            (names::LB4_REVNAT, self.revnat.len() as u64),
            (names::LB4_MAGLEV, maglev),
        ]
    }
}

pub fn empty_table() -> Vec<u32> {
    vec![0; MAGLEV_TABLE_SIZE as usize]
}

pub fn maglev_key(rev_nat_index: u16, index: u32) -> Lb4MaglevKey {
    Lb4MaglevKey {
        rev_nat_index,
        pad: 0,
        index,
    }
}
