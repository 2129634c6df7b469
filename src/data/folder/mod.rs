//! torchvision's ImageFolder layout, `{train,test}/<class>/<image>.{jpg,jpeg,png}`, read from a
//! folder or from a `.tar.gz` (possibly under one top-level folder). Classes are the sorted class
//! folder names and images are taken in file-name order within a class, as torchvision does; only
//! files directly inside a class folder are read. Images are decoded to RGB on all cores, with a
//! progress bar, and the result is cached (see `cache`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};

use super::cache::{self, Fnv};
use super::fit::{self, Target};
use super::{Dataset, Split};
use crate::error::{Error, Result};

use super::MAX_IMAGE_SIDE as MAX_SIDE;
/// Largest encoded image file accepted.
const MAX_FILE_BYTES: u64 = 64 << 20;
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// An encoded image waiting to be decoded; `name` is its path, or its member name in an archive.
/// A file's bytes are read when needed (and dropped after), an archive member's are held.
struct Encoded {
    name: String,
    bytes: Option<Vec<u8>>,
}

impl Encoded {
    fn held(name: String, bytes: Vec<u8>) -> Self {
        Encoded { name, bytes: Some(bytes) }
    }

    fn file(path: &Path) -> Self {
        Encoded { name: path.to_string_lossy().into_owned(), bytes: None }
    }

    fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        match &self.bytes {
            Some(b) => Ok(std::borrow::Cow::Borrowed(b)),
            None => Ok(std::borrow::Cow::Owned(crate::formats::read_file(Path::new(&self.name), MAX_FILE_BYTES)?)),
        }
    }
}

/// Where encoded images came from, to name them in errors.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Files,
    Archive(&'a Path),
}

impl Origin<'_> {
    fn error(self, name: &str, msg: impl std::fmt::Display) -> Error {
        match self {
            Origin::Files => Error::file(name, msg.to_string()),
            Origin::Archive(archive) => Error::file(archive, format!("member `{name}`: {msg}")),
        }
    }
}

/// Whether `dir` holds `train/` and `test/` folders, or only `test/` (data to evaluate on).
pub(super) fn is_image_folder(dir: &Path) -> bool {
    dir.join("test").is_dir()
}

/// Share of each class's images that a flat folder of class folders holds out as its test split.
pub const FLAT_TEST_SHARE: f64 = 0.2;

/// Whether `dir` is a root of class folders with images directly in them (no `train/`/`test/`):
/// at least two class folders, each with an image.
pub(super) fn is_flat_folder(dir: &Path) -> bool {
    if dir.join("train").exists() || dir.join("test").exists() {
        return false;
    }
    let Ok(classes) = class_folders(dir) else { return false };
    classes.len() >= 2
        && classes.iter().all(|c| {
            std::fs::read_dir(dir.join(c)).is_ok_and(|mut it| {
                it.any(|e| e.is_ok_and(|e| e.path().is_file() && e.file_name().to_str().is_some_and(is_image_name)))
            })
        })
}

/// Checks that the archive at `path` holds the ImageFolder layout, reading only until an image of
/// each split is seen.
pub(super) fn check_archive(path: &Path) -> Result<()> {
    let mut seen = [false; 2];
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    scan_archive(BufReader::new(file), path, |member, _| {
        seen[member.split as usize] = true;
        Ok(!(seen[0] && seen[1]))
    })?;
    if seen[0] && seen[1] {
        return Ok(());
    }
    Err(Error::file(
        path,
        "not an ImageFolder archive: no `[<folder>/]train/<class>/<image>` and `test/<class>/<image>` members \
         (extract a CIFAR binary archive with `tar xzf` first)",
    ))
}

/// Reads a split of the ImageFolder at `root`, through the cache in `cache_dir`.
pub(super) fn load_dir(root: &Path, split: Split, target: Target, cache_dir: Option<&Path>) -> Result<Dataset> {
    if split == Split::Train && !root.join("train").is_dir() {
        return Err(Error::file(
            root,
            "has a test/ folder but no train/: it can be evaluated on, not trained on (or put the class \
             folders directly in it to have them split into train and test)",
        ));
    }
    let listing = list_split(root, split)?;
    if root.join(split.other().to_string()).is_dir() {
        let other = class_folders(&root.join(split.other().to_string()))?;
        check_same_classes(&root.join(split.to_string()), &listing.classes, &other)?;
    }
    load_listing(root, &split.to_string(), listing, split, target, cache_dir)
}

