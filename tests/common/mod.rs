//! What the integration tests that run the `edgeprune` binary on data of their own share: the
//! command, its output, a small ImageFolder dataset that a network learns in a few batches, and a
//! model's logits on a dataset.
//! (Each test file compiles this module separately and uses part of it.)
#![allow(dead_code)]

pub mod reference;

use std::path::Path;
use std::process::{Command, Output};

/// The edgeprune binary, blind to the caller's `EDGEPRUNE_DATA`, with OpenMP threads that sleep
/// when idle (tests run side by side on two cores).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeprune"));
    c.env_remove("EDGEPRUNE_DATA").env("OMP_WAIT_POLICY", "PASSIVE");
    c
}

/// Whether ONNX Runtime's library is there to test with. `make test` names it in
/// `EDGEPRUNE_ONNXRUNTIME`, and then its absence is a failure; without either, `test` says it is
/// skipped.
#[allow(dead_code)]
pub fn onnxruntime_or_skip(test: &str) -> bool {
    let explicit = std::env::var_os("EDGEPRUNE_ONNXRUNTIME").is_some();
    let found = edgeprune::engine::onnxruntime::library_path().is_some_and(|p| p.exists());
    if !found {
        assert!(!explicit, "EDGEPRUNE_ONNXRUNTIME names no library");
        eprintln!("SKIPPED {test}: no ONNX Runtime library (run `make setup`)");
    }
    found
}

/// Runs `c` to the end; returns its output and its stdout + stderr as text.
pub fn output(c: &mut Command) -> (Output, String) {
    let out = c.output().expect("edgeprune runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

/// Writes an ImageFolder dataset `root/{train,test}/<class>/NNNN.png` of `size` x `size` images,
/// `n_train` and `n_test` per class; `pixel(class, image, x, y)` paints them.
pub fn write_image_folder(
    root: &Path,
    classes: &[&str],
    (n_train, n_test): (u32, u32),
    size: u32,
    pixel: impl Fn(usize, u32, u32, u32) -> [u8; 3],
) {
    for (split, n) in [("train", n_train), ("test", n_test)] {
        for (c, name) in classes.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(size, size, |x, y| image::Rgb(pixel(c, i, x, y)));
                img.save(dir.join(format!("{i:04}.png"))).unwrap();
            }
        }
    }
}

/// Textured grey whose channel `class` is raised (red, green, blue); any class from 3 on stays
/// grey. A network tells them apart within an epoch.
pub fn tinted(class: usize, i: u32, x: u32, y: u32) -> [u8; 3] {
    let v = ((x * 11 + y * 5 + i * 3) % 50) as u8;
    let mut p = [70 + v, 70 + v, 70 + v];
    if class < 3 {
        p[class] = if (x + y).is_multiple_of(3) { 250 } else { 180 + v };
    }
    p
}

/// A `.tar.gz` (in memory) holding `members` as (name, bytes).
pub fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The logits of `m` (libtorch, evaluation mode, its recorded normalisation) on every image of
/// `ds` in order, and the number of outputs.
pub fn logits(m: &edgeprune::ir::Model, ds: &edgeprune::data::Dataset) -> (Vec<f32>, usize) {
    use edgeprune::engine::Infer;
    let norm = m.graph.normalize.clone().expect("the model records its normalisation");
    let net = edgeprune::engine::Network::new(m, edgeprune::engine::Device::Cpu).unwrap();
    let classes = net.num_outputs().unwrap();
    let loader = edgeprune::data::Loader::new(
        std::sync::Arc::new(ds.clone()),
        edgeprune::data::LoaderConfig {
            batch_size: 500,
            shuffle: false,
            augment: None,
            norm,
            seed: 0,
            epoch: 0,
            size: None,
        },
    );
    let mut out = Vec::with_capacity(ds.len() * classes);
    for b in loader {
        out.extend(net.predict(&b.images, b.len()).unwrap());
    }
    (out, classes)
}
