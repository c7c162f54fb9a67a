//! The softmax over retrieved documents, p(z|x), and REALM's marginal log-likelihood
//! `logsumexp_z(log_softmax(doc_logits)_z + cond_logprob_z)`, as differentiable candle ops.
//!
//! Semantics (CPU, emulator and CUDA alike; kernels in `kernels/doc_softmax.cu`):
//! - `-inf` in `doc_logits` marks an absent candidate. A row with no finite logit gets p = 0
//!   everywhere, a marginal of `-inf` and zero gradients; a marginal that is `-inf` because no
//!   candidate can produce the target also has zero gradients. Never NaN from finite/-inf inputs.
//! - Gradients: d/d doc_logits = posterior − prior, d/d cond_logprob = posterior (times the
//!   incoming gradient).
//! - f32, f16 and bf16 inputs (both arguments of the marginal share one dtype); arithmetic in f32.
//! - NaN inputs are an error on the CPU path (checked while the data is read anyway); on the GPU
//!   they propagate as NaN, since checking would cost a device-to-host synchronisation per call.

mod check;
mod cpu;
mod launch;

pub use check::{
    bench, mll_composition, random_logits, selftest_cases, softmax_composition, DocSoftmaxBench,
};

use super::elem::{check_float, cpu_data, on_cpu, with_float_elem};
use crate::device::Exec;
use crate::error::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

const OP_SOFTMAX: &str = "doc_softmax";
const OP_MLL: &str = "marginal_log_likelihood";

/// Rows with at most this many candidates are handled by one warp each on the GPU (and in the
/// emulator); longer rows get a whole block.
pub const WARP_MAX_K: usize = 256;
/// The largest k accepted (rows are indexed with 32-bit integers in the kernels).
pub const MAX_K: usize = 1 << 24;

/// p(z|x) = softmax over the last dimension of `logits` [b, k].
pub fn doc_softmax(logits: &Tensor) -> Result<Tensor> {
    let (_, k) = logits
        .dims2()
        .map_err(|_| Error::bad_input(OP_SOFTMAX, "logits", rank_msg(logits, "[b, k]")))?;
    check_float(OP_SOFTMAX, "logits", logits.dtype())?;
    check_k(OP_SOFTMAX, "logits", k)?;
    contiguous(OP_SOFTMAX, "logits", logits)?;
    Ok(logits.apply_op1(DocSoftmax {
        exec: Exec::current(),
    })?)
}

/// `logsumexp_z(log_softmax(doc_logits)_z + cond_logprob_z)`: the log-likelihood of the target
/// marginalised over the retrieved documents. `doc_logits` [b, k]; `cond_logprob` [b, k] (result
/// `[b]`) or [b, k, m] for m targets per example, e.g. masked tokens (result [b, m]).
pub fn marginal_log_likelihood(doc_logits: &Tensor, cond_logprob: &Tensor) -> Result<Tensor> {
    let (b, k) = doc_logits
        .dims2()
        .map_err(|_| Error::bad_input(OP_MLL, "doc_logits", rank_msg(doc_logits, "[b, k]")))?;
    check_float(OP_MLL, "doc_logits", doc_logits.dtype())?;
    check_k(OP_MLL, "doc_logits", k)?;
    if cond_logprob.dtype() != doc_logits.dtype() {
        return Err(Error::bad_input(
            OP_MLL,
            "cond_logprob",
            format!(
                "dtype {:?} differs from doc_logits' {:?}",
                cond_logprob.dtype(),
                doc_logits.dtype()
            ),
        ));
    }
    let per_target = match cond_logprob.dims() {
        [cb, ck] if (*cb, *ck) == (b, k) => false,
        [cb, ck, _] if (*cb, *ck) == (b, k) => true,
        other => {
            return Err(Error::bad_input(
                OP_MLL,
                "cond_logprob",
                format!("shape {other:?} must be [{b}, {k}] or [{b}, {k}, m] to match doc_logits"),
            ))
        }
    };
    contiguous(OP_MLL, "doc_logits", doc_logits)?;
    contiguous(OP_MLL, "cond_logprob", cond_logprob)?;
    let cond3 = if per_target {
        cond_logprob.clone()
    } else {
        cond_logprob.unsqueeze(2)?
    };
    let out = doc_logits.apply_op2(
        &cond3,
        Mll {
            exec: Exec::current(),
        },
    )?;
    Ok(if per_target { out } else { out.squeeze(1)? })
}

