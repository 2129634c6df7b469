//! Finding the data: which kind of source a path holds ([`Source::detect`]), where to look when no
//! path is given ([`locate`]), and loading a split from a source.

use std::fmt;
use std::path::{Path, PathBuf};

use super::fit::Target;
use super::{Dataset, cifar, folder, idx};
use crate::error::{Error, Result};

/// A split of a dataset, as the files name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub(super) fn from_name(name: &str) -> Option<Split> {
        match name {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    pub(super) fn other(self) -> Split {
        match self {
            Split::Train => Split::Test,
            Split::Test => Split::Train,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// A dataset on disk, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `cifar-10-batches-bin` folder.
    Cifar10Bin(PathBuf),
    /// The `cifar-100-binary` folder.
    Cifar100Bin(PathBuf),
    /// A folder holding `train/<class>/<image>` and `test/<class>/<image>` (or only `test/`, to
    /// evaluate on).
    ImageFolder(PathBuf),
    /// A folder of class folders `<class>/<image>`, split per class into train and test.
    ImageFolderFlat(PathBuf),
    /// A folder of MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-...`).
    Idx(PathBuf),
    /// A `.tar.gz` or `.tgz` holding an ImageFolder, possibly under one top-level folder.
    ImageFolderTar(PathBuf),
}

const HELP: &str = "Get CIFAR-10 with `curl -O https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz && \
tar xzf cifar-10-binary.tar.gz -C data` (CIFAR-100: https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz), \
or put an ImageFolder (`train/<class>/*.png`, `test/<class>/*.png`, or a .tar.gz of it) in ./data; \
then pass its path or set EDGEPRUNE_DATA";

impl Source {
    /// What `path` holds: a CIFAR binary folder, an ImageFolder or its archive, or a folder that
    /// holds one of those (the first by name, folders before archives of the same name).
    pub fn detect(path: &Path) -> Result<Source> {
        if !path.exists() {
            return Err(Error::file(path, "does not exist"));
        }
        if path.is_file() {
            if is_archive(path) {
                folder::check_archive(path)?;
                return Ok(Source::ImageFolderTar(path.to_path_buf()));
            }
            return Err(Error::file(path, "is a file but not a .tar.gz or .tgz of an ImageFolder"));
        }
        if let Some(source) = Self::detect_folder(path) {
            return Ok(source);
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for child in children {
            if child.is_dir() {
                if let Some(source) = Self::detect_folder(&child) {
                    return Ok(source);
                }
            } else if is_archive(&child) && folder::check_archive(&child).is_ok() {
                return Ok(Source::ImageFolderTar(child));
            }
        }
        // Last, so that a folder holding a dataset is not taken for classes of images.
        if folder::is_flat_folder(path) {
            return Ok(Source::ImageFolderFlat(path.to_path_buf()));
        }
        Err(Error::file(
            path,
            format!("holds no CIFAR-10/100 binary folder, ImageFolder or ImageFolder archive. {HELP}"),
        ))
    }

    /// The source that the folder `dir` itself is, if any.
    fn detect_folder(dir: &Path) -> Option<Source> {
        if dir.join("data_batch_1.bin").is_file() || dir.join("test_batch.bin").is_file() {
            Some(Source::Cifar10Bin(dir.to_path_buf()))
        } else if dir.join("train.bin").is_file() && dir.join("test.bin").is_file() {
            Some(Source::Cifar100Bin(dir.to_path_buf()))
        } else if idx::is_idx_folder(dir) {
            Some(Source::Idx(dir.to_path_buf()))
        } else if folder::is_image_folder(dir) {
            Some(Source::ImageFolder(dir.to_path_buf()))
        } else {
            None
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Cifar10Bin(p)
            | Source::Cifar100Bin(p)
            | Source::ImageFolder(p)
            | Source::ImageFolderFlat(p)
            | Source::Idx(p)
            | Source::ImageFolderTar(p) => p,
        }
    }

    /// Reads a split. ImageFolders are decoded once and then read from the cache ([`cache_dir`]).
    pub fn load(&self, split: Split) -> Result<Dataset> {
        self.load_cached(split, cache_dir().as_deref())
    }

    /// Reads a split fitted to a network's input (its channels, and its size unless every image
    /// has it already: see `data::fit`).
    pub fn load_fitted(&self, split: Split, target: Target) -> Result<Dataset> {
        self.load_fitted_cached(split, target, cache_dir().as_deref())
    }

    pub(super) fn load_cached(&self, split: Split, cache: Option<&Path>) -> Result<Dataset> {
        self.load_fitted_cached(split, Target::NATIVE, cache)
    }

    fn load_fitted_cached(&self, split: Split, target: Target, cache: Option<&Path>) -> Result<Dataset> {
        match self {
            Source::Cifar10Bin(dir) => Ok(cifar::load_cifar10(dir, split)?.fit(target)),
            Source::Cifar100Bin(dir) => Ok(cifar::load_cifar100(dir, split)?.fit(target)),
            Source::Idx(dir) => Ok(idx::load(dir, split)?.fit(target)),
            Source::ImageFolder(dir) => folder::load_dir(dir, split, target, cache),
            Source::ImageFolderFlat(dir) => folder::load_flat(dir, split, target, cache),
            Source::ImageFolderTar(path) => folder::load_archive(path, split, target, cache),
        }
    }
}

fn is_archive(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".tar.gz") || n.ends_with(".tgz"))
}

/// Where decoded datasets are cached: `$EDGEPRUNE_CACHE/data`, else `~/.cache/edgeprune/data`;
/// none without either variable.
/// The device's own images, directly in `dir` with no class folders, fitted to `target` (see
/// `folder::load_unlabeled`): label-free adaptation's local data.
pub fn load_unlabeled(dir: &Path, target: Target) -> Result<Dataset> {
    folder::load_unlabeled(dir, target, cache_dir().as_deref())
}

pub fn cache_dir() -> Option<PathBuf> {
    Some(crate::formats::cache_root()?.join("data"))
}

/// The path of the data source to use: `explicit` if given (it must exist), else
/// `$EDGEPRUNE_DATA` if set (likewise), else the first of `./data` and `../shared/data` that holds
/// a known source (see [`Source::detect`]). A folder is searched for the source in it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    let chosen = match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => std::env::var_os("EDGEPRUNE_DATA").map(PathBuf::from),
    };
    if let Some(path) = chosen {
        return Ok(Source::detect(&path)?.path().to_path_buf());
    }
    let defaults = [Path::new("data"), Path::new("../shared/data")];
    for dir in defaults {
        if let Ok(source) = Source::detect(dir) {
            return Ok(source.path().to_path_buf());
        }
    }
    let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
    Err(Error::Data(format!(
        "no dataset found: no path given, EDGEPRUNE_DATA not set, and nothing usable in ./data or ../shared/data \
         (from {cwd}). {HELP}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::tests::{write_cifar10, write_cifar100};
    use crate::data::folder::tests::{FILES, png, write_folder, write_tar};

    #[test]
    fn detects_each_kind_directly_and_inside_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write_cifar10(&root.join("a/cifar-10-batches-bin"), &[0; 5], &[0], false);
        write_cifar100(&root.join("b/cifar-100-binary"), &[0], &[0], false);
        write_folder(&root.join("c/images"));
        let files: Vec<(String, Vec<u8>)> =
            FILES.iter().map(|(s, c, f, seed)| (format!("top/{s}/{c}/{f}"), png(4, 3, *seed))).collect();
        std::fs::create_dir_all(root.join("d")).unwrap();
        write_tar(&root.join("d/cifar10-images.tar.gz"), &files);
        write_tar(&root.join("d/a-binary.tar.gz"), &[("cifar-10-batches-bin/test_batch.bin".into(), vec![0; 3])]);

        let cases = [
            ("a", Source::Cifar10Bin(root.join("a/cifar-10-batches-bin"))),
            ("a/cifar-10-batches-bin", Source::Cifar10Bin(root.join("a/cifar-10-batches-bin"))),
            ("b", Source::Cifar100Bin(root.join("b/cifar-100-binary"))),
            ("c", Source::ImageFolder(root.join("c/images"))),
            ("c/images", Source::ImageFolder(root.join("c/images"))),
            ("d", Source::ImageFolderTar(root.join("d/cifar10-images.tar.gz"))),
        ];
        for (path, expected) in cases {
            assert_eq!(Source::detect(&root.join(path)).unwrap(), expected, "{path}");
            assert_eq!(locate(Some(&root.join(path))).unwrap(), expected.path(), "{path}");
        }
        assert_eq!(Source::detect(&root.join("a")).unwrap().load(Split::Test).unwrap().len(), 1);
        let tar = Source::detect(&root.join("d")).unwrap();
        assert_eq!(tar.load_cached(Split::Train, None).unwrap().classes, ["cat", "dog"]);

        let err = Source::detect(&root.join("d/a-binary.tar.gz")).unwrap_err().to_string();
        assert!(err.contains("a-binary.tar.gz") && err.contains("not an ImageFolder"), "{err}");
        let err = locate(Some(&root.join("nowhere"))).unwrap_err().to_string();
        assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let err = locate(Some(&root.join("empty"))).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("cifar-10-binary.tar.gz"), "{err}");
    }
}
