//! Writes a dataset in the official CIFAR-10 binary format, so that another tool (PyTorch,
//! NumPy, onnxruntime) can read exactly the pixels that edgeprune reads, whatever the source
//! layout was (e.g. JPEGs that two decoders would decode slightly differently).

use std::path::Path;

use super::Dataset;
use super::cifar::IMAGE_BYTES;
use crate::error::{Error, Result};
use crate::formats::native::write_atomic;

/// CIFAR-10's training set comes in five files.
const TRAIN_BATCHES: usize = 5;

/// Writes `train` as `data_batch_1..5.bin` (in order, split as evenly as possible), `test` as
/// `test_batch.bin`, and the class names as `batches.meta.txt` into `dir`. Both must hold 3 x 32
/// x 32 images of the same 10 classes.
pub fn write_cifar10_binary(train: &Dataset, test: &Dataset, dir: &Path) -> Result<()> {
    for (name, ds) in [("train", train), ("test", test)] {
        if ds.shape != [3, 32, 32] {
            return Err(Error::Data(format!("the {name} images are {:?}; CIFAR-10 holds 3x32x32", ds.shape)));
        }
        if ds.classes.len() != 10 {
            return Err(Error::Data(format!("the {name} split has {} classes; CIFAR-10 holds 10", ds.classes.len())));
        }
    }
    if train.classes != test.classes {
        return Err(Error::Data("the train and test splits name different classes".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let records = |ds: &Dataset, range: std::ops::Range<usize>| -> Vec<u8> {
        let mut out = Vec::with_capacity(range.len() * (1 + IMAGE_BYTES));
        for i in range {
            out.push(ds.labels[i] as u8);
            out.extend_from_slice(ds.image(i));
        }
        out
    };
    let n = train.len();
    for b in 0..TRAIN_BATCHES {
        let range = b * n / TRAIN_BATCHES..(b + 1) * n / TRAIN_BATCHES;
        write_atomic(&dir.join(format!("data_batch_{}.bin", b + 1)), &records(train, range))?;
    }
    write_atomic(&dir.join("test_batch.bin"), &records(test, 0..test.len()))?;
    let names: String = train.classes.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&dir.join("batches.meta.txt"), names.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Source, Split};

    #[test]
    fn round_trips_through_the_cifar10_reader() {
        let ds = |n: usize| Dataset {
            images: (0..n * IMAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u16).collect(),
            coarse_labels: None,
            classes: (0..10).map(|c| format!("class{c}")).collect(),
            coarse_classes: None,
            shape: [3, 32, 32],
        };
        let (train, test) = (ds(13), ds(4));
        let dir = tempfile::tempdir().unwrap();
        write_cifar10_binary(&train, &test, dir.path()).unwrap();
        let src = Source::detect(dir.path()).unwrap();
        let back = src.load(Split::Train).unwrap();
        assert_eq!(
            (back.images, back.labels, back.classes),
            (train.images.clone(), train.labels.clone(), train.classes.clone())
        );
        assert_eq!(src.load(Split::Test).unwrap().images, test.images);
        let mut odd = ds(2);
        odd.classes.pop();
        assert!(write_cifar10_binary(&odd, &test, dir.path()).unwrap_err().to_string().contains("10"));
    }
}
