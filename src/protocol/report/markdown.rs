//! report.md: the tables of a sweep.

use super::*;

pub(super) fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

pub(super) fn acc_cell(p: Option<&Point>) -> String {
    match p.and_then(|p| p.top1) {
        Some(s) if s.n > 1 => format!("{:.2} ± {:.2} (n={})", s.mean, s.std, s.n),
        Some(s) => format!("{:.2}", s.mean),
        None => "-".to_string(),
    }
}

pub(super) fn signed(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:+.2}"))
}

/// "aware / agnostic" where both exist and differ, else whichever exists.
pub(super) fn pair_cell(a: Option<f64>, g: Option<f64>, digits: usize) -> String {
    match (a, g) {
        (Some(a), Some(g)) if format!("{a:.digits$}") == format!("{g:.digits$}") => format!("{a:.digits$}"),
        (Some(a), Some(g)) => format!("{a:.digits$} / {g:.digits$}"),
        (Some(a), None) => format!("{a:.digits$} / -"),
        (None, Some(g)) => format!("- / {g:.digits$}"),
        (None, None) => "-".to_string(),
    }
}

pub(super) fn energy_cell(e: Option<Energy>) -> String {
    match e {
        Some(Energy::Joules(j)) => format!("{j:.1}"),
        Some(Energy::Unavailable) => "unavailable".to_string(),
        None => "-".to_string(),
    }
}

