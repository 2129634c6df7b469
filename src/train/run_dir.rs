//! The files of a training run folder, named in one place.

use std::path::{Path, PathBuf};

use crate::formats::native;

/// A training run folder: `config.toml` (the resolved recipe), `log.csv` (one row per epoch),
/// `summary.json` (when finished), `best/` (the best-validation model) and `checkpoints/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir(path.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("log.csv")
    }
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.json")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("best")
    }

    /// Where a model argument points: a run folder stands for its best model (so `eval`,
    /// `inspect` and `export` take a run folder wherever they take a model folder).
    pub fn model_path(path: &Path) -> PathBuf {
        let run = RunDir::new(path);
        if !path.join(native::GRAPH_FILE).exists() && run.best().join(native::GRAPH_FILE).exists() {
            run.best()
        } else {
            path.to_path_buf()
        }
    }
}
