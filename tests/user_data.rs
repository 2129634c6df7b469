//! Data as users have it, through the binary: a folder of class folders (no train/ and test/)
//! with images of mixed sizes and kinds (PNG and JPEG, RGB and grayscale), trained on and
//! evaluated; a folder with only test/ evaluated; and the refusals that name what is wrong.

mod common;

use std::path::Path;

use common::{bin, output, tinted};

/// `root/<class>/<i>.{png,jpg}`: per class `n` images of assorted sizes, every third grayscale.
fn write_flat(root: &Path, classes: &[&str], n: u32) {
    for (c, name) in classes.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let (w, h) = (24 + (i * 7) % 30, 20 + (i * 11) % 26);
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(tinted(c, i, x, y)));
            let img = if i % 3 == 2 {
                image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img).to_luma8())
            } else {
                image::DynamicImage::ImageRgb8(img)
            };
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}

#[test]
fn a_flat_folder_of_mixed_images_is_split_trained_on_and_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    write_flat(&data, &["red", "green", "blue"], 20);
    let run = tmp.path().join("run");
    let (out, text) = output(
        bin()
            .args(["train", "--model", "resnet20", "--epochs", "1", "--max-batches", "2", "--batch-size", "16"])
            .args(["--threads", "1", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(&run),
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("holds class folders but no train/ and test/") && text.contains("80% train / 20% test"),
        "{text}"
    );
    // 3 classes x 20 images: 4 of each class test (20%), of the other 16, 4 validate.
    assert!(text.contains("(36 train / 12 val / 12 test images, 3 classes)"), "{text}");

    let (out, text) = output(bin().arg("eval").arg(&run).arg("--data").arg(&data));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("12 images of test (3 classes)"), "{text}");

    // The same images as NumPy files, for another runtime: fitted to 3 x 32 x 32, on a subset.
    let npy = tmp.path().join("npy");
    let (out, text) = output(
        bin()
            .args(["convert-data", "--subset", "green,blue", "--data"])
            .arg(&data)
            .arg("--like")
            .arg(&run)
            .arg("-o")
            .arg(&npy),
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("wrote the 8 test images") && text.contains("(3 x 32 x 32)"), "{text}");
    let images = std::fs::read(npy.join("images.npy")).unwrap();
    let header_len = u16::from_le_bytes([images[8], images[9]]) as usize;
    assert!(String::from_utf8_lossy(&images[10..10 + header_len]).contains("'shape': (8, 3, 32, 32)"));
    assert_eq!(images.len(), 10 + header_len + 8 * 3 * 32 * 32);
    let labels = std::fs::read(npy.join("labels.npy")).unwrap();
    let labels: Vec<i64> =
        labels[labels.len() - 64..].chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    // Indices into all the classes, sorted as ImageFolder sorts them: blue 0, green 1, red 2.
    assert_eq!(labels, [0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(std::fs::read_to_string(npy.join("classes.txt")).unwrap(), "blue\ngreen\nred\n");
    let norm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(npy.join("normalize.json")).unwrap()).unwrap();
    assert_eq!(norm["mean"].as_array().unwrap().len(), 3);
    // It never writes into the data it reads.
    let (out, text) = output(
        bin().args(["convert-data", "--data"]).arg(&data).arg("--like").arg(&run).arg("-o").arg(data.join("red")),
    );
    assert!(!out.status.success(), "{text}");

    // A folder holding only test/: evaluated with the model's own normalisation.
    let test_only = tmp.path().join("deployed");
    for class in ["red", "green", "blue"] {
        std::fs::create_dir_all(test_only.join("test").join(class)).unwrap();
        for entry in std::fs::read_dir(data.join(class)).unwrap().take(5) {
            let p = entry.unwrap().path();
            std::fs::copy(&p, test_only.join("test").join(class).join(p.file_name().unwrap())).unwrap();
        }
    }
    let (out, text) = output(bin().arg("eval").arg(&run).arg("--data").arg(&test_only));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("15 images of test (3 classes)"), "{text}");
    // Training on it is refused, naming the folder; so is evaluating a model with no
    // normalisation of its own (there are no training images to compute one from).
    let (out, text) = output(
        bin()
            .args(["train", "--model", "resnet20", "--epochs", "1"])
            .arg("--data")
            .arg(&test_only)
            .arg("-o")
            .arg(tmp.path().join("r2")),
    );
    assert!(!out.status.success() && text.contains("deployed") && text.contains("no train/"), "{text}");
    let fresh = tmp.path().join("fresh");
    let (out, text) = output(bin().args(["init", "resnet20", "--num-classes", "3", "-o"]).arg(&fresh));
    assert!(out.status.success(), "{text}");
    let (out, text) = output(bin().arg("eval").arg(&fresh).arg("--data").arg(&test_only));
    assert!(!out.status.success() && text.contains("records no input normalisation"), "{text}");
}

#[test]
fn an_image_that_does_not_decode_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    write_flat(&data, &["a", "b"], 6);
    std::fs::write(data.join("b/003.jpg"), b"\xff\xd8\xff not really a jpeg").unwrap();
    let model = tmp.path().join("model");
    let (out, text) = output(bin().args(["init", "resnet20", "--num-classes", "2", "-o"]).arg(&model));
    assert!(out.status.success(), "{text}");
    let (out, text) = output(bin().arg("eval").arg(&model).arg("--data").arg(&data));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("003.jpg") && text.contains("decode"), "{text}");
}
