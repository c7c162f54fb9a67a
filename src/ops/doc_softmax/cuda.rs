//! doc_softmax's kernels on a CUDA device: one launch per forward or backward.

use super::{launch_geometry, BLOCK_THREADS};
use crate::error::{Error, Result};
use crate::kernels::{alloc_output, function, launch_config, Family};
use crate::ops::elem::cuda_data;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout};
use cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};

fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Runs kernel `kind` on `rows` row groups of `k` candidates: the inputs, then one output of
/// `out_len` elements, then the scalar sizes.
fn run<T: CudaDType + DeviceRepr + candle_core::WithDType>(
    kind: &str,
    rows: usize,
    k: usize,
    inputs: &[CudaView<'_, T>],
    out_len: usize,
    sizes: &[u32],
    dev: &candle_core::CudaDevice,
) -> Result<CudaStorage> {
    let (variant, blocks) = launch_geometry(rows, k);
    let name = format!("{kind}_{variant}_{}", suffix(T::DTYPE));
    let kernel = function(dev, Family::DocSoftmax, &name)?;
    let mut out = alloc_output::<T>(&kernel.stream, out_len, kind)?;
    let mut b = kernel.stream.launch_builder(&kernel.function);
    for input in inputs {
        b.arg(input);
    }
    b.arg(&mut out);
    for size in sizes {
        b.arg(size);
    }
    // SAFETY: the argument list matches the kernel's signature in kernels/doc_softmax.cu.
    unsafe { b.launch(launch_config(blocks, BLOCK_THREADS, 0)) }
        .map_err(|e| Error::Device(format!("launching {name}: {e}")))?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

macro_rules! dispatch {
    ($s:expr, $T:ident => $body:expr) => {
        match $s.dtype() {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F16 => {
                type $T = half::f16;
                $body
            }
            DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(Error::Device(format!(
                "doc_softmax: dtype {other:?} on CUDA"
            ))),
        }
    };
}

pub(super) fn softmax(s: &CudaStorage, l: &Layout, k: usize) -> Result<CudaStorage> {
    let rows = l.shape().elem_count() / k;
    dispatch!(s, T => {
        let x = cuda_data::<T>("doc_softmax", "logits", s, l)?;
        run::<T>("doc_softmax_fwd", rows, k, &[x], rows * k, &[rows as u32, k as u32], &s.device)
    })
}

pub(super) fn softmax_bwd(
    p: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    k: usize,
) -> Result<CudaStorage> {
    let rows = p.1.shape().elem_count() / k;
    dispatch!(p.0, T => {
        let pv = cuda_data::<T>("doc_softmax backward", "p", p.0, p.1)?;
        let gv = cuda_data::<T>("doc_softmax backward", "grad", g.0, g.1)?;
        run::<T>("doc_softmax_bwd", rows, k, &[pv, gv], rows * k, &[rows as u32, k as u32], &p.0.device)
    })
}

pub(super) fn mll(
    x: (&CudaStorage, &Layout),
    c: (&CudaStorage, &Layout),
    k: usize,
    m: usize,
) -> Result<CudaStorage> {
    let b = x.1.shape().elem_count() / k;
    dispatch!(x.0, T => {
        let xv = cuda_data::<T>("marginal_log_likelihood", "doc_logits", x.0, x.1)?;
        let cv = cuda_data::<T>("marginal_log_likelihood", "cond_logprob", c.0, c.1)?;
        run::<T>("mll_fwd", b * m, k, &[xv, cv], b * m, &[b as u32, k as u32, m as u32], &x.0.device)
    })
}

pub(super) fn mll_bwd(
    x: (&CudaStorage, &Layout),
    c: (&CudaStorage, &Layout),
    og: (&CudaStorage, &Layout),
    k: usize,
    m: usize,
) -> Result<CudaStorage> {
    let b = x.1.shape().elem_count() / k;
    dispatch!(x.0, T => {
        let xv = cuda_data::<T>("marginal_log_likelihood backward", "doc_logits", x.0, x.1)?;
        let cv = cuda_data::<T>("marginal_log_likelihood backward", "cond_logprob", c.0, c.1)?;
        let ov = cuda_data::<T>("marginal_log_likelihood backward", "grad", og.0, og.1)?;
        let sizes = [b as u32, k as u32, m as u32];
        run::<T>("mll_bwd", b, k, &[xv, cv, ov], b * k * (m + 1), &sizes, &x.0.device)
    })
}