fn rank_msg(t: &Tensor, want: &str) -> String {
    format!("shape {:?} must be {want}", t.dims())
}

fn check_k(op: &'static str, arg: &'static str, k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::bad_input(
            op,
            arg,
            format!("k = {k} candidates; need 1..={MAX_K}"),
        ));
    }
    Ok(())
}

fn contiguous(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.is_contiguous() {
        Ok(())
    } else {
        Err(Error::bad_input(
            op,
            arg,
            format!(
                "must be contiguous (shape {:?}, strides {:?}); call .contiguous() first",
                t.dims(),
                t.stride()
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// CPU dispatch: the native implementation or the emulated kernels.

/// The kernels on the tensors' GPU, in `exec`.
#[cfg(feature = "cuda")]
fn on_gpu(dev: &candle_core::CudaDevice, exec: &Exec) -> crate::kernels::Cuda {
    crate::kernels::Cuda::new(dev, exec.clone())
}

/// The contiguous elements of a GPU argument.
#[cfg(feature = "cuda")]
fn gpu_data<'a, T: candle_core::cuda_backend::CudaDType>(
    op: &'static str,
    arg: &'static str,
    s: &'a candle_core::CudaStorage,
    l: &Layout,
) -> Result<cudarc::driver::CudaView<'a, T>> {
    super::elem::cuda_data::<T>(op, arg, s, l)
}

// ---------------------------------------------------------------------------------------------
// The candle ops.

struct DocSoftmax {
    exec: Exec,
}

impl CustomOp1 for DocSoftmax {
    fn name(&self) -> &'static str {
        OP_SOFTMAX
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = l.dims()[1];
        let out = with_float_elem!(s.dtype(), T => {
            let x = cpu_data::<T>(OP_SOFTMAX, "logits", s, l)?;
            on_cpu::<T>(
                &self.exec,
                || cpu::softmax(OP_SOFTMAX, x, k),
                |emu| launch::softmax(emu, &x, x.len() / k, k),
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
        let k = l.dims()[1];
        let rows = l.shape().elem_count() / k;
        let be = on_gpu(&s.device, &self.exec);
        let out = with_float_elem!(s.dtype(), T => {
            let x = gpu_data::<T>(OP_SOFTMAX, "logits", s, l)?;
            let p = launch::softmax(&be, &x, rows, k)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(p, s.device.clone()))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(p.apply_op2_no_bwd(
            &g,
            &DocSoftmaxBwd {
                exec: self.exec.clone(),
            },
        )?))
    }
}

/// dx = p ⊙ (g − Σ p g), from the forward's output p and the incoming gradient g.
struct DocSoftmaxBwd {
    exec: Exec,
}

impl CustomOp2 for DocSoftmaxBwd {
    fn name(&self) -> &'static str {
        "doc_softmax_bwd"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = pl.dims()[1];
        let out = with_float_elem!(ps.dtype(), T => {
            let p = cpu_data::<T>(OP_SOFTMAX, "p", ps, pl)?;
            let g = cpu_data::<T>(OP_SOFTMAX, "grad", gs, gl)?;
            on_cpu::<T>(
                &self.exec,
                || Ok(cpu::softmax_bwd(p, g, k)),
                |emu| launch::softmax_bwd(emu, &p, &g, p.len() / k, k),
            )
        })?;
        Ok((out, pl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let k = pl.dims()[1];
        let rows = pl.shape().elem_count() / k;
        let be = on_gpu(&ps.device, &self.exec);
        let out = with_float_elem!(ps.dtype(), T => {
            let p = gpu_data::<T>(OP_SOFTMAX, "p", ps, pl)?;
            let g = gpu_data::<T>(OP_SOFTMAX, "grad", gs, gl)?;
            let dx = launch::softmax_bwd(&be, &p, &g, rows, k)?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(dx, ps.device.clone()))
        })?;
        Ok((out, pl.shape().clone()))
    }
}

/// The marginal over `[b, k]` logits and `[b, k, m]` conditionals, giving `[b, m]`.
struct Mll {
    exec: Exec,
}

impl CustomOp2 for Mll {
    fn name(&self) -> &'static str {
        OP_MLL
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, k, m) = cl.shape().dims3()?;
        let out = with_float_elem!(xs.dtype(), T => {
            let x = cpu_data::<T>(OP_MLL, "doc_logits", xs, xl)?;
            let c = cpu_data::<T>(OP_MLL, "cond_logprob", cs, cl)?;
            on_cpu::<T>(
                &self.exec,
                || cpu::mll(OP_MLL, x, c, k, m),
                |emu| launch::mll(emu, &x, &c, (b, k, m)),
            )
        })?;
        Ok((out, Shape::from((b, m))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        cs: &candle_core::CudaStorage,
        cl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, k, m) = cl.shape().dims3()?;
        let be = on_gpu(&xs.device, &self.exec);
        let out = with_float_elem!(xs.dtype(), T => {
            let x = gpu_data::<T>(OP_MLL, "doc_logits", xs, xl)?;
            let c = gpu_data::<T>(OP_MLL, "cond_logprob", cs, cl)?;
            let out = launch::mll(&be, &x, &c, (b, k, m))?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(out, xs.device.clone()))
        })?;
        Ok((out, Shape::from((b, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        c: &Tensor,
        out: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let m = c.dim(2)?;
        // One backward launch computes both gradients, packed along the last axis.
        let og = Tensor::stack(&[out, &g.contiguous()?], 2)?;
        let bwd = MllBwd {
            exec: self.exec.clone(),
        };
        let grad = x.apply_op3_no_bwd(c, &og, &bwd)?;
        let d_x = grad.narrow(2, m, 1)?.squeeze(2)?;
        let d_c = grad.narrow(2, 0, m)?;
        Ok((Some(d_x), Some(d_c)))
    }
}

/// Both gradients of the marginal, `[b, k, m + 1]` (d/dc, then d/dx in the last slot).
struct MllBwd {
    exec: Exec,
}

impl CustomOp3 for MllBwd {
    fn name(&self) -> &'static str {
        "marginal_log_likelihood_bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, k, m) = cl.shape().dims3()?;
        let out = with_float_elem!(xs.dtype(), T => {
            let x = cpu_data::<T>(OP_MLL, "doc_logits", xs, xl)?;
            let c = cpu_data::<T>(OP_MLL, "cond_logprob", cs, cl)?;
            let og = cpu_data::<T>(OP_MLL, "grad", os, ol)?;
            on_cpu::<T>(
                &self.exec,
                || cpu::mll_bwd(OP_MLL, x, c, og, k, m),
                |emu| launch::mll_bwd(emu, &x, &c, &og, (b, k, m)),
            )
        })?;
        Ok((out, Shape::from((b, k, m + 1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        cs: &candle_core::CudaStorage,
        cl: &Layout,
        os: &candle_core::CudaStorage,
        ol: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, k, m) = cl.shape().dims3()?;
        let be = on_gpu(&xs.device, &self.exec);
        let grad = with_float_elem!(xs.dtype(), T => {
            let x = gpu_data::<T>(OP_MLL, "doc_logits", xs, xl)?;
            let c = gpu_data::<T>(OP_MLL, "cond_logprob", cs, cl)?;
            let og = gpu_data::<T>(OP_MLL, "grad", os, ol)?;
            let grad = launch::mll_bwd(&be, &x, &c, &og, (b, k, m))?;
            Ok::<_, Error>(candle_core::CudaStorage::wrap_cuda_slice(grad, xs.device.clone()))
        })?;
        Ok((grad, Shape::from((b, k, m + 1))))
    }
}
