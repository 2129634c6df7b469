//! Datasets for training and evaluation: the in-memory [`Dataset`] (u8 images, N x C x H x W),
//! its readers (CIFAR-10/100 binary, torchvision ImageFolder as a folder or a `.tar.gz`, with a
//! decode cache), class subsets, the per-class train/validation split, and the batch [`Loader`]
//! with CIFAR-style augmentation.

mod cache;
mod cifar;
mod export;
pub mod fit;
mod folder;
mod idx;
mod loader;
mod pixels;
mod source;
mod subset;

use std::fmt;

/// Largest image side (height or width) accepted from any file: encoded images, cache files.
pub(crate) const MAX_IMAGE_SIDE: u32 = 4096;

pub use crate::ir::Normalize;
pub use cifar::{
    CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_COARSE_CLASSES, CIFAR100_FINE_TO_COARSE, cifar10_from_bytes,
    cifar100_from_bytes,
};
pub use export::{write_cifar10_binary, write_npy};
pub use folder::{FLAT_TEST_SHARE, archive_from_bytes, flat_test_members, image_from_bytes};
pub use idx::{FASHION_MNIST_CLASSES, from_bytes as idx_from_bytes};
pub use loader::{Augment, Batch, Loader, LoaderConfig};
pub use pixels::Pixels;
pub use source::{Source, Split, cache_dir, load_unlabeled, locate};
pub use subset::{PROTOCOL_TRAIN_FRACTION, random_classes, resolve_subset, train_val_split};

/// Images with their labels, all of one shape. `images` holds N images of C x H x W bytes each,
/// channel-major (the order of the CIFAR binary files and of torchvision's `ToTensor`), in memory
/// or memory-mapped from the decode cache (see [`Pixels`]).
#[derive(Clone)]
pub struct Dataset {
    pub images: Pixels,
    /// Index into `classes`, one per image.
    pub labels: Vec<u16>,
    /// Index into `coarse_classes`, one per image (CIFAR-100 superclasses).
    pub coarse_labels: Option<Vec<u16>>,
    pub classes: Vec<String>,
    pub coarse_classes: Option<Vec<String>>,
    /// C, H, W.
    pub shape: [usize; 3],
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: C x H x W.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// The C x H x W bytes of image `i`. Panics if `i` is out of range.
    pub fn image(&self, i: usize) -> &[u8] {
        self.images.image(i, self.image_size())
    }

    /// All images in order, N x C x H x W bytes (borrowed where they are stored so).
    pub fn all_images(&self) -> std::borrow::Cow<'_, [u8]> {
        self.images.contiguous(self.len(), self.image_size())
    }

    /// The same dataset with its images copied into memory (a mapped one then no longer reads
    /// its cache file).
    pub fn in_memory(&self) -> Dataset {
        Dataset { images: self.all_images().into_owned().into(), ..self.clone() }
    }

    /// The chosen images, in the order given, with the same class lists: a view of memory-mapped
    /// images, a copy of images in memory. Panics if an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: self.images.select(indices, self.image_size()),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            coarse_labels: self.coarse_labels.as_ref().map(|c| indices.iter().map(|&i| c[i]).collect()),
            classes: self.classes.clone(),
            coarse_classes: self.coarse_classes.clone(),
            shape: self.shape,
        }
    }

    /// Per-channel mean and population standard deviation of pixel / 255 over all images (the
    /// values for [`Normalize`]), one of each per channel; an empty dataset gives zeros.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [channels, h, w] = self.shape;
        let plane = h * w;
        let mut histogram = vec![[0u64; 256]; channels];
        if plane > 0 {
            for i in 0..self.len() {
                for (c, pixels) in self.image(i).chunks_exact(plane).enumerate() {
                    for &p in pixels {
                        histogram[c][p as usize] += 1;
                    }
                }
            }
        }
        let count = (self.len() * plane) as f64;
        let (mut mean, mut std) = (vec![0f32; channels], vec![0f32; channels]);
        if count == 0.0 {
            return (mean, std);
        }
        for (c, hist) in histogram.iter().enumerate() {
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for (v, &n) in hist.iter().enumerate() {
                let x = v as f64 / 255.0;
                sum += x * n as f64;
                sum_sq += x * x * n as f64;
            }
            let m = sum / count;
            mean[c] = m as f32;
            std[c] = (sum_sq / count - m * m).max(0.0).sqrt() as f32;
        }
        (mean, std)
    }
}

/// Equal labels, classes, shape and pixels, wherever the pixels are stored.
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.labels == other.labels
            && self.coarse_labels == other.coarse_labels
            && self.classes == other.classes
            && self.coarse_classes == other.coarse_classes
            && self.shape == other.shape
            && (0..self.len()).all(|i| self.image(i) == other.image(i))
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("mapped", &self.images.is_mapped())
            .field("classes", &self.classes.len())
            .field("coarse_classes", &self.coarse_classes.as_ref().map(Vec::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three 3x1x2 images; image i has pixel values that tell it apart.
    fn tiny() -> Dataset {
        let images: Vec<u8> = (0..3u8).flat_map(|i| [i, i, 10 + i, 10 + i, 20 + i, 20 + i]).collect();
        Dataset {
            images: images.into(),
            labels: vec![0, 1, 0],
            coarse_labels: None,
            classes: vec!["a".into(), "b".into()],
            coarse_classes: None,
            shape: [3, 1, 2],
        }
    }

    #[test]
    fn select_copies_rows_in_order() {
        let ds = tiny();
        let s = ds.select(&[2, 0]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.labels, vec![0, 0]);
        assert_eq!(s.image(0), ds.image(2));
        assert_eq!(s.image(1), ds.image(0));
        assert_eq!(s.classes, ds.classes);
    }

    #[test]
    fn channel_stats_match_direct_computation() {
        let ds = tiny();
        let (mean, std) = ds.channel_stats();
        for c in 0..3 {
            let xs: Vec<f64> =
                (0..3).flat_map(|i| ds.image(i)[c * 2..c * 2 + 2].to_vec()).map(|p| p as f64 / 255.0).collect();
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let s = (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt();
            assert!((mean[c] as f64 - m).abs() < 1e-6, "mean {c}");
            assert!((std[c] as f64 - s).abs() < 1e-6, "std {c}");
        }
    }
}
