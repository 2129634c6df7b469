//! Runs a recipe's grid: every unfinished cell, each in a child process of its own (so that its
//! peak memory is its own and a crash loses only that cell), in dependency order, with progress
//! and an ETA; then gathers every finished cell into `cells.csv` / `cells.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::pipeline::{self, CellId, CellMetrics};
use super::recipe::Recipe;
use super::report::Cell;
use crate::error::{Error, Result};
use crate::formats::{native, outdir};

/// Where a recipe's sweep lives.
pub fn root_of(recipe: &Recipe, out: Option<&Path>) -> PathBuf {
    out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name))
}

/// A deterministic share of a sweep's grid, for running one sweep on many machines into one
/// shared folder (a Slurm job array, a Kubernetes indexed Job, GNU parallel): shard `index` of
/// `count` (0-based, written `I/N`) takes every `count`-th result cell of the grid in grid
/// order, starting at the `index`-th, with the shared cells (fine-tunes, agnostic retrainings)
/// those need. A shared cell that several shards need is run by the first to take its lock; the
/// others wait on that lock and take its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "--shard",
                format!("`{s}` is not I/N with 0 <= I < N (e.g. 0/4; Slurm: $SLURM_ARRAY_TASK_ID/N)"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Whether a cell is one that other cells read (run by whichever shard needs it first).
fn is_shared(c: &CellId) -> bool {
    matches!(c, CellId::FineTune { .. } | CellId::FineTuneUnlabeled { .. } | CellId::AgnosticTrain { .. })
}

/// The cells of shard `s` among `cells` (in grid order, shared inputs included): its share of the
/// result cells, each after the shared cell it reads.
fn shard_of(cells: &[CellId], s: Shard) -> Vec<CellId> {
    let mut out: Vec<CellId> = Vec::new();
    let mut inputs = std::collections::HashSet::new();
    for c in cells.iter().filter(|c| !is_shared(c)).skip(s.index).step_by(s.count) {
        if let Some(input) = pipeline::input_of(c)
            && inputs.insert(input.to_string())
        {
            out.push(input);
        }
        out.push(c.clone());
    }
    out
}

/// Runs the cells not yet finished (those of `only`, if given: ids or id prefixes, with the
/// shared cells they need). With `in_process`, cells run in this process (tests, debugging).
pub fn run(recipe: &Recipe, root: &Path, only: &[String], in_process: bool) -> Result<Vec<Cell>> {
    run_shard(recipe, root, only, in_process, None)
}

/// As [`run`], for one shard of the grid (see [`Shard`]) when one is given; shards run at the
/// same time into one folder, and `cells.csv` gathers every cell finished by any of them.
pub fn run_shard(
    recipe: &Recipe,
    root: &Path,
    only: &[String],
    in_process: bool,
    shard: Option<Shard>,
) -> Result<Vec<Cell>> {
    let all = pipeline::cells(recipe);
    let wanted = |c: &CellId| only.is_empty() || only.iter().any(|o| c.to_string().starts_with(o.as_str()));
    let mut selected: Vec<CellId> = all.iter().filter(|c| wanted(c)).cloned().collect();
    if selected.is_empty() {
        return Err(Error::config("cell", format!("no cell matches {only:?}; cells look like {}", all[0])));
    }
    let unreachable = beyond_the_floor(recipe, &selected)?;
    selected.retain(|c| !unreachable.iter().any(|(u, _)| u == c));
    if selected.is_empty() {
        return Err(Error::config(
            "levels",
            format!("every selected cell's latency level is beyond its network's floor: {}", listed(&unreachable)),
        ));
    }
    let needed: Vec<CellId> = selected.iter().filter_map(pipeline::input_of).collect();
    selected = all.into_iter().filter(|c| selected.contains(c) || needed.contains(c)).collect();
    match shard {
        Some(s) => {
            let mine = shard_of(&selected, s);
            eprintln!(
                "shard {}/{}: {} of the {} selected cells (shared inputs included)",
                s.index,
                s.count,
                mine.len(),
                selected.len()
            );
            run_cells_as(recipe, root, &mine, in_process, true)?;
        }
        None => run_cells(recipe, root, &selected, in_process)?,
    }
    write_unreachable(root, &unreachable)?;
    gather(recipe, root)
}

/// For a recipe of latency levels: the selected cells whose level no network of the limits can
/// reach on this device (past `100 (1 - floor / unpruned)`, predicted on the device's table), each
/// with that largest reachable level. They are not run, and are recorded in `unreachable.csv`
/// rather than failing the sweep. Empty for other kinds of level.
fn beyond_the_floor(recipe: &Recipe, cells: &[CellId]) -> Result<Vec<(CellId, f64)>> {
    let mut max_of: std::collections::BTreeMap<String, Option<f64>> = Default::default();
    let mut out = Vec::new();
    for c in cells {
        let Some((net, level)) = c.pruned_level() else { continue };
        let max = match max_of.get(net) {
            Some(m) => *m,
            None => {
                let m = pipeline::max_latency_level(recipe, net)?;
                max_of.insert(net.to_string(), m);
                m
            }
        };
        if let Some(max) = max.filter(|&m| level > m) {
            eprintln!(
                "cell {c}: {level}% of the latency is beyond {net}'s floor on this device (at most {max:.1}% can \
                 be removed): not run, recorded in unreachable.csv"
            );
            out.push((c.clone(), max));
        }
    }
    Ok(out)
}

fn listed(cells: &[(CellId, f64)]) -> String {
    cells.iter().map(|(c, m)| format!("{c} (at most {m:.1}%)")).collect::<Vec<_>>().join(", ")
}

/// `unreachable.csv` in the sweep folder: cell, level and the largest reachable level, one row
/// per cell [`beyond_the_floor`] left out (none: the file is removed, as a rerun may have found
/// a faster floor).
fn write_unreachable(root: &Path, cells: &[(CellId, f64)]) -> Result<()> {
    let path = root.join("unreachable.csv");
    if cells.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        };
    }
    let mut text = String::from("cell,level_percent,max_reachable_percent\n");
    for (c, max) in cells {
        let level = c.pruned_level().map_or(0.0, |(_, l)| l);
        text.push_str(&format!("{c},{level},{max:.3}\n"));
    }
    native::write_atomic(&path, text.as_bytes())
}

