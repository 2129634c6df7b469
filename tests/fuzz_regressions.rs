//! Every committed fuzz corpus file (`fuzz/corpus/<target>/`) and every input that once crashed a
//! loader (`tests/fuzz_regressions/<target>/`) goes through the same function the fuzz target
//! calls. A panic fails the test naming the file; errors are fine. Needs neither cargo-fuzz nor
//! a nightly toolchain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use edgeprune::fuzzing;

mod common;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[test]
fn corpora_and_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Keep the panic messages of failing inputs, without the default hook's noise for each.
    let mut failures = Vec::new();
    let mut count = 0;
    for target in fuzzing::TARGETS {
        let dirs = [root.join("fuzz/corpus").join(target), root.join("tests/fuzz_regressions").join(target)];
        for file in dirs.iter().flat_map(|d| files(d)) {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            count += 1;
            let ran = catch_unwind(AssertUnwindSafe(|| fuzzing::run(target, &bytes)));
            match ran {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{target}: no such fuzz target")),
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{}: panicked: {msg}", file.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} inputs failed:\n{}", failures.len(), failures.join("\n"));
    assert!(count > 0, "no corpus files found under fuzz/corpus");
}

#[test]
fn every_target_has_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in fuzzing::TARGETS {
        assert!(!files(&root.join("fuzz/corpus").join(target)).is_empty(), "fuzz/corpus/{target} is empty");
        assert!(root.join("fuzz/fuzz_targets").join(format!("{target}.rs")).is_file(), "no fuzz target {target}");
    }
}

/// Writes the seed corpus of every target into `fuzz/corpus/` from the project's own output:
/// `cargo test --release --test fuzz_regressions -- --ignored write_seed_corpus`, then minimise
/// with `cargo fuzz cmin` (see fuzz/README.md).
#[test]
#[ignore]
fn write_seed_corpus() {
    use edgeprune::criteria::{self, Criterion};
    use edgeprune::formats::{native, onnx};
    use edgeprune::ir::Model;
    use edgeprune::surgery::planner::{self, Limits, Scope, Target};
    use edgeprune::{analysis, data, zoo};
    use std::io::Cursor;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let model = |name: &str| {
        let g = zoo::structures::build(name, 10).or_else(|| zoo::build(name, 10).ok()).unwrap();
        Model::init(g, 0).unwrap()
    };

    // Graphs, weights and ONNX files of the small structures.
    for name in ["flatten_2x2", "squeeze_excite", "grouped", "depthwise_separable", "inception", "dense", "resnet20"] {
        let m = model(name);
        put("graph_json", &format!("{name}.json"), native::graph_to_json(&m.graph).as_bytes());
        if name != "resnet20" {
            let opts = onnx::ExportOptions { fold_bn: name == "grouped" };
            put("onnx", &format!("{name}.onnx"), &onnx::to_bytes(&m, opts).unwrap());
        }
    }
    // The safetensors target checks against flatten_2x2.
    let m = model("flatten_2x2");
    put("safetensors", "flatten_2x2.safetensors", &native::weights_to_safetensors(&m.weights));
    let mut w = m.weights.clone();
    w.tensors.retain(|k, _| k.starts_with("conv"));
    put("safetensors", "partial.safetensors", &native::weights_to_safetensors(&w));

    // Plans for ResNet-20 (the model the plan target applies them to).
    let r20 = model("resnet20");
    let groups = analysis::groups(&r20.graph).unwrap();
    for (i, (criterion, target, scope)) in [
        (Criterion::L1, Target::Params(50.0), Scope::Global),
        (Criterion::Paper, Target::Gops(30.0), Scope::Layer),
        (Criterion::Random, Target::Params(10.0), Scope::Global),
    ]
    .into_iter()
    .enumerate()
    {
        let scores = criteria::score(criterion, &r20, &groups, None, 0).unwrap();
        let plan = planner::make_plan(&r20.graph, &groups, &scores, &target, scope, &Limits::default()).unwrap();
        put("plan_json", &format!("resnet20-{i}.json"), plan.to_json().as_bytes());
    }

    // Recipes: the committed experiment and training recipes.
    for name in ["adapt-cifar10-resnet20.toml", "adapt-cifar100-paper.toml", "demo.toml", "resnet20-cifar10.toml"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes").join(name);
        put("toml_config", name, &std::fs::read(p).unwrap());
    }

    // CIFAR records: two CIFAR-10 records, two CIFAR-100 records.
    let image: Vec<u8> = (0..3072u32).map(|i| (i % 251) as u8).collect();
    put("cifar", "cifar10-2.bin", &[vec![3], image.clone(), vec![5], image.clone()].concat());
    let c100 = |fine: u8| [vec![data::CIFAR100_FINE_TO_COARSE[fine as usize], fine], image.clone()].concat();
    put("cifar", "cifar100-2.bin", &[c100(1), c100(99)].concat());

    // Images: small PNGs (RGB, gray, RGBA) and a JPEG.
    let encode = |img: image::DynamicImage, fmt: image::ImageFormat| {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    };
    let rgb = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 128]));
    let png = encode(rgb.clone().into(), image::ImageFormat::Png);
    let jpeg = encode(rgb.clone().into(), image::ImageFormat::Jpeg);
    put("image", "rgb.png", &png);
    put("image", "rgb.jpg", &jpeg);
    put("image", "gray.png", &encode(image::DynamicImage::ImageRgb8(rgb.clone()).grayscale(), image::ImageFormat::Png));
    put("image", "rgba.png", &encode(image::DynamicImage::ImageRgb8(rgb).to_rgba8().into(), image::ImageFormat::Png));

    // An ImageFolder archive: two classes, train and test.
    let members =
        [("train/cat/a.png", &png), ("train/dog/b.jpg", &jpeg), ("test/cat/c.png", &png), ("test/dog/d.png", &png)];
    let members: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    put("image_tar", "cats-dogs.tar.gz", &common::tar_gz(&members));
}
