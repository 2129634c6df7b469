//! What edgeprune may write into, and a lock while it writes.
//!
//! Every folder edgeprune makes as an output (a training run, a model, a sweep, a report, a
//! converted dataset) gets a small marker file, [`MARKER`], saying what it is. Before writing, a
//! command [`inspect`]s its output: a missing or empty folder is fine; a folder of the same kind
//! that edgeprune wrote may be continued or replaced only as the command's flags say; anything
//! else (a folder holding files edgeprune did not write) is refused, naming what is in it. So no
//! output ever deletes or silently overwrites a user's files. Folders written before markers
//! existed are recognised by their files (a run by `config.toml` + `checkpoints/`, a model by
//! `graph.json` + `weights.safetensors`, ...).
//!
//! [`DirLock`] is an advisory lock (`flock`) on a file in the folder, held for the life of the
//! process and released by the OS however the process ends (SIGKILL included): a second process
//! that wants the same folder is refused at once, with the holder's pid.
//!
//! [`check_not_input`] refuses an output path that is, or resolves to, one of the command's input
//! files (or, for a folder output, a folder holding one).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The marker file of a folder edgeprune made.
pub const MARKER: &str = ".edgeprune";
/// The lock file of a folder a process is writing.
pub const LOCK: &str = ".edgeprune.lock";

/// What an output folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    TrainRun,
    Model,
    Sweep,
    Report,
    Data,
    /// A label-free adaptation (`edgeprune adapt`).
    Adaptation,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::TrainRun => "training run",
            Kind::Model => "model folder",
            Kind::Sweep => "sweep folder",
            Kind::Report => "report folder",
            Kind::Data => "converted dataset",
            Kind::Adaptation => "adaptation folder",
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    kind: Kind,
}

/// What [`inspect`] found at an output path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing there, or an empty folder (a lock or a leftover stage of ours does not count).
    Empty,
    /// A folder edgeprune wrote, of this kind.
    Ours(Kind),
    /// Something edgeprune did not write: the first few names in it (or the path itself when it
    /// is not a folder).
    Foreign(Vec<String>),
}

/// Names edgeprune may leave in any folder: its marker, its lock, the temporary files of its
/// atomic writes and the stages of its atomic folders.
fn is_bookkeeping(name: &str) -> bool {
    name == MARKER
        || name == LOCK
        || name.starts_with(crate::formats::atomic::STAGE_PREFIX)
        || (name.starts_with('.') && name.contains(".tmp"))
}

/// Looks at an output path without changing it.
pub fn inspect(dir: &Path) -> Result<Found> {
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Empty),
        Err(e) => return Err(Error::io(dir, e)),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() && !dir.exists() {
        return Err(Error::file(
            dir,
            "is a symbolic link to nothing (a dangling link); remove it or choose another path",
        ));
    }
    if !dir.is_dir() {
        return Ok(Found::Foreign(vec![dir.display().to_string()]));
    }
    let mut names = vec![];
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    names.retain(|n| !is_bookkeeping(n));
    // A folder holding only our bookkeeping (a command that failed after claiming it) is empty.
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(MARKER))
        && let Ok(m) = serde_json::from_str::<Marker>(&text)
    {
        return Ok(Found::Ours(m.kind));
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    let legacy = if has("config.toml") && (has("checkpoints") || has("log.csv")) {
        Some(Kind::TrainRun)
    } else if has("recipe.toml") && (has("cells.csv") || names.len() == 1) {
        Some(Kind::Sweep)
    } else if has("report.md") && has("summary.json") {
        Some(Kind::Report)
    } else if has("graph.json")
        && has("weights.safetensors")
        && names.iter().all(|n| ["graph.json", "weights.safetensors", "plan.json"].contains(&n.as_str()))
    {
        Some(Kind::Model)
    } else if has("batches.meta.txt") && has("test_batch.bin") {
        Some(Kind::Data)
    } else {
        None
    };
    Ok(match legacy {
        Some(k) => Found::Ours(k),
        None => Found::Foreign(names.into_iter().take(5).collect()),
    })
}

/// How a command treats an output of its own kind that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse it, and say which flag would continue or replace it.
    Refuse,
    /// Continue it (resume) or replace it (--overwrite, a report regenerated): the caller knows.
    Accept,
}

