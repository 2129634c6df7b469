//! Folders that appear whole or not at all. A [`StagedDir`] collects files in a hidden temporary
//! folder beside its destination, each flushed to disk; [`StagedDir::commit`] then puts it in
//! place with one rename (on Linux, an atomic exchange when the destination already exists), so a
//! reader, or a process that restarts after a power cut, sees the old folder or the new one,
//! never a mix of files from both. An uncommitted stage is removed when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of the temporary folders of stages (readers skip names that start with it).
pub const STAGE_PREFIX: &str = ".stage-";

pub struct StagedDir {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts staging the folder `dest` (its parent is created if missing).
    pub fn new(dest: &Path) -> Result<Self> {
        let parent = parent_of(dest);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let name = dest.file_name().ok_or_else(|| Error::file(dest, "not a folder path"))?.to_string_lossy();
        let tmp = parent.join(format!("{STAGE_PREFIX}{name}.{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir { dest: dest.to_path_buf(), tmp, committed: false })
    }

    /// The temporary folder being filled.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes one file of the folder and flushes it to disk.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| Error::io(self.dest.join(name), e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(self.dest.join(name), e))
    }

    /// Puts the folder in place of `dest`, replacing any previous one in a single step.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        if self.dest.exists() {
            exchange(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
            // `tmp` now holds the old folder.
            let _ = std::fs::remove_dir_all(&self.tmp);
        } else {
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        }
        self.committed = true;
        sync_dir(parent_of(&self.dest)).map_err(|e| Error::io(parent_of(&self.dest), e))
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Removes the folder `path` so that it is gone at once: it is first renamed to a stage name
/// (one step), then deleted file by file. A crash during the deletion leaves a stage, which
/// [`remove_stale_stages`] clears, never a half-emptied folder under its real name.
pub fn remove_dir(path: &Path) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::file(path, "not a folder path"))?.to_string_lossy();
    let trash = parent_of(path).join(format!("{STAGE_PREFIX}removed-{name}.{}", std::process::id()));
    std::fs::rename(path, &trash).map_err(|e| Error::io(path, e))?;
    std::fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))
}

/// Removes the stages that a killed process left in `dir`.
pub fn remove_stale_stages(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(STAGE_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn parent_of(p: &Path) -> &Path {
    p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Swaps two existing paths in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD makes them relative to the cwd.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // The file system (or an old kernel) has no exchange.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => swap_by_renames(a, b),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    swap_by_renames(a, b)
}

/// Swaps two existing paths where there is no atomic exchange: moves `b` aside, `a` in, and the
/// old `b` to `a`. A crash between the renames leaves `b` missing and its old content at the
/// aside name, which the next [`remove_stale_stages`] of the folder clears.
fn swap_by_renames(a: &Path, b: &Path) -> std::io::Result<()> {
    let aside = parent_of(b).join(format!("{STAGE_PREFIX}old.{}", std::process::id()));
    std::fs::rename(b, &aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&aside, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_the_whole_folder_and_drop_discards() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("best");
        let s = StagedDir::new(&dest).unwrap();
        s.write("a", b"1").unwrap();
        s.write("b", b"1").unwrap();
        s.commit().unwrap();
        let s = StagedDir::new(&dest).unwrap();
        s.write("a", b"2").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"2");
        assert!(!dest.join("b").exists(), "no file of the old folder survives");
        {
            let s = StagedDir::new(&dest).unwrap();
            s.write("a", b"3").unwrap();
            // dropped without commit
        }
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"2");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("best")], "no stage is left behind");
        remove_dir(&dest).unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_rename_fallback_swaps_two_folders_and_leaves_no_stage() {
        // The path taken where the system has no atomic exchange (non-Linux, or file systems
        // without RENAME_EXCHANGE); Linux normally takes renameat2.
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("f"), b"new").unwrap();
        std::fs::write(b.join("f"), b"old").unwrap();
        swap_by_renames(&a, &b).unwrap();
        assert_eq!(std::fs::read(b.join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read(a.join("f")).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);
    }
}
