//! edgeprune: load a trained CNN, find which filters can be removed together, rank them, remove
//! them physically, retrain the smaller network on the device's own data, and report the gain.
//!
//! The modules follow the pipeline; see docs/architecture.md.

pub mod analysis;
pub mod cli;
pub mod criteria;
pub mod data;
pub mod engine;
pub mod error;
pub mod formats;
#[doc(hidden)]
pub mod fuzzing;
pub mod ir;
pub mod metrics;
pub mod protocol;
pub mod surgery;
pub mod train;
pub mod workflow;
pub mod zoo;

pub use error::{Error, Result};