/// Reads a split of the flat folder of class folders at `root`: of each class's images (in
/// file-name order), a seeded [`FLAT_TEST_SHARE`] is the test split and the rest the training
/// split, the same on every run.
pub(super) fn load_flat(root: &Path, split: Split, target: Target, cache_dir: Option<&Path>) -> Result<Dataset> {
    let Listing { classes, files } = list_classes(root)?;
    let mut by_class: BTreeMap<u16, Vec<PathBuf>> = BTreeMap::new();
    for (label, path) in files {
        by_class.entry(label).or_default().push(path);
    }
    let mut chosen = Vec::new();
    for (label, paths) in by_class {
        let test = flat_test_members(paths.len(), u64::from(label));
        for (i, path) in paths.into_iter().enumerate() {
            if test.contains(&i) == (split == Split::Test) {
                chosen.push((label, path));
            }
        }
    }
    if chosen.is_empty() {
        return Err(Error::file(root, format!("the {split} part of the split per class holds no image")));
    }
    let name = format!("flat-{split}");
    load_listing(root, &name, Listing { classes, files: chosen }, split, target, cache_dir)
}

/// The images directly in `dir` (no class folders: a device's own unlabeled images), in file-name
/// order, each labelled 0 under the one class `unlabeled`, kept at their stored size as a training
/// split is (see `data::fit`), through the cache in `cache_dir`. A folder with no image, or with
/// class folders (a labelled dataset), is an error naming it; an unreadable image names its file.
pub fn load_unlabeled(dir: &Path, target: Target, cache_dir: Option<&Path>) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder of images"));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image_name(&utf8_name(&path)?) {
            files.push(path);
        }
    }
    if files.is_empty() {
        let hint = if class_folders(dir)?.is_empty() {
            ""
        } else {
            " (it holds folders: a labelled dataset is read as one, its labels ignored, when it is an ImageFolder)"
        };
        return Err(Error::file(dir, format!("holds no .jpg, .jpeg or .png image{hint}")));
    }
    files.sort();
    let listing = Listing { classes: vec!["unlabeled".into()], files: files.into_iter().map(|p| (0, p)).collect() };
    load_listing(dir, "unlabeled", listing, Split::Train, target, cache_dir)
}

/// Which of a class's `n` images (by index in file-name order) a flat folder tests on: a seeded
/// choice of round(n * share), at least one when the class has two or more images.
pub fn flat_test_members(n: usize, class: u64) -> BTreeSet<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let k = ((n as f64 * FLAT_TEST_SHARE).round() as usize).max(usize::from(n >= 2)).min(n.saturating_sub(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_f1a7 ^ class));
    order.into_iter().take(k).collect()
}

/// Decodes the listed images through the cache (keyed by every file's content and the target).
fn load_listing(
    root: &Path,
    part: &str,
    Listing { classes, files }: Listing,
    split: Split,
    target: Target,
    cache_dir: Option<&Path>,
) -> Result<Dataset> {
    let mut key = Fnv::new();
    key.write_str(&root.canonicalize().map_err(|e| Error::io(root, e))?.to_string_lossy());
    key.write_str(part);
    key.write_u64(target.key());
    for (label, path) in &files {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::file(path, format!("{} bytes is too large for an image", meta.len())));
        }
        key.write_str(&path.to_string_lossy());
        key.write_u64(u64::from(*label));
        key.write_u64(meta.len());
        // The content, not only size and time: an image edited in place is seen.
        let mut sum = cache::Sum::new();
        sum.update(&crate::formats::read_file(path, MAX_FILE_BYTES)?);
        key.write_u64(sum.finish());
    }
    let stem = format!("{}-{part}", cache_stem(root));
    cache::cached(cache_dir, &stem, key.finish(), |entry| {
        let encoded = files.iter().map(|(_, path)| Encoded::file(path)).collect();
        let labels = files.iter().map(|(label, _)| *label).collect();
        decode_all(encoded, labels, classes, split, Origin::Files, target, entry)
    })
}

