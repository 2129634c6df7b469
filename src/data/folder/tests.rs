use super::*;
use crate::data::fit::Target;
use std::time::UNIX_EPOCH;

/// A PNG of `w` x `h` whose pixel (x, y) is (seed + x, seed + y, seed * 2).
pub(crate) fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed + x as u8, seed + y as u8, seed * 2]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The C x H x W bytes of [`png`].
fn chw(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                out.push([seed + x as u8, seed + y as u8, seed * 2][c]);
            }
        }
    }
    out
}

/// (split, class, file, seed) of a small ImageFolder: classes `cat` and `dog`.
pub(crate) const FILES: [(&str, &str, &str, u8); 6] = [
    ("train", "dog", "b.png", 1),
    ("train", "cat", "z.png", 2),
    ("train", "dog", "a.PNG", 3),
    ("train", "cat", "c.png", 4),
    ("test", "cat", "x.png", 5),
    ("test", "dog", "y.png", 6),
];

pub(crate) fn write_folder(root: &Path) {
    for (split, class, file, seed) in FILES {
        let dir = root.join(split).join(class);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), png(4, 3, seed)).unwrap();
    }
    std::fs::write(root.join("train/cat/notes.txt"), "not an image").unwrap();
}

/// Writes `files` (member name, bytes) to a `.tar.gz` at `path`.
pub(crate) fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn folder_files(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(format!("{prefix}README.md"), b"hello".to_vec())];
    files.extend(FILES.iter().map(|(s, c, f, seed)| (format!("{prefix}{s}/{c}/{f}"), png(4, 3, *seed))));
    files
}

fn check_train(ds: &Dataset) {
    assert_eq!(ds.classes, ["cat", "dog"]);
    assert_eq!(ds.labels, [0, 0, 1, 1]);
    assert_eq!(ds.shape, [3, 3, 4]);
    // cat: c.png (4), z.png (2); dog: a.PNG (3), b.png (1).
    for (i, seed) in [4, 2, 3, 1].into_iter().enumerate() {
        assert_eq!(ds.image(i), chw(4, 3, seed), "image {i}");
    }
}

#[test]
fn reads_folder_in_torchvision_order() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    check_train(&load_dir(tmp.path(), Split::Train, Target::NATIVE, None).unwrap());
    let test = load_dir(tmp.path(), Split::Test, Target::NATIVE, None).unwrap();
    assert_eq!(test.labels, [0, 1]);
    assert_eq!(test.image(1), chw(4, 3, 6));
}

#[test]
fn reads_archive_with_or_without_top_folder() {
    for prefix in ["", "cifar10/", "./"] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("images.tar.gz");
        write_tar(&path, &folder_files(prefix));
        check_archive(&path).unwrap();
        check_train(&load_archive(&path, Split::Train, Target::NATIVE, None).unwrap());
        assert_eq!(load_archive(&path, Split::Test, Target::NATIVE, None).unwrap().labels, [0, 1]);
    }
}

#[test]
fn archive_without_layout_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cifar-10-binary.tar.gz");
    write_tar(&path, &[("cifar-10-batches-bin/data_batch_1.bin".into(), vec![0; 10])]);
    let err = check_archive(&path).unwrap_err().to_string();
    assert!(err.contains("cifar-10-binary.tar.gz") && err.contains("not an ImageFolder"), "{err}");

    let mut files = folder_files("a/");
    files.push(("b/train/cat/q.png".into(), png(4, 3, 0)));
    write_tar(&path, &files);
    let err = load_archive(&path, Split::Train, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("two roots"), "{err}");
}

#[test]
fn mixed_sizes_are_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    std::fs::write(tmp.path().join("train/dog/b.png"), png(5, 3, 1)).unwrap();
    let err = load_dir(tmp.path(), Split::Train, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("b.png") && err.contains("5x3") && err.contains("c.png"), "{err}");
}

#[test]
fn corrupt_image_is_an_error_naming_the_file_or_member() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    std::fs::write(tmp.path().join("train/dog/a.PNG"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let err = load_dir(tmp.path(), Split::Train, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("a.PNG") && err.contains("decode"), "{err}");

    let path = tmp.path().join("images.tgz");
    let mut files = folder_files("");
    files[2].1 = b"not a jpeg".to_vec(); // train/cat/z.png
    write_tar(&path, &files);
    let err = load_archive(&path, Split::Train, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("images.tgz") && err.contains("member `train/cat/z.png`"), "{err}");
}

#[test]
fn train_and_test_classes_must_agree() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    std::fs::create_dir_all(tmp.path().join("test/emu")).unwrap();
    let err = load_dir(tmp.path(), Split::Train, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("emu"), "{err}");
    let err = load_dir(tmp.path(), Split::Test, Target::NATIVE, None).unwrap_err().to_string();
    assert!(err.contains("emu") && err.contains("no .jpg"), "{err}");
}

