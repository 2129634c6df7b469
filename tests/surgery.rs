//! The law of structured pruning: removing a set of channels physically gives the same outputs as
//! keeping the full network with those channels' outgoing contributions zeroed. Checked on every
//! zoo network, on the extra structures (projection residuals, concats, grouped and depthwise
//! convs, squeeze-excitation, flatten into linear, channel slices and shuffles, ConvNeXt's linear
//! layers over channels), and on random graphs. Channels normalised together by a LayerNorm2d
//! do not obey it (removing one renormalises the rest); their pruning is checked for validity.

mod common;

use common::reference::model_of;
use edgeprune::analysis::{self, Group};
use edgeprune::engine::{Device, Infer, Layout, Network, Train};
use edgeprune::ir::{Graph, HostTensor, Model, Op};
use edgeprune::surgery::{self, GroupPlan, Plan};
use edgeprune::zoo::{self, Builder};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// Whether a group runs through a LayerNorm2d: removing its channels changes the statistics the
/// others are normalised by, so the law (removal = zeroing) does not apply to it; such groups are
/// checked by `layer_norm_groups_prune_to_valid_models`.
fn normalised_together(g: &Group) -> bool {
    g.tensors.iter().any(|t| matches!(t.kind, Op::LayerNorm2d { .. }))
}

/// A plan removing about `fraction` of each prunable group's channels, keeping at least one
/// (groups through a LayerNorm2d are left whole).
fn random_plan(graph: &Graph, groups: &[Group], fraction: f64, rng: &mut ChaCha8Rng) -> Plan {
    let gp = groups
        .iter()
        .filter(|g| g.prunable() && !normalised_together(g))
        .map(|g| {
            // As many removed from every block of a group that a grouped conv splits in blocks.
            let mut keep = Vec::new();
            let per = g.size / g.blocks;
            let remove = ((per as f64 * fraction).round() as usize).min(per - 1);
            for block in 0..g.blocks {
                let mut idx: Vec<usize> = (0..g.size).filter(|&k| g.block_of[k] == block).collect();
                idx.shuffle(rng);
                keep.extend_from_slice(&idx[remove..]);
            }
            keep.sort();
            GroupPlan { name: g.name.clone(), size: g.size, keep }
        })
        .collect();
    Plan::new(&graph.name, gp)
}

/// The full model with every consumer's input slice of the removed channels set to zero.
fn zeroed(model: &Model, groups: &[Group], plan: &Plan) -> Model {
    let mut m = model.clone();
    for gp in &plan.groups {
        let g = groups.iter().find(|g| g.name == gp.name).unwrap();
        for c in &g.consumers {
            let key = format!("{}.weight", c.node);
            let t: &mut HostTensor = m.weights.tensors.get_mut(&key).unwrap();
            let (o, i) = (t.shape[0], t.shape[1]);
            let inner: usize = t.shape[2..].iter().product();
            // A grouped conv's rows see only their block's inputs, as columns local to the block.
            let groups = match c.kind {
                edgeprune::ir::Op::Conv2d { groups, in_channels, .. } if groups > 1 => in_channels / i,
                _ => 1,
            };
            let v = t.as_f32_mut().unwrap();
            for k in (0..g.size).filter(|k| !gp.keep.contains(k)) {
                for &col in &c.indices[k] {
                    let (block, local) = (col / i, col % i);
                    for row in (0..o).filter(|r| groups == 1 || r / (o / groups) == block) {
                        let s = (row * i + local) * inner;
                        v[s..s + inner].iter_mut().for_each(|x| *x = 0.0);
                    }
                }
            }
        }
    }
    m
}

fn outputs(m: &Model, x: &[f32], n: usize) -> Vec<f32> {
    Network::with_layout(m, Device::Cpu, Layout::Contiguous).unwrap().predict(x, n).unwrap()
}

/// Prunes `graph` at random, checks the law and the predicted parameter count; returns the
/// parameters before and after.
/// With `require_effect`, the removed channels must matter to the output (random graphs may
/// prune dead branches, which change nothing).
fn check_law(graph: Graph, seed: u64, fraction: f64, require_effect: bool) -> (usize, usize) {
    let name = graph.name.clone();
    let model = model_of(graph, seed);
    let groups = analysis::groups(&model.graph).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = random_plan(&model.graph, &groups, fraction, &mut rng);
    let pruned = surgery::apply(&model, &plan).unwrap();
    let reference = zeroed(&model, &groups, &plan);
    let shape = model.graph.input_shape().unwrap().to_vec();
    let n = 3;
    let x: Vec<f32> = (0..n * shape.iter().product::<usize>()).map(|_| rng.random_range(-2.0..2.0)).collect();
    let a = outputs(&pruned, &x, n);
    let b = outputs(&reference, &x, n);
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(&b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(err <= 1e-5 * scale, "{name}: pruned and zeroed outputs differ by {err:e} (scale {scale})");
    // Removing channels must change the function unless nothing was removed (the test is not vacuous).
    if require_effect && plan.removed() > 0 {
        let full = outputs(&model, &x, n);
        assert!(full.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-6), "{name}: zeroing changed nothing");
    }
    let before = model.graph.num_parameters();
    let after = pruned.graph.num_parameters();
    assert!(plan.removed() == 0 || after < before, "{name}: {before} -> {after}");
    (before, after)
}

