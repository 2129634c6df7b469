//! Writes a dataset in the official CIFAR-10 binary format, or any split of any size as NumPy
//! arrays, so that another tool (PyTorch, NumPy, onnxruntime) can read exactly the pixels that
//! edgeprune reads, whatever the source layout was (e.g. JPEGs that two decoders would decode, or
//! two libraries would resize, slightly differently).

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

/// A NumPy `.npy` file (format 1.0) of `dims` holding `data`, `descr` its dtype (`|u1`, `<i8`).
fn npy(descr: &str, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", shape[0]) } else { format!("({})", shape.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `ds` into `dir` as `images.npy` (uint8, N x C x H x W, the pixels edgeprune feeds the
/// network before normalising), `labels.npy` (int64, indices into the class list) and
/// `classes.txt` (one class name per line).
pub fn write_npy(ds: &Dataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let [c, h, w] = ds.shape;
    write_atomic(&dir.join("images.npy"), &npy("|u1", &[ds.len(), c, h, w], &ds.all_images()))?;
    let labels: Vec<u8> = ds.labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
    write_atomic(&dir.join("labels.npy"), &npy("<i8", &[ds.len()], &labels))?;
    let names: String = ds.classes.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&dir.join("classes.txt"), names.as_bytes())
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
            (back.all_images().to_vec(), back.labels, back.classes),
            (train.all_images().to_vec(), train.labels.clone(), train.classes.clone())
        );
        assert_eq!(src.load(Split::Test).unwrap().all_images(), test.all_images());
        let mut odd = ds(2);
        odd.classes.pop();
        assert!(write_cifar10_binary(&odd, &test, dir.path()).unwrap_err().to_string().contains("10"));
    }

    #[test]
    fn npy_files_have_numpy_headers() {
        let ds = Dataset {
            images: (0..2 * 3 * 4 * 5).map(|i| i as u8).collect(),
            labels: vec![1, 0],
            coarse_labels: None,
            classes: vec!["a".into(), "b".into()],
            coarse_classes: None,
            shape: [3, 4, 5],
        };
        let dir = tempfile::tempdir().unwrap();
        write_npy(&ds, dir.path()).unwrap();
        let img = std::fs::read(dir.path().join("images.npy")).unwrap();
        let len = u16::from_le_bytes([img[8], img[9]]) as usize;
        assert_eq!(&img[..8], b"\x93NUMPY\x01\x00");
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&img[10..10 + len]).unwrap();
        assert!(header.contains("'descr': '|u1'") && header.contains("'shape': (2, 3, 4, 5)"), "{header}");
        assert_eq!(&img[10 + len..], &*ds.all_images());
        let lab = std::fs::read(dir.path().join("labels.npy")).unwrap();
        let len = u16::from_le_bytes([lab[8], lab[9]]) as usize;
        assert!(std::str::from_utf8(&lab[10..10 + len]).unwrap().contains("'shape': (2,)"));
        assert_eq!(&lab[10 + len..], [1i64.to_le_bytes(), 0i64.to_le_bytes()].concat().as_slice());
    }
}
