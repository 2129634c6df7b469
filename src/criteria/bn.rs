//! BatchNorm scale (network slimming, Liu et al. 2017): the sum of |gamma| over the group's
//! BatchNorm producers. Every prunable group must have one; frozen groups without one score
//! zeros.

use crate::analysis::Group;
use crate::error::{Error, Result};
use crate::ir::{Model, Op};

pub(super) fn score(model: &Model, groups: &[Group]) -> Result<Vec<Vec<f64>>> {
    groups
        .iter()
        .map(|g| {
            let bns: Vec<_> = g.producers.iter().filter(|p| matches!(p.kind, Op::BatchNorm2d { .. })).collect();
            if bns.is_empty() && g.prunable() {
                return Err(Error::config(
                    "criterion",
                    format!("criterion bn needs a BatchNorm in every prunable group; group `{}` has none", g.name),
                ));
            }
            let mut s = vec![0.0; g.size];
            for p in bns {
                let key = format!("{}.weight", p.node);
                let gamma = model.weights.get_f32(&key)?;
                for (k, idx) in p.indices.iter().enumerate() {
                    for &i in idx {
                        let v = gamma.get(i).ok_or_else(|| {
                            Error::node(
                                &p.node,
                                format!("group `{}` names channel {i} but the node has {}", g.name, gamma.len()),
                            )
                        })?;
                        s[k] += v.abs() as f64;
                    }
                }
            }
            Ok(s)
        })
        .collect()
}