/// Reads a split of the ImageFolder archive at `path`, through the cache in `cache_dir`.
pub(super) fn load_archive(path: &Path, split: Split, target: Target, cache_dir: Option<&Path>) -> Result<Dataset> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut key = Fnv::new();
    key.write_str(&path.canonicalize().map_err(|e| Error::io(path, e))?.to_string_lossy());
    key.write_str(&split.to_string());
    key.write_u64(meta.len());
    key.write_u64(content_sum(path)?);
    key.write_u64(target.key());
    let stem = format!("{}-{split}", cache_stem(path));
    cache::cached(cache_dir, &stem, key.finish(), |entry| {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        read_archive(BufReader::new(file), path, split, target, entry)
    })
}

/// Reads a split of an ImageFolder `.tar.gz` held in memory (no cache); `path` names it in errors.
pub fn archive_from_bytes(bytes: &[u8], path: &Path, split: Split) -> Result<Dataset> {
    read_archive(bytes, path, split, Target::NATIVE, None)
}

/// Decodes one encoded image (PNG or JPEG) to a one-image dataset of class `image`; `name`
/// names it in errors.
pub fn image_from_bytes(bytes: &[u8], name: &str) -> Result<Dataset> {
    let encoded = vec![Encoded::held(name.to_string(), bytes.to_vec())];
    decode_all(encoded, vec![0], vec!["image".into()], Split::Test, Origin::Files, Target::NATIVE, None)
}

/// Reads a split of the gzipped ImageFolder tar `reader`; `path` names it in errors.
fn read_archive(
    reader: impl Read,
    path: &Path,
    split: Split,
    target: Target,
    cache: Option<&cache::Entry>,
) -> Result<Dataset> {
    // Per class, by file name: (member name, bytes).
    let mut images: BTreeMap<String, BTreeMap<String, Encoded>> = BTreeMap::new();
    let mut other_classes = BTreeSet::new();
    scan_archive(reader, path, |member, entry| {
        if member.split != split {
            other_classes.insert(member.class.to_string());
            return Ok(true);
        }
        if member.size > MAX_FILE_BYTES {
            return Err(Error::file(path, format!("member `{}`: {} bytes is too large", member.name, member.size)));
        }
        // The size is what the header claims: reserve no more than a little of it up front.
        let mut bytes = Vec::with_capacity(member.size.min(1 << 20) as usize);
        entry.read_to_end(&mut bytes).map_err(|e| Error::file(path, format!("member `{}`: {e}", member.name)))?;
        let class = images.entry(member.class.to_string()).or_default();
        class.insert(member.file.to_string(), Encoded::held(member.name.to_string(), bytes));
        Ok(true)
    })?;
    let classes: Vec<String> = images.keys().cloned().collect();
    if classes.is_empty() {
        return Err(Error::file(
            path,
            format!("no `{split}/<class>/<image>` members: the {split} split has no images"),
        ));
    }
    check_class_count(path, classes.len())?;
    check_same_classes(path, &classes, &other_classes.into_iter().collect::<Vec<_>>())?;
    let mut encoded = Vec::new();
    let mut labels = Vec::new();
    for (label, files) in images.into_values().enumerate() {
        labels.extend(std::iter::repeat_n(label as u16, files.len()));
        encoded.extend(files.into_values());
    }
    decode_all(encoded, labels, classes, split, Origin::Archive(path), target, cache)
}

/// The image files of a split folder.
struct Listing {
    /// The class folders, sorted.
    classes: Vec<String>,
    /// Label and path of each image: per class in order, sorted by file name.
    files: Vec<(u16, PathBuf)>,
}

fn list_split(root: &Path, split: Split) -> Result<Listing> {
    list_classes(&root.join(split.to_string()))
}

