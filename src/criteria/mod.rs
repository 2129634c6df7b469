//! Importance criteria: one file each, all scoring the channels of every pruning group (higher =
//! more important). Weight-based criteria read the IR weights; data-driven ones run the engine
//! over local data.
//!
//! [`score`] is the entry point: for each [`Group`] (in the order given) it returns one score per
//! group channel. Scores are computed for frozen groups too where the criterion allows it (they
//! are zeros otherwise); the caller never prunes frozen groups anyway.
//!
//! | criterion | needs data | score of a group channel |
//! |---|---|---|
//! | `paper` | no | sum over the group's conv/linear producers of the mean absolute weight of the filter |
//! | `l1` | no | sum over those producers of the filter's L1 norm |
//! | `l2` | no | sum over those producers of the filter's L2 norm |
//! | `bn` | no | sum of the \|gamma\| of the group's BatchNorm producers |
//! | `taylor` | yes | first-order Taylor value \|mean(a x dL/da)\| (Molchanov et al. 2017) |
//! | `activation` | yes | mean activation |
//! | `apoz` | yes | 1 - average percentage of zeros (Hu et al. 2016) |
//! | `random` | no | uniform in [0, 1), a baseline |

mod activation;
mod apoz;
mod bn;
mod l1;
mod l2;
mod paper;
mod random;
mod stats;
mod taylor;

use std::fmt;
use std::str::FromStr;

pub use stats::chosen_tensors;

use crate::analysis::{Group, Member};
use crate::data::{Dataset, Normalize};
use crate::engine::Device;
use crate::error::{Error, Result};
use crate::ir::{Model, Op};

/// How to rank the channels of a pruning group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Criterion {
    /// The ADaPT paper's: mean absolute weight of each filter.
    Paper,
    L1,
    L2,
    /// BatchNorm scale |gamma| (network slimming).
    Bn,
    Taylor,
    Activation,
    Apoz,
    Random,
}

impl Criterion {
    /// Every criterion, in the order of [`Criterion::NAMES`].
    pub const ALL: [Criterion; 8] = [
        Criterion::Paper,
        Criterion::L1,
        Criterion::L2,
        Criterion::Bn,
        Criterion::Taylor,
        Criterion::Activation,
        Criterion::Apoz,
        Criterion::Random,
    ];

    /// The names [`FromStr`] accepts and [`Display`](fmt::Display) writes.
    pub const NAMES: [&'static str; 8] = ["paper", "l1", "l2", "bn", "taylor", "activation", "apoz", "random"];

    pub fn name(&self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|c| c == self).expect("listed")]
    }

    /// Whether the criterion runs the network over data (a [`DataPass`]).
    pub fn needs_data(&self) -> bool {
        matches!(self, Criterion::Taylor | Criterion::Activation | Criterion::Apoz)
    }
}

impl FromStr for Criterion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::NAMES.iter().position(|&n| n == s).map(|i| Self::ALL[i]).ok_or_else(|| {
            Error::config("criterion", format!("unknown criterion `{s}`; known: {}", Self::NAMES.join(", ")))
        })
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The data a data-driven criterion runs the network over, in inference mode.
#[derive(Debug, Clone)]
pub struct DataPass<'a> {
    pub dataset: &'a Dataset,
    /// The normalisation the model was trained with (see [`crate::train::model_normalize`]).
    pub norm: Normalize,
    pub batch_size: usize,
    /// At most this many batches: a random subset of `max_batches * batch_size` images (chosen
    /// with the `seed` given to [`score`]) is used when the dataset is larger. None: every image.
    pub max_batches: Option<usize>,
    pub device: Device,
}

