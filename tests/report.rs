//! The sweep report end to end: a synthetic `cells.csv` (2 networks x 2 subsets x 3 levels x 3
//! pipelines, 2 seeds for the pruned ones) read back and reported; every file is checked.
//!
//! Set `EDGEPRUNE_REPORT_SAMPLE=<dir>` to also leave a copy of the report there.

use std::fmt::Write as _;
use std::path::Path;

use edgeprune::protocol::report::{self, read_cells, write_report};

const HEADER: &str = "network,subset,pipeline,level,seed,criterion,params_before,params_after,\
params_removed_percent,gops_before,gops_after,test_top1,val_top1,best_epoch,epochs,seconds,\
train_step_ms_before,train_step_ms_after,prune_seconds,data_ms_per_batch,\
infer_ms_per_image_b1_before,infer_ms_per_image_b1_after,infer_ms_per_image_b128_before,\
infer_ms_per_image_b128_after,peak_rss_bytes,energy_joules";

const NETWORKS: [(&str, f64, f64); 2] = [("resnet20", 278_324.0, 0.0411), ("alexnet", 2_495_396.0, 0.0452)];
const SUBSETS: [(&str, f64); 2] = [("vehicles", 0.55), ("pets", 0.40)];
const LEVELS: [f64; 3] = [25.0, 50.0, 75.0];

/// The accuracy of a synthetic cell. aware(p) - agnostic(p) = 0.10 + 0.001 p + 0.02 (network
/// index), the same for both subsets; seeds differ by +-0.01 around the mean.
fn top1(net: usize, subset: usize, pipeline: &str, level: f64, seed: u64) -> f64 {
    let base = SUBSETS[subset].1 + 0.05 * net as f64;
    let jitter = if seed == 0 { -0.01 } else { 0.01 };
    match pipeline {
        "unpruned" => base,
        "aware" => base + 0.2 - 0.002 * level + jitter,
        _ => base + 0.1 - 0.003 * level - 0.02 * net as f64 + jitter,
    }
}

fn expected_delta_pp(net: usize, level: f64) -> f64 {
    100.0 * (0.10 + 0.001 * level + 0.02 * net as f64)
}

fn synthetic_csv() -> String {
    let mut s = format!("{HEADER}\n");
    for (n, &(net, params, gops)) in NETWORKS.iter().enumerate() {
        for (k, &(subset, _)) in SUBSETS.iter().enumerate() {
            let acc = top1(n, k, "unpruned", 0.0, 0);
            let _ = writeln!(
                s,
                "{net},{subset},unpruned,0,0,paper,{params},{params},0,{gops},{gops},{acc},{acc},,,3.5,\
                 ,,,,0.9,,0.21,,734003200,unavailable"
            );
            for pipeline in ["aware", "agnostic"] {
                for level in LEVELS {
                    for seed in 0..2u64 {
                        let acc = top1(n, k, pipeline, level, seed);
                        let after = params * (1.0 - level / 100.0);
                        let g = gops * (1.0 - 0.9 * level / 100.0);
                        let _ = writeln!(
                            s,
                            "{net},{subset},{pipeline},{level},{seed},paper,{params},{after},{level},{gops},{g},\
                             {acc},{acc},20,30,120.5,12.5,8.25,0.75,1.5,0.9,0.6,0.21,0.12,1073741824,{}",
                            if seed == 0 { "42.5" } else { "unavailable" }
                        );
                    }
                }
            }
        }
    }
    s
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    assert!(bytes.len() > 10_000 && bytes.len() < 5_000_000, "{}: {} bytes", path.display(), bytes.len());
    // IHDR: width and height, big-endian, at bytes 16..24.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!((400..=4000).contains(&w) && (300..=4000).contains(&h), "{}: {w}x{h}", path.display());
}

fn assert_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    let t = text.trim();
    assert!(t.starts_with("<svg") && t.ends_with("</svg>"), "{} is not an SVG document", path.display());
    assert!(t.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    // Balanced elements: every opened <text> is closed.
    assert_eq!(t.matches("<text").count(), t.matches("</text>").count());
    assert!(t.matches("<text").count() > 10, "{}: too little text", path.display());
    for s in must_contain {
        assert!(t.contains(s), "{} lacks `{s}`", path.display());
    }
}

