//! Batches of normalised f32 images for one epoch, optionally shuffled and augmented like
//! torchvision's `RandomCrop(size, padding)` + `RandomHorizontalFlip()`. The order and the
//! augmentation are a pure function of (seed, epoch), so an epoch can be repeated or resumed
//! exactly. Batches are prepared on one background thread, a few ahead of the consumer.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Dataset, Normalize};

/// Batches prepared ahead of the consumer.
const PREFETCH: usize = 3;

/// Training augmentation. When the stored images have the size the loader gives out, as
/// torchvision's CIFAR recipe: pad by `crop_padding` zero pixels on each side and crop back to the
/// image size at a random offset. When they are larger (images fitted for a network's input, see
/// `data::fit`), as its ImageNet recipe: `RandomResizedCrop(size, scale=(min_scale, 1),
/// ratio=(3/4, 4/3))`. Then a left-right flip with probability 1/2 if `hflip`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    pub crop_padding: usize,
    pub hflip: bool,
    pub min_scale: f64,
}

impl Default for Augment {
    /// `RandomCrop(32, padding=4)` (or `RandomResizedCrop(size)`) and `RandomHorizontalFlip()`.
    fn default() -> Self {
        Augment { crop_padding: 4, hflip: true, min_scale: 0.08 }
    }
}

/// A batch of n images, n x C x H x W normalised values, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How a [`Loader`] draws an epoch: the batch size, whether it shuffles and augments, the input
/// normalisation (one mean and std per image channel), the (seed, epoch) every random draw
/// is a function of, and the height and width of the images it gives out (`size`; None: the
/// stored size). Stored images larger than `size` are center-cropped to it without augmentation,
/// and random-resized-cropped to it with.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub augment: Option<Augment>,
    pub norm: Normalize,
    pub seed: u64,
    pub epoch: u64,
    pub size: Option<[usize; 2]>,
}

/// The batches of one epoch; the last one may be smaller. Dropping the loader early stops its
/// thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
    remaining: usize,
}

impl Loader {
    /// Panics if `batch_size` is 0 or `norm` does not have one mean and std per image channel
    /// (callers check a model's normalisation against the data first: [`Normalize::check`]).
    pub fn new(ds: Arc<Dataset>, cfg: LoaderConfig) -> Loader {
        Self::starting_at(ds, cfg, 0)
    }

    /// The same epoch as [`Loader::new`], from batch `first` on: the batches before it are
    /// skipped without being prepared, their random draws replayed, so that the rest are exactly
    /// those of the whole epoch (resuming an epoch that a checkpoint cut).
    pub fn starting_at(ds: Arc<Dataset>, cfg: LoaderConfig, first: usize) -> Loader {
        let LoaderConfig { batch_size, shuffle, augment, norm, seed, epoch, size } = cfg;
        assert!(batch_size > 0, "batch size must be positive");
        assert!(
            norm.mean.len() == ds.shape[0] && norm.std.len() == ds.shape[0],
            "the normalisation has {} means and {} stds for {}-channel images",
            norm.mean.len(),
            norm.std.len(),
            ds.shape[0]
        );
        let [_, h, w] = ds.shape;
        let out = size.unwrap_or([h, w]);
        assert!(
            out[0] > 0 && out[1] > 0 && out[0] <= h && out[1] <= w,
            "images of {h}x{w} cannot give {}x{} without upscaling (fit them to the network first)",
            out[0],
            out[1]
        );
        let batches = ds.len().div_ceil(batch_size);
        let first = first.min(batches);
        let (tx, rx) = sync_channel(PREFETCH);
        let worker = std::thread::spawn(move || {
            let mut rng = epoch_rng(seed, epoch);
            let mut order: Vec<usize> = (0..ds.len()).collect();
            if shuffle {
                order.shuffle(&mut rng);
            }
            let skipped = (first * batch_size).min(order.len());
            for _ in &order[..skipped] {
                if let Some(a) = augment {
                    draw_view(a, [h, w], out, &mut rng);
                }
            }
            produce(&ds, &order[skipped..], batch_size, augment, out, &lookup(&norm), &mut rng, &tx);
        });
        Loader { rx: Some(rx), worker: Some(worker), batches, remaining: batches - first }
    }

