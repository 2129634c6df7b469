//! Where a dataset's decoded pixels live: in memory, or in a read-only memory map of the decode
//! cache, which the OS pages in as images are read and may drop again, so that a split larger
//! than memory is never held in it. Selecting images of a mapped dataset (a class subset, the
//! train/validation split) makes a view (row numbers into the same map), not a copy.

use std::fmt;
use std::sync::Arc;

use memmap2::Mmap;

#[derive(Clone)]
enum Store {
    Owned(Vec<u8>),
    /// `len` bytes of the map from `start`.
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

/// The images of a dataset, each `C x H x W` bytes (the dataset knows the size).
#[derive(Clone)]
pub struct Pixels {
    store: Store,
    /// Image i is stored image `rows[i]`; None: image i is stored image i.
    rows: Option<Arc<[u32]>>,
}

impl Pixels {
    /// Images read from a memory map: bytes `start .. start + len` of `map`.
    pub(super) fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Self {
        assert!(start.checked_add(len).is_some_and(|end| end <= map.len()), "the mapped range lies in the map");
        Pixels { store: Store::Mapped { map, start, len }, rows: None }
    }

    /// Whether the pixels are read from a memory map rather than held in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    fn stored(&self) -> &[u8] {
        match &self.store {
            Store::Owned(v) => v,
            Store::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }

    /// Bytes held in this process's memory (a mapped store's pages belong to the OS's cache).
    pub fn owned_bytes(&self) -> usize {
        match &self.store {
            Store::Owned(v) => v.len(),
            Store::Mapped { .. } => 0,
        }
    }

    /// Image `i` of `size` bytes. Panics if `i` is out of range.
    pub fn image(&self, i: usize, size: usize) -> &[u8] {
        let r = self.rows.as_ref().map_or(i, |rows| rows[i] as usize);
        &self.stored()[r * size..(r + 1) * size]
    }

    /// The images `indices` (in that order) of `size` bytes each: a view of a mapped store, a
    /// copy of an owned one.
    pub fn select(&self, indices: &[usize], size: usize) -> Pixels {
        match &self.store {
            Store::Mapped { .. } => {
                let rows: Arc<[u32]> = indices
                    .iter()
                    .map(|&i| {
                        let r = self.rows.as_ref().map_or(i, |rows| rows[i] as usize);
                        assert!((r + 1) * size <= self.stored().len(), "image {i} is out of range");
                        r as u32
                    })
                    .collect();
                Pixels { store: self.store.clone(), rows: Some(rows) }
            }
            Store::Owned(_) => {
                let mut v = Vec::with_capacity(indices.len() * size);
                for &i in indices {
                    v.extend_from_slice(self.image(i, size));
                }
                v.into()
            }
        }
    }

    /// The images in order as one buffer: borrowed when stored so, else copied.
    pub fn contiguous(&self, n: usize, size: usize) -> std::borrow::Cow<'_, [u8]> {
        match &self.rows {
            None => std::borrow::Cow::Borrowed(&self.stored()[..n * size]),
            Some(_) => std::borrow::Cow::Owned((0..n).flat_map(|i| self.image(i, size).iter().copied()).collect()),
        }
    }

    /// The owned buffer, to append images to (a dataset being read). Panics on mapped or
    /// selected pixels.
    pub(super) fn owned_mut(&mut self) -> &mut Vec<u8> {
        match (&mut self.store, &self.rows) {
            (Store::Owned(v), None) => v,
            _ => panic!("only owned, unselected pixels grow"),
        }
    }
}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Self {
        Pixels { store: Store::Owned(v), rows: None }
    }
}

impl FromIterator<u8> for Pixels {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> Self {
        it.into_iter().collect::<Vec<u8>>().into()
    }
}

impl fmt::Debug for Pixels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(
            f,
            "Pixels({kind}, {} stored bytes, {:?} rows)",
            self.stored().len(),
            self.rows.as_ref().map(|r| r.len())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selecting_mapped_pixels_makes_views_that_compose() {
        let bytes: Vec<u8> = (0..5 * 4).map(|i| i as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[&[9u8; 3], bytes.as_slice()].concat()).unwrap();
        let map = Arc::new(unsafe { Mmap::map(&file) }.unwrap());
        let mapped = Pixels::mapped(map, 3, bytes.len());
        let owned: Pixels = bytes.clone().into();
        assert!(mapped.is_mapped() && mapped.owned_bytes() == 0 && owned.owned_bytes() == 20);
        for p in [&mapped, &owned] {
            assert_eq!(p.image(2, 4), &bytes[8..12]);
            let s = p.select(&[4, 1, 2], 4);
            assert_eq!(s.is_mapped(), p.is_mapped(), "a view of a map, a copy of memory");
            assert_eq!(s.image(0, 4), &bytes[16..20]);
            let ss = s.select(&[2, 0], 4);
            assert_eq!((ss.image(0, 4), ss.image(1, 4)), (&bytes[8..12], &bytes[16..20]));
            assert_eq!(&*ss.contiguous(2, 4), [&bytes[8..12], &bytes[16..20]].concat().as_slice());
        }
    }
}