#[test]
fn report_of_a_synthetic_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cells.csv");
    std::fs::write(&csv, synthetic_csv()).unwrap();
    let cells = read_cells(&csv).unwrap();
    assert_eq!(cells.len(), 2 * 2 * (1 + 2 * 3 * 2));

    let out = dir.path().join("report");
    let summary = write_report(&cells, &out).unwrap();

    // The paper's numbers: every pair has mean over levels 0.10 + 0.001 * 50 + 0.02 n.
    let expect_mean = (expected_delta_pp(0, 50.0) + expected_delta_pp(1, 50.0)) / 2.0;
    let mean = summary.mean_delta_pp.unwrap();
    assert!((mean - expect_mean).abs() < 1e-9, "{mean} vs {expect_mean}");
    let max = summary.max_delta_pp.unwrap();
    assert!((max - expected_delta_pp(1, 75.0)).abs() < 1e-9, "{max}");
    let at = summary.max_delta_at.clone().unwrap();
    assert_eq!(at.network, "alexnet");
    assert_eq!(at.level, 75.0);
    assert_eq!((summary.pairs, summary.levels, summary.points, summary.aware_wins), (4, 3, 12, 12));
    assert_eq!(summary.skipped_cells, 0);

    // Every file.
    let mut expected = vec!["deltas.csv".to_string(), "summary.json".to_string(), "report.md".to_string()];
    for (net, _, _) in NETWORKS {
        for kind in ["acc_vs_level", "acc_vs_gops"] {
            for ext in ["svg", "png"] {
                expected.push(format!("{kind}_{net}.{ext}"));
            }
        }
    }
    for f in &expected {
        assert!(out.join(f).is_file(), "{f} missing");
        assert!(summary.files.contains(f), "{f} not listed in the summary");
    }

    // deltas.csv: one row per (network, subset, level), delta in pp.
    let deltas = std::fs::read_to_string(out.join(report::DELTAS_CSV)).unwrap();
    let mut lines = deltas.lines();
    assert!(lines.next().unwrap().starts_with("network,subset,level,aware,agnostic,delta,unpruned"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * 2 * 3);
    let row = rows.iter().find(|r| r[0] == "resnet20" && r[1] == "pets" && r[2] == "50.0").unwrap();
    let delta: f64 = row[5].parse().unwrap();
    assert!((delta - expected_delta_pp(0, 50.0)).abs() < 1e-3, "{delta}");
    assert_eq!(row[6].parse::<f64>().unwrap(), 40.0);

    // summary.json holds the same numbers.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(report::SUMMARY_JSON)).unwrap()).unwrap();
    assert!((json["mean_delta_pp"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((json["max_delta_pp"].as_f64().unwrap() - max).abs() < 1e-12);
    assert_eq!(json["max_delta_at"]["subset"].as_str().unwrap(), at.subset);

    // report.md: the summary numbers, the formula, the tables, the costs and the plots.
    let md = std::fs::read_to_string(out.join(report::REPORT_MD)).unwrap();
    for s in [
        format!("| mean delta | {mean:+.2} pp |"),
        format!("| max delta | {max:+.2} pp (alexnet, {}, level 75%) |", at.subset),
        "delta(p) = aware(p) - agnostic(p)".to_string(),
        "| aware beat agnostic | 12 of 12 ".to_string(),
        "| (subset, network) pairs | 4 |".to_string(),
        "## resnet20".to_string(),
        "### alexnet / pets".to_string(),
        "| level (%) | aware | agnostic | unpruned | delta (pp) |".to_string(),
        "device costs".to_string(),
        "unavailable".to_string(),
        "1024.0".to_string(),
        "![accuracy vs pruning level](acc_vs_level_resnet20.svg)".to_string(),
        "acc_vs_gops_alexnet.png".to_string(),
        "± ".to_string(),
    ] {
        assert!(md.contains(&s), "report.md lacks `{s}`:\n{md}");
    }

    // Plots: SVG text with the series names; PNG magic and size.
    for (net, _, _) in NETWORKS {
        let names = ["vehicles aware", "vehicles agnostic", "vehicles unpruned", "pets aware", "pets agnostic", net];
        assert_svg(&out.join(format!("acc_vs_level_{net}.svg")), &names);
        assert_svg(&out.join(format!("acc_vs_gops_{net}.svg")), &names);
        assert_svg(&out.join(format!("acc_vs_level_{net}.svg")), &["pruning level"]);
        assert_svg(&out.join(format!("acc_vs_gops_{net}.svg")), &["GOps"]);
        assert_png(&out.join(format!("acc_vs_level_{net}.png")));
        assert_png(&out.join(format!("acc_vs_gops_{net}.png")));
    }

    if let Ok(sample) = std::env::var("EDGEPRUNE_REPORT_SAMPLE") {
        let sample = Path::new(&sample);
        std::fs::create_dir_all(sample).unwrap();
        std::fs::copy(&csv, sample.join("cells.csv")).unwrap();
        for f in &expected {
            std::fs::copy(out.join(f), sample.join(f)).unwrap();
        }
    }
}

#[test]
fn half_finished_sweep_reports_what_it_has() {
    // Only the aware cells of one network so far, and one agnostic level.
    let text = synthetic_csv();
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("network,") || (l.starts_with("resnet20,") && l.contains(",aware,")))
        .collect();
    let one_agnostic = text.lines().find(|l| l.starts_with("resnet20,vehicles,agnostic,50,0,")).unwrap();
    kept.push(one_agnostic);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cells.csv");
    std::fs::write(&csv, kept.join("\n") + "\n").unwrap();
    let cells = read_cells(&csv).unwrap();
    let summary = write_report(&cells, dir.path()).unwrap();
    assert_eq!((summary.pairs, summary.points), (1, 1));
    // At 50: one seed of agnostic, 0.55 + 0.1 - 0.15 - 0.01 = 0.49; aware mean 0.55 + 0.2 - 0.1 = 0.65.
    assert!((summary.mean_delta_pp.unwrap() - 16.0).abs() < 1e-9);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| 25 | 70.00 ± 1.41 (n=2) | - | - | - |"), "{md}");
    assert_png(&dir.path().join("acc_vs_gops_resnet20.png"));
}
