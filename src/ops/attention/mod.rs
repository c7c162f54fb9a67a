//! Fused (FlashAttention-style) multi-head attention, forward and backward, for the BERT encoders:
//! `out = dropout(softmax(scale · q kᵀ, keys < len)) v`, never materialising the l × l matrix.
//!
//! Semantics (CPU, emulator and CUDA alike; kernels in `kernels/attention_{fwd,bwd}.cu`):
//! - q, k, v: `[b, h, l, dh]`, contiguous, one dtype; dh ∈ {32, 64, 128}; f32, f16 or bf16 on the
//!   CPU, f16 or bf16 on a GPU; arithmetic in f32.
//! - `key_lens` ([`KeyLens`]: on the host and the inputs' device): batch entry i has `key_lens[i]` real tokens.
//!   Keys at or past it are skipped (whole tiles cost nothing) and query rows at or past it are
//!   written as zeros (and get zero gradients). 0 and l are valid; `None` means l everywhere.
//! - The softmax is computed online; the forward keeps each row's log-sum-exp (f32) for the
//!   backward, which recomputes the probabilities tile by tile.
//! - Dropout on the probabilities by a counter-based mask (see [`Dropout`] and `dropout.rs`).
//! - Backward for q, k and v through candle's autograd: the forward is a `CustomOp3` whose
//!   backward runs one fused op producing all three gradients.

mod check;
mod cpu;
mod launch;
mod prob_dropout;
mod tile;

pub use check::{
    accuracy, bench, check_padding, composition, errors, forward_backward, on_cpu_f64, random_qkv,
    selftest_cases, Accuracy, AttentionBench, CheckSpec,
};
pub use prob_dropout::{dropout_multipliers, Dropout};

use super::elem::{check_float, contiguous_range, cpu_data, with_float_elem, Elem};
use crate::device::{CpuExec, Exec};
use crate::error::{Error, Result};
use crate::kernels::Emulator;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor};
use prob_dropout::Mask;
use std::sync::{Arc, Mutex};

const OP: &str = "attention";

/// The head dimensions the kernels are built for.
pub const HEAD_DIMS: [usize; 3] = [32, 64, 128];
/// The longest sequence (the dropout counter packs row and column into 32 bits).
pub const MAX_LEN: usize = 1 << 16;

/// Real tokens per batch entry, known on the host (where a batch's lengths come from) and held
/// on the device as a `[b]` u32 tensor: the kernels read the tensor, the checks and the CPU code
/// the host copy, so no call reads the device to learn them. Built once per batch.
#[derive(Clone, Debug)]
pub struct KeyLens {
    host: Arc<[u32]>,
    tensor: Tensor,
}

impl KeyLens {
    /// The lengths `lens`, uploaded to `device` (one upload).
    pub fn new(lens: &[u32], device: &Device) -> Result<Self> {
        Ok(KeyLens {
            host: lens.into(),
            tensor: crate::device::upload(lens.to_vec(), lens.len(), device)?,
        })
    }

    /// The lengths on the host.
    pub fn host(&self) -> &[u32] {
        &self.host
    }

    /// The lengths as a `[b]` u32 tensor on their device.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The batch size: one length per entry.
    pub fn len(&self) -> usize {
        self.host.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }
}

/// Fused attention of `q`, `k`, `v` (`[b, h, l, dh]`), keys and queries of batch entry i limited
/// to `key_lens[i]`, logits scaled by `scale`, with optional dropout on the
/// probabilities. Differentiable in q, k and v. See the module documentation for the details.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_lens: Option<&KeyLens>,
    scale: f64,
    dropout: Option<Dropout>,
) -> Result<Tensor> {
    let params = Params::new(q, k, v, key_lens, scale, dropout)?;
    let (q, k, v) = (&aligned(q)?, &aligned(k)?, &aligned(v)?);
    Ok(q.apply_op3(
        k,
        v,
        Attention {
            params,
            lse: Mutex::new(None),
        },
    )?)
}

/// `t`, or a copy with a storage of its own when `t` is a view starting off a 16-byte boundary
/// (a narrowed tensor): the kernels read rows with 16-byte cp.async copies, which need aligned
/// addresses (rows themselves are whole multiples of 16 bytes for every supported dh).
fn aligned(t: &Tensor) -> Result<Tensor> {
    let start = t.layout().start_offset() * t.dtype().size_in_bytes();
    Ok(if start.is_multiple_of(16) {
        t.clone()
    } else {
        t.force_contiguous()?
    })
}

