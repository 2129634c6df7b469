//! Label-free adaptation on real data: the shipped ResNet-20 (models/resnet20-cifar10, trained on
//! all of CIFAR-10) tells which classes a device sees from its own predictions on that device's
//! images, labels ignored. Needs CIFAR-10 (../shared/data).

mod common;

use std::path::Path;

use edgeprune::workflow::subset::{self, SubsetRule};

/// The teacher's logits on `classes`' test images, and the class names.
fn logits_on(classes: &[&str]) -> (Vec<f32>, usize, usize, Vec<String>, Vec<usize>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = edgeprune::formats::load_model(&root.join("models/resnet20-cifar10")).unwrap();
    let subset: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    let data = edgeprune::train::RunData::load(Some(&root.join("../shared/data")), &subset, 0.8, &[3, 32, 32]).unwrap();
    let (logits, k) = common::logits(&m, &data.test);
    let n = logits.len() / k;
    (logits, n, k, data.class_names.clone(), data.classes.clone())
}

#[test]
fn the_teacher_tells_the_classes_of_each_subset() {
    edgeprune::engine::set_threads(2);
    let names: Vec<String> = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        .map(String::from)
        .into();
    for subset in [&["airplane", "automobile", "ship", "truck"][..], &["cat", "deer", "dog", "horse"], &["cat", "dog"]]
    {
        let (logits, n, k, _, truth) = logits_on(subset);
        assert_eq!(n, 1000 * subset.len());
        let r = subset::infer(&logits, n, k, &SubsetRule::default(), &names).unwrap();
        let (p, rec) = subset::scores(&r.classes, &truth);
        eprintln!(
            "{subset:?}: inferred {:?}, precision {p:.2} recall {rec:.2}\n{}",
            r.classes,
            r.histogram.describe(&names)
        );
        assert_eq!((p, rec), (1.0, 1.0), "{subset:?}: inferred {:?}", r.classes);
    }
}

#[test]
fn images_of_every_class_leave_no_subset_to_adapt_to() {
    edgeprune::engine::set_threads(2);
    let (logits, n, k, names, _) = logits_on(&[]);
    let e = subset::infer(&logits, n, k, &SubsetRule::default(), &names).unwrap_err().to_string();
    assert!(e.contains("every one of its 10 classes") && e.contains("airplane"), "{e}");
}