/// Runs the given cells (in the order given) that are not finished yet.
pub fn run_cells(recipe: &Recipe, root: &Path, cells: &[CellId], in_process: bool) -> Result<()> {
    run_cells_as(recipe, root, cells, in_process, false)
}

/// As [`run_cells`]; `sharded`: other processes (shards) run cells of the same folder at the
/// same time, so the folder is not locked as a whole, and a cell another process holds is
/// waited for (each cell's own lock keeps any cell to one process).
fn run_cells_as(recipe: &Recipe, root: &Path, cells: &[CellId], in_process: bool, sharded: bool) -> Result<()> {
    // What the recipe names outside itself is checked before the sweep folder is made.
    let todo = cells.iter().filter(|c| !pipeline::is_done(root, c)).count();
    if todo > 0 {
        recipe.check_inputs()?;
    }
    // A sweep continues the sweep its folder holds; it never writes into a folder of anything else,
    // and one process at a time writes it.
    outdir::claim(root, outdir::Kind::Sweep, outdir::Existing::Accept, "")?;
    let _lock = if sharded { None } else { Some(outdir::DirLock::acquire(root)?) };
    let recipe_path = root.join("recipe.toml");
    native::write_atomic(&recipe_path, toml::to_string(recipe).expect("recipes serialise").as_bytes())?;
    let todo: Vec<&CellId> = cells.iter().filter(|c| !pipeline::is_done(root, c)).collect();
    eprintln!(
        "sweep {}: {} cells, {} finished, {} to run, in {}",
        recipe.name,
        cells.len(),
        cells.len() - todo.len(),
        todo.len(),
        root.display()
    );
    let t0 = Instant::now();
    for (k, id) in todo.iter().enumerate() {
        let t = Instant::now();
        eprintln!("[{}/{}] {id} ...", k + 1, todo.len());
        if in_process && sharded {
            pipeline::run_cell_waiting(recipe, root, id)?;
        } else if in_process {
            pipeline::run_cell(recipe, root, id)?;
        } else {
            let exe = own_binary()?;
            let mut cmd = Command::new(exe);
            dies_with_parent(&mut cmd);
            let status = cmd
                .args(["cell", "--recipe"])
                .arg(&recipe_path)
                .arg("--root")
                .arg(root)
                .arg("--cell")
                .arg(id.to_string())
                .args(if sharded { &["--wait"][..] } else { &[] })
                .status()
                .map_err(|e| Error::Engine(format!("cannot start cell {id}: {e}")))?;
            if !status.success() {
                return Err(Error::Engine(format!(
                    "cell {id} failed ({status}); its folder {} keeps what it had done, rerun to resume",
                    pipeline::cell_dir(root, id).display()
                )));
            }
        }
        let done = k + 1;
        let per = t0.elapsed().as_secs_f64() / done as f64;
        eprintln!(
            "[{done}/{}] {id} done in {:.0}s; {} left, ETA {:.0} min",
            todo.len(),
            t.elapsed().as_secs_f64(),
            todo.len() - done,
            per * (todo.len() - done) as f64 / 60.0
        );
        gather(recipe, root)?;
    }
    Ok(())
}