/// Checks that `dir` may be written as a `kind` folder, without changing anything; returns
/// whether a folder of that kind is already there. See [`claim`].
pub fn check(dir: &Path, kind: Kind, existing: Existing, hint: &str) -> Result<bool> {
    match inspect(dir)? {
        Found::Empty => Ok(false),
        Found::Ours(k) if k == kind => {
            if existing == Existing::Refuse {
                return Err(Error::file(dir, format!("already holds an edgeprune {kind}; {hint}")));
            }
            Ok(true)
        }
        Found::Ours(k) => Err(Error::file(
            dir,
            format!("holds an edgeprune {k}, not a {kind}: refusing to write into it; choose another folder"),
        )),
        Found::Foreign(names) => {
            let what = if dir.is_dir() {
                format!("is not empty and is not an edgeprune {kind} (it holds {})", names.join(", "))
            } else {
                format!("exists and is not a folder (edgeprune writes a {kind} there)")
            };
            Err(Error::file(dir, format!("{what}: refusing to write into it; choose another folder")))
        }
    }
}

/// Checks that `dir` may be written as a `kind` folder, then makes it (with its marker).
/// Returns whether a folder of that kind was already there. `hint` is what a refusal of an
/// existing folder of the same kind suggests (e.g. "--resume to continue it or --overwrite to
/// replace it").
pub fn claim(dir: &Path, kind: Kind, existing: Existing, hint: &str) -> Result<bool> {
    let was_there = check(dir, kind, existing, hint)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if !dir.join(MARKER).exists() {
        let text = serde_json::to_string(&Marker { kind }).expect("markers serialise");
        crate::formats::native::write_atomic(&dir.join(MARKER), text.as_bytes())?;
    }
    Ok(was_there)
}

/// A single output file: refuse to replace one that exists unless `overwrite`.
pub fn claim_file(path: &Path, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() && !path.exists() => {
            Err(Error::file(path, "is a symbolic link to nothing (a dangling link); remove it or choose another path"))
        }
        Ok(_) if path.is_dir() => Err(Error::file(path, "is a folder; give a file path")),
        Ok(_) if overwrite => Ok(()),
        Ok(_) => Err(Error::file(path, "already exists; refusing to replace it (--overwrite to replace it)")),
    }
}

/// Checks that a name from a recipe (or a flag) that becomes a folder name is one plain path
/// component: 1 to 100 ASCII letters, digits and `-_.+=@,`, not starting with a dot (so no `..`,
/// no separators, no hidden or absolute paths). The error names `key`.
pub fn check_name(key: &str, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.+=@,".contains(c);
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 100 {
        Some("is longer than 100 characters")
    } else if name.starts_with('.') {
        Some("starts with a dot")
    } else if !name.chars().all(ok_char) {
        Some("holds a character other than ASCII letters, digits and -_.+=@,")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::config(
            key,
            format!("`{}` {why}: it names a folder, so it must be one plain path component", name.escape_debug()),
        )),
        None => Ok(()),
    }
}

