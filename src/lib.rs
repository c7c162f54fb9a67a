//! realm: GPU-native kernels for retrieval-augmented language models, and the REALM system
//! (Guu et al. 2020) built on them with candle.
//!
//! - [`ops`]: the fused ops (softmax over retrieved documents and the marginal likelihood; more
//!   to come), each with a CPU implementation, an emulator path and a CUDA path.
//! - [`device`]: choosing where to compute (`auto`, `cpu`, `emulate`, `cuda[:N]`).
//! - [`selftest`] and [`mod@bench`]: the checks and measurements behind `realm selftest` and
//!   `realm bench`.

pub mod alloc;
pub mod ask;
pub mod bench;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod index;
pub mod io;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod report;
pub mod rng;
pub mod selftest;
pub mod train;

#[cfg(any(feature = "emulate", feature = "cuda"))]
pub mod conformance;
#[cfg(feature = "emulate")]
pub mod emulator;

pub use error::{Error, Result};