#[test]
fn decoded_splits_are_cached_per_source_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("images.tar.gz");
    write_tar(&archive, &folder_files("top/"));
    write_folder(&tmp.path().join("images"));
    let cache_files = || std::fs::read_dir(&cache).map_or(0, |d| d.count());

    let train = load_archive(&archive, Split::Train, Target::NATIVE, Some(&cache)).unwrap();
    // Decoded straight into the cache file and read back through a memory map.
    assert!(train.images.is_mapped() && train.images.owned_bytes() == 0);
    // A copy in memory: the test truncates the cache files below, under a live map.
    let train = train.in_memory();
    check_train(&train);
    assert_eq!(cache_files(), 1);
    assert_eq!(load_archive(&archive, Split::Train, Target::NATIVE, Some(&cache)).unwrap(), train);
    load_archive(&archive, Split::Test, Target::NATIVE, Some(&cache)).unwrap();
    assert_eq!(cache_files(), 2);
    assert_eq!(load_dir(&tmp.path().join("images"), Split::Train, Target::NATIVE, Some(&cache)).unwrap(), train);
    assert_eq!(load_dir(&tmp.path().join("images"), Split::Train, Target::NATIVE, Some(&cache)).unwrap(), train);
    assert_eq!(cache_files(), 3);

    // A changed source gets a new cache entry, not the old images.
    let changed = tmp.path().join("images/train/cat/c.png");
    std::fs::write(&changed, png(4, 3, 9)).unwrap();
    File::options().write(true).open(&changed).unwrap().set_modified(UNIX_EPOCH).unwrap();
    let changed = load_dir(&tmp.path().join("images"), Split::Train, Target::NATIVE, Some(&cache)).unwrap();
    assert_eq!(changed.image(0), chw(4, 3, 9));
    assert_eq!(cache_files(), 4);

    // Edited in place with its size and modification time kept: still a new entry.
    let path = tmp.path().join("images/train/cat/c.png");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let same_size = png(4, 3, 10);
    assert_eq!(same_size.len() as u64, std::fs::metadata(&path).unwrap().len());
    std::fs::write(&path, same_size).unwrap();
    File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    let edited = load_dir(&tmp.path().join("images"), Split::Train, Target::NATIVE, Some(&cache)).unwrap();
    assert_eq!(edited.image(0), chw(4, 3, 10));
    assert_eq!(cache_files(), 5);

    // A truncated cache file is rebuilt.
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    }
    assert_eq!(load_archive(&archive, Split::Train, Target::NATIVE, Some(&cache)).unwrap(), train);
}

#[test]
fn decodes_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    let img = image::RgbImage::from_pixel(4, 3, image::Rgb([200, 100, 50]));
    let mut jpeg = Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    std::fs::write(tmp.path().join("train/cat/c.png"), jpeg.into_inner()).unwrap();
    let ds = load_dir(tmp.path(), Split::Train, Target::NATIVE, None).unwrap();
    for (c, v) in [200i32, 100, 50].into_iter().enumerate() {
        assert!(ds.image(0)[c * 12..(c + 1) * 12].iter().all(|&p| (p as i32 - v).abs() <= 3), "channel {c}");
    }
}

#[test]
fn mixed_sizes_and_grayscale_are_fitted_to_a_network_s_input() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    // A larger, wide image and a grayscale one among the 4x3 RGB images.
    std::fs::write(tmp.path().join("train/dog/b.png"), png(40, 20, 1)).unwrap();
    let gray = image::GrayImage::from_pixel(6, 9, image::Luma([77]));
    gray.save(tmp.path().join("train/cat/z.png")).unwrap();
    // For an RGB network of 8x8: not all images are 8x8, so all are stored at 9x9 (8 / 0.875).
    let rgb = load_dir(tmp.path(), Split::Train, Target { channels: 3, size: Some([8, 8]) }, None).unwrap();
    assert_eq!(rgb.shape, [3, 9, 9]);
    assert_eq!(rgb.labels, [0, 0, 1, 1]);
    // z.png (cat, second) is flat gray in every channel.
    assert!(rgb.image(1).iter().all(|&v| v == 77), "{:?}", &rgb.image(1)[..9]);
    // For a grayscale network: one channel, the same size rule.
    let one = load_dir(tmp.path(), Split::Train, Target { channels: 1, size: Some([8, 8]) }, None).unwrap();
    assert_eq!(one.shape, [1, 9, 9]);
    assert!(one.image(1).iter().all(|&v| v == 77));
    // The fitted decode is cached under its own key, apart from the native one.
    let cache = tmp.path().join("cache");
    let t = Target { channels: 1, size: Some([8, 8]) };
    assert_eq!(load_dir(tmp.path(), Split::Train, t, Some(&cache)).unwrap(), one);
    assert_eq!(load_dir(tmp.path(), Split::Train, t, Some(&cache)).unwrap(), one);
    // When every image already has the network's size they are kept as they are.
    let tmp2 = tempfile::tempdir().unwrap();
    write_folder(tmp2.path());
    let same = load_dir(tmp2.path(), Split::Train, Target { channels: 3, size: Some([3, 4]) }, None).unwrap();
    assert_eq!(same, load_dir(tmp2.path(), Split::Train, Target::NATIVE, None).unwrap());
}