/// The images of the class folders in `split_dir`.
fn list_classes(split_dir: &Path) -> Result<Listing> {
    let split_dir = split_dir.to_path_buf();
    let classes = class_folders(&split_dir)?;
    if classes.is_empty() {
        return Err(Error::file(&split_dir, "holds no class folders"));
    }
    check_class_count(&split_dir, classes.len())?;
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = split_dir.join(class);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_file() && is_image_name(&utf8_name(&path)?) {
                names.push(path);
            }
        }
        if names.is_empty() {
            return Err(Error::file(&dir, "class folder holds no .jpg, .jpeg or .png image"));
        }
        names.sort();
        files.extend(names.into_iter().map(|p| (label as u16, p)));
    }
    Ok(Listing { classes, files })
}

/// The names of the folders in `dir`, sorted; none if `dir` does not exist.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            classes.push(utf8_name(&path)?);
        }
    }
    classes.sort();
    Ok(classes)
}

/// Train and test must have the same classes, or their labels would not agree.
fn check_same_classes(at: &Path, classes: &[String], other: &[String]) -> Result<()> {
    if classes == other {
        return Ok(());
    }
    let missing: Vec<&String> =
        classes.iter().filter(|c| !other.contains(c)).chain(other.iter().filter(|c| !classes.contains(c))).collect();
    Err(Error::file(at, format!("train and test have different classes (not in both: {missing:?})")))
}

fn check_class_count(at: &Path, n: usize) -> Result<()> {
    if n > usize::from(u16::MAX) + 1 {
        return Err(Error::file(at, format!("{n} classes is more than 65536")));
    }
    Ok(())
}

fn utf8_name(path: &Path) -> Result<String> {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) => Ok(name.to_string()),
        None => Err(Error::file(path, "file name is not valid UTF-8")),
    }
}

fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// A checksum of a file's bytes, read in pieces (an archive may be large).
fn content_sum(path: &Path) -> Result<u64> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sum = cache::Sum::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(sum.finish());
        }
        sum.update(&buf[..n]);
    }
}

/// The name of `path` without `.tar.gz`/`.tgz`, for cache file names.
fn cache_stem(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| "data".into(), |n| n.to_string_lossy());
    let name = name.trim_end_matches(".gz").trim_end_matches(".tar").trim_end_matches(".tgz");
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// An image member of an ImageFolder archive.
struct Member<'a> {
    split: Split,
    class: &'a str,
    file: &'a str,
    /// The full member name.
    name: &'a str,
    /// The size the archive claims.
    size: u64,
}

