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
use std::sync::OnceLock;

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

/// Which instruction sets the native CPU kernels (attention tiles, MIPS scans) may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuSimd {
    /// The best this CPU has (AVX2 + FMA, with F16C for MIPS), detected at run time.
    #[default]
    Auto,
    /// Plain Rust only, whatever the CPU: the summation order and rounding of a machine without
    /// AVX2, so that a test can check that its outcome does not depend on the kernel path.
    Portable,
}

/// The environment variable that chooses [`CpuSimd`]: `auto` (or unset) or `portable`.
pub const CPU_SIMD_ENV: &str = "REALM_CPU_SIMD";

/// The process's [`CpuSimd`], from [`CPU_SIMD_ENV`] (read once): `Auto` when it is unset, or when
/// its value is not understood (which [`check_cpu_simd_env`] reports).
pub fn cpu_simd() -> CpuSimd {
    cpu_simd_env().unwrap_or_default()
}

/// The native CPU kernels' instruction set as a user would name it: `avx2` or `portable`.
pub fn cpu_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if cpu_simd() == CpuSimd::Auto
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        return "avx2";
    }
    "portable"
}

/// An error naming [`CPU_SIMD_ENV`] when it is set to something other than `auto` or `portable`
/// (the binary checks this at start, so that a typo is not silently the default).
pub fn check_cpu_simd_env() -> Result<CpuSimd> {
    cpu_simd_env()
}

fn cpu_simd_env() -> Result<CpuSimd> {
    static CHOICE: OnceLock<std::result::Result<CpuSimd, String>> = OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var(CPU_SIMD_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(CpuSimd::Auto),
            Ok(v) if v == "auto" || v.is_empty() => Ok(CpuSimd::Auto),
            Ok(v) if v == "portable" => Ok(CpuSimd::Portable),
            Ok(v) => Err(format!("{CPU_SIMD_ENV}={v:?}: use `auto` or `portable`")),
            Err(e) => Err(format!("{CPU_SIMD_ENV}: {e}")),
        })
        .clone()
        .map_err(Error::Device)
}
