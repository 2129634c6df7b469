//! The decode cache: a decoded ImageFolder split kept in one binary file, which reads back in a
//! fraction of a second. A file is named by its source and split and a key over the source's
//! content (the archive's bytes, or every image file's path, label and bytes), so a dataset
//! edited in place, even keeping sizes and modification times, gets a new entry. A file that fails
//! validation (its checksum included) is ignored and rebuilt; files are written to a temporary
//! name, then renamed. A decoded split is streamed into its file as it is decoded and read back
//! through a memory map, so a split larger than memory is never held in it (see `Pixels`).
//!
//! Format, little-endian: magic `EPDATA\0\0`, version u32, key u64, C, H, W as u32, image count
//! u64, class count u32, each class name as a u32 length and UTF-8, the labels as u16, the
//! images (N x C x H x W bytes), then a u64 checksum ([`Fnv::write_bulk`]) of everything before
//! it. Coarse labels are not stored (ImageFolders have none).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::{Dataset, Pixels};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"EPDATA\0\0";
const VERSION: u32 = 2;
const MAX_SIDE: u64 = super::MAX_IMAGE_SIDE as u64;

/// FNV-1a, a small hash that is stable across builds, for cache keys.
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(super) fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    pub(super) fn write_str(&mut self, s: &str) {
        self.write_u64(s.len() as u64);
        self.write(s.as_bytes());
    }

    pub(super) fn finish(&self) -> u64 {
        self.0
    }
}

/// A checksum of bulk content, 8 bytes per step (FNV-1a's xor-multiply over 64-bit words, with a
/// rotation so that every input bit reaches every state bit): fast enough to hash a whole
/// dataset, and the same however the bytes are split into calls.
pub(super) struct Sum {
    h: u64,
    pending: [u8; 8],
    n_pending: usize,
    total: u64,
}

impl Sum {
    pub(super) fn new() -> Self {
        Sum { h: 0xcbf2_9ce4_8422_2325, pending: [0; 8], n_pending: 0, total: 0 }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }

    pub(super) fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.n_pending > 0 {
            let take = (8 - self.n_pending).min(bytes.len());
            self.pending[self.n_pending..self.n_pending + take].copy_from_slice(&bytes[..take]);
            self.n_pending += take;
            bytes = &bytes[take..];
            if self.n_pending < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.n_pending = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.n_pending = rest.len();
    }

    pub(super) fn finish(&self) -> u64 {
        let mut s = Sum { ..*self };
        let mut last = [0u8; 8];
        last[..s.n_pending].copy_from_slice(&s.pending[..s.n_pending]);
        s.mix(u64::from_le_bytes(last));
        s.mix(s.total);
        s.h
    }
}

/// Where a dataset is to be cached: the file and its key. A build that decodes many images
/// streams them into [`Entry::writer`] (bounded memory) and returns the dataset read back from
/// the file; one that returns an in-memory dataset has it written for it.
pub(super) struct Entry {
    path: PathBuf,
    key: u64,
}

impl Entry {
    /// A writer of the cache file for `labels.len()` images of `shape` of `classes`: the header
    /// is written now, the images as they come ([`Writer::write`]), the checksum at
    /// [`Writer::finish`].
    pub(super) fn writer(&self, shape: [usize; 3], classes: &[String], labels: &[u16]) -> Result<Writer> {
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        let io = |e| Error::io(&tmp, e);
        let file = BufWriter::new(File::create(&tmp).map_err(io)?);
        let mut head = MAGIC.to_vec();
        head.extend(VERSION.to_le_bytes());
        head.extend(self.key.to_le_bytes());
        for d in shape {
            head.extend((d as u32).to_le_bytes());
        }
        head.extend((labels.len() as u64).to_le_bytes());
        head.extend((classes.len() as u32).to_le_bytes());
        for name in classes {
            head.extend((name.len() as u32).to_le_bytes());
            head.extend(name.as_bytes());
        }
        head.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
        let expected = labels.len() as u64 * shape.iter().product::<usize>() as u64;
        let mut w =
            Writer { file: Some(file), tmp, path: self.path.clone(), key: self.key, sum: Sum::new(), left: expected };
        w.put(&head)?;
        Ok(w)
    }
}

