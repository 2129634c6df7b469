//! The workflows both the command line and the protocol run, as typed requests: prune a model
//! ([`PruneRequest`]: groups -> scores -> plan -> surgery), evaluate its splits
//! ([`evaluate_splits`]: normalise -> build the network -> test and validation accuracy), and
//! train from a start point, resuming a half-done run ([`train_from`]), and tell the classes a
//! device sees from the teacher's predictions on its unlabeled images ([`subset`]) and prepare such
//! images for label-free adaptation ([`unlabeled`]). `cli` parses arguments into
//! these requests and prints what they return; `protocol` builds them from a recipe's cells. Neither
//! sequences the steps itself.

mod evaluate;
mod prune;
pub mod subset;
pub mod unlabeled;

pub use evaluate::{SplitStats, evaluate_splits, train_from};
pub use prune::{PruneRequest, Pruned, apply_plan};
