//! Which classes does the device see? Inferred from the unpruned network's own predictions on the
//! local images, for data that carries no labels (issue "Label-free adaptation").
//!
//! The rule ([`SubsetRule`]): an image's prediction is *confident* when the teacher's top softmax
//! probability is at least `min_confidence`; a class is seen when it holds at least `min_share`
//! of the confident predictions. Two outcomes stop the pipeline before anything is pruned, each
//! reported with the prediction histogram: no confident prediction at all (or none reaching
//! `min_share`), and every class seen (the teacher finds no subset to specialise to).

use serde::Serialize;

use crate::error::{Error, Result};

/// How the seen classes are told from the teacher's predictions (see the module).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SubsetRule {
    /// The top softmax probability from which a prediction counts (0..1).
    pub min_confidence: f64,
    /// The share of the confident predictions a class must hold to be seen (0..1).
    pub min_share: f64,
}

impl Default for SubsetRule {
    /// 0.5 and 5%: a class the teacher names confidently for at least one image in twenty.
    fn default() -> Self {
        SubsetRule { min_confidence: 0.5, min_share: 0.05 }
    }
}

/// The teacher's predictions on the local images, per class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Images whose top class it is.
    pub predicted: Vec<usize>,
    /// Of those, the confident ones.
    pub confident: Vec<usize>,
    pub images: usize,
}

impl Histogram {
    /// One line per class: name, top-1 count, confident count and its share of the confident.
    pub fn describe(&self, names: &[String]) -> String {
        let total: usize = self.confident.iter().sum();
        let mut s = format!("{} images, {} confident predictions:\n", self.images, total);
        for (c, (&p, &k)) in self.predicted.iter().zip(&self.confident).enumerate() {
            let name = names.get(c).map_or_else(|| c.to_string(), Clone::clone);
            let share = if total > 0 { 100.0 * k as f64 / total as f64 } else { 0.0 };
            s += &format!("  {name:<16} top-1 {p:>7}  confident {k:>7} ({share:5.1}%)\n");
        }
        s
    }
}

/// The classes found, with the histogram they were read from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inferred {
    /// Class indices, ascending.
    pub classes: Vec<usize>,
    pub histogram: Histogram,
    pub rule: SubsetRule,
}

/// The histogram of `logits` (`n` images x `k` classes, row-major) under `rule`.
pub fn histogram(logits: &[f32], n: usize, k: usize, rule: &SubsetRule) -> Result<Histogram> {
    if k == 0 || logits.len() != n * k {
        return Err(Error::config(
            "subset inference",
            format!("{} logits for {n} images of {k} classes", logits.len()),
        ));
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::config(
            "subset inference",
            format!("the teacher's logit {} of image {} is not finite: it cannot tell the classes", i % k, i / k),
        ));
    }
    let (mut predicted, mut confident) = (vec![0; k], vec![0; k]);
    for row in logits.chunks_exact(k) {
        let (top, &m) = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).expect("k > 0");
        // Softmax probability of the top class, computed stably.
        let z: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
        predicted[top] += 1;
        if 1.0 / z >= rule.min_confidence {
            confident[top] += 1;
        }
    }
    Ok(Histogram { predicted, confident, images: n })
}

/// The classes the device sees, from the teacher's `logits` on its images (see the module). An
/// error, with the histogram, where there is no subset to adapt to; `names` name the classes in
/// it.
pub fn infer(logits: &[f32], n: usize, k: usize, rule: &SubsetRule, names: &[String]) -> Result<Inferred> {
    for (what, v) in [("min_confidence", rule.min_confidence), ("min_share", rule.min_share)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::config(what, format!("must be in [0, 1], not {v}")));
        }
    }
    if n == 0 {
        return Err(Error::Data("subset inference: no local images".into()));
    }
    let h = histogram(logits, n, k, rule)?;
    let total: usize = h.confident.iter().sum();
    let classes: Vec<usize> =
        (0..k).filter(|&c| h.confident[c] > 0 && h.confident[c] as f64 >= rule.min_share * total as f64).collect();
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "the teacher is confident (top probability >= {}) about no class on the local images, so the classes \
             the device sees cannot be told; stopping before pruning. {}",
            rule.min_confidence,
            h.describe(names)
        )));
    }
    if classes.len() == k {
        return Err(Error::Data(format!(
            "the teacher sees every one of its {k} classes in the local images (each holds at least {:.1}% of the \
             confident predictions): there is no subset to specialise to; stopping before pruning. {}",
            100.0 * rule.min_share,
            h.describe(names)
        )));
    }
    Ok(Inferred { classes, histogram: h, rule: *rule })
}

