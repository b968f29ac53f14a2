//! Weir's node agent: the control plane library behind `weir-agent` and
//! `weirctl`.

pub mod datapath;
pub mod endpoints;
pub mod error;
pub mod k8s;
pub mod maglev;
pub mod manifests;
pub mod plan;
pub mod services;

pub use error::{Error, Result};