/// The absolute path `p` resolves to (symbolic links followed), also for a path that does not
/// exist yet (its nearest existing ancestor is resolved).
fn resolve(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    let mut tail = vec![];
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Refuses an output that would destroy an input: a file output that is one of `inputs`, or a
/// folder output that is (or holds) one of them. `inputs` are files or folders the command reads.
pub fn check_not_input(out: &Path, flag: &str, inputs: &[&Path]) -> Result<()> {
    let o = resolve(out);
    for input in inputs {
        let i = resolve(input);
        if i == o || i.starts_with(&o) || (input.is_dir() && o.starts_with(&i) && !out_is_new_file_in(&o, &i)) {
            return Err(Error::file(
                out,
                format!("{flag} would overwrite the input {}: refusing; choose another path", input.display()),
            ));
        }
    }
    Ok(())
}

/// Whether `o` lies inside the input folder `i` without replacing anything edgeprune reads there
/// (the files of a model folder).
fn out_is_new_file_in(o: &Path, i: &Path) -> bool {
    let Ok(rest) = o.strip_prefix(i) else { return false };
    let first = rest.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    !matches!(first.as_deref(), Some("graph.json" | "weights.safetensors" | "plan.json") | None)
}

/// An exclusive advisory lock on a folder, held until every handle on it is dropped or until the
/// process ends. Re-entrant within a process (a sweep run in-process locks its folder, its cells
/// and their training runs; a command and the library function it calls may both lock).
#[derive(Debug, Clone)]
pub struct DirLock {
    _file: std::sync::Arc<std::fs::File>,
}

type Held = std::collections::HashMap<PathBuf, std::sync::Weak<std::fs::File>>;
static HELD: std::sync::Mutex<Option<Held>> = std::sync::Mutex::new(None);

impl DirLock {
    /// Locks `dir` (made if missing), or fails at once naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::lock(dir, None)
    }

    /// Locks `dir` (made if missing), waiting for the process that holds it to let go: `waiting`
    /// is told once, with who holds it, when there is a wait.
    pub fn acquire_waiting(dir: &Path, waiting: &mut dyn FnMut(&str)) -> Result<Self> {
        Self::lock(dir, Some(waiting))
    }

    fn lock(dir: &Path, waiting: Option<&mut dyn FnMut(&str)>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let key = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        let held = held.get_or_insert_with(Default::default);
        if let Some(f) = held.get(&key).and_then(|w| w.upgrade()) {
            return Ok(DirLock { _file: f });
        }
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                if let Some(waiting) = waiting {
                    waiting(&who);
                    // The other process's lock goes when it ends, however it ends.
                    file.lock().map_err(|e| Error::io(&path, e))?;
                } else {
                    return Err(Error::file(
                        dir,
                        format!(
                            "is in use by edgeprune {who} (locked through {LOCK}); wait for it to end or choose another folder"
                        ),
                    ));
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(&path, e))?;
        let file = std::sync::Arc::new(file);
        held.insert(key, std::sync::Arc::downgrade(&file));
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_refuse_foreign_folders_and_other_kinds() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("out");
        assert!(!claim(&d, Kind::TrainRun, Existing::Refuse, "hint").unwrap());
        // Claimed but still empty (the command failed before writing): empty again.
        assert!(!claim(&d, Kind::TrainRun, Existing::Refuse, "hint").unwrap());
        std::fs::write(d.join("config.toml"), "").unwrap();
        let e = claim(&d, Kind::TrainRun, Existing::Refuse, "--resume it").unwrap_err().to_string();
        assert!(e.contains("already holds an edgeprune training run; --resume it"), "{e}");
        assert!(claim(&d, Kind::TrainRun, Existing::Accept, "").unwrap());
        let e = claim(&d, Kind::Model, Existing::Accept, "").unwrap_err().to_string();
        assert!(e.contains("holds an edgeprune training run, not a model folder"), "{e}");
        let user = t.path().join("mine");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("thesis.tex"), "x").unwrap();
        let e = claim(&user, Kind::TrainRun, Existing::Accept, "").unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("thesis.tex"), "{e}");
        assert!(!user.join(MARKER).exists());
        // A folder holding only our lock is empty.
        let locked = t.path().join("locked");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::write(locked.join(LOCK), "1").unwrap();
        assert_eq!(inspect(&locked).unwrap(), Found::Empty);
    }

    #[test]
    fn legacy_folders_are_recognised() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("graph.json"), "").unwrap();
        std::fs::write(d.join("weights.safetensors"), "").unwrap();
        assert_eq!(inspect(d).unwrap(), Found::Ours(Kind::Model));
        std::fs::write(d.join("notes.txt"), "").unwrap();
        assert!(matches!(inspect(d).unwrap(), Found::Foreign(_)));
    }

    #[test]
    fn outputs_that_are_inputs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("weights.safetensors"), "").unwrap();
        std::fs::write(m.join("graph.json"), "").unwrap();
        for bad in [m.join("weights.safetensors"), m.clone(), t.path().to_path_buf(), m.join("./graph.json")] {
            assert!(check_not_input(&bad, "-o", &[&m]).is_err(), "{}", bad.display());
        }
        assert!(check_not_input(&m.join("model.onnx"), "-o", &[&m]).is_ok());
        assert!(check_not_input(&t.path().join("other"), "-o", &[&m]).is_ok());
        // Through a symbolic link.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(m.join("weights.safetensors"), &link).unwrap();
        assert!(check_not_input(&link, "-o", &[&m]).is_err());
    }

    #[test]
    fn a_lock_held_elsewhere_names_the_holder_and_is_reentrant_here() {
        let t = tempfile::tempdir().unwrap();
        let l = DirLock::acquire(t.path()).unwrap();
        let again = DirLock::acquire(t.path()).unwrap();
        // Another open file description (as another process would have) is refused.
        let other = std::fs::OpenOptions::new().read(true).write(true).open(t.path().join(LOCK)).unwrap();
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        assert_eq!(std::fs::read_to_string(t.path().join(LOCK)).unwrap(), std::process::id().to_string());
        drop((l, again));
        other.try_lock().unwrap();
    }
}
