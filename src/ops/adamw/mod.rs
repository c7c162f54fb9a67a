//! Multi-tensor AdamW: one update of every parameter with global-norm gradient clipping, the
//! norm reduced on the device and the clip factor applied there (no read from the device).
//!
//! Semantics (CPU, emulator and CUDA alike; kernels in `kernels/adamw.cu`): for parameters θᵢ
//! (f32, contiguous) with gradients gᵢ (f32, same shape) and moments held in two flat f32
//! tensors `m`, `v` (θᵢ's at `offset`ᵢ):
//! - ‖g‖² is the f64 sum, in a fixed order, of the sums of squares of fixed chunks of
//!   [`CHUNK`] elements (f32 within a chunk), so it is the same on every run and thread count;
//! - the clip factor is that of [`clip_factor`]: `max_norm / (‖g‖ + 1e-6)` when ‖g‖ exceeds a
//!   positive finite `max_norm`, else 1;
//! - when ‖g‖² is not finite nothing is updated (the caller reads ‖g‖² and stops);
//! - otherwise, in f32 with g scaled by the factor: `m ← β₁ m + (1 − β₁) g`,
//!   `v ← β₂ v + (1 − β₂) g²`, `θ ← θ · (1 − lr · wd) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)`,
//!   lr the step's learning rate times the parameter's `lr_scale` and wd the weight decay for a
//!   decayed parameter and 0 otherwise (lr and 1 − lr · wd each rounded to f32 once, from f64).
//!
//! `stats` (f64, at least [`stats_len`]) receives `[‖g‖², factor, the chunks' sums...]`.
//! On a GPU (or the emulator) this is three launches whatever the number of parameters (the
//! chunks' sums, their total, the update) and one upload (the table of pointers the kernels read
//! the tensors through); natively on the CPU, two passes over the chunks on rayon.

mod check;
mod cpu;
mod launch;

pub use check::{bench, clip_factor, composition, global_grad_norm, selftest_cases, AdamWBench};

use crate::device::{CpuExec, Exec};
use crate::error::{Error, Result};
use crate::kernels::abi::adamw::ADAMW_CHUNK;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};
use std::cell::RefCell;

const OP: &str = "adamw";

/// Elements per chunk: the unit of work of a kernel block and of the norm's partial sums.
pub const CHUNK: usize = ADAMW_CHUNK as usize;

/// The hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this update.
    pub lr: f64,
    /// Decay rate of the first moment (the gradient's running mean).
    pub beta1: f64,
    /// Decay rate of the second moment (the squared gradient's running mean).
    pub beta2: f64,
    /// Added to the second moment's square root in the denominator.
    pub eps: f64,
    /// Decoupled weight decay (AdamW), applied where [`AdamWParam`] says it applies.
    pub weight_decay: f64,
    /// Adam's t of this update (1 for the first), for the bias correction.
    pub t: u64,
    /// Clip the gradients to this global norm (≤ 0 or infinite: no clipping).
    pub max_norm: f64,
}

/// One parameter of [`adamw_step`].
#[derive(Clone, Copy, Debug)]
pub struct AdamWParam<'a> {
    /// The parameter θ, updated in place.
    pub theta: &'a Tensor,
    /// Its gradient (same shape and dtype).
    pub grad: &'a Tensor,
    /// Where θ's moments start in `m` and `v`.
    pub offset: usize,
    /// Whether weight decay applies.
    pub decay: bool,
    /// Its learning rate relative to the step's (finite, ≥ 0; 1 for most): per-group rates,
    /// e.g. a retriever that learns more slowly than the encoder.
    pub lr_scale: f64,
}

/// The chunks of a tensor of `n` elements.
pub fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK)
}

/// The length of `stats` that parameters of `numel` elements in all need.
pub fn stats_len(numel: impl IntoIterator<Item = usize>) -> usize {
    2 + numel.into_iter().map(chunks).sum::<usize>()
}

