//! What a run trains and is measured on: the dataset's splits restricted to a class subset, the
//! normalisation, and the model a run starts from.

use std::path::Path;

use crate::data::fit::Target;
use crate::data::{self, Dataset, Normalize, Split};
use crate::error::{Error, Result};
use crate::formats;
use crate::ir::Model;

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
    /// The data at `data` (see [`data::locate`]) for a network taking `input` = [C, H, W]:
    /// images fitted to its channels and size (see [`data::fit`]). Training images are kept at
    /// the stored size (for random resized crops); validation and test images are their center
    /// C x H x W, what evaluation sees.
    pub fn load(data: Option<&Path>, subset: &[String], train_fraction: f64, input: &[usize]) -> Result<Self> {
        let path = data::locate(data)?;
        let src = data::Source::detect(&path)?;
        let target = Target::of_input(input)?;
        if let data::Source::ImageFolderFlat(root) = &src {
            eprintln!(
                "data: {} holds class folders but no train/ and test/: each class is split {:.0}% train / {:.0}% test \
                 (a seeded choice, the same on every run)",
                root.display(),
                100.0 * (1.0 - data::FLAT_TEST_SHARE),
                100.0 * data::FLAT_TEST_SHARE
            );
        }
        let train_all = src.load_fitted(Split::Train, target)?;
        let test_all = src.load_fitted(Split::Test, target)?;
        let size = target.size.expect("a network's target has a size");
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
        let test = test_all.filter_classes(&classes).center_crop(size);
        let (train, val) = if train_fraction < 1.0 {
            let (t, v) = data::train_val_split(&train, train_fraction);
            (t, Some(v.center_crop(size)))
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

/// Whether the data at `data` has a training split (an ImageFolder may hold only `test/`).
pub fn has_train_split(data: Option<&Path>) -> Result<bool> {
    let src = data::Source::detect(&data::locate(data)?)?;
    Ok(!matches!(&src, data::Source::ImageFolder(dir) if !dir.join("train").is_dir()))
}

/// The test images (of the classes in `subset`, all if empty) of data that may have no training
/// split, fitted to a network taking `input` and center-cropped to it: for evaluation only.
pub fn load_test_only(data: Option<&Path>, subset: &[String], input: &[usize]) -> Result<Dataset> {
    let src = data::Source::detect(&data::locate(data)?)?;
    let target = Target::of_input(input)?;
    let test = src.load_fitted(Split::Test, target)?;
    let classes =
        if subset.is_empty() { (0..test.classes.len()).collect() } else { data::resolve_subset(&test, subset)? };
    Ok(test.filter_classes(&classes).center_crop(target.size.expect("a network's target has a size")))
}

/// Normalisation of a model: its own if it records one (it must have one mean and std per
/// channel of the data), else the data's, recorded into it.
pub fn model_normalize(model: &mut Model, data_stats: &Normalize) -> Result<Normalize> {
    match &model.graph.normalize {
        Some(n) => {
            n.check(data_stats.mean.len())
                .map_err(|e| Error::Data(format!("the model's normalisation does not fit the data's images: {e}")))?;
            Ok(n.clone())
        }
        None => {
            model.graph.normalize = Some(data_stats.clone());
            Ok(data_stats.clone())
        }
    }
}

/// The input shape [C, H, W] of the model `spec` names (a zoo name, a model or run folder, an
/// .onnx file), reading only its graph where the folder has one.
pub fn input_of(spec: &str) -> Result<Vec<usize>> {
    if (crate::zoo::NETWORKS.contains(&spec) || crate::zoo::structures::STRUCTURES.contains(&spec))
        && !Path::new(spec).exists()
    {
        return Ok(crate::zoo::build(spec, 10)?.input_shape()?.to_vec());
    }
    let path = super::RunDir::model_path(Path::new(spec));
    let graph_file = path.join(formats::native::GRAPH_FILE);
    if graph_file.is_file() {
        let graph = formats::native::graph_from_json(&formats::read_text(&graph_file)?, &graph_file)?;
        return Ok(graph.input_shape()?.to_vec());
    }
    Ok(formats::load_model(&path)?.graph.input_shape()?.to_vec())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_keeps_its_own_normalisation_records_the_data_s_and_refuses_a_misfit() {
        let data = Normalize { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.2, 0.2] };
        let mut m = Model::init(crate::zoo::build("resnet20", 10).unwrap(), 0).unwrap();
        assert_eq!(model_normalize(&mut m, &data).unwrap(), data);
        assert_eq!(m.graph.normalize.as_ref(), Some(&data));
        let own = Normalize { mean: vec![0.1; 3], std: vec![0.9; 3] };
        m.graph.normalize = Some(own.clone());
        assert_eq!(model_normalize(&mut m, &data).unwrap(), own);
        // A grayscale model's normalisation on RGB images is an error, not the data's statistics.
        m.graph.normalize = Some(Normalize { mean: vec![0.1], std: vec![0.9] });
        let e = model_normalize(&mut m, &data).unwrap_err().to_string();
        assert!(e.contains("does not fit the data") && e.contains("1 means and 1 stds"), "{e}");
    }
}
