//! Class subsets (by class or CIFAR-100 superclass name, or drawn at random) and the protocol's
//! per-class train/validation split.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Dataset;
use crate::error::{Error, Result};

/// The class indices named by `names`, sorted and without duplicates. A name is a class name or,
/// when the dataset has coarse classes, a superclass name standing for all its fine classes (those
/// that images labelled with the superclass have).
pub fn resolve_subset(ds: &Dataset, names: &[String]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for name in names {
        if let Some(class) = ds.classes.iter().position(|c| c == name) {
            out.push(class);
            continue;
        }
        let coarse = ds.coarse_classes.as_ref().and_then(|cc| cc.iter().position(|c| c == name));
        match (coarse, &ds.coarse_labels) {
            (Some(coarse), Some(coarse_labels)) => {
                let before = out.len();
                let fine = ds.labels.iter().zip(coarse_labels).filter(|&(_, &c)| usize::from(c) == coarse);
                out.extend(fine.map(|(&f, _)| usize::from(f)));
                if out.len() == before {
                    return Err(Error::Data(format!("superclass `{name}` has no images here")));
                }
            }
            _ => return Err(unknown_class(ds, name)),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn unknown_class(ds: &Dataset, name: &str) -> Error {
    /// Up to this many classes are all listed; more are abbreviated to the first few.
    const LIST_ALL: usize = 20;
    let list = |names: &[String], few: usize| {
        let shown = if names.len() <= LIST_ALL { names.len() } else { few };
        let mut out = names[..shown].join(", ");
        if shown < names.len() {
            out.push_str(&format!(", ... ({} in all)", names.len()));
        }
        out
    };
    let mut msg = format!("unknown class `{name}`; the classes are {}", list(&ds.classes, 8));
    if let Some(coarse) = &ds.coarse_classes {
        msg.push_str(&format!("; the superclasses are {}", list(coarse, 4)));
    }
    Error::Data(msg)
}

impl Dataset {
    /// The images whose label is one of `classes`, in order. Labels are kept as they are.
    /// Panics if a class index is out of range.
    pub fn filter_classes(&self, classes: &[usize]) -> Dataset {
        let mut keep = vec![false; self.classes.len()];
        for &c in classes {
            keep[c] = true;
        }
        let indices: Vec<usize> = (0..self.len()).filter(|&i| keep[usize::from(self.labels[i])]).collect();
        self.select(&indices)
    }
}

/// The protocol's share of each class's training images that trains (the rest validates).
pub const PROTOCOL_TRAIN_FRACTION: f64 = 0.8;

/// `k` of the classes `0..n_classes` (all if `k >= n_classes`), drawn by `seed`, sorted.
pub fn random_classes(n_classes: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut classes = rand::seq::index::sample(&mut rng, n_classes, k.min(n_classes)).into_vec();
    classes.sort_unstable();
    classes
}

/// Splits per class: of each class's images, in dataset order, the first
/// floor(count x `train_fraction`) go to train and the rest to validation.
/// Panics unless `train_fraction` is in [0, 1].
pub fn train_val_split(ds: &Dataset, train_fraction: f64) -> (Dataset, Dataset) {
    assert!((0.0..=1.0).contains(&train_fraction), "train_fraction {train_fraction} is not in [0, 1]");
    let mut counts = vec![0usize; ds.classes.len()];
    for &l in &ds.labels {
        counts[usize::from(l)] += 1;
    }
    // The epsilon keeps e.g. 100 x 0.29 = 28.999... at 29.
    let quota: Vec<usize> = counts.iter().map(|&n| (n as f64 * train_fraction + 1e-9).floor() as usize).collect();
    let mut seen = vec![0usize; ds.classes.len()];
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, &l) in ds.labels.iter().enumerate() {
        let l = usize::from(l);
        if seen[l] < quota[l] { &mut train } else { &mut val }.push(i);
        seen[l] += 1;
    }
    (ds.select(&train), ds.select(&val))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `labels.len()` 3x1x1 images; image i has pixel values i % 256.
    fn labelled(labels: Vec<u16>, n_classes: usize) -> Dataset {
        Dataset {
            images: (0..labels.len()).flat_map(|i| [i as u8; 3]).collect::<Vec<u8>>().into(),
            labels,
            coarse_labels: None,
            classes: (0..n_classes).map(|c| format!("c{c}")).collect(),
            coarse_classes: None,
            shape: [3, 1, 1],
        }
    }

    #[test]
    fn split_is_exact_per_class() {
        // Class 0: 10 images, class 1: 7, class 2: 1, class 3: 100, interleaved.
        let mut labels = Vec::new();
        for i in 0..100 {
            labels.push(3);
            if i < 10 {
                labels.push(0);
            }
            if i < 7 {
                labels.push(1);
            }
            if i == 5 {
                labels.push(2);
            }
        }
        let ds = labelled(labels.clone(), 4);
        let (train, val) = train_val_split(&ds, 0.8);
        for (class, expect) in [(0, 8), (1, 5), (2, 0), (3, 80)] {
            assert_eq!(train.labels.iter().filter(|&&l| l == class).count(), expect, "class {class}");
        }
        assert_eq!(train.len() + val.len(), ds.len());
        // Train holds the first images of each class, in order.
        let firsts: Vec<u8> = (0..ds.len()).filter(|&i| labels[i] == 0).take(8).map(|i| i as u8).collect();
        let train0: Vec<u8> = (0..train.len()).filter(|&i| train.labels[i] == 0).map(|i| train.image(i)[0]).collect();
        assert_eq!(train0, firsts);
        let (train, _) = train_val_split(&labelled(vec![0; 100], 1), 0.29);
        assert_eq!(train.len(), 29);
    }

    #[test]
    fn filter_keeps_labels_and_order() {
        let ds = labelled(vec![0, 2, 1, 2, 0], 3);
        let f = ds.filter_classes(&[2, 0]);
        assert_eq!(f.labels, [0, 2, 2, 0]);
        assert_eq!(&*f.all_images(), [0, 0, 0, 1, 1, 1, 3, 3, 3, 4, 4, 4]);
        assert_eq!(f.classes.len(), 3);
    }

    #[test]
    fn resolve_names_and_report_unknown_ones() {
        let ds = labelled(vec![0, 1, 2], 3);
        assert_eq!(resolve_subset(&ds, &["c2".into(), "c0".into(), "c2".into()]).unwrap(), [0, 2]);
        let err = resolve_subset(&ds, &["c9".into()]).unwrap_err().to_string();
        assert!(err.contains("c9") && err.contains("c0, c1, c2"), "{err}");
    }

    #[test]
    fn random_classes_are_seeded() {
        let a = random_classes(100, 10, 1);
        assert_eq!(a, random_classes(100, 10, 1));
        assert_ne!(a, random_classes(100, 10, 2));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[9] < 100);
        assert_eq!(random_classes(3, 5, 0), [0, 1, 2]);
    }
}