/// The f32 scalars the kernels and the CPU loop use, each rounded once from f64 (as the candle
/// composition this replaced has them).
#[derive(Clone, Copy, Debug)]
struct Scalars {
    beta1: f32,
    beta2: f32,
    /// 1 − β₁ and 1 − β₂ rounded from f64: in f32, 1 − 0.999 is 1.3e-5 off.
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    inv_bias1: f32,
    inv_bias2: f32,
    max_norm: f64,
}

impl Scalars {
    fn new(s: &AdamWStep) -> Self {
        let t = s.t.min(i32::MAX as u64) as i32;
        let f = |x: f64| x as f32;
        Scalars {
            beta1: f(s.beta1),
            beta2: f(s.beta2),
            one_minus_beta1: f(1.0 - s.beta1),
            one_minus_beta2: f(1.0 - s.beta2),
            eps: f(s.eps),
            inv_bias1: f(1.0 / (1.0 - s.beta1.powi(t))),
            inv_bias2: f(1.0 / (1.0 - s.beta2.powi(t))),
            max_norm: s.max_norm,
        }
    }
}

/// A tensor's memory: a host address (CPU tensors) or a device address, and its size.
#[derive(Clone, Copy, Debug)]
struct Region {
    addr: u64,
    bytes: usize,
}

/// One parameter's memory as the kernels see it.
#[derive(Clone, Copy, Debug)]
struct TensorRegions {
    theta: Region,
    grad: Region,
    offset: usize,
    n: usize,
    /// Its learning rate.
    lr: f32,
    /// θ's factor before the step: 1 − lr · weight decay when decayed, else 1.
    shrink: f32,
}

impl TensorRegions {
    /// The per-parameter scalars of `p` in step `s`, each rounded to f32 once.
    fn rates(p: &AdamWParam<'_>, s: &AdamWStep) -> (f32, f32) {
        let lr = s.lr * p.lr_scale;
        let wd = if p.decay { s.weight_decay } else { 0.0 };
        (lr as f32, (1.0 - lr * wd) as f32)
    }
}

/// Everything one update touches.
#[derive(Clone, Debug)]
struct Regions {
    stats: Region,
    m: Region,
    v: Region,
    tensors: Vec<TensorRegions>,
}

