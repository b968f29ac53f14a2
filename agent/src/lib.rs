//! Weir's node agent: the control plane library behind `weir-agent` and
//! `weirctl`.

pub mod daemon;
pub mod datapath;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod k8s;
pub mod maglev;
pub mod manifests;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod routes;
pub mod services;

pub use error::{Error, Result};