pub(super) fn markdown(summary: &ReportSummary, nets: &[NetworkData], plots: &[(String, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep report: data-aware vs data-agnostic pruning and retraining\n");
    let _ = writeln!(
        md,
        "{} cells; networks: {}; subsets: {}. Accuracies are test top-1 on the subset's test images, in %, \
         means over seeds (± sample std and the number of seeds where more than one). Deltas are in \
         percentage points (pp). Levels are {}.\n",
        summary.cells,
        if summary.networks.is_empty() { "-".to_string() } else { summary.networks.join(", ") },
        if summary.subsets.is_empty() { "-".to_string() } else { summary.subsets.join(", ") },
        summary.level_of.parse::<LevelOf>().map_or("percents", LevelOf::describe),
    );

    match summary.budgets.as_slice() {
        [] => {
            let _ = writeln!(md, "Training budget: not recorded (cells from before the `budget` column).\n");
        }
        [one] => {
            let _ = writeln!(md, "Training budget: {one}.\n");
        }
        many => {
            let _ = writeln!(md, "Training budgets differ between cells: {}.\n", many.join("; "));
        }
    }
    if summary.skipped_cells > 0 {
        let _ = writeln!(
            md,
            "{} cells were left out: their `pipeline` is none of aware, aware-unlabeled, agnostic, unpruned.\n",
            summary.skipped_cells
        );
    }
    summary_section(&mut md, summary);
    for (n, (level_stem, gops_stem)) in nets.iter().zip(plots) {
        let _ = writeln!(md, "## {}\n", n.network);
        let _ = writeln!(md, "![accuracy vs pruning level]({level_stem}.svg)\n");
        let _ = writeln!(md, "![accuracy vs GOps]({gops_stem}.svg)\n");
        let _ = writeln!(md, "PNG: [{level_stem}.png]({level_stem}.png), [{gops_stem}.png]({gops_stem}.png)\n");
        for s in &n.subsets {
            subset_table(&mut md, &n.network, s);
        }
        costs_table(&mut md, n);
    }
    md
}

/// The summary: the definition of the deltas and their values.
fn summary_section(md: &mut String, summary: &ReportSummary) {
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "For each (subset, network) pair and each pruning level p where both pipelines have a result:\n\n\
         `delta(p) = aware(p) - agnostic(p)`\n\n\
         `mean delta = mean over pairs ( mean over p ( delta(p) ) )`, `max delta = max over pairs and p ( delta(p) )`\n"
    );
    let _ = writeln!(md, "| quantity | value |\n|---|---|");
    let _ = writeln!(md, "| mean delta | {} pp |", signed(summary.mean_delta_pp));
    let where_max = summary
        .max_delta_at
        .as_ref()
        .map(|m| format!(" ({}, {}, level {}%)", m.network, m.subset, Level::of(m.level)))
        .unwrap_or_default();
    let _ = writeln!(md, "| max delta | {} pp{where_max} |", signed(summary.max_delta_pp));
    let _ = writeln!(md, "| min delta | {} pp |", signed(summary.min_delta_pp));
    let _ = writeln!(md, "| (subset, network) pairs | {} |", summary.pairs);
    let _ = writeln!(md, "| levels | {} |", summary.levels);
    let _ = writeln!(
        md,
        "| aware beat agnostic | {} of {} (subset, network, level) points |",
        summary.aware_wins, summary.points
    );
    let _ = writeln!(md);
    let spread = |seeds: &[(u64, f64)], std: Option<f64>| match std {
        Some(sd) => format!(
            "+- {sd:.2} over {} seeds ({})",
            seeds.len(),
            seeds.iter().map(|(s, d)| format!("s{s} {d:+.2}")).collect::<Vec<_>>().join(", ")
        ),
        None => format!("{} seed", seeds.len()),
    };
    if !summary.per_network.is_empty() {
        let _ = writeln!(
            md,
            "Per network (mean delta the paper's way; its spread is that of the same mean computed on each seed's \
             cells alone):\n\n| network | pairs | points | mean delta (pp) | spread over seeds | max delta (pp) |\n|---|---:|---:|---:|---|---:|"
        );
        for n in &summary.per_network {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                n.network,
                n.pairs,
                n.points,
                signed(n.mean_delta_pp),
                spread(&n.seed_mean_deltas, n.seed_std_pp),
                signed(n.max_delta_pp)
            );
        }
        let _ = writeln!(
            md,
            "| all | {} | {} | {} | {} | {} |\n",
            summary.pairs,
            summary.points,
            signed(summary.mean_delta_pp),
            spread(&summary.seed_mean_deltas, summary.seed_std_pp),
            signed(summary.max_delta_pp)
        );
        // Beside the published figures: the paper's, and the PyTorch + Torch-Pruning run of the
        // same protocol the issue "The science, complete and fair" cites (full epochs).
        let at = |sub: &str, level: f64| {
            summary
                .point_deltas
                .iter()
                .filter(|d| d.subset == sub && (d.level - level).abs() < 1e-9)
                .map(|d| format!("{} {:+.2}", d.network, d.delta_pp))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        let _ = writeln!(
            md,
            "| figure | this sweep | paper (CVPRW 2020: CIFAR-100, 4 networks, 5 repeats) | PyTorch + Torch-Pruning, full epochs, this machine (as the issue cites it) |\n|---|---|---|---|\n\
             | mean delta (pp) | {} | +10.2 | - |\n\
             | max delta (pp) | {} | +42.0 | - |\n\
             | pets at 50% (pp) | {} | - | +11.6 |\n\
             | vehicles at 50% (pp) | {} | - | +2.5 |\n",
            signed(summary.mean_delta_pp),
            signed(summary.max_delta_pp),
            or_dash(at("pets", 50.0)),
            or_dash(at("vehicles", 50.0)),
        );
    }
    if let Some(u) = &summary.unlabeled {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let _ = writeln!(
            md,
            "Label-free (`aware-unlabeled`: classes inferred by the unpruned teacher, distillation instead of \
             labels), over {} cells:\n\n\
             | quantity | value |\n|---|---|\n\
             | gap to aware, mean +- std over {} points | {} pp +- {} |\n\
             | gap range | {:+.2} .. {:+.2} pp |\n\
             | beat agnostic | {} of {} points |\n\
             | inferred classes: precision / recall | {} / {} |\n\
             | pseudo-labels right | {} |\n",
            u.cells,
            u.points,
            signed(Some(u.mean_gap_pp).filter(|v| v.is_finite())),
            u.gap_std_pp.map_or("-".into(), |s| format!("{s:.2}")),
            u.min_gap_pp,
            u.max_gap_pp,
            u.beats_agnostic,
            u.points_vs_agnostic,
            pct(u.subset_precision),
            pct(u.subset_recall),
            pct(u.pseudo_label_accuracy),
        );
    }
    if !summary.pair_means.is_empty() {
        let _ = writeln!(md, "| network | subset | levels | mean delta (pp) |\n|---|---|---|---|");
        for p in &summary.pair_means {
            let _ = writeln!(md, "| {} | {} | {} | {:+.2} |", p.network, p.subset, p.levels, p.mean_delta_pp);
        }
        let _ = writeln!(md);
    }
    if !summary.train_steps.is_empty() {
        let _ = writeln!(
            md,
            "Training steps (batches) each pipeline took, mean over its cells (aware: fine-tuning and \
             retraining on the subset; agnostic: retraining on all classes):\n"
        );
        let _ = writeln!(md, "| network | subset | pipeline | steps | cells |\n|---|---|---|---:|---:|");
        for r in &summary.train_steps {
            let _ =
                writeln!(md, "| {} | {} | {} | {:.0} | {} |", r.network, r.subset, r.pipeline, r.mean_steps, r.cells);
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Per-level deltas: [{DELTAS_CSV}]({DELTAS_CSV}); this summary as JSON: [{SUMMARY_JSON}]({SUMMARY_JSON}).\n"
    );
}

/// One subset's table: accuracy of each pipeline per level, the delta, sizes.
fn subset_table(md: &mut String, network: &str, s: &SubsetData) {
    let _ = writeln!(md, "### {} / {}\n", network, s.subset);
    let unpruned = acc_cell(s.unpruned.as_ref());
    let levels = s.levels();
    if levels.is_empty() {
        let _ = writeln!(md, "Unpruned: {unpruned}. No pruned cells yet.\n");
        return;
    }
    // The label-free pipeline's columns only where the sweep ran it.
    let unlabeled = !s.at(Pipe::AwareUnlabeled).is_empty();
    let (uh, ur) = if unlabeled { (" aware-unlabeled | gap to aware (pp) |", "---|---|") } else { ("", "") };
    let _ = writeln!(
        md,
        "| level (%) | aware |{uh} agnostic | unpruned | delta (pp) | params removed % (aware / agnostic) | GOps after (aware / agnostic) |\n\
         |---|---|{ur}---|---|---|---|---|"
    );
    for level in levels {
        let aw = s.at(Pipe::Aware).get(&level);
        let ag = s.at(Pipe::Agnostic).get(&level);
        let delta = aw.and_then(Point::acc).zip(ag.and_then(Point::acc)).map(|(a, g)| a - g);
        let un_cols = if unlabeled {
            let un = s.at(Pipe::AwareUnlabeled).get(&level);
            let gap = un.and_then(Point::acc).zip(aw.and_then(Point::acc)).map(|(u, a)| u - a);
            format!(" {} | {} |", acc_cell(un), signed(gap))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {level} | {} |{un_cols} {} | {unpruned} | {} | {} | {} |",
            acc_cell(aw),
            acc_cell(ag),
            signed(delta),
            pair_cell(aw.and_then(|p| p.params_removed_percent), ag.and_then(|p| p.params_removed_percent), 1),
            pair_cell(aw.and_then(|p| p.gops_after), ag.and_then(|p| p.gops_after), 4),
        );
    }
    let _ = writeln!(md);
}

pub(super) fn costs_table(md: &mut String, n: &NetworkData) {
    let mut rows = Vec::new();
    for s in &n.subsets {
        if let Some(p) = &s.unpruned
            && p.costs.any()
        {
            rows.push((s.subset.as_str(), Pipe::Unpruned, Level(0), p));
        }
        for level in s.levels() {
            for (&pipeline, map) in &s.pruned {
                if let Some(p) = map.get(&level)
                    && p.costs.any()
                {
                    rows.push((s.subset.as_str(), pipeline, level, p));
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "### {}: device costs\n", n.network);
    let _ = writeln!(
        md,
        "Means over seeds. Times in ms unless marked; inference per image at batch 1 and 128, with the model \
         before and after pruning.\n"
    );
    let _ = writeln!(
        md,
        "| subset | pipeline | level (%) | train step before | train step after | prune (s) | data per batch | \
         infer b1 before | infer b1 after | infer b128 before | infer b128 after | peak RSS (MiB) | energy (J) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (subset, pipeline, level, p) in rows {
        let c = &p.costs;
        let _ = writeln!(
            md,
            "| {subset} | {pipeline} | {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt(c.train_step_ms_before, 2),
            opt(c.train_step_ms_after, 2),
            opt(c.prune_seconds, 3),
            opt(c.data_ms_per_batch, 2),
            opt(c.infer_b1_before, 3),
            opt(c.infer_b1_after, 3),
            opt(c.infer_b128_before, 3),
            opt(c.infer_b128_after, 3),
            opt(c.peak_rss_mib, 1),
            energy_cell(c.energy),
        );
    }
    let _ = writeln!(md);
}