/// A cache file being written (to a temporary name, removed if the writer is dropped unfinished).
pub(super) struct Writer {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    key: u64,
    sum: Sum,
    /// Image bytes still expected.
    left: u64,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.sum.update(bytes);
        let f = self.file.as_mut().expect("open until finished");
        f.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))
    }

    /// Appends images (N x C x H x W bytes, any N, in order).
    pub(super) fn write(&mut self, images: &[u8]) -> Result<()> {
        if images.len() as u64 > self.left {
            return Err(Error::file(&self.tmp, "internal: more image bytes than the header announced"));
        }
        self.left -= images.len() as u64;
        self.put(images)
    }

    /// Writes the checksum, syncs, renames the file into place and reads it back (mapped).
    pub(super) fn finish(mut self) -> Result<Dataset> {
        if self.left != 0 {
            return Err(Error::file(&self.tmp, format!("internal: {} image bytes missing", self.left)));
        }
        let sum = self.sum.finish().to_le_bytes();
        let mut f = self.file.take().expect("open until finished");
        let io = |e| Error::io(&self.tmp, e);
        f.write_all(&sum).map_err(io)?;
        f.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        read(&self.path, self.key)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The dataset cached in `dir` under `stem` and `key` (memory-mapped), or else `build()`, which
/// is then cached: `build` is given the cache [`Entry`] to stream its images into, and a
/// dataset it returns in memory is written for it. Without a cache folder, just `build(None)`. A
/// cache that cannot be read or created is reported on stderr and otherwise ignored.
pub(super) fn cached(
    dir: Option<&Path>,
    stem: &str,
    key: u64,
    build: impl FnOnce(Option<&Entry>) -> Result<Dataset>,
) -> Result<Dataset> {
    let Some(dir) = dir else { return build(None) };
    let path = dir.join(format!("{stem}-{key:016x}.bin"));
    match read(&path, key) {
        Ok(ds) => return Ok(ds),
        Err(Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("warning: ignoring the data cache: {e}; rebuilding it"),
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("warning: cannot write the data cache: {}", Error::io(dir, e));
        return build(None);
    }
    let entry = Entry { path, key };
    let ds = build(Some(&entry))?;
    if ds.images.is_mapped() {
        return Ok(ds);
    }
    let written = entry.writer(ds.shape, &ds.classes, &ds.labels).and_then(|mut w| {
        w.write(&ds.all_images())?;
        w.finish()
    });
    if let Err(e) = written {
        eprintln!("warning: cannot write the data cache: {e}");
    }
    Ok(ds)
}

/// Reads a cache file through a read-only memory map, checking every size it claims against the
/// file's length and the checksum over all of it; the images stay in the map.
fn read(path: &Path, key: u64) -> Result<Dataset> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 16 {
        return Err(Error::file(path, "not a data cache file"));
    }
    // SAFETY: cache files are written under a temporary name and renamed into place, never
    // changed after; another process truncating one while it is mapped would fault reads, as
    // for any mapped file.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let mut r = Cursor { data: &map[..], pos: 0, path };
    if r.bytes(8)? != MAGIC {
        return Err(Error::file(path, "not a data cache file"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::file(path, format!("cache version {version}, this build reads {VERSION}")));
    }
    if r.u64()? != key {
        return Err(Error::file(path, "cache key does not match its name"));
    }
    let [c, h, w] = [r.u32()?, r.u32()?, r.u32()?].map(u64::from);
    if !(c == 1 || c == 3) || !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
        return Err(Error::file(path, format!("bad image shape {c}x{h}x{w}")));
    }
    let n = r.u64()?;
    let n_classes = r.u32()?;
    if n_classes == 0 || n_classes > 1 << 16 {
        return Err(Error::file(path, format!("bad class count {n_classes}")));
    }
    let mut classes = Vec::new();
    for _ in 0..n_classes {
        let len = r.u32()?;
        let name = std::str::from_utf8(r.bytes(u64::from(len))?)
            .map_err(|_| Error::file(path, "class name is not UTF-8"))?
            .to_string();
        classes.push(name);
    }
    let labels: Vec<u16> =
        r.bytes(n.saturating_mul(2))?.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    if let Some(bad) = labels.iter().find(|&&l| u32::from(l) >= n_classes) {
        return Err(Error::file(path, format!("label {bad} is out of range")));
    }
    let start = r.pos;
    let images_len = r.bytes(n.saturating_mul(c * h * w))?.len();
    let mut sum = Sum::new();
    sum.update(&map[..r.pos]);
    if r.u64()? != sum.finish() {
        return Err(Error::file(path, "checksum mismatch: the cache file is corrupt"));
    }
    if r.pos != map.len() {
        return Err(Error::file(path, format!("{} bytes after the images", map.len() - r.pos)));
    }
    Ok(Dataset {
        images: Pixels::mapped(map.clone(), start, images_len),
        labels,
        coarse_labels: None,
        classes,
        coarse_classes: None,
        shape: [c as usize, h as usize, w as usize],
    })
}

/// Reads a mapped file front to back, so that no claimed size is trusted beyond its end.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(Error::file(self.path, format!("truncated: {n} bytes needed, {left} left")));
        }
        let out = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn sample() -> Dataset {
        Dataset {
            images: (0..2 * 3 * 2 * 5).map(|i| i as u8).collect::<Vec<u8>>().into(),
            labels: vec![1, 0],
            coarse_labels: None,
            classes: vec!["cat".into(), "dög".into()],
            coarse_classes: None,
            shape: [3, 2, 5],
        }
    }

    #[test]
    fn the_sum_does_not_depend_on_how_bytes_are_split() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Sum::new();
        whole.update(&bytes);
        for cuts in [[1, 2], [7, 9], [8, 16], [13, 999]] {
            let mut s = Sum::new();
            s.update(&bytes[..cuts[0]]);
            s.update(&bytes[cuts[0]..cuts[1]]);
            s.update(&bytes[cuts[1]..]);
            assert_eq!(s.finish(), whole.finish());
        }
        let mut other = bytes.clone();
        other[999] ^= 1;
        let mut s = Sum::new();
        s.update(&other);
        assert_ne!(s.finish(), whole.finish());
        let mut longer = Sum::new();
        longer.update(&[bytes.as_slice(), &[0]].concat());
        assert_ne!(longer.finish(), whole.finish(), "a trailing zero changes the sum");
    }

    #[test]
    fn round_trip_and_rebuild_of_a_corrupt_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache/data");
        let builds = Cell::new(0);
        let build = |_: Option<&Entry>| {
            builds.set(builds.get() + 1);
            Ok(sample())
        };
        assert_eq!(cached(Some(&dir), "x-train", 7, build).unwrap(), sample());
        assert_eq!(cached(Some(&dir), "x-train", 7, build).unwrap(), sample());
        assert_eq!(builds.get(), 1, "second load reads the cache");

        let file = dir.join(format!("x-train-{:016x}.bin", 7));
        let bytes = std::fs::read(&file).unwrap();
        assert!(read(&file, 8).unwrap_err().to_string().contains("key"));
        for corrupt in [&bytes[..bytes.len() - 1], &bytes[..10], b"garbage", &[bytes.as_slice(), &[0]].concat()] {
            std::fs::write(&file, corrupt).unwrap();
            assert!(read(&file, 7).is_err());
            assert_eq!(cached(Some(&dir), "x-train", 7, build).unwrap(), sample());
        }
        assert_eq!(builds.get(), 5, "each corrupt cache is rebuilt");
        assert_eq!(read(&file, 7).unwrap(), sample(), "and rewritten");

        // One image byte changed in place (same length): the checksum sees it.
        let mut flipped = bytes.clone();
        let at = flipped.len() - 8 - 3;
        flipped[at] ^= 0x10;
        std::fs::write(&file, &flipped).unwrap();
        assert!(read(&file, 7).unwrap_err().to_string().contains("checksum"));
        std::fs::write(&file, &bytes).unwrap();

        // A huge claimed image count is refused before anything is allocated.
        let mut huge = bytes.clone();
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&file, huge).unwrap();
        assert!(read(&file, 7).unwrap_err().to_string().contains("truncated"));
    }
}
