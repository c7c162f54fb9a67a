//! The fused ops, as candle custom ops. Each has a CPU implementation (the fallback), an emulator
//! path (the CUDA kernel run on the CPU, feature `emulate`) and a CUDA path (feature `cuda`).
//!
//! Which path a CPU tensor takes is chosen per thread with [`CpuExec`]: the default is the native
//! Rust implementation; [`use_emulator`] switches the calling thread to the emulated kernels (the
//! op remembers the choice, so its backward runs the same way).

pub mod attention;
pub mod doc_softmax;
pub(crate) mod elem;
pub(crate) mod math;
pub mod mips;

pub use attention::{attention, Dropout};
pub use doc_softmax::{doc_softmax, marginal_log_likelihood};
pub use mips::{mips_top_k, MipsIndex, ShardedIndex};

use crate::error::{Error, Result};
use std::cell::Cell;

/// How an op runs on tensors that live on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuExec {
    /// The Rust implementation (multi-threaded, vectorised): the CPU fallback.
    #[default]
    Native,
    /// The CUDA kernels of `kernels/`, executed by the emulator.
    Emulator,
}

thread_local! {
    static CPU_EXEC: Cell<CpuExec> = const { Cell::new(CpuExec::Native) };
}

/// The calling thread's current choice.
pub fn cpu_exec() -> CpuExec {
    CPU_EXEC.with(|c| c.get())
}

/// Restores the previous [`CpuExec`] when dropped.
#[must_use = "the choice lasts as long as the guard"]
pub struct CpuExecGuard {
    previous: CpuExec,
}

impl Drop for CpuExecGuard {
    fn drop(&mut self) {
        CPU_EXEC.with(|c| c.set(self.previous));
    }
}

/// Sets the calling thread's [`CpuExec`] until the guard is dropped. Choosing the emulator in a
/// build without feature `emulate` is an error.
pub fn set_cpu_exec(exec: CpuExec) -> Result<CpuExecGuard> {
    if exec == CpuExec::Emulator && !cfg!(feature = "emulate") {
        return Err(Error::Device(
            "the kernel emulator is not in this build (rebuild with `--features emulate`)".into(),
        ));
    }
    let previous = CPU_EXEC.with(|c| c.replace(exec));
    Ok(CpuExecGuard { previous })
}

/// Shorthand for `set_cpu_exec(CpuExec::Emulator)`.
pub fn use_emulator() -> Result<CpuExecGuard> {
    set_cpu_exec(CpuExec::Emulator)
}