/// Everything both directions need besides the tensors.
#[derive(Clone)]
struct Params {
    b: usize,
    h: usize,
    l: usize,
    dh: usize,
    scale: f32,
    /// Valid tokens per batch entry, on the host.
    lens: Arc<[u32]>,
    /// The same as a u32 tensor on the GPU, for the CUDA kernels.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    lens_on_device: Option<Tensor>,
    mask: Option<Mask>,
    exec: Exec,
}

impl Params {
    fn new(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_lens: Option<&KeyLens>,
        scale: f64,
        dropout: Option<Dropout>,
    ) -> Result<Self> {
        let (b, h, l, dh) = q.dims4().map_err(|_| {
            Error::bad_input(
                OP,
                "q",
                format!("shape {:?} must be [b, h, l, dh]", q.dims()),
            )
        })?;
        for (arg, t) in [("k", k), ("v", v)] {
            if t.dims() != q.dims() {
                return Err(Error::bad_input(
                    OP,
                    arg,
                    format!("shape {:?} differs from q's {:?}", t.dims(), q.dims()),
                ));
            }
            if t.dtype() != q.dtype() {
                return Err(Error::bad_input(
                    OP,
                    arg,
                    format!("dtype {:?} differs from q's {:?}", t.dtype(), q.dtype()),
                ));
            }
            if !t.device().same_device(q.device()) {
                return Err(Error::bad_input(OP, arg, "is on another device than q"));
            }
        }
        check_float(OP, "q", q.dtype())?;
        let exec = Exec::current();
        let kernels = q.device().is_cuda() || exec.cpu == CpuExec::Emulator;
        if kernels && q.dtype() == DType::F32 {
            return Err(Error::bad_input(
                OP,
                "q",
                "f32 runs on the native CPU path only; the kernels (GPU, emulator) take f16 or bf16",
            ));
        }
        if !HEAD_DIMS.contains(&dh) {
            return Err(Error::bad_input(
                OP,
                "q",
                format!("head dimension {dh} is not supported (32, 64 or 128)"),
            ));
        }
        if b == 0 || h == 0 || l == 0 || l > MAX_LEN || b * h > i32::MAX as usize {
            return Err(Error::bad_input(
                OP,
                "q",
                format!(
                    "shape {:?}: need b, h ≥ 1, b·h < 2³¹ and 1 ≤ l ≤ {MAX_LEN}",
                    q.dims()
                ),
            ));
        }
        for (arg, t) in [("q", q), ("k", k), ("v", v)] {
            contiguous_range(OP, arg, t.layout())?;
        }
        if !scale.is_finite() {
            return Err(Error::bad_input(
                OP,
                "scale",
                format!("{scale} is not finite"),
            ));
        }
        let mask = match dropout {
            Some(d) => Mask::new(OP, d)?,
            None => None,
        };
        let lens: Arc<[u32]> = match key_lens {
            None => vec![l as u32; b].into(),
            Some(kl) => {
                if kl.len() != b {
                    return Err(Error::bad_input(
                        OP,
                        "key_lens",
                        format!("{} lengths for a batch of {b}", kl.len()),
                    ));
                }
                if !kl.tensor.device().same_device(q.device()) {
                    return Err(Error::bad_input(
                        OP,
                        "key_lens",
                        "is on another device than q",
                    ));
                }
                // Lengths past l would make the kernels read out of bounds: checked on the
                // host copy, which costs no read from the device.
                if let Some(bad) = kl.host.iter().position(|&n| n as usize > l) {
                    return Err(Error::bad_input(
                        OP,
                        "key_lens",
                        format!("key_lens[{bad}] = {} exceeds l = {l}", kl.host[bad]),
                    ));
                }
                kl.host.clone()
            }
        };
        let lens_on_device = match (key_lens, q.device()) {
            (Some(kl), dev) if dev.is_cuda() => Some(kl.tensor.clone()),
            (None, dev) if dev.is_cuda() => Some(crate::device::upload(lens.to_vec(), b, dev)?),
            _ => None,
        };
        Ok(Params {
            b,
            h,
            l,
            dh,
            scale: scale as f32,
            lens,
            lens_on_device,
            mask,
            exec,
        })
    }

