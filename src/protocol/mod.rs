//! The ADaPT experiment (protocol.md): data-aware vs data-agnostic pruning and retraining, the
//! unpruned reference, sweeps over networks x subsets x levels x seeds, and their report.

pub mod report;
