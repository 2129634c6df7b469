//! Average percentage of zeros (Hu et al. 2016), turned into an importance: 1 - the fraction of
//! a channel's activations that are zero, over positions and images, averaged over the group's
//! chosen tensors. In [0, 1]; a channel that is always zero scores 0.

use super::stats::Activations;
use crate::analysis::Group;

pub(super) fn score(groups: &[Group], acts: &Activations) -> Vec<Vec<f64>> {
    acts.reduce(groups, |s, i| s.zeros[i], |sum, n| (1.0 - sum / n as f64).clamp(0.0, 1.0))
}