#[test]
fn zoo_networks_obey_the_law() {
    edgeprune::engine::set_threads(2);
    for (i, name) in zoo::NETWORKS.iter().enumerate() {
        let (before, after) = check_law(zoo::build(name, 10).unwrap(), i as u64, 0.4, true);
        eprintln!("{name}: {before} -> {after} parameters");
    }
}

#[test]
fn extra_structures_obey_the_law() {
    for (i, name) in zoo::structures::STRUCTURES.iter().enumerate() {
        for fraction in [0.25, 0.6] {
            check_law(zoo::build(name, 5).unwrap(), 100 + i as u64, fraction, true);
        }
    }
}

/// Groups through a LayerNorm2d (ConvNeXt) prune to smaller valid models: every prunable group
/// halved, the norms and layer scale shrink with their channels, the outputs stay finite and
/// change (the remaining channels are normalised anew), and the law still holds for the hidden
/// units of the block's linear layers (the one group not normalised with others).
#[test]
fn layer_norm_groups_prune_to_valid_models() {
    let model = model_of(zoo::build("convnext_block", 5).unwrap(), 3);
    let groups = analysis::groups(&model.graph).unwrap();
    let lawful: Vec<&str> =
        groups.iter().filter(|g| g.prunable() && !normalised_together(g)).map(|g| g.name.as_str()).collect();
    assert_eq!(lawful, ["block.pw1"]);
    let gp = groups
        .iter()
        .filter(|g| g.prunable())
        .map(|g| GroupPlan { name: g.name.clone(), size: g.size, keep: (0..g.size).step_by(2).collect() })
        .collect();
    let plan = Plan::new(&model.graph.name, gp);
    let pruned = surgery::apply(&model, &plan).unwrap();
    for (node, want) in [("stem.norm", 4), ("block.norm", 4), ("head.norm", 4), ("block", 4)] {
        let op = &pruned.graph.node(node).unwrap().op;
        assert!(
            matches!(*op, Op::LayerNorm2d { num_features, .. } | Op::LayerScale { num_features } if num_features == want),
            "{node}: {op:?}"
        );
    }
    let x: Vec<f32> = (0..2 * 3 * 16 * 16).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let (a, b) = (outputs(&pruned, &x, 2), outputs(&model, &x, 2));
    assert!(a.iter().all(|v| v.is_finite()) && a.len() == b.len());
    assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-4), "pruning changed nothing");
    check_law(zoo::build("convnext_block", 5).unwrap(), 9, 0.5, true);
}

#[test]
fn plans_replay_identically_and_bad_plans_are_refused() {
    let model = model_of(zoo::build("squeezenet", 10).unwrap(), 1);
    let groups = analysis::groups(&model.graph).unwrap();
    let plan = random_plan(&model.graph, &groups, 0.5, &mut ChaCha8Rng::seed_from_u64(1));
    let again = Plan::from_json(&plan.to_json(), std::path::Path::new("plan.json")).unwrap();
    assert_eq!(surgery::apply(&model, &plan).unwrap(), surgery::apply(&model, &again).unwrap());

    let bad = |f: &dyn Fn(&mut Plan), needle: &str| {
        let mut p = plan.clone();
        f(&mut p);
        let e = surgery::apply(&model, &p).unwrap_err().to_string();
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
    };
    bad(&|p| p.groups[0].keep.clear(), "keeps no channel");
    bad(&|p| p.groups[0].name = "fire99.conv1".into(), "fire99.conv1");
    bad(&|p| p.groups[0].size += 1, "channels");
    bad(&|p| p.groups[0].keep.push(10_000), "increasing");
    bad(&|p| p.groups.push(GroupPlan { name: "conv2".into(), size: 10, keep: vec![0] }), "network output");
}

