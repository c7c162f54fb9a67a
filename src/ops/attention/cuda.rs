//! attention's kernels on a CUDA device: one launch for the forward; three for the backward
//! (delta, then dk/dv, then dq — see kernels/attention_bwd.cu).

use super::{dkdv_smem_bytes, KernelScalars, Params, DOT_THREADS, KERNEL_THREADS, OP};
use crate::error::{Error, Result};
use crate::kernels::{alloc_output, function, Family, Launcher};
use crate::ops::elem::cuda_data;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout, Storage};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// The contiguous elements of an argument of attention.
fn view<'a, T: CudaDType>(arg: &'static str, (s, l): Arg<'a>) -> Result<CudaView<'a, T>> {
    cuda_data(OP, arg, s, l)
}

/// A 16-bit element type of the kernels and its name suffix.
trait KernelElem: CudaDType + DeviceRepr {
    const SUFFIX: &'static str;
}
impl KernelElem for half::f16 {
    const SUFFIX: &'static str = "f16";
}
impl KernelElem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

macro_rules! dispatch {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F16 => {
                type $T = half::f16;
                $body
            }
            DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(Error::bad_input(
                OP,
                "q",
                format!("dtype {other:?} on a GPU (the kernels take f16 or bf16)"),
            )),
        }
    };
}

fn kernel(
    p: &Params,
    family: Family,
    stem: &str,
    suffix: &str,
    dev: &candle_core::CudaDevice,
) -> Result<Launcher> {
    function(dev, family, &format!("{stem}_d{}_{suffix}", p.dh))
}

fn launch(b: &mut LaunchArgs<'_>, name: &str, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: the callers push exactly the parameters of the kernel's signature in
    // kernels/attention_{fwd,bwd}.cu, in order.
    unsafe { b.launch(cfg) }
        .map(|_| ())
        .map_err(|e| Error::Device(format!("launching {name}: {e}")))
}

fn tiled(p: &Params, smem: u32) -> LaunchConfig {
    let [x, y, z] = p.kernel_grid();
    LaunchConfig {
        grid_dim: (x, y, z),
        block_dim: (KERNEL_THREADS, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Pushes the scalars every forward, dq and dk/dv kernel takes after its tensors.
fn push_scalars<'a>(b: &mut LaunchArgs<'a>, s: &'a KernelScalars) {
    b.arg(&s.heads)
        .arg(&s.l)
        .arg(&s.scale)
        .arg(&s.seed[0])
        .arg(&s.seed[1])
        .arg(&s.offset[0])
        .arg(&s.offset[1])
        .arg(&s.threshold)
        .arg(&s.keep_scale);
}

/// The lengths as the kernels read them.
fn with_lens<R>(p: &Params, f: impl FnOnce(CudaView<'_, u32>) -> Result<R>) -> Result<R> {
    let lens = p
        .lens_on_device
        .as_ref()
        .ok_or_else(|| Error::Device(format!("{OP}: the lengths are not on the GPU")))?;
    let (storage, layout) = lens.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::bad_input(OP, "key_lens", "is not on the GPU like q"));
    };
    f(view::<u32>("key_lens", (s, layout))?)
}

/// `(out [b, h, l, dh], lse [b, h, l] f32)`.
pub(super) fn forward(
    p: &Params,
    q: Arg<'_>,
    k: Arg<'_>,
    v: Arg<'_>,
) -> Result<(CudaStorage, CudaStorage)> {
    dispatch!(q.0.dtype(), T => forward_t::<T>(p, q, k, v))
}

fn forward_t<T: KernelElem>(
    p: &Params,
    q: Arg<'_>,
    k: Arg<'_>,
    v: Arg<'_>,
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = &q.0.device;
    let f = kernel(p, Family::AttentionFwd, "attention_fwd", T::SUFFIX, dev)?;
    let (qv, kv, vv) = (view::<T>("q", q)?, view::<T>("k", k)?, view::<T>("v", v)?);
    let mut out = alloc_output::<T>(&f.stream, qv.len(), OP)?;
    let mut lse = alloc_output::<f32>(&f.stream, p.b * p.h * p.l, OP)?;
    let s = p.kernel_scalars();
    with_lens(p, |lens| {
        let mut b = f.stream.launch_builder(&f.function);
        b.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&lens)
            .arg(&mut out)
            .arg(&mut lse);
        push_scalars(&mut b, &s);
        launch(&mut b, "attention_fwd", tiled(p, 0))
    })?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        CudaStorage::wrap_cuda_slice(lse, dev.clone()),
    ))
}

