//! Mean activation: a channel's activation averaged over positions and images, and over the
//! group's chosen tensors. After a ReLU it is non-negative; a group without one is ranked by its
//! conv or linear outputs, whose mean may be negative.

use super::stats::Activations;
use crate::analysis::Group;

pub(super) fn score(groups: &[Group], acts: &Activations) -> Vec<Vec<f64>> {
    acts.reduce(groups, |s, i| s.mean[i], |sum, n| sum / n as f64)
}