/// A random graph: convs (plain, strided, depthwise), BN, ReLU, residual adds, concats,
/// max-pools and squeeze-excitation products, ending in a classifier.
fn random_graph(seed: u64) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut b = Builder::new([3, 8, 8]);
    let mut live: Vec<String> = vec!["input".into()];
    let steps = rng.random_range(3..9);
    for s in 0..steps {
        let t = live[rng.random_range(0..live.len())].clone();
        let c = b.channels(&t);
        let sp = b.spatial(&t);
        let y = match rng.random_range(0..6) {
            0 | 1 => {
                let out = rng.random_range(2..7);
                let (k, stride) = if sp >= 4 && rng.random_bool(0.3) {
                    (3, 2)
                } else {
                    (if rng.random_bool(0.5) { 1 } else { 3 }, 1)
                };
                let y = b.conv(&format!("n{s}.conv"), &t, out, k, stride, k / 2, 1, rng.random_bool(0.3));
                let y = if rng.random_bool(0.6) { b.bn(&format!("n{s}.bn"), &y) } else { y };
                b.relu(&format!("n{s}.relu"), &y)
            }
            2 if t != "input" => {
                let y = b.conv(&format!("n{s}.dw"), &t, c, 3, 1, 1, c, false);
                let y = b.bn(&format!("n{s}.bn"), &y);
                let r = b.relu(&format!("n{s}.relu"), &y);
                b.add(format!("n{s}.add"), Op::Add, &[&r, &t])
            }
            3 => {
                let others: Vec<String> = live.iter().filter(|o| b.spatial(o) == sp).cloned().collect();
                let o = others[rng.random_range(0..others.len())].clone();
                b.add(format!("n{s}.cat"), Op::Concat, &[&t, &o])
            }
            4 if sp >= 4 => b.max_pool(&format!("n{s}.pool"), &t, 2, 2),
            5 if t != "input" => {
                let g = b.add(format!("n{s}.gap"), Op::GlobalAvgPool, &[&t]);
                let f = b.conv(&format!("n{s}.fc"), &g, c, 1, 1, 0, 1, true);
                let f = b.add(format!("n{s}.sig"), Op::Sigmoid, &[&f]);
                b.add(format!("n{s}.mul"), Op::Mul, &[&t, &f])
            }
            _ => {
                let y = b.conv(&format!("n{s}.conv"), &t, rng.random_range(2..6), 3, 1, 1, 1, false);
                b.relu(&format!("n{s}.relu"), &y)
            }
        };
        live.push(y);
    }
    let last = live.last().unwrap().clone();
    if rng.random_bool(0.5) {
        let g = b.add("gap", Op::GlobalAvgPool, &[&last]);
        let f = b.add("flatten", Op::Flatten, &[&g]);
        b.linear("fc", &f, 4);
    } else {
        let f = b.add("flatten", Op::Flatten, &[&last]);
        let h = b.linear("hidden", &f, 6);
        let h = b.relu("hidden.relu", &h);
        b.linear("fc", &h, 4);
    }
    b.finish(&format!("random{seed}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
    #[test]
    fn random_graphs_obey_the_law(seed in 0u64..1_000_000, fraction in 0.1f64..0.8) {
        check_law(random_graph(seed), seed, fraction, false);
    }
}

#[test]
fn pruned_networks_train_and_keep_their_momentum() {
    use edgeprune::engine::SgdConfig;
    let cfg = SgdConfig { momentum: 0.9, weight_decay: 5e-4, nesterov: false };
    for (i, name) in zoo::NETWORKS.iter().enumerate() {
        let model = model_of(zoo::build(name, 10).unwrap(), i as u64);
        let groups = analysis::groups(&model.graph).unwrap();
        let plan = random_plan(&model.graph, &groups, 0.5, &mut ChaCha8Rng::seed_from_u64(9));
        let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
        let x: Vec<f32> = (0..4 * 3 * 32 * 32).map(|_| rng.random_range(-2.0..2.0)).collect();
        let y = vec![1i64, 4, 7, 9];
        // Two steps on the full network, then surgery mid-training with the momentum.
        let mut net = Network::new(&model, Device::Cpu).unwrap();
        net.set_optimizer(cfg);
        for _ in 0..2 {
            net.train_step(&x, &y, 0.01).unwrap();
        }
        let momentum = net.optimizer_state().unwrap();
        let (pruned, pm) = surgery::apply_with_state(&net.model().unwrap(), &momentum, &plan).unwrap();
        for (k, t) in &pm.tensors {
            assert_eq!(&t.shape, &pruned.weights.get(k).unwrap().shape, "{name} {k}");
        }
        let mut net = Network::new(&pruned, Device::Cpu).unwrap();
        net.set_optimizer(cfg);
        net.load_optimizer_state(&pm).unwrap();
        let lr = if *name == "alexnet" { 0.01 } else { 0.05 };
        let first = net.train_step(&x, &y, lr).unwrap().loss;
        let mut last = first;
        for _ in 0..8 {
            last = net.train_step(&x, &y, lr).unwrap().loss;
        }
        assert!(last < first, "{name}: the pruned network's loss went {first} -> {last}");
    }
}

#[test]
fn momentum_is_sliced_like_the_weights() {
    let model = model_of(zoo::build("resnet20", 10).unwrap(), 3);
    let groups = analysis::groups(&model.graph).unwrap();
    let plan = random_plan(&model.graph, &groups, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
    // Momentum equal to the weights themselves must come out equal to the pruned weights.
    let params: edgeprune::ir::Weights = edgeprune::ir::Weights {
        tensors: model
            .weights
            .tensors
            .iter()
            .filter(|(k, _)| !k.contains("running") && !k.contains("num_batches"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let (pruned, pm) = surgery::apply_with_state(&model, &params, &plan).unwrap();
    for (k, t) in &pm.tensors {
        assert_eq!(t, pruned.weights.get(k).unwrap(), "{k}");
    }
}