/// Scores every channel of every group: `result[g][k]` is the importance of channel k of
/// `groups[g]` (higher = more important), `result[g].len() == groups[g].size`.
///
/// `groups` must come from `model.graph` ([`crate::analysis::groups`]). Data-driven criteria
/// ([`Criterion::needs_data`]) need `data`; `seed` drives `random` and the choice of images when
/// `data.max_batches` limits them.
pub fn score(
    criterion: Criterion,
    model: &Model,
    groups: &[Group],
    data: Option<&DataPass>,
    seed: u64,
) -> Result<Vec<Vec<f64>>> {
    check_groups(model, groups)?;
    let activations = match data {
        _ if !criterion.needs_data() => None,
        Some(d) => Some(stats::collect(criterion, model, groups, d, seed)?),
        None => {
            return Err(Error::config(
                "criterion",
                format!("criterion {criterion} ranks channels by their activations and needs data to run the model on"),
            ));
        }
    };
    let scores = match (criterion, &activations) {
        (Criterion::Paper, _) => paper::score(model, groups)?,
        (Criterion::L1, _) => l1::score(model, groups)?,
        (Criterion::L2, _) => l2::score(model, groups)?,
        (Criterion::Bn, _) => bn::score(model, groups)?,
        (Criterion::Random, _) => random::score(groups, seed),
        (Criterion::Taylor, Some(a)) => taylor::score(groups, a),
        (Criterion::Activation, Some(a)) => activation::score(groups, a),
        (Criterion::Apoz, Some(a)) => apoz::score(groups, a),
        (Criterion::Taylor | Criterion::Activation | Criterion::Apoz, None) => unreachable!("collected above"),
    };
    debug_assert!(scores.iter().zip(groups).all(|(s, g)| s.len() == g.size));
    Ok(scores)
}

/// Checks that the groups fit the model: every member names a node of the graph and lists the
/// indices of each of the group's channels.
fn check_groups(model: &Model, groups: &[Group]) -> Result<()> {
    let index = model.graph.index();
    for g in groups {
        for m in g.producers.iter().chain(&g.tensors) {
            if !index.contains_key(m.node.as_str()) {
                return Err(Error::node(&m.node, format!("group `{}` names a node the model does not have", g.name)));
            }
            if m.indices.len() != g.size {
                return Err(Error::node(
                    &m.node,
                    format!("group `{}` has {} channels but lists indices for {}", g.name, g.size, m.indices.len()),
                ));
            }
        }
    }
    Ok(())
}

/// The rows (one per output channel) of a producer's weight: the weight values and the length
/// of one row. Errors if an index of the member is out of range.
fn rows<'m>(model: &'m Model, group: &Group, member: &Member) -> Result<(&'m [f32], usize)> {
    let w = model.weights.get(&format!("{}.weight", member.node))?;
    let w_data = model.weights.get_f32(&format!("{}.weight", member.node))?;
    let out = w.shape.first().copied().unwrap_or(0);
    if out == 0 {
        return Err(Error::node(&member.node, format!("group `{}`: the weight has no output rows", group.name)));
    }
    if let Some(&i) = member.indices.iter().flatten().find(|&&i| i >= out) {
        return Err(Error::node(
            &member.node,
            format!("group `{}` names output channel {i} but the node has {out}", group.name),
        ));
    }
    Ok((w_data, w_data.len() / out))
}

