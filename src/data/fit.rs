//! Fitting images of any size and channel count to a network's input, as torchvision's transforms
//! do. A network takes C x H x W; images come in their own sizes, in RGB or grayscale.
//!
//! - Channels: a 1-channel network gets luma (ITU-R 601-2, as PIL's `convert("L")`; a grayscale
//!   file is read as it is), a 3-channel one RGB (a grayscale file repeated in each channel).
//! - Size: when every image of a split already has the network's H x W, images are stored as
//!   they are (and training uses the CIFAR-style padded crop). Otherwise every image is resized,
//!   keeping its aspect ratio, so that it covers `stored_size` = (H, W) / 0.875 (torchvision's
//!   224 -> 256), and center-cropped to it. Evaluation then takes the center H x W of that (what
//!   `Resize(256)` + `CenterCrop(224)` give), training a random resized crop of it.

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

use crate::error::{Error, Result};

/// The share of the resized image that evaluation's center crop keeps (torchvision's 224 / 256).
pub const EVAL_CROP_SHARE: f64 = 0.875;

/// What a split is decoded for: the network's channels and, if known, its input height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub channels: usize,
    /// None: images are kept at their own size, which must be the same for all.
    pub size: Option<[usize; 2]>,
}

impl Target {
    /// RGB at the images' own size: what a dataset is without a network to fit.
    pub const NATIVE: Target = Target { channels: 3, size: None };

    /// The target of a network taking `input` = [C, H, W] (1 or 3 channels).
    pub fn of_input(input: &[usize]) -> Result<Target> {
        match *input {
            [c @ (1 | 3), h, w] => Ok(Target { channels: c, size: Some([h, w]) }),
            [c, _, _] => Err(Error::Data(format!(
                "the network takes {c}-channel images; edgeprune reads images as 1 channel (grayscale) or 3 (RGB)"
            ))),
            _ => Err(Error::Data(format!("the network's input is {input:?}, not images [C, H, W]"))),
        }
    }

    /// A key for caches: the channels and size the images are decoded to.
    pub fn key(&self) -> u64 {
        let [h, w] = self.size.unwrap_or([0, 0]);
        (self.channels as u64) | ((h as u64) << 8) | ((w as u64) << 32)
    }
}

/// The size images are stored at for a network of input `size` when they do not all have it:
/// the input divided by [`EVAL_CROP_SHARE`], rounded down (224 -> 256, 32 -> 36, 96 -> 109).
pub fn stored_size([h, w]: [usize; 2]) -> [usize; 2] {
    let up = |x: usize| ((x as f64 / EVAL_CROP_SHARE).floor() as usize).max(x);
    [up(h), up(w)]
}

/// The stored size for images of sizes `sizes` (height, width) and a network input of `size`:
/// the images' own size if all have `size` (or, without a size, if all are alike), else
/// [`stored_size`]. An error names the first image that differs when there is no size to fit to.
pub fn choose_size(sizes: &[[usize; 2]], size: Option<[usize; 2]>) -> std::result::Result<[usize; 2], usize> {
    let first = *sizes.first().unwrap_or(&[0, 0]);
    match size {
        Some(s) if sizes.iter().all(|&x| x == s) => Ok(s),
        Some(s) => Ok(stored_size(s)),
        None => match sizes.iter().position(|&x| x != first) {
            None => Ok(first),
            Some(i) => Err(i),
        },
    }
}

/// `img` with `channels` channels (1: luma, 3: RGB), resized to cover `[h, w]` with its aspect
/// ratio kept and center-cropped to it, as C x H x W bytes appended to `out`.
pub fn fit_into(img: &DynamicImage, channels: usize, [h, w]: [usize; 2], out: &mut [u8]) {
    let (iw, ih) = img.dimensions();
    let resized;
    let img = if (ih as usize, iw as usize) == (h, w) {
        img
    } else {
        // The smallest scale at which the image covers h x w (as `Resize(int)` of the shorter side
        // for a square target).
        let scale = (h as f64 / ih as f64).max(w as f64 / iw as f64);
        let rw = ((iw as f64 * scale).round() as u32).max(w as u32);
        let rh = ((ih as f64 * scale).round() as u32).max(h as u32);
        let r = img.resize_exact(rw, rh, FilterType::Triangle);
        let (x, y) = ((rw - w as u32) / 2, (rh - h as u32) / 2);
        resized = r.crop_imm(x, y, w as u32, h as u32);
        &resized
    };
    let plane = h * w;
    if channels == 1 {
        match img {
            DynamicImage::ImageLuma8(g) => out[..plane].copy_from_slice(g.as_raw()),
            other => {
                let rgb = other.to_rgb8();
                for (o, px) in out[..plane].iter_mut().zip(rgb.as_raw().chunks_exact(3)) {
                    *o = luma(px[0], px[1], px[2]);
                }
            }
        }
    } else {
        let rgb = img.to_rgb8();
        for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = px[c];
            }
        }
    }
}