/// Precision and recall of the inferred classes against the true ones (the protocol's check).
pub fn scores(inferred: &[usize], truth: &[usize]) -> (f64, f64) {
    let hit = inferred.iter().filter(|c| truth.contains(c)).count() as f64;
    let p = if inferred.is_empty() { 0.0 } else { hit / inferred.len() as f64 };
    let r = if truth.is_empty() { 0.0 } else { hit / truth.len() as f64 };
    (p, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits that make class `c` the top with softmax probability about `p` over `k` classes.
    fn confident(c: usize, k: usize, p: f64) -> Vec<f32> {
        let rest = (1.0 - p) / (k - 1) as f64;
        (0..k).map(|i| if i == c { p.ln() as f32 } else { rest.ln() as f32 }).collect()
    }

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("class{i}")).collect()
    }

    #[test]
    fn the_classes_holding_a_share_of_the_confident_predictions_are_seen() {
        let k = 10;
        let mut logits = Vec::new();
        // 45 confident cats (3), 45 confident dogs (5), 3 confident frogs (6: 3.2%, under 5%),
        // 20 unsure horses (7).
        for (c, count, p) in [(3, 45, 0.9), (5, 45, 0.8), (6, 3, 0.9), (7, 20, 0.3)] {
            for _ in 0..count {
                logits.extend(confident(c, k, p));
            }
        }
        let n = logits.len() / k;
        let r = infer(&logits, n, k, &SubsetRule::default(), &names(k)).unwrap();
        assert_eq!(r.classes, vec![3, 5]);
        assert_eq!(r.histogram.predicted[7], 20);
        assert_eq!(r.histogram.confident[7], 0);
        assert_eq!(r.histogram.confident.iter().sum::<usize>(), 93);
        // Looser rules take the frog, then the horse.
        let loose = SubsetRule { min_confidence: 0.5, min_share: 0.02 };
        assert_eq!(infer(&logits, n, k, &loose, &names(k)).unwrap().classes, vec![3, 5, 6]);
        let unsure = SubsetRule { min_confidence: 0.2, min_share: 0.02 };
        assert_eq!(infer(&logits, n, k, &unsure, &names(k)).unwrap().classes, vec![3, 5, 6, 7]);
        assert_eq!(scores(&[3, 5, 6], &[3, 5]), (2.0 / 3.0, 1.0));
        assert_eq!(scores(&[3], &[3, 5]), (1.0, 0.5));
    }

    #[test]
    fn no_subset_stops_with_the_histogram() {
        let k = 4;
        // Unsure about everything.
        let logits: Vec<f32> = (0..8).flat_map(|i| confident(i % k, k, 0.3)).collect();
        let e = infer(&logits, 8, k, &SubsetRule::default(), &names(k)).unwrap_err().to_string();
        assert!(e.contains("confident") && e.contains("about no class") && e.contains("class2"), "{e}");
        // Confident about every class alike.
        let logits: Vec<f32> = (0..8).flat_map(|i| confident(i % k, k, 0.9)).collect();
        let e = infer(&logits, 8, k, &SubsetRule::default(), &names(k)).unwrap_err().to_string();
        assert!(
            e.contains("every one of its 4 classes") && e.contains("8 images, 8 confident") && e.contains("class3"),
            "{e}"
        );
        // Bad input is named.
        let e = infer(&[0.0, f32::NAN], 1, 2, &SubsetRule::default(), &names(2)).unwrap_err().to_string();
        assert!(e.contains("logit 1 of image 0"), "{e}");
        assert!(
            infer(&[], 0, 2, &SubsetRule::default(), &names(2)).unwrap_err().to_string().contains("no local images")
        );
        let bad = SubsetRule { min_confidence: 1.5, min_share: 0.05 };
        assert!(infer(&[0.0, 1.0], 1, 2, &bad, &names(2)).unwrap_err().to_string().contains("min_confidence"));
    }
}