    /// The number of batches in the epoch.
    pub fn len_batches(&self) -> usize {
        self.batches
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                // The worker has finished; pass on its panic, if any.
                self.rx = None;
                if let Some(worker) = self.worker.take()
                    && let Err(panic) = worker.join()
                {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, and the worker return.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The random generator of an epoch: ChaCha8 seeded with both numbers.
fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// The normalised value of each byte, per channel.
fn lookup(norm: &Normalize) -> Vec<[f32; 256]> {
    (0..norm.mean.len()).map(|c| std::array::from_fn(|v| (v as f32 / 255.0 - norm.mean[c]) / norm.std[c])).collect()
}

/// Sends the batches of `order` until done or the receiver is gone.
#[allow(clippy::too_many_arguments)]
fn produce(
    ds: &Dataset,
    order: &[usize],
    batch_size: usize,
    augment: Option<Augment>,
    out_hw: [usize; 2],
    lut: &[[f32; 256]],
    rng: &mut ChaCha8Rng,
    tx: &SyncSender<Batch>,
) {
    let [channels, h, w] = ds.shape;
    let size = channels * out_hw[0] * out_hw[1];
    for chunk in order.chunks(batch_size) {
        let mut images = vec![0f32; chunk.len() * size];
        for (&i, out) in chunk.iter().zip(images.chunks_exact_mut(size)) {
            let view = match augment {
                Some(a) => draw_view(a, [h, w], out_hw, rng),
                None => center(h, w, out_hw),
            };
            match view {
                View::Pad(p) => transform(ds.image(i), ds.shape, p, lut, out),
                View::Crop(c) => crop_resize(ds.image(i), ds.shape, c, out_hw, lut, out),
            }
        }
        let labels = chunk.iter().map(|&i| i64::from(ds.labels[i])).collect();
        if tx.send(Batch { images, labels }).is_err() {
            return;
        }
    }
}

/// The view of an image without augmentation: the whole image, or its center `out_hw`.
fn center(h: usize, w: usize, out_hw: [usize; 2]) -> View {
    if [h, w] == out_hw {
        View::Pad(Padded { pad: 0, dy: 0, dx: 0, flip: false })
    } else {
        let [oh, ow] = out_hw;
        // torchvision's CenterCrop: the offset rounds to the nearest pixel, ties to even (Python's round).
        let (y, x) =
            (((h - oh) as f64 / 2.0).round_ties_even() as usize, ((w - ow) as f64 / 2.0).round_ties_even() as usize);
        View::Crop(Box2 { y: y as f64, x: x as f64, h: oh as f64, w: ow as f64, flip: false })
    }
}

/// The random view of one image (stored `hw`, given out as `out_hw`): a padded crop when they
/// are the same size, a random resized crop when the stored image is larger.
fn draw_view(a: Augment, hw: [usize; 2], out_hw: [usize; 2], rng: &mut ChaCha8Rng) -> View {
    if hw == out_hw {
        return View::Pad(Padded {
            pad: a.crop_padding,
            dy: rng.random_range(0..=2 * a.crop_padding),
            dx: rng.random_range(0..=2 * a.crop_padding),
            flip: a.hflip && rng.random_bool(0.5),
        });
    }
    let mut b = resized_crop_box(hw, a.min_scale, rng);
    b.flip = a.hflip && rng.random_bool(0.5);
    View::Crop(b)
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten tries at a box of a random share
/// (`min_scale`..1) of the area and a log-uniform aspect ratio in [3/4, 4/3] that fits; else the
/// largest centered box of a ratio within those bounds.
fn resized_crop_box([h, w]: [usize; 2], min_scale: f64, rng: &mut ChaCha8Rng) -> Box2 {
    let area = (h * w) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(min_scale.min(1.0)..=1.0);
        let ratio = rng.random_range(lr0..=lr1).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let y = rng.random_range(0..=h - ch);
            let x = rng.random_range(0..=w - cw);
            return Box2 { y: y as f64, x: x as f64, h: ch as f64, w: cw as f64, flip: false };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < 3.0 / 4.0 {
        (w, ((w as f64) / (3.0 / 4.0)).round() as usize)
    } else if in_ratio > 4.0 / 3.0 {
        (((h as f64) * (4.0 / 3.0)).round() as usize, h)
    } else {
        (w, h)
    };
    let (ch, cw) = (ch.min(h), cw.min(w));
    Box2 { y: ((h - ch) / 2) as f64, x: ((w - cw) / 2) as f64, h: ch as f64, w: cw as f64, flip: false }
}

/// How one image is given out.
#[derive(Clone, Copy, Debug)]
enum View {
    /// At its stored size, padded and shifted.
    Pad(Padded),
    /// A box of it, resized to the output size.
    Crop(Box2),
}

/// A crop of the image padded by `pad` zeros, at offset (`dy`, `dx`) in the padded image, flipped
/// left-right after cropping if `flip`.
#[derive(Clone, Copy, Debug)]
struct Padded {
    pad: usize,
    dy: usize,
    dx: usize,
    flip: bool,
}

/// A box of the stored image (top-left `y`, `x`, size `h` x `w` in pixels), flipped left-right
/// after resizing if `flip`.
#[derive(Clone, Copy, Debug)]
struct Box2 {
    y: f64,
    x: f64,
    h: f64,
    w: f64,
    flip: bool,
}

/// Writes the normalised `view` of the C x H x W image `src` to `out`.
fn transform(src: &[u8], [channels, h, w]: [usize; 3], view: Padded, lut: &[[f32; 256]], out: &mut [f32]) {
    let plane = h * w;
    for c in 0..channels {
        let (src, out, lut) = (&src[c * plane..(c + 1) * plane], &mut out[c * plane..(c + 1) * plane], &lut[c]);
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            // Source row y + dy - pad, if inside the image.
            let sy = (y + view.dy).checked_sub(view.pad).filter(|&sy| sy < h);
            for (x, value) in row.iter_mut().enumerate() {
                let cx = if view.flip { w - 1 - x } else { x };
                let sx = (cx + view.dx).checked_sub(view.pad).filter(|&sx| sx < w);
                *value = match (sy, sx) {
                    (Some(sy), Some(sx)) => lut[src[sy * w + sx] as usize],
                    _ => lut[0],
                };
            }
        }
    }
}

/// Source sample positions of an output axis of `n` pixels over a box of `len` pixels from
/// `start`, bilinear with half-pixel centers (as `F.interpolate(..., align_corners=False)`):
/// for each output pixel, the two source indices and the weight of the second.
fn taps(start: f64, len: f64, n: usize, limit: usize) -> Vec<(usize, usize, f32)> {
    let scale = len / n as f64;
    (0..n)
        .map(|o| {
            let s = (start + (o as f64 + 0.5) * scale - 0.5).clamp(0.0, (limit - 1) as f64);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(limit - 1);
            (i0, i1, (s - i0 as f64) as f32)
        })
        .collect()
}

/// Writes the normalised box `b` of the C x H x W image `src`, resized bilinearly to `out_hw`,
/// to `out`. A box of exactly the output size at whole-pixel offsets is a plain crop.
fn crop_resize(
    src: &[u8],
    [channels, h, w]: [usize; 3],
    b: Box2,
    out_hw: [usize; 2],
    lut: &[[f32; 256]],
    out: &mut [f32],
) {
    let [oh, ow] = out_hw;
    let ys = taps(b.y, b.h, oh, h);
    let xs = taps(b.x, b.w, ow, w);
    let plane = h * w;
    for c in 0..channels {
        let (src, lut) = (&src[c * plane..(c + 1) * plane], &lut[c]);
        let out = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for (row, &(y0, y1, fy)) in out.chunks_exact_mut(ow).zip(&ys) {
            for (x, value) in row.iter_mut().enumerate() {
                let (x0, x1, fx) = xs[if b.flip { ow - 1 - x } else { x }];
                let at = |y: usize, x: usize| lut[src[y * w + x] as usize];
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                *value = top + (bottom - top) * fy;
            }
        }
    }
}

#[cfg(test)]
mod tests;
