use super::*;

fn cell(network: &str, subset: &str, pipeline: Pipe, level: f64, seed: u64, top1: Option<f64>) -> Cell {
    Cell {
        network: network.into(),
        subset: subset.into(),
        pipeline: pipeline.to_string(),
        level,
        seed,
        criterion: "paper".into(),
        params_before: Some(1000.0),
        params_after: Some(1000.0 * (1.0 - level / 100.0)),
        params_removed_percent: Some(level),
        gops_before: Some(0.04),
        gops_after: Some(0.04 * (1.0 - level / 100.0)),
        test_top1: top1,
        val_top1: top1,
        best_epoch: Some(10.0),
        epochs: Some(30.0),
        seconds: Some(1.0),
        ..Cell::default()
    }
}

/// Known answers:
/// - (A, s1): level 10: aware seeds 0.8 and 0.6 (mean 70), agnostic 0.5 -> +20;
///   level 20: aware 0.6, agnostic 0.55 -> +5; pair mean 12.5.
/// - (A, s2): level 10: aware 0.4, agnostic 0.5 -> -10; level 20: aware only -> no delta;
///   pair mean -10.
/// - (B, s1): aware only -> no pair.
/// - mean = (12.5 - 10) / 2 = 1.25; max = 20 at (A, s1, 10); 3 points, 2 wins, 2 levels.
fn known() -> Vec<Cell> {
    use Pipe::*;
    vec![
        cell("A", "s1", Unpruned, 0.0, 0, Some(0.3)),
        cell("A", "s1", Aware, 10.0, 0, Some(0.8)),
        cell("A", "s1", Aware, 10.0, 1, Some(0.6)),
        cell("A", "s1", Agnostic, 10.0, 0, Some(0.5)),
        cell("A", "s1", Aware, 20.0, 0, Some(0.6)),
        cell("A", "s1", Agnostic, 20.0, 0, Some(0.55)),
        cell("A", "s2", Aware, 10.0, 0, Some(0.4)),
        cell("A", "s2", Agnostic, 10.0, 0, Some(0.5)),
        cell("A", "s2", Aware, 20.0, 0, Some(0.45)),
        cell("B", "s1", Aware, 10.0, 0, Some(0.9)),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn deltas_average_seeds_and_skip_missing_pipelines() {
    let rows = deltas(&known());
    let find = |n: &str, s: &str, l: f64| {
        rows.iter().find(|r| r.network == n && r.subset == s && close(r.level, l)).expect("row")
    };
    let r = find("A", "s1", 10.0);
    assert!(close(r.aware.unwrap(), 70.0));
    assert!(close(r.agnostic.unwrap(), 50.0));
    assert!(close(r.delta.unwrap(), 20.0));
    assert!(close(r.unpruned.unwrap(), 30.0));
    assert_eq!((r.aware_seeds, r.agnostic_seeds), (2, 1));
    // sample std of 80 and 60
    assert!(close(r.aware_std.unwrap(), 200f64.sqrt()));
    assert_eq!(r.agnostic_std, None);
    assert!(close(find("A", "s1", 20.0).delta.unwrap(), 5.0));
    assert!(close(find("A", "s2", 10.0).delta.unwrap(), -10.0));
    let half = find("A", "s2", 20.0);
    assert_eq!((half.agnostic, half.delta, half.unpruned), (None, None, None));
    assert!(close(half.aware.unwrap(), 45.0));
    assert_eq!(find("B", "s1", 10.0).delta, None);
    assert_eq!(rows.len(), 5);
}

#[test]
fn summary_is_mean_over_pairs_of_mean_over_levels() {
    let s = summarize_cells(&known());
    assert!(close(s.mean_delta_pp.unwrap(), 1.25), "{:?}", s.mean_delta_pp);
    assert!(close(s.max_delta_pp.unwrap(), 20.0));
    let at = s.max_delta_at.unwrap();
    assert_eq!((at.network.as_str(), at.subset.as_str()), ("A", "s1"));
    assert!(close(at.level, 10.0));
    assert!(close(s.min_delta_pp.unwrap(), -10.0));
    assert_eq!((s.pairs, s.levels, s.points, s.aware_wins), (2, 2, 3, 2));
    assert_eq!(s.pair_means.len(), 2);
    assert!(close(s.pair_means[0].mean_delta_pp, 12.5));
    assert!(close(s.pair_means[1].mean_delta_pp, -10.0));
    assert_eq!(s.networks, vec!["A", "B"]);
    assert_eq!(s.subsets, vec!["s1", "s2"]);
    assert_eq!(s.cells, 10);
}

#[test]
fn only_aware_cells_give_no_deltas() {
    let cells: Vec<Cell> = known().into_iter().filter(|c| c.pipe() == Some(Pipe::Aware)).collect();
    let s = summarize_cells(&cells);
    assert_eq!((s.mean_delta_pp, s.max_delta_pp, s.pairs, s.points), (None, None, 0, 0));
    let dir = tempfile::tempdir().unwrap();
    let s2 = write_report(&cells, dir.path()).unwrap();
    assert_eq!(s2.mean_delta_pp, None);
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
    assert!(md.contains("| mean delta | - pp |"), "{md}");
}

#[test]
fn empty_sweep_writes_an_empty_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_report(&[], dir.path()).unwrap();
    assert_eq!((s.pairs, s.cells), (0, 0));
    let csv = std::fs::read_to_string(dir.path().join(DELTAS_CSV)).unwrap();
    assert!(csv.starts_with("network,subset,level,aware,agnostic,delta,unpruned"));
}

#[test]
fn levels_are_one_key_however_written() {
    assert_eq!(Level::of(5.0), Level::of(5.0000001));
    assert_eq!(Level::of(12.5).to_string(), "12.5");
    assert_eq!(Level::of(50.0).to_string(), "50");
}

const HEADER: &str = "network,subset,pipeline,level,seed,criterion,params_before,params_after,\
    params_removed_percent,gops_before,gops_after,test_top1,val_top1,best_epoch,epochs,seconds,\
    train_step_ms_before,train_step_ms_after,prune_seconds,data_ms_per_batch,\
    infer_ms_per_image_b1_before,infer_ms_per_image_b1_after,infer_ms_per_image_b128_before,\
    infer_ms_per_image_b128_after,peak_rss_bytes,energy_joules";

#[test]
fn reads_cells_with_missing_fields_and_unavailable_energy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cells.csv");
    let text = format!(
        "{HEADER}\n\
         resnet20,vehicles,aware,50,0,paper,278324,139000,50.06,0.041,0.02,0.9125,0.91,12,30,100.5,\
         10.5,6.25,0.8,1.2,0.5,0.3,0.05,0.03,1073741824,unavailable\n\
         resnet20,vehicles,unpruned,0,0,,278324,278324,0,0.041,0.041,0.5,,,,,,,,,,,,,,\n\
         resnet20,vehicles,agnostic,50,1,paper,278324,139000,50.1,0.041,0.02,0.8,0.8,20,30,90,,,,,,,,,,12.5\n"
    );
    std::fs::write(&p, text).unwrap();
    let cells = read_cells(&p).unwrap();
    assert_eq!(cells.len(), 3);
    assert_eq!(cells[0].pipe(), Some(Pipe::Aware));
    assert_eq!(cells[0].energy(), Some(Energy::Unavailable));
    assert_eq!(cells[0].peak_rss_bytes, Some(1073741824.0));
    assert_eq!(cells[1].criterion, "");
    assert_eq!(cells[1].val_top1, None);
    assert_eq!(cells[1].energy(), None);
    assert_eq!(cells[2].energy(), Some(Energy::Joules(12.5)));
    let s = summarize_cells(&cells);
    assert!(close(s.mean_delta_pp.unwrap(), 91.25 - 80.0));
}