/// A child that the kernel kills when this process dies, however it dies (`kill -9` included), so
/// that no orphaned cell runs on beside a rerun. (Elsewhere than Linux the cell's lock still keeps
/// a rerun from writing the same cell.)
fn dies_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// This program's path, for the cells' child processes. If the binary was rebuilt while the
/// sweep runs, Linux reports the old file as "<path> (deleted)": the new file at <path> is used.
fn own_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::Engine(format!("cannot find my own binary: {e}")))?;
    if exe.exists() {
        return Ok(exe);
    }
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")).map(PathBuf::from) {
        Some(p) if p.exists() => Ok(p),
        _ => Err(Error::Engine(format!("my own binary {} is gone", exe.display()))),
    }
}

/// The result rows of every finished cell of the recipe's grid in `root`.
pub fn collect(recipe: &Recipe, root: &Path) -> Result<Vec<Cell>> {
    let mut rows = Vec::new();
    for id in pipeline::cells(recipe) {
        if !pipeline::is_done(root, &id) {
            continue;
        }
        let m: CellMetrics = pipeline::CellDir::of(root, &id).read_metrics()?;
        rows.extend(m.row);
    }
    Ok(rows)
}

/// Collects the result rows of every finished cell into `cells.csv` and `cells.json`.
pub fn gather(recipe: &Recipe, root: &Path) -> Result<Vec<Cell>> {
    let rows = collect(recipe, root)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in &rows {
        w.serialize(r).map_err(|e| Error::file(root.join("cells.csv"), e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| Error::file(root.join("cells.csv"), e.to_string()))?;
    native::write_atomic(&root.join("cells.csv"), &bytes)?;
    native::write_json(&root.join("cells.json"), &rows)?;
    Ok(rows)
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_the_result_cells_exactly_once() {
        assert_eq!("1/3".parse::<Shard>().unwrap(), Shard { index: 1, count: 3 });
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard") && e.contains(bad), "{e}");
        }
        let (net, subset) = ("n".to_string(), "s".to_string());
        let mut cells = vec![CellId::Unpruned { net: net.clone(), subset: subset.clone() }];
        for seed in 0..2 {
            cells.push(CellId::FineTune { net: net.clone(), subset: subset.clone(), seed });
            for level in [1000, 5000, 9000] {
                cells.push(CellId::Aware { net: net.clone(), subset: subset.clone(), level, seed });
            }
        }
        let results: Vec<String> = cells.iter().filter(|c| !is_shared(c)).map(|c| c.to_string()).collect();
        for count in 1..=4 {
            let mut seen: Vec<String> = Vec::new();
            for index in 0..count {
                let mine = shard_of(&cells, Shard { index, count });
                for (k, c) in mine.iter().enumerate() {
                    // Every cell comes after the shared cell it reads.
                    if let Some(input) = pipeline::input_of(c) {
                        assert!(mine[..k].contains(&input), "{c} before {input}");
                    }
                }
                seen.extend(mine.iter().filter(|c| !is_shared(c)).map(|c| c.to_string()));
            }
            seen.sort();
            let mut all = results.clone();
            all.sort();
            assert_eq!(seen, all, "{count} shards");
        }
    }
}
