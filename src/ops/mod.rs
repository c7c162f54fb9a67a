//! The fused ops, as candle custom ops. Each has a CPU implementation (the fallback, `cpu.rs`)
//! and the CUDA kernels, described once per launch in its `launch.rs` and run through the
//! [`crate::kernels::Backend`] seam on a GPU or, for CPU tensors, on the emulator.
//!
//! Which a CPU tensor takes is the execution mode of the thread that builds the op
//! ([`crate::device::Exec::current`]); the op keeps it, so its backward runs the same way on
//! whatever thread autograd uses.

pub mod adamw;
pub mod attention;
pub mod doc_softmax;
pub mod dropout;
pub(crate) mod elem;
pub mod linear;
pub(crate) mod math;
pub mod mips;
pub mod nn;

pub use crate::device::{
    check_cpu_simd_env, cpu_simd, CpuExec, CpuSimd, Exec, ExecGuard, CPU_SIMD_ENV,
};
pub use adamw::{adamw_step, AdamWParam, AdamWStep};
pub use attention::{attention, Dropout, KeyLens};
pub use doc_softmax::{doc_softmax, marginal_log_likelihood};
pub use linear::{linear, Heads};
pub use mips::{mips_top_k, MipsIndex, ShardedIndex};
pub use nn::{gelu, layer_norm, GeluForm};

use crate::error::Result;

/// Makes the calling thread run the ops of CPU tensors on the emulated kernels (fresh counters)
/// until the guard is dropped: shorthand for `Exec::emulator()?.enter()`. An error in a build
/// without the emulator.
pub fn use_emulator() -> Result<ExecGuard> {
    Ok(Exec::emulator()?.enter())
}
