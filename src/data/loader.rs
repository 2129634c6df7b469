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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity() -> Normalize {
        Normalize { mean: vec![0.0; 3], std: vec![1.0; 3] }
    }

    /// `n` images of 3 x 4 x 4 where image i's first pixel is i % 256 and its second i / 256.
    fn numbered(n: usize) -> Arc<Dataset> {
        let mut images = Vec::new();
        for i in 0..n {
            let mut img: Vec<u8> = (0..48).map(|p| (p * 5 + i) as u8).collect();
            img[0] = (i % 256) as u8;
            img[1] = (i / 256) as u8;
            images.extend(img);
        }
        Arc::new(Dataset {
            images,
            labels: (0..n).map(|i| (i % 10) as u16).collect(),
            coarse_labels: None,
            classes: (0..10).map(|c| c.to_string()).collect(),
            coarse_classes: None,
            shape: [3, 4, 4],
        })
    }

    fn index_of(image: &[f32]) -> usize {
        (image[0] * 255.0).round() as usize + 256 * (image[1] * 255.0).round() as usize
    }

    #[test]
    fn starting_at_a_batch_gives_the_rest_of_the_same_epoch() {
        let ds = numbered(300);
        let cfg = LoaderConfig {
            batch_size: 64,
            shuffle: true,
            augment: Some(Augment::default()),
            norm: identity(),
            seed: 3,
            epoch: 2,
            size: None,
        };
        let whole: Vec<Batch> = Loader::new(ds.clone(), cfg.clone()).collect();
        for first in [0, 1, 4, 5, 9] {
            let rest = Loader::starting_at(ds.clone(), cfg.clone(), first);
            assert_eq!(rest.len(), whole.len().saturating_sub(first));
            assert_eq!(rest.collect::<Vec<_>>(), whole[first.min(whole.len())..], "from batch {first}");
        }
    }

    #[test]
    fn every_image_once_per_epoch_with_last_batch_kept() {
        let ds = numbered(300);
        for shuffle in [false, true] {
            let loader = Loader::new(
                ds.clone(),
                LoaderConfig {
                    batch_size: 64,
                    shuffle,
                    augment: None,
                    norm: identity(),
                    seed: 7,
                    epoch: 0,
                    size: None,
                },
            );
            assert_eq!(loader.len_batches(), 5);
            let batches: Vec<Batch> = loader.collect();
            let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
            assert_eq!(sizes, [64, 64, 64, 64, 44]);
            let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.images.chunks(48).map(index_of)).collect();
            let labels: Vec<i64> = batches.iter().flat_map(|b| b.labels.clone()).collect();
            for (&i, &l) in seen.iter().zip(&labels) {
                assert_eq!(l, (i % 10) as i64);
            }
            assert_eq!(seen.windows(2).all(|w| w[0] < w[1]), !shuffle);
            seen.sort_unstable();
            assert_eq!(seen, (0..300).collect::<Vec<_>>());
        }
    }

    #[test]
    fn order_and_augmentation_depend_only_on_seed_and_epoch() {
        let ds = numbered(100);
        let run = |seed, epoch| -> Vec<Batch> {
            Loader::new(
                ds.clone(),
                LoaderConfig {
                    batch_size: 32,
                    shuffle: true,
                    augment: Some(Augment::default()),
                    norm: identity(),
                    seed,
                    epoch,
                    size: None,
                },
            )
            .collect()
        };
        let a = run(1, 3);
        assert_eq!(a, run(1, 3));
        assert_ne!(a[0].labels, run(1, 4)[0].labels);
        assert_ne!(a[0].labels, run(2, 3)[0].labels);
        // Without shuffling, augmentation alone still changes with the epoch.
        let plain = |epoch| -> Vec<Batch> {
            Loader::new(
                ds.clone(),
                LoaderConfig {
                    batch_size: 32,
                    shuffle: false,
                    augment: Some(Augment::default()),
                    norm: identity(),
                    seed: 1,
                    epoch,
                    size: None,
                },
            )
            .collect()
        };
        assert_eq!(plain(0), plain(0));
        assert_ne!(plain(0), plain(1));
    }

    #[test]
    fn flips_about_half_the_images() {
        let ds = numbered(400);
        let flip = Augment { crop_padding: 0, hflip: true, min_scale: 0.08 };
        let batches: Vec<Batch> = Loader::new(
            ds.clone(),
            LoaderConfig {
                batch_size: 400,
                shuffle: false,
                augment: Some(flip),
                norm: identity(),
                seed: 5,
                epoch: 0,
                size: None,
            },
        )
        .collect();
        let flipped = (0..400).filter(|&i| batches[0].images[i * 48 + 3] == ds.image(i)[0] as f32 / 255.0).count();
        assert!((150..250).contains(&flipped), "{flipped} of 400 flipped");
    }

    #[test]
    fn normalises_per_channel_and_pads_with_zero_pixels() {
        let norm = Normalize { mean: vec![0.5, 0.25, 0.0], std: vec![0.5, 0.25, 2.0] };
        let lut = lookup(&norm);
        let src: Vec<u8> = vec![255, 0, 51, 102, 0, 0];
        let mut out = vec![0f32; 6];
        // Shifted right by one: the left column is padding.
        transform(&src, [3, 1, 2], Padded { pad: 1, dy: 1, dx: 0, flip: false }, &lut, &mut out);
        let expect = [-1.0, 1.0, -1.0, -0.2, 0.0, 0.0];
        for (o, e) in out.iter().zip(expect) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn flip_reverses_columns_and_crop_shifts() {
        // One 3 x 2 x 3 image: channel c, row y, column x holds 10c + 3y + x + 1.
        let src: Vec<u8> = (0..3).flat_map(|c| (0..6).map(move |p| (10 * c + p + 1) as u8)).collect();
        let lut = lookup(&identity());
        let view = |pad, dy, dx, flip| {
            let mut out = vec![0f32; 18];
            transform(&src, [3, 2, 3], Padded { pad, dy, dx, flip }, &lut, &mut out);
            out.iter().map(|v| (v * 255.0).round() as u8).collect::<Vec<u8>>()
        };
        assert_eq!(view(0, 0, 0, false), src);
        assert_eq!(&view(0, 0, 0, true)[..6], [3, 2, 1, 6, 5, 4]);
        // Padding 1, offset (0, 0): the image moves down and right by one, zeros come in.
        assert_eq!(&view(1, 0, 0, false)[..6], [0, 0, 0, 0, 1, 2]);
        assert_eq!(&view(1, 2, 2, false)[6..12], [15, 16, 0, 0, 0, 0]);
        assert_eq!(&view(1, 1, 2, true)[..6], [0, 3, 2, 0, 6, 5]);
    }

    /// The crop and flip done the obvious way: build the padded image, cut, reverse rows.
    fn reference(src: &[u8], [c, h, w]: [usize; 3], v: Padded) -> Vec<u8> {
        let (ph, pw) = (h + 2 * v.pad, w + 2 * v.pad);
        let mut padded = vec![0u8; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    padded[(ch * ph + y + v.pad) * pw + x + v.pad] = src[(ch * h + y) * w + x];
                }
            }
        }
        let mut out = Vec::new();
        for ch in 0..c {
            for y in 0..h {
                let mut row: Vec<u8> = (0..w).map(|x| padded[(ch * ph + y + v.dy) * pw + x + v.dx]).collect();
                if v.flip {
                    row.reverse();
                }
                out.extend(row);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn crop_and_flip_match_the_padded_reference(
            h in 1usize..6, w in 1usize..6, pad in 0usize..4, oy in 0f64..1.0, ox in 0f64..1.0, flip: bool, seed: u8,
        ) {
            let v = Padded { pad, dy: (oy * (2 * pad + 1) as f64) as usize, dx: (ox * (2 * pad + 1) as f64) as usize, flip };
            let src: Vec<u8> = (0..3 * h * w).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1).collect();
            let mut out = vec![0f32; src.len()];
            transform(&src, [3, h, w], v, &lookup(&identity()), &mut out);
            let got: Vec<u8> = out.iter().map(|x| (x * 255.0).round() as u8).collect();
            prop_assert_eq!(got, reference(&src, [3, h, w], v));
        }
    }

    #[test]
    fn dropping_a_loader_early_stops_its_thread() {
        let ds = numbered(5000);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut loader = Loader::new(
                ds,
                LoaderConfig {
                    batch_size: 1,
                    shuffle: true,
                    augment: Some(Augment::default()),
                    norm: identity(),
                    seed: 0,
                    epoch: 0,
                    size: None,
                },
            );
            assert_eq!(loader.next().map(|b| b.len()), Some(1));
            assert_eq!(loader.len(), 4999);
            drop(loader);
            done_tx.send(()).unwrap();
        });
        done_rx.recv_timeout(std::time::Duration::from_secs(10)).expect("loader drop hung");
    }

    /// `n` images of 1 x 6 x 6 whose pixel (y, x) is 10 y + x + i.
    fn ramp(n: usize) -> Arc<Dataset> {
        let images = (0..n).flat_map(|i| (0..36).map(move |p| (10 * (p / 6) + p % 6 + i) as u8)).collect();
        Arc::new(Dataset {
            images,
            labels: vec![0; n],
            coarse_labels: None,
            classes: vec!["a".into()],
            coarse_classes: None,
            shape: [1, 6, 6],
        })
    }

    fn gray_identity() -> Normalize {
        Normalize { mean: vec![0.0], std: vec![1.0] }
    }

    #[test]
    fn larger_images_are_center_cropped_without_augmentation() {
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: false,
            augment: None,
            norm: gray_identity(),
            seed: 0,
            epoch: 0,
            size: Some([4, 3]),
        };
        let b = Loader::new(ramp(2), cfg).next().unwrap();
        let px: Vec<u8> = b.images[..12].iter().map(|v| (v * 255.0).round() as u8).collect();
        // Offsets round((6 - 4) / 2) = 1 and round((6 - 3) / 2) = round(1.5) = 2 (ties to even).
        assert_eq!(px, [12, 13, 14, 22, 23, 24, 32, 33, 34, 42, 43, 44]);
    }

    #[test]
    fn random_resized_crops_are_replayable_and_stay_inside_the_image() {
        let ds = ramp(40);
        let cfg = |epoch| LoaderConfig {
            batch_size: 8,
            shuffle: true,
            augment: Some(Augment::default()),
            norm: gray_identity(),
            seed: 9,
            epoch,
            size: Some([3, 3]),
        };
        let whole: Vec<Batch> = Loader::new(ds.clone(), cfg(1)).collect();
        assert_eq!(whole.iter().map(|b| b.images.len()).sum::<usize>(), 40 * 9);
        assert_eq!(Loader::starting_at(ds.clone(), cfg(1), 2).collect::<Vec<_>>(), whole[2..]);
        assert_ne!(Loader::new(ds.clone(), cfg(2)).collect::<Vec<_>>(), whole, "another epoch, other crops");
        // Bilinear samples of a ramp stay within its range (0 ..= 55 + 39).
        for v in whole.iter().flat_map(|b| &b.images) {
            let p = v * 255.0;
            assert!((-1e-3..=94.001).contains(&p), "{p}");
        }
        // Boxes respect the scale and ratio bounds, and fit the image.
        let mut rng = epoch_rng(1, 1);
        for _ in 0..500 {
            let b = resized_crop_box([6, 6], 0.08, &mut rng);
            assert!(b.y + b.h <= 6.0 && b.x + b.w <= 6.0 && b.h >= 1.0 && b.w >= 1.0, "{b:?}");
        }
    }
}
