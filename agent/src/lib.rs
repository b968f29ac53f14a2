//! Weir's node agent: the control plane library behind `weir-agent` and
//! `weirctl`.

pub mod datapath;
pub mod error;
pub mod plan;

pub use error::{Error, Result};