    fn len_of(&self, bh: usize) -> usize {
        self.lens[bh / self.h] as usize
    }

    fn shape(&self) -> Shape {
        Shape::from((self.b, self.h, self.l, self.dh))
    }
}

impl Params {
    /// `(seed, offset, threshold, keep scale)` of the dropout as the kernels take them (threshold
    /// 0: no dropout).
    fn dropout_words(&self) -> ([u32; 2], [u32; 2], u32, f32) {
        match &self.mask {
            Some(m) => {
                let w = m.kernel_words();
                ([w[0], w[1]], [w[2], w[3]], m.threshold, m.scale)
            }
            None => ([0; 2], [0; 2], 0, 1.0),
        }
    }
}

/// The elements of a CPU tensor held by an op (the backward's extra inputs).
fn held_cpu<'a, T: Elem>(
    arg: &'static str,
    storage: &'a Storage,
    layout: &Layout,
) -> Result<&'a [T]> {
    match storage {
        Storage::Cpu(s) => cpu_data(OP, arg, s, layout),
        _ => Err(Error::bad_input(
            OP,
            arg,
            "is not on the CPU like the other inputs",
        )),
    }
}

/// The storage of a GPU tensor held by an op.
#[cfg(feature = "cuda")]
fn held_cuda<'a>(arg: &'static str, storage: &'a Storage) -> Result<&'a candle_core::CudaStorage> {
    match storage {
        Storage::Cuda(s) => Ok(s),
        _ => Err(Error::bad_input(
            OP,
            arg,
            "is not on the GPU like the other inputs",
        )),
    }
}

/// The lengths as the GPU kernels read them.
#[cfg(feature = "cuda")]
fn lens_on_gpu(p: &Params) -> Result<Tensor> {
    p.lens_on_device
        .clone()
        .ok_or_else(|| Error::Device(format!("{OP}: the lengths are not on the GPU")))
}

/// The contiguous elements of a GPU argument.
#[cfg(feature = "cuda")]
fn gpu_view<'a, T: candle_core::cuda_backend::CudaDType>(
    arg: &'static str,
    s: &'a candle_core::CudaStorage,
    l: &Layout,
) -> Result<cudarc::driver::CudaView<'a, T>> {
    super::elem::cuda_data::<T>(OP, arg, s, l)
}

/// The forward; it keeps the per-row log-sum-exp for its backward.
struct Attention {
    params: Params,
    lse: Mutex<Option<Tensor>>,
}

