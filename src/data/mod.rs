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
pub use source::{Source, Split, cache_dir, locate};
pub use subset::{PROTOCOL_TRAIN_FRACTION, random_classes, resolve_subset, train_val_split};

/// Images with their labels, all of one shape. `images` holds N images of C x H x W bytes each,
/// channel-major (the order of the CIFAR binary files and of torchvision's `ToTensor`).
#[derive(Clone, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
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
        let size = self.image_size();
        &self.images[i * size..(i + 1) * size]
    }

    /// A copy of the chosen images, in the order given, with the same class lists.
    /// Panics if an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_size());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
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
            for image in self.images.chunks_exact(channels * plane) {
                for (c, pixels) in image.chunks_exact(plane).enumerate() {
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

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("shape", &self.shape)
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
        let images = (0..3u8).flat_map(|i| [i, i, 10 + i, 10 + i, 20 + i, 20 + i]).collect();
        Dataset {
            images,
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
