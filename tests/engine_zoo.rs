//! Every zoo network and structure runs, trains and agrees with itself across memory layouts; the engine
//! refuses what it cannot do with a clear error.

mod common;

use edgeprune::engine::{Device, Infer, Layout, Network, Precision, SgdConfig, Train};
use edgeprune::ir::Model;
use edgeprune::zoo;

/// libtorch's random generator is one per process: dropout in a test training beside another
/// draws from the same stream. The tests whose losses depend on it hold this while they train.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn batch(n: usize, seed: u32) -> Vec<f32> {
    sized(n, 3 * 32 * 32, seed)
}

fn sized(n: usize, per_image: usize, seed: u32) -> Vec<f32> {
    (0..n * per_image)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

#[test]
fn every_zoo_network_trains_and_layouts_agree() {
    let _rng = rng_lock();
    edgeprune::engine::set_threads(2);
    for name in zoo::NETWORKS.iter().chain(zoo::structures::STRUCTURES) {
        let model = Model::init(zoo::build(name, 7).unwrap(), 3).unwrap();
        let x = sized(4, model.graph.input_shape().unwrap().iter().product(), 1);
        let y = vec![0i64, 3, 6, 2];
        let nchw = Network::with_layout(&model, Device::Cpu, Layout::Contiguous).unwrap();
        let nhwc = Network::with_layout(&model, Device::Cpu, Layout::ChannelsLast).unwrap();
        let a = nchw.predict(&x, 4).unwrap();
        let b = nhwc.predict(&x, 4).unwrap();
        assert_eq!(a.len(), 4 * 7, "{name}");
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = a.iter().zip(&b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(err < 1e-4, "{name}: layouts disagree by {err:e}");

        // A few steps on one batch: the loss must fall.
        let mut net = Network::new(&model, Device::Cpu).unwrap();
        net.set_optimizer(SgdConfig { momentum: 0.9, weight_decay: 5e-4, nesterov: false });
        let lr = if *name == "alexnet" { 0.01 } else { 0.05 };
        let first = net.train_step(&x, &y, lr).unwrap().loss;
        let mut last = first;
        for _ in 0..8 {
            last = net.train_step(&x, &y, lr).unwrap().loss;
        }
        assert!(last < first, "{name}: loss {first} -> {last}");
        // Weights come back with the graph's shapes; the BN step counter moved.
        let m = net.model().unwrap();
        if let Ok(t) = m.weights.get("bn1.num_batches_tracked") {
            assert_eq!(t.data, edgeprune::ir::TensorData::I64(vec![9]), "{name}");
        }
    }
}

/// Every zoo network and structure (concatenations, 4-D linear layers, LayerNorm, residual sums,
/// channel permutations) trains in bf16 mixed precision: the first loss is the fp32 loss up to
/// bf16 rounding, the loss falls, and evaluation gives exactly the fp32 network's logits.
#[test]
fn every_zoo_network_trains_in_bf16() {
    // The first steps of the two precisions compared draw the same dropout masks.
    let _rng = rng_lock();
    edgeprune::engine::set_threads(2);
    for name in zoo::NETWORKS.iter().chain(zoo::structures::STRUCTURES) {
        let model = Model::init(zoo::build(name, 7).unwrap(), 3).unwrap();
        let x = sized(4, model.graph.input_shape().unwrap().iter().product(), 1);
        let y = vec![0i64, 3, 6, 2];
        let cfg = SgdConfig { momentum: 0.9, weight_decay: 5e-4, nesterov: false };
        // Smaller than the fp32 test's 0.05, at which the deepest nets are chaotic on a batch of
        // four in either precision (in PyTorch too).
        let lr = 0.01;
        let mut fp32 = Network::new(&model, Device::Cpu).unwrap();
        fp32.set_optimizer(cfg);
        edgeprune::engine::manual_seed(11);
        let reference = fp32.train_step(&x, &y, lr).unwrap().loss;
        let mut net = Network::new(&model, Device::Cpu).unwrap();
        net.set_optimizer(cfg);
        net.set_precision(Precision::Bf16);
        edgeprune::engine::manual_seed(11);
        let first = net.train_step(&x, &y, lr).unwrap().loss;
        assert!(
            (first - reference).abs() <= 0.05 * reference.abs().max(0.1),
            "{name}: bf16 loss {first}, fp32 {reference}"
        );
        let mut last = first;
        for _ in 0..8 {
            last = net.train_step(&x, &y, lr).unwrap().loss;
        }
        assert!(last < first, "{name}: bf16 loss {first} -> {last}");
        let m = net.model().unwrap();
        let a = net.predict(&x, 4).unwrap();
        let b = Network::new(&m, Device::Cpu).unwrap().predict(&x, 4).unwrap();
        assert_eq!(a, b, "{name}: a bf16-trained network evaluates in fp32");
    }
}

#[test]
fn optimizer_state_round_trips() {
    let model = Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap();
    let x = batch(8, 2);
    let y: Vec<i64> = (0..8).collect();
    let cfg = SgdConfig { momentum: 0.9, weight_decay: 1e-4, nesterov: false };
    let mut a = Network::new(&model, Device::Cpu).unwrap();
    a.set_optimizer(cfg);
    a.train_step(&x, &y, 0.1).unwrap();
    // Restart from a's weights and momentum: the next step is the same as a's next step.
    let mut b = Network::new(&a.model().unwrap(), Device::Cpu).unwrap();
    b.set_optimizer(cfg);
    b.load_optimizer_state(&a.optimizer_state().unwrap()).unwrap();
    a.train_step(&x, &y, 0.1).unwrap();
    b.train_step(&x, &y, 0.1).unwrap();
    assert_eq!(a.weights().unwrap(), b.weights().unwrap());

    let mut wrong = a.optimizer_state().unwrap();
    wrong.insert("linear.weight", edgeprune::ir::HostTensor::f32(vec![2], vec![0.0; 2]));
    let e = b.load_optimizer_state(&wrong).unwrap_err().to_string();
    assert!(e.contains("linear.weight"), "{e}");
}

#[test]
fn clear_errors() {
    let model = Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap();
    let net = Network::new(&model, Device::Cpu).unwrap();
    let e = net.predict(&[0.0; 10], 1).unwrap_err().to_string();
    assert!(e.contains("10 values"), "{e}");
    if !tch_has_cuda() {
        let e = Network::new(&model, Device::Cuda(0)).err().expect("no CUDA here").to_string();
        assert!(e.contains("CUDA is not available"), "{e}");
    }
    let mut net = Network::new(&model, Device::Cpu).unwrap();
    let e = net.train_step(&batch(1, 0), &[0], 0.1).unwrap_err().to_string();
    assert!(e.contains("no optimizer"), "{e}");
    assert!("tpu".parse::<Device>().is_err());
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
}

fn tch_has_cuda() -> bool {
    Network::new(&Model::init(zoo::build("resnet20", 2).unwrap(), 0).unwrap(), Device::Cuda(0)).is_ok()
}

/// ONNX Runtime as the inference runtime (`--runtime ort`) gives libtorch's logits on every zoo
/// network and structure. Needs the runtime library (`make setup` installs it; `make test` sets
/// `EDGEPRUNE_ONNXRUNTIME`, and then its absence is a failure); without it the test says so.
#[test]
fn onnxruntime_gives_the_engines_logits() {
    use edgeprune::engine::{Runtime, infer_with};
    if !common::onnxruntime_or_skip("onnxruntime_gives_the_engines_logits") {
        return;
    }
    edgeprune::engine::set_threads(2);
    for name in zoo::NETWORKS.iter().chain(zoo::structures::STRUCTURES) {
        let model = Model::init(zoo::build(name, 7).unwrap(), 5).unwrap();
        let x = sized(3, model.graph.input_shape().unwrap().iter().product(), 2);
        let ours = infer_with(&model, Device::Cpu, Runtime::Libtorch).unwrap().predict(&x, 3).unwrap();
        let ort = infer_with(&model, Device::Cpu, Runtime::OnnxRuntime).unwrap();
        assert_eq!(ort.num_outputs().unwrap(), 7);
        let theirs = ort.predict(&x, 3).unwrap();
        let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = ours.iter().zip(&theirs).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-4 * scale.max(1.0), "{name}: onnxruntime differs by {err:e} (scale {scale})");
        // A batch of the wrong size is an error, not a crash.
        assert!(ort.predict(&x[1..], 3).is_err());
    }
    let e = infer_with(
        &Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap(),
        Device::Cuda(0),
        Runtime::OnnxRuntime,
    );
    // The CPU build `make setup` installs has no CUDA execution provider: said so, not a crash.
    let e = e.err().unwrap().to_string();
    assert!(e.contains("has no CUDA execution provider") && e.contains("onnxruntime-gpu"), "{e}");
    assert!("tvm".parse::<Runtime>().unwrap_err().to_string().contains("libtorch, ort"));
}

/// The inference network (BatchNorm folded into the convolutions, no gradients) gives the
/// training network's evaluation-mode logits, on every zoo network and structure with non-trivial
/// BatchNorm statistics.
#[test]
fn the_folded_inference_network_gives_the_same_logits() {
    edgeprune::engine::set_threads(2);
    for name in zoo::NETWORKS.iter().chain(zoo::structures::STRUCTURES) {
        let model = common::reference::model_of(zoo::build(name, 7).unwrap(), 9);
        let x = sized(3, model.graph.input_shape().unwrap().iter().product(), 4);
        let full = Network::with_layout(&model, Device::Cpu, Layout::Contiguous).unwrap().predict(&x, 3).unwrap();
        let folded = Network::for_inference(&model, Device::Cpu).unwrap().predict(&x, 3).unwrap();
        let scale = full.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = full.iter().zip(&folded).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-4 * scale.max(1.0), "{name}: folded differs by {err:e} (scale {scale})");
    }
}
