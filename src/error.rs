//! One error type for the library. Every variant names the thing at fault: the node, the file,
//! the key or the line, so that a user can find what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A graph is malformed at a node (bad attribute, bad input, shape mismatch).
    #[error("node `{node}`: {msg}")]
    Node { node: String, msg: String },
    /// A tensor of the weights is missing, unexpected or malformed.
    #[error("tensor `{key}`: {msg}")]
    Tensor { key: String, msg: String },
    /// A file could not be parsed or holds something invalid.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// An operating-system error on a file.
    #[error("{}: {}", path.display(), io_text(err))]
    Io {
        path: PathBuf,
        // Not a `source` (thiserror would make a field of that name one): the message already
        // says it, and an error chain printed with `{:#}` would repeat it.
        err: std::io::Error,
    },
    /// A configuration value (CLI flag or recipe key) is invalid.
    #[error("{key}: {msg}")]
    Config { key: String, msg: String },
    /// The dataset is missing or unusable.
    #[error("data: {0}")]
    Data(String),
    /// The compute engine failed (libtorch error, device unavailable).
    #[error("engine: {0}")]
    Engine(String),
}

/// An OS error as one plain sentence: "No such file or directory", without the "(os error 2)".
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn node(node: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Node { node: node.into(), msg: msg.into() }
    }
    pub fn tensor(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { key: key.into(), msg: msg.into() }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io { path: path.into(), err }
    }
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { key: key.into(), msg: msg.into() }
    }
    /// Prefix the error with the file it came from, where it does not already name one.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (Error::File { .. } | Error::Io { .. }) => e,
            other => Error::File { path: path.into(), msg: other.to_string() },
        }
    }
}
