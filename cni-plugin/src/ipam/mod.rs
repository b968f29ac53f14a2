//! Built-in IPAM, compatible with host-local's config keys and disk layout.

pub mod allocator;
pub mod disk;
pub mod memory;
pub mod range;
pub mod store;

pub use allocator::{AllocError, Allocation, allocate};
pub use disk::DiskStore;
pub use memory::MemoryStore;
pub use range::{Range, RangeSet};
pub use store::{Attachment, Reservation, Store, StoreError};
