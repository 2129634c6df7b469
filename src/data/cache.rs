//! The decode cache: a decoded ImageFolder split kept in one binary file, which reads back in a
//! fraction of a second. A file is named by its source and split and a key over the source's
//! content (the archive's bytes, or every image file's path, label and bytes), so a dataset
//! edited in place, even keeping sizes and modification times, gets a new entry. A file that fails
//! validation (its checksum included) is ignored and rebuilt; files are written to a temporary
//! name, then renamed.
//!
//! Format, little-endian: magic `EPDATA\0\0`, version u32, key u64, C, H, W as u32, image count
//! u64, class count u32, each class name as a u32 length and UTF-8, the labels as u16, the
//! images (N x C x H x W bytes), then a u64 checksum ([`Fnv::write_bulk`]) of everything before
//! it. Coarse labels are not stored (ImageFolders have none).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::Dataset;
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

/// The dataset cached in `dir` under `stem` and `key`, or else `build()`, which is then cached.
/// Without a cache folder, just `build()`. A cache that cannot be read or written is reported
/// on stderr and otherwise ignored.
pub(super) fn cached(
    dir: Option<&Path>,
    stem: &str,
    key: u64,
    build: impl FnOnce() -> Result<Dataset>,
) -> Result<Dataset> {
    let Some(dir) = dir else { return build() };
    let path = dir.join(format!("{stem}-{key:016x}.bin"));
    match read(&path, key) {
        Ok(ds) => return Ok(ds),
        Err(Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("warning: ignoring the data cache: {e}; rebuilding it"),
    }
    let ds = build()?;
    if let Err(e) = std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)).and_then(|()| write(&path, key, &ds)) {
        eprintln!("warning: cannot write the data cache: {e}");
    }
    Ok(ds)
}

/// Reads a cache file, checking every size it claims against the file's length.
fn read(path: &Path, key: u64) -> Result<Dataset> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let left = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = Bounded { inner: BufReader::new(file), left, path, sum: Sum::new() };
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
    if c != 3 || !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
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
        let name =
            String::from_utf8(r.bytes(u64::from(len))?).map_err(|_| Error::file(path, "class name is not UTF-8"))?;
        classes.push(name);
    }
    let labels: Vec<u16> =
        r.bytes(n.saturating_mul(2))?.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    if let Some(bad) = labels.iter().find(|&&l| u32::from(l) >= n_classes) {
        return Err(Error::file(path, format!("label {bad} is out of range")));
    }
    let images = r.bytes(n.saturating_mul(c * h * w))?;
    let sum = r.sum.finish();
    if r.u64()? != sum {
        return Err(Error::file(path, "checksum mismatch: the cache file is corrupt"));
    }
    if r.left != 0 {
        return Err(Error::file(path, format!("{} bytes after the images", r.left)));
    }
    Ok(Dataset {
        images,
        labels,
        coarse_labels: None,
        classes,
        coarse_classes: None,
        shape: [3, h as usize, w as usize],
    })
}

/// A reader that knows how many bytes are left, so that no claimed size is allocated unchecked.
struct Bounded<'a> {
    inner: BufReader<File>,
    left: u64,
    path: &'a Path,
    /// Checksum of the bytes read so far.
    sum: Sum,
}

impl Bounded<'_> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left {
            return Err(Error::file(self.path, format!("truncated: {n} bytes needed, {} left", self.left)));
        }
        let mut buf = vec![0; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| Error::io(self.path, e))?;
        self.sum.update(&buf);
        self.left -= n;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }
}

fn write(path: &Path, key: u64, ds: &Dataset) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = write_to(&tmp, key, ds).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(path: &Path, key: u64, ds: &Dataset) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    let mut head = MAGIC.to_vec();
    head.extend(VERSION.to_le_bytes());
    head.extend(key.to_le_bytes());
    for d in ds.shape {
        head.extend((d as u32).to_le_bytes());
    }
    head.extend((ds.len() as u64).to_le_bytes());
    head.extend((ds.classes.len() as u32).to_le_bytes());
    for name in &ds.classes {
        head.extend((name.len() as u32).to_le_bytes());
        head.extend(name.as_bytes());
    }
    head.extend(ds.labels.iter().flat_map(|l| l.to_le_bytes()));
    let mut sum = Sum::new();
    sum.update(&head);
    sum.update(&ds.images);
    w.write_all(&head).map_err(io)?;
    w.write_all(&ds.images).map_err(io)?;
    w.write_all(&sum.finish().to_le_bytes()).map_err(io)?;
    w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn sample() -> Dataset {
        Dataset {
            images: (0..2 * 3 * 2 * 5).map(|i| i as u8).collect(),
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
        let build = || {
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
