//! The ADaPT paper's criterion: each filter's mean absolute weight, sum|W_row| / (C_in/groups x
//! kh x kw) for a conv and sum|W_row| / in_features for a linear layer, summed over the conv and
//! linear layers that produce the group's channel (the paper ties them this way).

use crate::analysis::Group;
use crate::error::Result;
use crate::ir::Model;

pub(super) fn score(model: &Model, groups: &[Group]) -> Result<Vec<Vec<f64>>> {
    super::filter_scores(model, groups, |row| row.iter().map(|w| w.abs() as f64).sum::<f64>() / row.len() as f64)
}
