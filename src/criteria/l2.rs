//! L2 norm of each filter, sqrt(sum W_row^2), summed (norm by norm) over the conv and linear
//! layers that produce the group's channel.

use crate::analysis::Group;
use crate::error::Result;
use crate::ir::Model;

pub(super) fn score(model: &Model, groups: &[Group]) -> Result<Vec<Vec<f64>>> {
    super::filter_scores(model, groups, |row| row.iter().map(|&w| w as f64 * w as f64).sum::<f64>().sqrt())
}