/// The gradients `[3, b, h, l, dh]` from `[q, k, v, out, grad]` and the forward's lse.
pub(super) fn backward(p: &Params, inputs: [Arg<'_>; 5], lse: Arg<'_>) -> Result<CudaStorage> {
    dispatch!(inputs[0].0.dtype(), T => backward_t::<T>(p, inputs, lse))
}

fn backward_t<T: KernelElem>(
    p: &Params,
    inputs: [Arg<'_>; 5],
    lse: Arg<'_>,
) -> Result<CudaStorage> {
    let dev = &inputs[0].0.device;
    let [q, k, v, o, g] = inputs;
    let (qv, kv, vv) = (view::<T>("q", q)?, view::<T>("k", k)?, view::<T>("v", v)?);
    let (ov, gv) = (view::<T>("out", o)?, view::<T>("grad", g)?);
    let lse = view::<f32>("lse", lse)?;
    let rows = p.b * p.h * p.l;
    let n = qv.len();

    let dot = function(
        dev,
        Family::AttentionBwd,
        &format!("attention_bwd_dot_{}", T::SUFFIX),
    )?;
    let dkdv = kernel(
        p,
        Family::AttentionBwd,
        "attention_bwd_dkdv",
        T::SUFFIX,
        dev,
    )?;
    let dq = kernel(p, Family::AttentionBwd, "attention_bwd_dq", T::SUFFIX, dev)?;
    let smem = dkdv_smem_bytes(p.dh);
    // Past the 48 KB every kernel gets, dynamic shared memory must be asked for.
    dkdv.function
        .set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .map_err(|e| {
            Error::Device(format!(
                "attention_bwd_dkdv: {smem} bytes of shared memory: {e}"
            ))
        })?;

    let mut delta = alloc_output::<f32>(&dot.stream, rows, OP)?;
    let mut grads = alloc_output::<T>(&dot.stream, 3 * n, OP)?;
    let s = p.kernel_scalars();
    let dims = [p.h as u32, p.l as u32, p.dh as u32, rows as u32];
    with_lens(p, |lens| {
        let mut b = dot.stream.launch_builder(&dot.function);
        b.arg(&ov).arg(&gv).arg(&lens).arg(&mut delta);
        for d in &dims {
            b.arg(d);
        }
        let warps = (DOT_THREADS / 32) as usize;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(warps) as u32, 1, 1),
            block_dim: (DOT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(&mut b, "attention_bwd_dot", cfg)?;

        let (mut dq_out, mut rest) = grads.split_at_mut(n);
        let (mut dk_out, mut dv_out) = rest.split_at_mut(n);
        let mut b = dkdv.stream.launch_builder(&dkdv.function);
        b.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&gv)
            .arg(&lens)
            .arg(&lse)
            .arg(&delta);
        b.arg(&mut dk_out).arg(&mut dv_out);
        push_scalars(&mut b, &s);
        launch(&mut b, "attention_bwd_dkdv", tiled(p, smem))?;

        let mut b = dq.stream.launch_builder(&dq.function);
        b.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&gv)
            .arg(&lens)
            .arg(&lse)
            .arg(&delta);
        b.arg(&mut dq_out);
        push_scalars(&mut b, &s);
        launch(&mut b, "attention_bwd_dq", tiled(p, 0))
    })?;
    Ok(CudaStorage::wrap_cuda_slice(grads, dev.clone()))
}
