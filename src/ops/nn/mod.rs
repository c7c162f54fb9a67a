//! LayerNorm and GELU, the encoder's two elementwise steps, as differentiable candle ops.
//!
//! Semantics (CPU, emulator and CUDA alike; kernels in `kernels/layer_norm.cu` and
//! `kernels/gelu.cu`):
//! - [`layer_norm`]`(x, w, b, eps)` normalises over the last dimension `h` of `x` (f32, f16 or
//!   bf16; any shape `[.., h]`) with the f32 scale `w` and shift `b` (`[h]`): statistics in f32,
//!   the variance of the centred row (two passes, no cancellation), the result in `x`'s dtype.
//!   Its gradients: dx in `x`'s dtype, dw and db in f32. `1 ≤ h ≤` [`MAX_HIDDEN`]; `eps` positive
//!   and finite.
//! - [`gelu`]`(x, form)`: the erf form `x Φ(x)` (Hugging Face's "gelu") or the tanh form
//!   (`"gelu_new"`), f32 arithmetic, `x`'s dtype kept. Φ and the tanh form's `(1 + tanh u) / 2`
//!   are computed without the cancellation of `1 + …` for negative x on the GPU (erfc, a
//!   sigmoid) and, for the tanh form, on the CPU; the CPU's erf is a vectorisable rational
//!   approximation (absolute error < 1e-6).
//! - NaN propagates (elementwise work; nothing is checked).
//! - The CPU results do not depend on the thread count (LayerNorm's sums over rows are partial
//!   sums over fixed row ranges added in order); the GPU's are the same on every run (no atomics).

mod check;
mod cpu;
mod launch;

pub use check::{
    bench, gelu_composition, layer_norm_composition, selftest_cases, NnBench, NnBenchOp,
};

use super::elem::{check_float, cpu_data, on_cpu, with_float_elem};
use crate::device::Exec;
use crate::error::{Error, Result};
use crate::kernels::abi::layer_norm::LAYER_NORM_MAX_HIDDEN;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

const OP_LAYER_NORM: &str = "layer_norm";
const OP_GELU: &str = "gelu";

/// The widest row [`layer_norm`] accepts (the backward kernel keeps 2 h floats of partial sums
/// in a block's shared memory).
pub const MAX_HIDDEN: usize = LAYER_NORM_MAX_HIDDEN as usize;

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluForm {
    /// `x Φ(x)`, Φ the standard normal CDF (Hugging Face's "gelu").
    Erf,
    /// `x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2` (Hugging Face's "gelu_new").
    Tanh,
}

/// LayerNorm over the last dimension of `x` with f32 scale `w` and shift `b`; statistics in f32,
/// the result in `x`'s dtype. Differentiable in all three.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dims().last().copied().unwrap_or(1);
    check_float(OP_LAYER_NORM, "x", x.dtype())?;
    if h == 0 || h > MAX_HIDDEN {
        return Err(Error::bad_input(
            OP_LAYER_NORM,
            "x",
            format!(
                "last dimension {h} (shape {:?}); need 1..={MAX_HIDDEN}",
                x.dims()
            ),
        ));
    }
    for (arg, t) in [("w", w), ("b", b)] {
        if t.dtype() != DType::F32 || t.dims() != [h] {
            return Err(Error::bad_input(
                OP_LAYER_NORM,
                arg,
                format!(
                    "{:?} {:?}; need f32 [{h}] to match x's last dimension",
                    t.dtype(),
                    t.dims()
                ),
            ));
        }
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::bad_input(
            OP_LAYER_NORM,
            "eps",
            format!("{eps} must be positive and finite"),
        ));
    }
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    let op = LayerNorm {
        eps: eps as f32,
        exec: Exec::current(),
    };
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?)
}

/// GELU of every element of `x` (f32, f16 or bf16), differentiable.
pub fn gelu(x: &Tensor, form: GeluForm) -> Result<Tensor> {
    check_float(OP_GELU, "x", x.dtype())?;
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    let op = Gelu {
        form,
        exec: Exec::current(),
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// The contiguous elements of a GPU argument.
#[cfg(feature = "cuda")]
fn gpu_arg<'a, T: candle_core::cuda_backend::CudaDType>(
    op: &'static str,
    arg: &'static str,
    s: &'a candle_core::CudaStorage,
    l: &Layout,
) -> Result<cudarc::driver::CudaView<'a, T>> {
    super::elem::cuda_data::<T>(op, arg, s, l)
}

// ---------------------------------------------------------------------------------------------
// LayerNorm.

