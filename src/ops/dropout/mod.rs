//! Dropout of hidden states by a counter-based Philox mask, as a differentiable candle op: one
//! kernel launch on a GPU (or the emulator), no mask drawn on the host or uploaded.
//!
//! Semantics (CPU, emulator and CUDA alike; kernel in `kernels/dropout.cu`): element i of `x`
//! (row-major) is dropped when word `i % 4` of Philox4x32-10 keyed by the seed at counter
//! `[i / 4, stream, step low, step high]` is below `round(p · 2³²)`, else multiplied by
//! 1 / (1 − p) rounded to x's dtype; the product is taken in f32 and rounded once (as candle's
//! `x * mask` in that dtype). All three paths draw the same bits, so they agree bit for bit, and
//! a mask is a pure function of (seed, stream, step). The backward applies the same mask to the
//! gradient. f32, f16, bf16; at most 2³² − 1 elements.

mod check;
mod cpu;
mod launch;

pub use check::{bench, composition, selftest_cases, DropoutBench};

use super::elem::{check_float, cpu_data, with_float_elem, Elem};
use crate::device::{CpuExec, Exec};
use crate::error::{Error, Result};
use crate::kernels::Emulator;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

const OP: &str = "dropout";

/// Which mask: drop probability and the Philox key and counter words it is drawn from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    /// Drop probability, in [0, 1).
    pub p: f32,
    /// The Philox key (low word first).
    pub seed: u64,
    /// The counter's second word: one stream per place a mask is drawn.
    pub stream: u32,
    /// The counter's last two words (low first).
    pub step: u64,
}

impl DropoutMask {
    /// Draws below this are dropped.
    fn threshold(&self) -> u32 {
        (f64::from(self.p) * 4_294_967_296.0).round() as u32
    }

    /// 1 / (1 − p) as the dtype `T` holds it, widened to f32.
    fn scale<T: Elem>(&self) -> f32 {
        T::from_f32((1.0 / (1.0 - f64::from(self.p))) as f32).to_f32()
    }

    /// The counter of group `g` (elements 4g..4g+4).
    fn counter(&self, g: u32) -> [u32; 4] {
        [g, self.stream, self.step as u32, (self.step >> 32) as u32]
    }
}

/// `x` with the elements `mask` drops set to zero and the others scaled by 1 / (1 − p): see the
/// module documentation. Differentiable; p = 0 returns `x` itself.
pub fn dropout(x: &Tensor, mask: DropoutMask) -> Result<Tensor> {
    if !(mask.p.is_finite() && (0.0..1.0).contains(&mask.p)) {
        return Err(Error::bad_input(
            OP,
            "p",
            format!("{} is not in [0, 1)", mask.p),
        ));
    }
    check_float(OP, "x", x.dtype())?;
    if x.elem_count() > u32::MAX as usize {
        return Err(Error::bad_input(
            OP,
            "x",
            format!("{} elements; at most 2³² − 1", x.elem_count()),
        ));
    }
    if mask.p == 0.0 || x.elem_count() == 0 {
        return Ok(x.clone());
    }
    Ok(x.contiguous()?.apply_op1(Dropout {
        mask,
        exec: Exec::current(),
    })?)
}

/// The op: forward and backward are the same masking.
#[derive(Clone)]
struct Dropout {
    mask: DropoutMask,
    exec: Exec,
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = with_float_elem!(s.dtype(), T => {
            let x = cpu_data::<T>(OP, "x", s, l)?;
            let out = match self.exec.cpu {
                CpuExec::Native => cpu::apply(x, &self.mask),
                CpuExec::Emulator => {
                    let emu = Emulator::new(self.exec.clone());
                    launch::apply(&emu, &x, x.len(), &self.mask, self.mask.scale::<T>())?
                }
            };
            Ok::<_, Error>(T::into_cpu_storage(out))
        })?;
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let be = crate::kernels::Cuda::new(&s.device, self.exec.clone());
        let n = l.shape().elem_count();
        let out = with_float_elem!(s.dtype(), T => {
            let x = super::elem::cuda_data::<T>(OP, "x", s, l)?;
            let out = launch::apply(&be, &x, n, &self.mask, self.mask.scale::<T>())?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(out, s.device.clone()))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _out: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(self)?))
    }
}
