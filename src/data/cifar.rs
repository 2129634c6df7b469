//! Readers for the official CIFAR-10 and CIFAR-100 binary versions, and their built-in class
//! names and CIFAR-100 fine-to-coarse mapping (used when the names files are absent).
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1..5.bin` and `test_batch.bin`, records of one
//! label byte and 3072 image bytes; names in `batches.meta.txt`. CIFAR-100 (`cifar-100-binary/`):
//! `train.bin` and `test.bin`, records of a coarse byte, a fine byte and 3072 image bytes; names in
//! `fine_label_names.txt` and `coarse_label_names.txt`.

use std::path::{Path, PathBuf};

use super::{Dataset, Split};
use crate::error::{Error, Result};

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

pub const CIFAR100_COARSE_CLASSES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// The superclass of each CIFAR-100 fine class, by index. The binary files agree with it; the
/// reader checks every record.
pub const CIFAR100_FINE_TO_COARSE: [u8; 100] = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, //
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11, //
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, //
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, //
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, //
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17, //
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, //
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13, //
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, //
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
];

const SHAPE: [usize; 3] = [3, 32, 32];
pub(super) const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Reads a split of CIFAR-10 from the `cifar-10-batches-bin` folder `dir`.
pub(super) fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let classes = read_names(&dir.join("batches.meta.txt"), &CIFAR10_CLASSES)?;
    let files: Vec<PathBuf> = match split {
        Split::Train => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
    };
    let mut ds = empty(classes, None);
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        append_cifar10(&mut ds, &bytes, file)?;
    }
    Ok(ds)
}

/// Parses the bytes of one CIFAR-10 binary batch file (with the built-in class names); `file`
/// names it in errors.
pub fn cifar10_from_bytes(bytes: &[u8], file: &Path) -> Result<Dataset> {
    let mut ds = empty(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(), None);
    append_cifar10(&mut ds, bytes, file)?;
    Ok(ds)
}

/// Parses the bytes of a CIFAR-100 binary file (`train.bin` or `test.bin`, with the built-in class
/// names); `file` names it in errors.
pub fn cifar100_from_bytes(bytes: &[u8], file: &Path) -> Result<Dataset> {
    let classes = CIFAR100_CLASSES.iter().map(|s| s.to_string()).collect();
    let coarse_classes = CIFAR100_COARSE_CLASSES.iter().map(|s| s.to_string()).collect();
    let mut ds = empty(classes, Some(coarse_classes));
    append_cifar100(&mut ds, bytes, file)?;
    Ok(ds)
}

fn empty(classes: Vec<String>, coarse_classes: Option<Vec<String>>) -> Dataset {
    let coarse_labels = coarse_classes.as_ref().map(|_| Vec::new());
    Dataset { images: Vec::new().into(), labels: Vec::new(), coarse_labels, classes, coarse_classes, shape: SHAPE }
}

/// Appends the records of one CIFAR-10 batch file to `ds`.
fn append_cifar10(ds: &mut Dataset, bytes: &[u8], file: &Path) -> Result<()> {
    let records = records(file, bytes, 1)?;
    ds.images.owned_mut().reserve(records.len() * IMAGE_BYTES);
    for (i, record) in records.enumerate() {
        ds.labels.push(check_label(file, i, "label", record[0], ds.classes.len())?);
        ds.images.owned_mut().extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Reads a split of CIFAR-100 (fine and coarse labels) from the `cifar-100-binary` folder `dir`.
pub(super) fn load_cifar100(dir: &Path, split: Split) -> Result<Dataset> {
    let classes = read_names(&dir.join("fine_label_names.txt"), &CIFAR100_CLASSES)?;
    let coarse_classes = read_names(&dir.join("coarse_label_names.txt"), &CIFAR100_COARSE_CLASSES)?;
    let file = dir.join(format!("{split}.bin"));
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let mut ds = empty(classes, Some(coarse_classes));
    append_cifar100(&mut ds, &bytes, &file)?;
    Ok(ds)
}

/// Appends the records of a CIFAR-100 binary file to `ds` (which has coarse classes).
fn append_cifar100(ds: &mut Dataset, bytes: &[u8], file: &Path) -> Result<()> {
    let records = records(file, bytes, 2)?;
    let n_coarse = ds.coarse_classes.as_ref().map_or(0, Vec::len);
    let mut coarse_labels = ds.coarse_labels.take().unwrap_or_default();
    ds.images.owned_mut().reserve(records.len() * IMAGE_BYTES);
    for (i, record) in records.enumerate() {
        let coarse = check_label(file, i, "coarse label", record[0], n_coarse)?;
        let fine = check_label(file, i, "fine label", record[1], ds.classes.len())?;
        let expected = CIFAR100_FINE_TO_COARSE[fine as usize];
        if coarse != u16::from(expected) {
            return Err(Error::file(
                file,
                format!(
                    "record {i}: coarse label {coarse} does not match fine label {fine} (whose superclass is {expected})"
                ),
            ));
        }
        ds.labels.push(fine);
        coarse_labels.push(coarse);
        ds.images.owned_mut().extend_from_slice(&record[2..]);
    }
    ds.coarse_labels = Some(coarse_labels);
    Ok(())
}

/// The records of a binary file: `label_bytes` label bytes then the image, each.
fn records<'a>(file: &Path, bytes: &'a [u8], label_bytes: usize) -> Result<std::slice::ChunksExact<'a, u8>> {
    let size = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(Error::file(file, format!("is empty: no images (a record is {size} bytes)")));
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::file(
            file,
            format!(
                "length {} is not a multiple of the record size {size} (truncated after record {}?)",
                bytes.len(),
                bytes.len() / size
            ),
        ));
    }
    Ok(bytes.chunks_exact(size))
}

fn check_label(file: &Path, record: usize, what: &str, label: u8, classes: usize) -> Result<u16> {
    if usize::from(label) < classes {
        Ok(u16::from(label))
    } else {
        Err(Error::file(file, format!("record {record}: {what} {label} is out of range (there are {classes} classes)")))
    }
}

/// Class names from a names file (one per line, blank lines ignored), or the built-in ones when
/// the file is absent. The file must hold exactly as many names as the built-in list.
fn read_names(path: &Path, builtin: &[&str]) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(builtin.iter().map(|s| s.to_string()).collect());
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != builtin.len() {
        return Err(Error::file(path, format!("holds {} class names, expected {}", names.len(), builtin.len())));
    }
    Ok(names)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::data::resolve_subset;

    /// A 3072-byte image whose bytes all equal `v`.
    fn image(v: u8) -> Vec<u8> {
        vec![v; IMAGE_BYTES]
    }

    /// Writes a CIFAR-10 binary folder with one record per label given; the train records are dealt
    /// round-robin to the five batch files.
    pub(crate) fn write_cifar10(dir: &Path, train: &[u8], test: &[u8], names: bool) {
        std::fs::create_dir_all(dir).unwrap();
        let record = |&l: &u8| [vec![l], image(l)].concat();
        for i in 0..5 {
            let bytes: Vec<u8> = train.iter().skip(i).step_by(5).flat_map(record).collect();
            std::fs::write(dir.join(format!("data_batch_{}.bin", i + 1)), bytes).unwrap();
        }
        std::fs::write(dir.join("test_batch.bin"), test.iter().flat_map(record).collect::<Vec<u8>>()).unwrap();
        if names {
            let text: String = CIFAR10_CLASSES.iter().map(|n| format!("{}\n", n.to_uppercase())).collect();
            std::fs::write(dir.join("batches.meta.txt"), text + "\n").unwrap();
        }
    }

    #[test]
    fn cifar10_reads_records_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), &[3, 7, 2, 3, 4, 5], &[9], true);
        let train = load_cifar10(tmp.path(), Split::Train).unwrap();
        assert_eq!(train.labels, vec![3, 5, 7, 2, 3, 4]);
        assert_eq!(train.shape, [3, 32, 32]);
        assert_eq!(train.image(2), image(7).as_slice());
        assert_eq!(train.classes[0], "AIRPLANE");
        let test = load_cifar10(tmp.path(), Split::Test).unwrap();
        assert_eq!(test.labels, vec![9]);
        assert!(test.coarse_labels.is_none());
    }

    #[test]
    fn cifar10_errors_name_file_and_record() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), &[1], &[0, 10], false);
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin") && err.contains("record 1") && err.contains("label 10"), "{err}");

        std::fs::write(tmp.path().join("test_batch.bin"), [vec![1], image(1), vec![2; 100]].concat()).unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin") && err.contains("record size 3073"), "{err}");

        // data_batch_2 is empty.
        let err = load_cifar10(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("data_batch_2.bin"), "{err}");

        std::fs::write(tmp.path().join("batches.meta.txt"), "a\nb\n").unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("batches.meta.txt") && err.contains("expected 10"), "{err}");
    }

    /// Writes a CIFAR-100 binary folder with one record per fine label given (coarse from the
    /// official mapping), and the names files when asked.
    pub(crate) fn write_cifar100(dir: &Path, train: &[u8], test: &[u8], names: bool) {
        std::fs::create_dir_all(dir).unwrap();
        for (file, labels) in [("train.bin", train), ("test.bin", test)] {
            let bytes: Vec<u8> = labels
                .iter()
                .flat_map(|&l| [vec![CIFAR100_FINE_TO_COARSE[l as usize], l], image(l)].concat())
                .collect();
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        if names {
            std::fs::write(dir.join("fine_label_names.txt"), CIFAR100_CLASSES.join("\n")).unwrap();
            std::fs::write(dir.join("coarse_label_names.txt"), CIFAR100_COARSE_CLASSES.join("\n")).unwrap();
        }
    }

    #[test]
    fn cifar100_keeps_fine_and_coarse_labels() {
        for names in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write_cifar100(tmp.path(), &[1, 32, 0, 99], &[73], names);
            let ds = load_cifar100(tmp.path(), Split::Train).unwrap();
            assert_eq!(ds.labels, vec![1, 32, 0, 99]);
            assert_eq!(ds.coarse_labels, Some(vec![1, 1, 4, 13]));
            assert_eq!(ds.classes[1], "aquarium_fish");
            assert_eq!(ds.coarse_classes.as_ref().unwrap()[13], "non-insect_invertebrates");
            assert_eq!(ds.image(3), image(99).as_slice());
            let test = load_cifar100(tmp.path(), Split::Test).unwrap();
            assert_eq!(test.labels, vec![73]);
        }
    }

    #[test]
    fn cifar100_superclass_resolves_to_its_fine_classes() {
        let tmp = tempfile::tempdir().unwrap();
        let all: Vec<u8> = (0..100).collect();
        write_cifar100(tmp.path(), &all, &[0], false);
        let ds = load_cifar100(tmp.path(), Split::Train).unwrap();
        let fish = resolve_subset(&ds, &["fish".into()]).unwrap();
        let names: Vec<&str> = fish.iter().map(|&c| ds.classes[c].as_str()).collect();
        assert_eq!(names, ["aquarium_fish", "flatfish", "ray", "shark", "trout"]);
        let mixed = resolve_subset(&ds, &["trees".into(), "apple".into(), "oak_tree".into()]).unwrap();
        assert_eq!(mixed, vec![0, 47, 52, 56, 59, 96]);
    }

    #[test]
    fn official_mapping_has_five_fine_classes_per_superclass() {
        let mut counts = [0; 20];
        for &c in &CIFAR100_FINE_TO_COARSE {
            counts[c as usize] += 1;
        }
        assert_eq!(counts, [5; 20]);
    }

    #[test]
    fn cifar100_rejects_bad_labels() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar100(tmp.path(), &[5, 6], &[], false);
        let file = tmp.path().join("train.bin");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[3074 + 1] = 100; // fine label of record 1
        std::fs::write(&file, &bytes).unwrap();
        let err = load_cifar100(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("train.bin") && err.contains("record 1") && err.contains("fine label 100"), "{err}");

        bytes[3074 + 1] = 6;
        bytes[3074] = 0; // coarse label of record 1 disagrees with the fine label
        std::fs::write(&file, &bytes).unwrap();
        let err = load_cifar100(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("record 1") && err.contains("does not match"), "{err}");

        std::fs::write(&file, &bytes[..3074 + 5]).unwrap();
        let err = load_cifar100(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("train.bin") && err.contains("3074"), "{err}");
    }
}