struct LayerNorm {
    eps: f32,
    exec: Exec,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        OP_LAYER_NORM
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = cpu_data::<f32>(OP_LAYER_NORM, "w", ws, wl)?;
        let b = cpu_data::<f32>(OP_LAYER_NORM, "b", bs, bl)?;
        let h = w.len();
        let out = with_float_elem!(xs.dtype(), T => {
            let x = cpu_data::<T>(OP_LAYER_NORM, "x", xs, xl)?;
            on_cpu::<T>(
                &self.exec,
                || Ok(cpu::layer_norm(x, w, b, self.eps)),
                |emu| launch::layer_norm(emu, &x, &w, &b, x.len() / h, h, self.eps),
            )
        })?;
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let h = wl.shape().elem_count();
        let rows = xl.shape().elem_count() / h;
        let be = crate::kernels::Cuda::new(&xs.device, self.exec.clone());
        let w = gpu_arg::<f32>(OP_LAYER_NORM, "w", ws, wl)?;
        let b = gpu_arg::<f32>(OP_LAYER_NORM, "b", bs, bl)?;
        let out = with_float_elem!(xs.dtype(), T => {
            let x = gpu_arg::<T>(OP_LAYER_NORM, "x", xs, xl)?;
            let y = launch::layer_norm(&be, &x, &w, &b, rows, h, self.eps)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(y, xs.device.clone()))
        })?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let rows = x.elem_count() / h;
        // One op computes all three: rows of dx, then the dw row and the db row, in f32.
        let grad = LayerNormGrad {
            eps: self.eps,
            exec: self.exec.clone(),
        };
        let g = x.apply_op3_no_bwd(w, &dy.to_dtype(x.dtype())?.contiguous()?, &grad)?;
        let dx = g
            .narrow(0, 0, rows)?
            .reshape(x.shape())?
            .to_dtype(x.dtype())?;
        let dw = g.narrow(0, rows, 1)?.reshape(h)?;
        let db = g.narrow(0, rows + 1, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Given x, w and dy: `[rows + 2, h]` f32 holding dx (rows), dw and db.
struct LayerNormGrad {
    eps: f32,
    exec: Exec,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer_norm_bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = cpu_data::<f32>(OP_LAYER_NORM, "w", ws, wl)?;
        let h = w.len();
        let rows = xl.shape().elem_count() / h;
        let out = with_float_elem!(xs.dtype(), T => {
            let x = cpu_data::<T>(OP_LAYER_NORM, "x", xs, xl)?;
            let dy = cpu_data::<T>(OP_LAYER_NORM, "dy", ds, dl)?;
            on_cpu::<f32>(
                &self.exec,
                || Ok(cpu::layer_norm_bwd(x, w, dy, self.eps)),
                |emu| launch::layer_norm_bwd(emu, &x, &w, &dy, rows, h, self.eps),
            )
        })?;
        Ok((out, Shape::from((rows + 2, h))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let h = wl.shape().elem_count();
        let rows = xl.shape().elem_count() / h;
        let be = crate::kernels::Cuda::new(&xs.device, self.exec.clone());
        let w = gpu_arg::<f32>(OP_LAYER_NORM, "w", ws, wl)?;
        let out = with_float_elem!(xs.dtype(), T => {
            let x = gpu_arg::<T>(OP_LAYER_NORM, "x", xs, xl)?;
            let dy = gpu_arg::<T>(OP_LAYER_NORM, "dy", ds, dl)?;
            let g = launch::layer_norm_bwd(&be, &x, &w, &dy, rows, h, self.eps)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(g, xs.device.clone()))
        })?;
        Ok((out, Shape::from((rows + 2, h))))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU.

struct Gelu {
    form: GeluForm,
    exec: Exec,
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        OP_GELU
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = with_float_elem!(s.dtype(), T => {
            let x = cpu_data::<T>(OP_GELU, "x", s, l)?;
            on_cpu::<T>(
                &self.exec,
                || Ok(cpu::gelu(self.form, x)),
                |emu| launch::gelu(emu, self.form, &x, x.len()),
            )
        })?;
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let be = crate::kernels::Cuda::new(&s.device, self.exec.clone());
        let out = with_float_elem!(s.dtype(), T => {
            let x = gpu_arg::<T>(OP_GELU, "x", s, l)?;
            let y = launch::gelu(&be, self.form, &x, n)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(y, s.device.clone()))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = GeluGrad {
            form: self.form,
            exec: self.exec.clone(),
        };
        Ok(Some(x.apply_op2_no_bwd(
            &dy.to_dtype(x.dtype())?.contiguous()?,
            &grad,
        )?))
    }
}

/// `dy · GELU'(x)`.
struct GeluGrad {
    form: GeluForm,
    exec: Exec,
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu_bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = with_float_elem!(xs.dtype(), T => {
            let x = cpu_data::<T>(OP_GELU, "x", xs, xl)?;
            let dy = cpu_data::<T>(OP_GELU, "dy", ds, dl)?;
            on_cpu::<T>(
                &self.exec,
                || Ok(cpu::gelu_bwd(self.form, x, dy)),
                |emu| launch::gelu_bwd(emu, self.form, (&x, &dy), x.len()),
            )
        })?;
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let n = xl.shape().elem_count();
        let be = crate::kernels::Cuda::new(&xs.device, self.exec.clone());
        let out = with_float_elem!(xs.dtype(), T => {
            let x = gpu_arg::<T>(OP_GELU, "x", xs, xl)?;
            let dy = gpu_arg::<T>(OP_GELU, "dy", ds, dl)?;
            let dx = launch::gelu_bwd(&be, self.form, (&x, &dy), n)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(dx, xs.device.clone()))
        })?;
        Ok((out, xl.shape().clone()))
    }
}