#[test]
fn bad_rows_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cells.csv");
    let good = "resnet20,vehicles,aware,50,0,paper,1,1,1,1,1,0.9,0.9,1,1,1,,,,,,,,,,";
    std::fs::write(&p, format!("{HEADER}\n{good}\nresnet20,vehicles,aware,50,0,paper,1,1,1,1,1,high,,,,,,,,,,,,,,\n"))
        .unwrap();
    let e = read_cells(&p).unwrap_err().to_string();
    assert!(e.contains("cells.csv") && e.contains("line 3") && e.contains("`test_top1` = `high`"), "{e}");

    std::fs::write(&p, format!("{HEADER}\n{good}\n{good}\nresnet20,vehicles,clever,50,0,,,,,,,,,,,,,,,,,,,,,\n"))
        .unwrap();
    let e = read_cells(&p).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("pipeline"), "{e}");

    std::fs::write(&p, format!("{HEADER}\nresnet20,vehicles,aware,50,0,paper,1,1,1,1,1,91.2,,,,,,,,,,,,,,\n")).unwrap();
    let e = read_cells(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("fraction"), "{e}");

    std::fs::write(&p, format!("{HEADER}\nresnet20,vehicles,aware\n")).unwrap();
    let e = read_cells(&p).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");

    std::fs::write(&p, "network,subset,level\nresnet20,vehicles,50\n").unwrap();
    let e = read_cells(&p).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("`pipeline`"), "{e}");

    let e = read_cells(&dir.path().join("absent.csv")).unwrap_err().to_string();
    assert!(e.contains("absent.csv"), "{e}");
}

