//! The library's error type: every bad input gets a variant that names it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor argument with the wrong rank, shape, dtype, device or layout.
    #[error("{op}: argument `{arg}`: {msg}")]
    BadInput {
        op: &'static str,
        arg: &'static str,
        msg: String,
    },
    /// A kernel fault reported by the CPU emulator (kernel, block, thread and what went wrong).
    #[error("emulator: {0}")]
    Emulator(String),
    /// The requested device or execution path is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// A malformed record in a data file, with its 1-based line number.
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A checkpoint that does not fit the model, every problem by tensor name.
    #[error(
        "{}: checkpoint does not fit the model: missing [{}]; unexpected [{}]; wrong shape or dtype [{}]",
        .path.display(), .missing.join(", "), .unexpected.join(", "), .wrong_shape.join(", ")
    )]
    Checkpoint {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        wrong_shape: Vec<String>,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn bad_input(op: &'static str, arg: &'static str, msg: impl Into<String>) -> Self {
        Error::BadInput {
            op,
            arg,
            msg: msg.into(),
        }
    }
}

/// Candle's `CustomOp` methods return `candle_core::Result`; our errors travel inside it as a
/// wrapped error and keep their message.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::wrap(other),
        }
    }
}

impl Error {
    /// An I/O or format problem with the file at `path`.
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
