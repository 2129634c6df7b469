//! What can be learnt from a graph alone: its costs (and, for pruning, its channel groups).

pub mod cost;

pub use cost::{Cost, NodeCost, cost};
pub mod groups;
pub mod latency;
pub mod memory;
pub mod train_cost;

pub use groups::{Coupled, Group, Member, groups};