impl Attention {
    fn keep_lse(&self, lse: Tensor) -> Result<()> {
        *self
            .lse
            .lock()
            .map_err(|_| Error::Device("attention: log-sum-exp lock poisoned".into()))? = Some(lse);
        Ok(())
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.params;
        let (out, lse) = with_float_elem!(qs.dtype(), T => {
            let q = cpu_data::<T>(OP, "q", qs, ql)?;
            let k = cpu_data::<T>(OP, "k", ks, kl)?;
            let v = cpu_data::<T>(OP, "v", vs, vl)?;
            let (out, lse) = match p.exec.cpu {
                CpuExec::Native => cpu::forward(p, q, k, v),
                CpuExec::Emulator => {
                    let emu = Emulator::new(p.exec.clone());
                    launch::forward(&emu, p, [&q, &k, &v], &&*p.lens)?
                }
            };
            Ok::<_, Error>((T::into_cpu_storage(out), lse))
        })?;
        self.keep_lse(Tensor::from_vec(lse, (p.b, p.h, p.l), &Device::Cpu)?)?;
        Ok((out, p.shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::CudaStorage;
        let p = &self.params;
        let dev = &qs.device;
        let be = crate::kernels::Cuda::new(dev, p.exec.clone());
        let lens = lens_on_gpu(p)?;
        let (ls, ll) = lens.storage_and_layout();
        let lens = gpu_view::<u32>("key_lens", held_cuda("key_lens", &ls)?, ll)?;
        // (f32 never gets here: `Params::new` refuses it on a GPU.)
        let (out, lse) = with_float_elem!(qs.dtype(), T => {
            let [q, k, v] = [("q", qs, ql), ("k", ks, kl), ("v", vs, vl)]
                .map(|(a, s, l)| gpu_view::<T>(a, s, l));
            let (out, lse) = launch::forward(&be, p, [&q?, &k?, &v?], &lens)?;
            Ok::<_, Error>((CudaStorage::wrap_cuda_slice(out, dev.clone()), lse))
        })?;
        let lse = Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(lse, dev.clone())),
            (p.b, p.h, p.l),
            candle_core::op::BackpropOp::none(),
            false,
        );
        self.keep_lse(lse)?;
        Ok((out, p.shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self
            .lse
            .lock()
            .map_err(|_| Error::Device("attention: log-sum-exp lock poisoned".into()))?
            .clone()
            .ok_or_else(|| Error::Device("attention: backward before the forward".into()))?;
        let bwd = AttentionBwd {
            params: self.params.clone(),
            out: out.clone(),
            grad: aligned(&grad.contiguous()?)?,
            lse,
        };
        // One op computes all three gradients, stacked as [3, b, h, l, dh].
        let grads = q.apply_op3_no_bwd(k, v, &bwd)?;
        Ok((
            Some(grads.get(0)?),
            Some(grads.get(1)?),
            Some(grads.get(2)?),
        ))
    }
}

/// dq, dk and dv from q, k, v, the forward's output and log-sum-exp, and the incoming gradient.
struct AttentionBwd {
    params: Params,
    out: Tensor,
    grad: Tensor,
    lse: Tensor,
}

impl AttentionBwd {
    fn grads_shape(&self) -> Shape {
        let p = &self.params;
        Shape::from((3, p.b, p.h, p.l, p.dh))
    }
}

impl CustomOp3 for AttentionBwd {
    fn name(&self) -> &'static str {
        "attention_bwd"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.params;
        let (os, ol) = self.out.storage_and_layout();
        let (gs, gl) = self.grad.storage_and_layout();
        let (ls, ll) = self.lse.storage_and_layout();
        let lse = held_cpu::<f32>("lse", &ls, ll)?;
        let grads = with_float_elem!(qs.dtype(), T => {
            let q = cpu_data::<T>(OP, "q", qs, ql)?;
            let k = cpu_data::<T>(OP, "k", ks, kl)?;
            let v = cpu_data::<T>(OP, "v", vs, vl)?;
            let o = held_cpu::<T>("out", &os, ol)?;
            let g = held_cpu::<T>("grad", &gs, gl)?;
            let grads = match p.exec.cpu {
                CpuExec::Native => cpu::backward(p, [q, k, v, o, g], lse),
                CpuExec::Emulator => {
                    let emu = Emulator::new(p.exec.clone());
                    launch::backward(&emu, p, [&q, &k, &v, &o, &g], &lse, &&*p.lens)?
                }
            };
            Ok::<_, Error>(T::into_cpu_storage(grads))
        })?;
        Ok((grads, self.grads_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::CudaStorage;
        let p = &self.params;
        let dev = &qs.device;
        let be = crate::kernels::Cuda::new(dev, p.exec.clone());
        let (os, ol) = self.out.storage_and_layout();
        let (gs, gl) = self.grad.storage_and_layout();
        let (ls, ll) = self.lse.storage_and_layout();
        let lens = lens_on_gpu(p)?;
        let (ns, nl) = lens.storage_and_layout();
        let (o, g) = (held_cuda("out", &os)?, held_cuda("grad", &gs)?);
        let lse = gpu_view::<f32>("lse", held_cuda("lse", &ls)?, ll)?;
        let lens = gpu_view::<u32>("key_lens", held_cuda("key_lens", &ns)?, nl)?;
        let args = [
            ("q", qs, ql),
            ("k", ks, kl),
            ("v", vs, vl),
            ("out", o, ol),
            ("grad", g, gl),
        ];
        let grads = with_float_elem!(qs.dtype(), T => {
            let [q, k, v, o, g] = args.map(|(a, s, l)| gpu_view::<T>(a, s, l));
            let grads = launch::backward(&be, p, [&q?, &k?, &v?, &o?, &g?], &lse, &lens)?;
            Ok::<_, Error>(CudaStorage::wrap_cuda_slice(grads, dev.clone()))
        })?;
        Ok((grads, self.grads_shape()))
    }
}
