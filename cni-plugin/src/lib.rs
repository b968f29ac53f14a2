//! `weir-cni`: Weir's CNI plugin (spec 0.4.0, 1.0.0 and 1.1.0).
//!
//! Pods get a veth pair in the ptp style (a /32 on the pod side, the
//! gateway /32 and a host route on the node side) and an address from a
//! built-in, host-local compatible IPAM. See README.md for the contract.

pub mod agent_client;
pub mod cni_args;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod naming;
pub mod net;
pub mod plugin;
pub mod result;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use plugin::{Outcome, run};