/// Calls `visit` on each image member `[<root>/]<split>/<class>/<file>` of the gzipped tar
/// `reader` (the archive at `path`), in archive order, until it returns false. Other members are
/// skipped; images under two different roots are an error.
fn scan_archive(
    reader: impl Read,
    path: &Path,
    mut visit: impl FnMut(&Member, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut root: Option<String> = None;
    for entry in archive.entries().map_err(|e| Error::io(path, e))? {
        let mut entry = entry.map_err(|e| Error::io(path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match std::str::from_utf8(&entry.path_bytes()) {
            Ok(name) => name.to_string(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                return Err(Error::file(path, format!("member `{lossy}`: name is not valid UTF-8")));
            }
        };
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let (member_root, [split, class, file]) = match parts.as_slice() {
            [split, class, file] => ("", [*split, *class, *file]),
            [top, split, class, file] => (*top, [*split, *class, *file]),
            _ => continue,
        };
        let Some(split) = Split::from_name(split) else { continue };
        if !is_image_name(file) {
            continue;
        }
        match &root {
            None => root = Some(member_root.to_string()),
            Some(r) if r != member_root => {
                return Err(Error::file(path, format!("holds images under two roots, `{r}/` and `{member_root}/`")));
            }
            Some(_) => {}
        }
        let member = Member { split, class, file, name: &name, size: entry.size() };
        if !visit(&member, &mut entry)? {
            break;
        }
    }
    Ok(())
}

/// Decoded bytes a batch of images may add at once: the buffer grows by what is about to be
/// decoded, not by what the headers of every image claim.
const BATCH_BYTES: usize = 64 << 20;

/// Decodes the images (in order, with their labels) to one dataset on all cores, fitted to
/// `target` (see `data::fit`: its channels, and its size unless every image has it already; with
/// no size, all images must have the size of the first). The buffer grows one batch at a time,
/// so a file of many small images that claim to be large fails on the first that does not
/// decode, before memory for the others is taken. With a cache entry, each batch is written to
/// the cache file as it is decoded and the split is read back memory-mapped: memory stays
/// bounded by a batch (plus, for an archive, its encoded bytes).
fn decode_all(
    encoded: Vec<Encoded>,
    labels: Vec<u16>,
    classes: Vec<String>,
    split: Split,
    origin: Origin,
    target: Target,
    cache: Option<&cache::Entry>,
) -> Result<Dataset> {
    if encoded.is_empty() {
        return Err(Error::Data(format!("the {split} split has no images")));
    }
    let mut sizes = Vec::with_capacity(encoded.len());
    for item in &encoded {
        let (w, h) = dimensions(&item.bytes()?).map_err(|e| origin.error(&item.name, e))?;
        sizes.push([h as usize, w as usize]);
    }
    let [h, w] = fit::choose_size(&sizes, target.size).map_err(|i| {
        let ([h0, w0], [h, w]) = (sizes[0], sizes[i]);
        let msg = format!(
            "image is {w}x{h}, but the first image (`{}`) is {w0}x{h0}; without a network to fit them to, \
             all images must have one size",
            encoded[0].name
        );
        origin.error(&encoded[i].name, msg)
    })?;
    let shape = [target.channels, h, w];
    let size = shape.iter().product::<usize>();
    encoded.len().checked_mul(size).ok_or_else(|| Error::Data("dataset too large".into()))?;

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(encoded.len());
    let batch = (BATCH_BYTES / size.max(1)).max(threads);
    let bar = ProgressBar::new(encoded.len() as u64)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed}<{eta}]").expect("valid template"),
        )
        .with_message(format!("decoding {split} images"));
    // Streamed into the cache file batch by batch, or else gathered in memory.
    let mut writer = match cache.map(|c| c.writer(shape, &classes, &labels)) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            eprintln!("warning: cannot write the data cache: {e}");
            None
        }
        None => None,
    };
    let mut images: Vec<u8> = Vec::new();
    for items in encoded.chunks(batch) {
        if writer.is_some() {
            images.clear();
        }
        let start = images.len();
        images
            .try_reserve(items.len() * size)
            .map_err(|e| Error::Data(format!("{} images of {w}x{h}: {e}", encoded.len())))?;
        images.resize(start + items.len() * size, 0);
        let per_thread = items.len().div_ceil(threads);
        let failed = AtomicBool::new(false);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let workers: Vec<_> = items
                .chunks(per_thread)
                .zip(images[start..].chunks_mut(per_thread * size))
                .map(|(items, out)| {
                    let (bar, failed) = (&bar, &failed);
                    s.spawn(move || {
                        for (item, out) in items.iter().zip(out.chunks_exact_mut(size)) {
                            if failed.load(Ordering::Relaxed) {
                                break;
                            }
                            let bytes = match item.bytes() {
                                Ok(b) => b,
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            };
                            match decode(&bytes) {
                                Ok(img) => fit::fit_into(&img, shape[0], [h, w], out),
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(origin.error(&item.name, e));
                                }
                            }
                            bar.inc(1);
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        if let Err(e) = results.into_iter().collect::<Result<()>>() {
            bar.abandon();
            return Err(e);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&images)?;
        }
    }
    bar.finish();
    if let Some(w) = writer {
        return w.finish();
    }
    Ok(Dataset { images: images.into(), labels, coarse_labels: None, classes, coarse_classes: None, shape })
}

fn reader(bytes: &[u8]) -> std::result::Result<image::ImageReader<Cursor<&[u8]>>, String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    Ok(reader)
}

/// Width and height from the image's header, without decoding it.
fn dimensions(bytes: &[u8]) -> std::result::Result<(u32, u32), String> {
    let (w, h) = reader(bytes)?.into_dimensions().map_err(|e| format!("cannot decode the image's header: {e}"))?;
    if w > MAX_SIDE || h > MAX_SIDE || w == 0 || h == 0 {
        return Err(format!("image is {w}x{h}; sides of 1 to {MAX_SIDE} pixels are accepted"));
    }
    Ok((w, h))
}

fn decode(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    reader(bytes)?.decode().map_err(|e| format!("cannot decode image: {e}"))
}

#[cfg(test)]
pub(super) mod tests;