#[test]
fn cells_round_trip_through_csv() {
    let cells = known();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cells.csv");
    let mut w = csv::Writer::from_path(&p).unwrap();
    for c in &cells {
        w.serialize(c).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    assert_eq!(read_cells(&p).unwrap(), cells);
}

#[test]
fn file_stems_are_safe() {
    assert_eq!(plot_stem("resnet20"), "resnet20");
    assert_eq!(plot_stem("mobilenet v2/x"), "mobilenet_v2_x");
    assert_eq!(plot_stem(".."), "_..");
}

#[test]
fn a_report_states_what_its_levels_are_of_and_takes_one_kind() {
    let dir = tempfile::tempdir().unwrap();
    let with = |kind: &str, pipe: Pipe| Cell { level_of: kind.into(), ..cell("n", "s", pipe, 30.0, 0, Some(0.5)) };
    let latency = [with("", Pipe::Unpruned), with("latency", Pipe::Aware), with("latency", Pipe::Agnostic)];
    let s = write_report(&latency, dir.path()).unwrap();
    assert_eq!(s.level_of, "latency");
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
    assert!(md.contains("Levels are % of latency removed (on the device's table)."), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("acc_vs_level_n.svg")).unwrap();
    assert!(svg.contains("% of latency removed (on the device"), "the axis says what the levels are of");
    // An empty column is the paper's kind (sweeps from before it).
    let old = [with("", Pipe::Aware), with("params", Pipe::Agnostic)];
    assert_eq!(write_report(&old, dir.path()).unwrap().level_of, "params");
    let mixed = [with("latency", Pipe::Aware), with("", Pipe::Agnostic)];
    let e = write_report(&mixed, &dir.path().join("mixed")).unwrap_err().to_string();
    assert!(e.contains("different things (params, latency)"), "{e}");
    assert!(!dir.path().join("mixed").exists(), "nothing is written for a refused report");
}

/// The spread over seeds: the paper's mean delta on each seed's cells alone.
/// Seed 0 of `known()`: (A, s1) +30 at 10 and +5 at 20 -> 17.5; (A, s2) -10 -> mean 3.75.
/// Seed 1: aware (A, s1, 10) 0.6 has no agnostic seed 1; with one added at 0.4: +20.
#[test]
fn seeds_each_give_the_paper_s_mean_and_their_spread_is_reported() {
    let mut cells = known();
    assert_eq!(summary::seed_mean_deltas(&cells, None).len(), 1);
    assert!(close(summary::seed_mean_deltas(&cells, None)[0].1, 3.75));
    cells.push(cell("A", "s1", Pipe::Agnostic, 10.0, 1, Some(0.4)));
    let seeds = summary::seed_mean_deltas(&cells, Some("A"));
    assert_eq!(seeds.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1]);
    assert!(close(seeds[1].1, 20.0));
    assert!(summary::seed_mean_deltas(&cells, Some("B")).is_empty());
    let s = summarize_cells(&cells);
    let a = s.per_network.iter().find(|n| n.network == "A").unwrap();
    // Sample std of 3.75 and 20.
    assert!(close(a.seed_std_pp.unwrap(), (16.25f64 * 16.25 / 2.0).sqrt()), "{a:?}");
    assert_eq!((a.pairs, a.points), (2, 3));
    let b = s.per_network.iter().find(|n| n.network == "B").unwrap();
    assert_eq!((b.pairs, b.mean_delta_pp, b.seed_std_pp), (0, None, None));
}
