//! L1 norm of each filter, sum|W_row| (Li et al. 2017), summed over the conv and linear layers
//! that produce the group's channel.

use crate::analysis::Group;
use crate::error::Result;
use crate::ir::Model;

pub(super) fn score(model: &Model, groups: &[Group]) -> Result<Vec<Vec<f64>>> {
    super::filter_scores(model, groups, |row| row.iter().map(|w| w.abs() as f64).sum())
}
