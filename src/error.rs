//! The library's error type: every bad input gets a variant that names it.

use std::path::PathBuf;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor argument with the wrong rank, shape, dtype, device or layout.
    #[error("{op}: argument `{arg}`: {msg}")]
    BadInput {
        /// The operation that rejected the argument, e.g. `attention` or `tokenizer`.
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// A kernel fault reported by the CPU emulator (kernel, block, thread and what went wrong).
    #[error("emulator: {0}")]
    Emulator(String),
    /// The requested device or execution path is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// A collective between the processes of a distributed run failed (a rank left, or the
    /// ranks disagree about what they exchange).
    #[error("distributed: {0}")]
    Dist(String),
    /// An I/O or format problem with a file (see [`Error::file`]).
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong with it.
        msg: String,
    },
    /// A malformed record in a data file, with its 1-based line number.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The data file.
        path: PathBuf,
        /// The record's line number, from 1.
        line: usize,
        /// What is wrong with the record.
        msg: String,
    },
    /// A checkpoint that does not fit the model, every problem by tensor name.
    #[error(
        "{}: checkpoint does not fit the model: missing [{}]; unexpected [{}]; wrong shape or dtype [{}]",
        .path.display(), .missing.join(", "), .unexpected.join(", "), .wrong_shape.join(", ")
    )]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Tensors the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors in the checkpoint that the model has no place for.
        unexpected: Vec<String>,
        /// Tensors whose shape or dtype differs from the model's, each with both.
        wrong_shape: Vec<String>,
    },
    /// An error from candle (a tensor op, a safetensors read, a device call).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error without a file name to attach.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A [`Error::BadInput`] for argument `arg` of operation `op`.
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

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
