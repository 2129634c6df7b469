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
        images: images.into(),
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
            LoaderConfig { batch_size: 64, shuffle, augment: None, norm: identity(), seed: 7, epoch: 0, size: None },
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
