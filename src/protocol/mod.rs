//! The ADaPT experiment (docs/protocol.md): data-aware vs data-agnostic pruning and retraining, the
//! unpruned reference, sweeps over networks x subsets x levels x seeds, the DaPR level search,
//! and their report.

pub mod latency;
pub mod pipeline;
pub mod recipe;
pub mod report;
pub mod search;
pub mod sweep;

pub use recipe::{Pipeline, Recipe};