/// For each group channel, the sum of `f(row)` over the group's conv and linear producers (not
/// BatchNorm) and over the rows the channel covers there. Groups no conv or linear layer
/// produces (the network input) score zeros.
fn filter_scores(model: &Model, groups: &[Group], f: impl Fn(&[f32]) -> f64) -> Result<Vec<Vec<f64>>> {
    let index = model.graph.index();
    groups
        .iter()
        .map(|g| {
            let mut s = vec![0.0; g.size];
            for p in &g.producers {
                if !matches!(model.graph.nodes[index[p.node.as_str()]].op, Op::Conv2d { .. } | Op::Linear { .. }) {
                    continue;
                }
                let (w, len) = rows(model, g, p)?;
                for (k, idx) in p.indices.iter().enumerate() {
                    s[k] += idx.iter().map(|&i| f(&w[i * len..(i + 1) * len])).sum::<f64>();
                }
            }
            Ok(s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::groups;
    use crate::zoo::Builder;

    /// input 1x4x4 -> conv a (2 filters of 1x2x2, no bias) -> relu -> conv b (3 filters of 2x1x1)
    /// -> flatten -> linear (3*3*3 -> 2). Weights set by hand.
    pub(super) fn tiny() -> (Model, Vec<Group>) {
        let mut b = Builder::new([1, 4, 4]);
        let x = b.conv("a", "input", 2, 2, 1, 0, 1, false);
        let x = b.relu("a.relu", &x);
        let x = b.conv("b", &x, 3, 1, 1, 0, 1, true);
        let x = b.add("flatten", Op::Flatten, &[&x]);
        b.linear("fc", &x, 2);
        let mut m = Model::init(b.finish("tiny"), 0).unwrap();
        let set = |m: &mut Model, key: &str, v: Vec<f32>| {
            let t = m.weights.tensors.get_mut(key).unwrap().as_f32_mut().unwrap();
            assert_eq!(t.len(), v.len(), "{key}");
            t.copy_from_slice(&v);
        };
        set(&mut m, "a.weight", vec![1.0, -2.0, 3.0, -4.0, 0.5, 0.5, -0.5, 0.0]);
        set(&mut m, "b.weight", vec![3.0, -4.0, 0.0, 0.0, -1.0, 1.0]);
        let g = groups(&m.graph).unwrap();
        (m, g)
    }

    fn by_name<'a>(groups: &[Group], scores: &'a [Vec<f64>], name: &str) -> &'a [f64] {
        &scores[groups.iter().position(|g| g.name == name).unwrap()]
    }

    #[test]
    fn names_round_trip() {
        for c in Criterion::ALL {
            assert_eq!(c.to_string().parse::<Criterion>().unwrap(), c);
        }
        let e = "l3".parse::<Criterion>().unwrap_err().to_string();
        assert!(e.contains("`l3`") && e.contains("paper, l1, l2, bn, taylor, activation, apoz, random"), "{e}");
        let data: Vec<_> = Criterion::ALL.iter().filter(|c| c.needs_data()).map(|c| c.name()).collect();
        assert_eq!(data, ["taylor", "activation", "apoz"]);
    }

    #[test]
    fn weight_criteria_on_known_weights() {
        let (m, g) = tiny();
        let l1 = score(Criterion::L1, &m, &g, None, 0).unwrap();
        let l2 = score(Criterion::L2, &m, &g, None, 0).unwrap();
        let paper = score(Criterion::Paper, &m, &g, None, 0).unwrap();
        assert_eq!(by_name(&g, &l1, "a"), [10.0, 1.5]);
        assert_eq!(by_name(&g, &l2, "a"), [30f64.sqrt(), 0.75f64.sqrt()]);
        assert_eq!(by_name(&g, &paper, "a"), [10.0 / 4.0, 1.5 / 4.0]);
        assert_eq!(by_name(&g, &l1, "b"), [7.0, 0.0, 2.0]);
        assert_eq!(by_name(&g, &l2, "b"), [5.0, 0.0, 2f64.sqrt()]);
        assert_eq!(by_name(&g, &paper, "b"), [3.5, 0.0, 1.0]);
        // The classifier (frozen: the network output) is scored too: paper = l1 / fan_in.
        let fc = m.weights.get_f32("fc.weight").unwrap();
        let row_l1 = |r: usize| fc[r * 27..(r + 1) * 27].iter().map(|v| v.abs() as f64).sum::<f64>();
        for r in 0..2 {
            assert!((by_name(&g, &l1, "fc")[r] - row_l1(r)).abs() < 1e-9);
            assert!((by_name(&g, &paper, "fc")[r] - row_l1(r) / 27.0).abs() < 1e-9);
        }
        // The input group: no layer produces it.
        assert_eq!(by_name(&g, &l1, "input"), [0.0]);
    }

    #[test]
    fn bn_needs_a_batch_norm_in_prunable_groups() {
        let (m, g) = tiny();
        let e = score(Criterion::Bn, &m, &g, None, 0).unwrap_err().to_string();
        assert!(e.contains("criterion bn needs a BatchNorm in every prunable group; group `a` has none"), "{e}");
    }

    #[test]
    fn data_criteria_need_data() {
        let (m, g) = tiny();
        for c in [Criterion::Taylor, Criterion::Activation, Criterion::Apoz] {
            let e = score(c, &m, &g, None, 0).unwrap_err().to_string();
            assert!(e.contains(&format!("criterion {c}")) && e.contains("needs data"), "{e}");
        }
    }

    #[test]
    fn groups_of_another_model_are_refused() {
        let (m, mut g) = tiny();
        g[1].producers[0].indices[0] = vec![7];
        let e = score(Criterion::L1, &m, &g, None, 0).unwrap_err().to_string();
        assert!(e.contains("output channel 7"), "{e}");
        g[1].producers[0].node = "nope".into();
        assert!(score(Criterion::L1, &m, &g, None, 0).is_err());
    }
}
