//! First-order Taylor criterion (Molchanov et al. 2017): the change in loss if a channel's
//! activation were removed, |mean over positions of a x dL/da| per image (L that image's own
//! cross-entropy, so the score does not depend on the batch size), averaged over the images and
//! summed over the group's chosen tensors (and, for a flattened map, its features).

use super::stats::Activations;
use crate::analysis::Group;

pub(super) fn score(groups: &[Group], acts: &Activations) -> Vec<Vec<f64>> {
    acts.reduce(groups, |s, i| s.taylor[i], |sum, _| sum)
}
