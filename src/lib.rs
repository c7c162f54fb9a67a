//! realm: GPU-native kernels for retrieval-augmented language models, and the REALM system
//! (Guu et al. 2020) built on them with candle.
//!
//! - [`ops`]: the fused ops (softmax over retrieved documents and the marginal likelihood; more
//!   to come), each with a CPU implementation, an emulator path and a CUDA path.
//! - [`device`]: choosing where to compute (`auto`, `cpu`, `emulate`, `cuda[:N]`) and the
//!   execution mode, an explicit value.
//! - [`kernels`]: the Rust↔kernel ABI generated from `kernels/*.cu`, and the launch seam over
//!   the emulator and CUDA.
//! - [`selftest`] and [`mod@bench`]: the checks and measurements behind `realm selftest` and
//!   `realm bench`.

#![warn(missing_docs)]

pub mod alloc;
pub mod ask;
pub mod bench;
pub mod check;
pub mod conformance;
pub mod data;
pub mod demo;
pub mod demo_dir;
pub mod device;
pub mod dist;
pub mod embed;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod import;
pub mod index;
pub mod io;
pub mod kernels;
pub mod lines;
pub mod measure;
pub mod model;
pub mod ops;
pub mod progress;
pub mod report;
pub mod rng;
pub mod selftest;
pub mod train;

pub use error::{Error, Result};
