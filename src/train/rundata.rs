//! What a run trains and is measured on: the dataset's splits restricted to a class subset, the
//! normalisation, and the model a run starts from.

use std::path::Path;

use crate::data::{self, Dataset, Normalize, Split};
use crate::error::{Error, Result};
use crate::formats;
use crate::ir::{self, Model};

/// The data of a run: the training images (augmented), the validation images held out of the
/// training split, and the test images, all restricted to the chosen classes.
pub struct RunData {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Dataset,
    pub classes: Vec<usize>,
    pub class_names: Vec<String>,
    /// Classes of the whole dataset (the width of a classifier head for it).
    pub num_dataset_classes: usize,
    /// Normalisation computed on the whole training split (all classes).
    pub stats: Normalize,
}

impl RunData {
    pub fn load(data: Option<&Path>, subset: &[String], train_fraction: f64) -> Result<Self> {
        let path = data::locate(data)?;
        let src = data::Source::detect(&path)?;
        let train_all = src.load(Split::Train)?;
        let test_all = src.load(Split::Test)?;
        let (mean, std) = train_all.channel_stats();
        for (c, (m, s)) in mean.iter().zip(&std).enumerate() {
            if !(*s > 0.0 && s.is_finite()) {
                return Err(Error::Data(format!(
                    "{}: channel {c} of the training images has standard deviation {s} (every pixel {:.1} of 255), \
                     so inputs cannot be normalised by it; a dataset needs variation in every channel",
                    path.display(),
                    m * 255.0
                )));
            }
        }
        let classes = if subset.is_empty() {
            (0..train_all.classes.len()).collect()
        } else {
            data::resolve_subset(&train_all, subset)?
        };
        let train = train_all.filter_classes(&classes);
        let test = test_all.filter_classes(&classes);
        let (train, val) = if train_fraction < 1.0 {
            let (t, v) = data::train_val_split(&train, train_fraction);
            (t, Some(v))
        } else {
            (train, None)
        };
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data(format!("the subset {subset:?} leaves no training or test images")));
        }
        Ok(RunData {
            class_names: classes.iter().map(|&c| train_all.classes[c].clone()).collect(),
            num_dataset_classes: train_all.classes.len(),
            train,
            val,
            test,
            classes,
            stats: Normalize { mean, std },
        })
    }
}

/// Normalisation of a model: its own if it records one, else the data's (recorded into it).
pub fn model_normalize(model: &mut Model, data_stats: &Normalize) -> Normalize {
    match &model.graph.normalize {
        Some(n) if n.mean.len() == 3 => {
            Normalize { mean: [n.mean[0], n.mean[1], n.mean[2]], std: [n.std[0], n.std[1], n.std[2]] }
        }
        _ => {
            model.graph.normalize =
                Some(ir::Normalize { mean: data_stats.mean.to_vec(), std: data_stats.std.to_vec() });
            *data_stats
        }
    }
}

/// Loads a model: a zoo name builds a freshly initialised network, anything else is a path.
pub fn load_or_build(spec: &str, num_classes: usize, seed: u64) -> Result<Model> {
    if (crate::zoo::NETWORKS.contains(&spec) || crate::zoo::structures::STRUCTURES.contains(&spec))
        && !Path::new(spec).exists()
    {
        Model::init(crate::zoo::build(spec, num_classes)?, seed)
    } else {
        formats::load_model(&super::RunDir::model_path(Path::new(spec)))
    }
}