/// One AdamW update of every parameter of `params`, clipped to `step.max_norm`, in place (θ, m,
/// v) — see the module documentation. Runs on the parameters' device in the calling thread's
/// execution mode. Errors name the argument that is wrong (dtypes, shapes, devices, offsets).
pub fn adamw_step(
    params: &[AdamWParam<'_>],
    m: &Tensor,
    v: &Tensor,
    stats: &Tensor,
    step: &AdamWStep,
) -> Result<()> {
    validate(params, m, v, stats, step)?;
    // The gradients stay read-locked, and every written tensor write-locked (by nesting one
    // in-place op per tensor), until the update is done.
    let guards: Vec<_> = params.iter().map(|p| p.grad.storage_and_layout()).collect();
    let grads = guards
        .iter()
        .map(|(s, l)| region_of(s, l, "grad"))
        .collect::<Result<Vec<Region>>>()?;
    let mut written = vec![stats, m, v];
    written.extend(params.iter().map(|p| p.theta));
    let scalars = Scalars::new(step);
    let exec = Exec::current();
    let inner = |w: &[Region], place: &Place| -> Result<()> {
        let regions = Regions {
            stats: w[0],
            m: w[1],
            v: w[2],
            tensors: params
                .iter()
                .zip(&w[3..])
                .zip(&grads)
                .map(|((p, &theta), &grad)| {
                    let (lr, shrink) = TensorRegions::rates(p, step);
                    TensorRegions {
                        theta,
                        grad,
                        offset: p.offset,
                        n: p.theta.elem_count(),
                        lr,
                        shrink,
                    }
                })
                .collect(),
        };
        run(&regions, place, &exec, &scalars)
    };
    let collected = RefCell::new(Vec::with_capacity(written.len()));
    let nest = Nest {
        rest: &written[1..],
        regions: &collected,
        inner: &inner,
    };
    written[0].inplace_op1(&nest)?;
    Ok(())
}

fn validate(
    params: &[AdamWParam<'_>],
    m: &Tensor,
    v: &Tensor,
    stats: &Tensor,
    step: &AdamWStep,
) -> Result<()> {
    let finite = [step.lr, step.beta1, step.beta2, step.eps, step.weight_decay];
    if !(finite.iter().all(|x| x.is_finite())
        && step.lr >= 0.0
        && (0.0..1.0).contains(&step.beta1)
        && (0.0..1.0).contains(&step.beta2)
        && step.eps > 0.0
        && step.t >= 1
        && !step.max_norm.is_nan())
    {
        return Err(Error::bad_input(
            OP,
            "step",
            format!("{step:?}: lr ≥ 0, betas in [0, 1), eps > 0, t ≥ 1, all finite"),
        ));
    }
    let dev = m.device();
    let same_dev = |t: &Tensor| t.device().same_device(dev);
    for (arg, t, dtype) in [
        ("m", m, DType::F32),
        ("v", v, DType::F32),
        ("stats", stats, DType::F64),
    ] {
        if t.dtype() != dtype || t.rank() != 1 || !t.is_contiguous() || !same_dev(t) {
            return Err(Error::bad_input(
                OP,
                arg,
                format!(
                    "{:?} {:?} on {:?}: need a contiguous {dtype:?} vector on m's device",
                    t.dtype(),
                    t.dims(),
                    t.device().location()
                ),
            ));
        }
    }
    if v.elem_count() != m.elem_count() {
        return Err(Error::bad_input(
            OP,
            "v",
            format!("{} elements, m {}", v.elem_count(), m.elem_count()),
        ));
    }
    let need = stats_len(params.iter().map(|p| p.theta.elem_count()));
    if stats.elem_count() < need {
        return Err(Error::bad_input(
            OP,
            "stats",
            format!(
                "{} elements; these parameters need {need}",
                stats.elem_count()
            ),
        ));
    }
    let mut end = 0;
    for (i, p) in params.iter().enumerate() {
        let (theta, grad) = (p.theta, p.grad);
        let what = |msg: String| Error::bad_input(OP, "params", format!("parameter {i}: {msg}"));
        if theta.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return Err(what(format!(
                "θ {:?} and gradient {:?}; both must be f32",
                theta.dtype(),
                grad.dtype()
            )));
        }
        if !(p.lr_scale.is_finite() && p.lr_scale >= 0.0) {
            return Err(what(format!(
                "lr_scale {} must be a finite number ≥ 0",
                p.lr_scale
            )));
        }
        if theta.dims() != grad.dims() {
            return Err(what(format!(
                "gradient {:?}, θ {:?}",
                grad.dims(),
                theta.dims()
            )));
        }
        if !(theta.is_contiguous() && grad.is_contiguous()) {
            return Err(what("θ and its gradient must be contiguous".into()));
        }
        if !(same_dev(theta) && same_dev(grad)) {
            return Err(what("θ and its gradient must be on m's device".into()));
        }
        if p.offset < end || p.offset + theta.elem_count() > m.elem_count() {
            return Err(what(format!(
                "moments at {}..{} overlap the previous parameter's or pass m's end {}",
                p.offset,
                p.offset + theta.elem_count(),
                m.elem_count()
            )));
        }
        end = p.offset + theta.elem_count();
        if chunks(theta.elem_count()) > u32::MAX as usize || params.len() > u32::MAX as usize {
            return Err(what("too many elements".into()));
        }
    }
    Ok(())
}

/// Where the written tensors live.
enum Place {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(candle_core::CudaDevice),
}

/// Runs the update on the regions (all borrowed by [`adamw_step`] for the call).
fn run(r: &Regions, place: &Place, exec: &Exec, s: &Scalars) -> Result<()> {
    match place {
        Place::Cpu => match exec.cpu {
            CpuExec::Native => {
                // SAFETY: every region is a live, contiguous host buffer of its tensor's dtype,
                // borrowed for this call (the written ones exclusively, through the nested
                // in-place ops; the gradients read-locked), and no two overlap (validate).
                let mut host = unsafe { cpu::HostRegions::new(r) };
                cpu::step(&mut host, s);
                Ok(())
            }
            CpuExec::Emulator => launch::step(&crate::kernels::Emulator::new(exec.clone()), r, s),
        },
        #[cfg(feature = "cuda")]
        Place::Cuda(dev) => launch::step(&crate::kernels::Cuda::new(dev, exec.clone()), r, s),
    }
}

/// The memory of a contiguous f32 or f64 tensor.
fn region_of(s: &Storage, l: &Layout, arg: &'static str) -> Result<Region> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::bad_input(OP, arg, "not contiguous"))?;
    match s {
        Storage::Cpu(c) => host_region(c, start, end, arg),
        #[cfg(feature = "cuda")]
        Storage::Cuda(c) => cuda_region(c, start, end, arg),
        _ => Err(Error::bad_input(OP, arg, "not on the CPU or a CUDA device")),
    }
}

fn host_region(s: &CpuStorage, start: usize, end: usize, arg: &'static str) -> Result<Region> {
    let (addr, size) = match s {
        CpuStorage::F32(v) => (v[start..end].as_ptr() as u64, 4),
        CpuStorage::F64(v) => (v[start..end].as_ptr() as u64, 8),
        other => {
            return Err(Error::bad_input(
                OP,
                arg,
                format!("{:?}; need f32 (f64 stats)", other.dtype()),
            ))
        }
    };
    Ok(Region {
        addr,
        bytes: (end - start) * size,
    })
}

#[cfg(feature = "cuda")]
fn cuda_region(
    s: &candle_core::CudaStorage,
    start: usize,
    end: usize,
    arg: &'static str,
) -> Result<Region> {
    use cudarc::driver::DevicePtr;
    let stream = s.device.cuda_stream();
    // Everything runs on the device's one stream: the pointer's guard has nothing to order.
    let (addr, size) = match s.dtype() {
        DType::F32 => (
            s.as_cuda_slice::<f32>()?
                .slice(start..end)
                .device_ptr(&stream)
                .0,
            4,
        ),
        DType::F64 => (
            s.as_cuda_slice::<f64>()?
                .slice(start..end)
                .device_ptr(&stream)
                .0,
            8,
        ),
        other => {
            return Err(Error::bad_input(
                OP,
                arg,
                format!("{other:?}; need f32 (f64 stats)"),
            ))
        }
    };
    Ok(Region {
        addr,
        bytes: (end - start) * size,
    })
}

/// Borrows `rest`'s storage mutably, one in-place op inside the other, and calls `inner` with
/// every region once all are borrowed (candle lends a storage mutably only inside an op).
struct Nest<'a> {
    rest: &'a [&'a Tensor],
    regions: &'a RefCell<Vec<Region>>,
    inner: &'a dyn Fn(&[Region], &Place) -> Result<()>,
}

impl Nest<'_> {
    fn push_and_go_on(&self, region: Region, place: Place) -> candle_core::Result<()> {
        self.regions.borrow_mut().push(region);
        let out = match self.rest.split_first() {
            Some((next, rest)) => next.inplace_op1(&Nest { rest, ..*self }),
            None => {
                let regions = self.regions.borrow().clone();
                Ok((self.inner)(&regions, &place)?)
            }
        };
        self.regions.borrow_mut().pop();
        out
    }
}

impl InplaceOp1 for Nest<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::bad_input(OP, "θ", "not contiguous"))?;
        self.push_and_go_on(host_region(s, start, end, "θ")?, Place::Cpu)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::bad_input(OP, "θ", "not contiguous"))?;
        let region = cuda_region(s, start, end, "θ")?;
        self.push_and_go_on(region, Place::Cuda(s.device.clone()))
    }
}