/// PIL's luma of an RGB pixel: L = R 299/1000 + G 587/1000 + B 114/1000, rounded.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

impl super::Dataset {
    /// The dataset fitted to `target`: unchanged if it already has the target's channels and
    /// size (or the target has no size and it is RGB), else every image converted and resized
    /// as [`fit_into`] does (a uniform dataset: the choice of size is [`choose_size`]'s).
    pub fn fit(self, target: Target) -> super::Dataset {
        let [c, h, w] = self.shape;
        let [sh, sw] = match target.size {
            None => [h, w],
            Some(s) if s == [h, w] => s,
            Some(s) => stored_size(s),
        };
        if [c, h, w] == [target.channels, sh, sw] {
            return self;
        }
        let size = target.channels * sh * sw;
        let mut images = vec![0u8; self.len() * size];
        for (i, out) in images.chunks_exact_mut(size).enumerate() {
            let src = self.image(i);
            let plane = h * w;
            let img = if c == 1 {
                DynamicImage::ImageLuma8(image::GrayImage::from_raw(w as u32, h as u32, src.to_vec()).expect("sized"))
            } else {
                let mut rgb = Vec::with_capacity(3 * plane);
                for p in 0..plane {
                    rgb.extend([src[p], src[plane + p], src[2 * plane + p]]);
                }
                DynamicImage::ImageRgb8(image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("sized"))
            };
            fit_into(&img, target.channels, [sh, sw], out);
        }
        super::Dataset { images: images.into(), shape: [target.channels, sh, sw], ..self }
    }

    /// The center `size` of every image (torchvision's `CenterCrop`): what evaluation sees of
    /// images stored larger than the network's input. Unchanged if they already have `size`.
    pub fn center_crop(self, [oh, ow]: [usize; 2]) -> super::Dataset {
        let [c, h, w] = self.shape;
        if [h, w] == [oh, ow] || oh > h || ow > w {
            return self;
        }
        let (y, x) =
            (((h - oh) as f64 / 2.0).round_ties_even() as usize, ((w - ow) as f64 / 2.0).round_ties_even() as usize);
        let mut images = Vec::with_capacity(self.len() * c * oh * ow);
        for i in 0..self.len() {
            let img = self.image(i);
            for ch in 0..c {
                for row in 0..oh {
                    let start = ch * h * w + (y + row) * w + x;
                    images.extend_from_slice(&img[start..start + ow]);
                }
            }
        }
        super::Dataset { images: images.into(), shape: [c, oh, ow], ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};

    #[test]
    fn sizes_follow_torchvision() {
        assert_eq!(stored_size([224, 224]), [256, 256]);
        assert_eq!(stored_size([32, 32]), [36, 36]);
        assert_eq!(stored_size([96, 128]), [109, 146]);
        assert_eq!(choose_size(&[[32, 32], [32, 32]], Some([32, 32])), Ok([32, 32]));
        assert_eq!(choose_size(&[[32, 32], [40, 30]], Some([32, 32])), Ok([36, 36]));
        assert_eq!(choose_size(&[[5, 6], [5, 6]], None), Ok([5, 6]));
        assert_eq!(choose_size(&[[5, 6], [5, 6], [6, 5]], None), Err(2));
        assert!(Target::of_input(&[4, 32, 32]).unwrap_err().to_string().contains("4-channel"));
        assert_eq!(Target::of_input(&[1, 28, 28]).unwrap(), Target { channels: 1, size: Some([28, 28]) });
    }

    #[test]
    fn channels_convert_as_pil_does_and_a_wide_image_is_center_cropped() {
        // A 4 x 2 RGB image: columns of four colours; fitting to 2 x 2 keeps the middle two.
        let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb(colours[x as usize]));
        let img = DynamicImage::ImageRgb8(img);
        let mut out = vec![0u8; 4];
        fit_into(&img, 1, [2, 2], &mut out);
        // Scale 1 (the height already fits): a plain center crop of columns 1 and 2.
        assert_eq!(out, vec![luma(0, 255, 0), luma(0, 0, 255), luma(0, 255, 0), luma(0, 0, 255)]);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
        // Grayscale to RGB repeats the value; a same-size image is copied exactly.
        let g = DynamicImage::ImageLuma8(GrayImage::from_fn(3, 2, |x, y| image::Luma([(x + 3 * y) as u8 * 40])));
        let mut rgb = vec![0u8; 18];
        fit_into(&g, 3, [2, 3], &mut rgb);
        let plane: Vec<u8> = (0..6).map(|i| i as u8 * 40).collect();
        assert_eq!(rgb, [plane.clone(), plane.clone(), plane].concat());
    }

    #[test]
    fn a_small_image_is_scaled_up_to_cover_the_target() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(8, 4, image::Luma([200])));
        let mut out = vec![0u8; 36 * 36];
        fit_into(&img, 1, [36, 36], &mut out);
        assert!(out.iter().all(|&v| v == 200), "a flat image stays flat");
    }
}
