//! The plain candle composition the fused attention replaces (also the float64 reference), random
//! inputs, the op's `realm selftest` cases and its `realm bench attention` measurement.

use super::{attention, dropout_multipliers, Dropout, KeyLens};
use crate::check::{host_f64, Case, Outcome};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::measure::{self, op_name, Budget, Report};
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor, Var, D};

/// `where(query < len, dropout(softmax(scale · q kᵀ, keys < len)) v, 0)` composed of candle ops
/// in the inputs' dtype (matmul, additive −∞ mask, softmax, dropout multipliers, matmul). An
/// entry of length 0 keeps its scores unmasked so that nothing is NaN; its rows are zeroed.
pub fn composition(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_lens: Option<&[u32]>,
    scale: f64,
    dropout: Option<Dropout>,
) -> Result<Tensor> {
    let (b, h, l, _) = q.dims4()?;
    let (dev, dtype) = (q.device(), q.dtype());
    let mut s = (q.matmul(&k.t()?)? * scale)?;
    if let Some(lens) = key_lens {
        let add: Vec<f32> = lens
            .iter()
            .flat_map(|&n| {
                (0..l).map(move |j| {
                    if n == 0 || j < n as usize {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        s = s.broadcast_add(&Tensor::from_vec(add, (b, 1, 1, l), dev)?.to_dtype(dtype)?)?;
    }
    let mut p = candle_nn::ops::softmax(&s, D::Minus1)?;
    if let Some(d) = dropout {
        let m = Tensor::from_vec(dropout_multipliers(b, h, l, d)?, (b, h, l, l), dev)?;
        p = (p * m.to_dtype(dtype)?)?;
    }
    let out = p.matmul(v)?;
    Ok(match key_lens {
        None => out,
        Some(lens) => {
            let valid: Vec<u8> = lens
                .iter()
                .flat_map(|&n| (0..l).map(move |i| u8::from(i < n as usize)))
                .collect();
            let valid = Tensor::from_vec(valid, (b, 1, l, 1), dev)?.broadcast_as(out.shape())?;
            valid.where_cond(&out, &out.zeros_like()?)?
        }
    })
}

/// q, k, v and an incoming gradient for the output, `[b, h, l, dh]` each: standard normal values
/// rounded to `dtype`, on `dev`.
pub fn random_qkv(
    seed: u64,
    (b, h, l, dh): (usize, usize, usize, usize),
    dtype: DType,
    dev: &Device,
) -> Result<[Tensor; 4]> {
    let mut rng = SplitMix64::new(seed);
    let mut next = || -> Result<Tensor> {
        let values = rng.normal_vec(b * h * l * dh, 1.0);
        Ok(Tensor::from_vec(values, (b, h, l, dh), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?)
    };
    Ok([next()?, next()?, next()?, next()?])
}

/// The same values in f64 on the CPU (what a reference computes with).
pub fn on_cpu_f64(inputs: &[Tensor; 4]) -> Result<[Tensor; 4]> {
    let f64_cpu =
        |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?) };
    Ok([
        f64_cpu(&inputs[0])?,
        f64_cpu(&inputs[1])?,
        f64_cpu(&inputs[2])?,
        f64_cpu(&inputs[3])?,
    ])
}

/// The output of `f(q, k, v)` and the gradients of Σ out ∘ g for q, k and v, as f64 on the host.
pub fn forward_backward(
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    [q, k, v, g]: &[Tensor; 4],
) -> Result<[Vec<f64>; 4]> {
    let (qv, kv, vv) = (
        Var::from_tensor(q)?,
        Var::from_tensor(k)?,
        Var::from_tensor(v)?,
    );
    let out = f(qv.as_tensor(), kv.as_tensor(), vv.as_tensor())?;
    // The gradient reaching the output is exactly g (ones times g, in the output's dtype).
    let grads = (&out * g)?.sum_all()?.backward()?;
    let grad = |var: &Var| -> Result<Vec<f64>> {
        let g = grads
            .get(var)
            .ok_or_else(|| Error::Device("attention: a gradient is missing".into()))?;
        host_f64(g)
    };
    Ok([host_f64(&out)?, grad(&qv)?, grad(&kv)?, grad(&vv)?])
}

/// Checks on random inputs of `shape` with per-entry `lens` (on `dev`, run the calling thread's
/// way) that padding is skipped: with every element of q, k, v and the incoming gradient at or past
/// an entry's length replaced by NaN, the output and the three gradients are bit-identical, and
/// their rows at or past the length are exactly zero. The first violation is the error.
pub fn check_padding(
    shape: (usize, usize, usize, usize),
    lens: &[u32],
    dtype: DType,
    dev: &Device,
) -> Result<()> {
    let (b, h, l, dh) = shape;
    let inputs = random_qkv(3, shape, dtype, dev)?;
    let lens_t = KeyLens::new(lens, dev)?;
    let run = |inputs: &[Tensor; 4]| {
        forward_backward(
            |q, k, v| attention(q, k, v, Some(&lens_t), 0.3, None),
            inputs,
        )
    };
    let clean = run(&inputs)?;
    let valid: Vec<u8> = lens
        .iter()
        .flat_map(|&n| (0..l).map(move |i| u8::from(i < n as usize)))
        .collect();
    let valid = Tensor::from_vec(valid, (b, 1, l, 1), dev)?.broadcast_as(shape)?;
    let nan = Tensor::full(f32::NAN, shape, dev)?.to_dtype(dtype)?;
    let poison = |t: &Tensor| valid.where_cond(t, &nan);
    let poisoned = run(&[
        poison(&inputs[0])?,
        poison(&inputs[1])?,
        poison(&inputs[2])?,
        poison(&inputs[3])?,
    ])?;
    for (i, what) in ["out", "dq", "dk", "dv"].iter().enumerate() {
        let (c, p) = (&clean[i], &poisoned[i]);
        if let Some(at) = (0..c.len()).find(|&at| c[at].to_bits() != p[at].to_bits()) {
            return Err(Error::Device(format!(
                "{what}[{at}]: {} without padding garbage, {} with",
                c[at], p[at]
            )));
        }
        for (row, values) in c.chunks_exact(dh).enumerate() {
            let padding = row % l >= lens[row / (h * l)] as usize;
            if padding != values.iter().all(|&x| x == 0.0) {
                return Err(Error::Device(format!(
                    "{what} row {row}: padding {padding}, values {:?}",
                    &values[..4]
                )));
            }
        }
    }
    Ok(())
}

/// Per output (out, dq, dk, dv): the root-mean-square of |a − r| / max(|r|, 1) (relative for
/// large values, absolute for small ones). The mean, not the maximum: at f32's rounding floor the
/// largest of thousands of errors is too noisy to compare two computations by, while a wrong
/// tile still shows. NaN anywhere is an infinite error.
pub fn errors(actual: &[Vec<f64>; 4], reference: &[Vec<f64>; 4]) -> [f64; 4] {
    [0, 1, 2, 3].map(|i| {
        let (a, r) = (&actual[i], &reference[i]);
        if a.len() != r.len() || a.iter().chain(r).any(|x| x.is_nan()) {
            return f64::INFINITY;
        }
        let sq: f64 = a
            .iter()
            .zip(r)
            .map(|(a, r)| ((a - r) / r.abs().max(1.0)).powi(2))
            .sum();
        (sq / a.len().max(1) as f64).sqrt()
    })
}

/// How far the fused op and the plain composition in the same precision are from the f64
/// composition, per output (out, dq, dk, dv).
#[derive(Clone, Debug)]
pub struct Accuracy {
    /// The fused op's [`errors`] against the f64 composition, per output.
    pub ours: [f64; 4],
    /// The same-precision composition's errors against the f64 composition, per output.
    pub composition: [f64; 4],
    /// The precision compared.
    pub dtype: DType,
}

impl Accuracy {
    /// The bound on our error for output `i`: twice the composition's, plus one unit roundoff of
    /// the dtype for outputs the composition happens to get exactly (e.g. a single key).
    pub fn bound(&self, i: usize) -> f64 {
        let unit = match self.dtype {
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
            _ => 2f64.powi(-24),
        };
        2.0 * self.composition[i] + unit
    }

    /// Whether every output of the fused op is within its [`Accuracy::bound`].
    pub fn passed(&self) -> bool {
        (0..4).all(|i| self.ours[i] <= self.bound(i))
    }

    /// The output closest to (or furthest past) its bound, as a selftest outcome.
    fn outcome(&self) -> Outcome {
        let ratio = |i: usize| self.ours[i] / self.bound(i);
        let worst = (0..4)
            .max_by(|&a, &b| ratio(a).total_cmp(&ratio(b)))
            .unwrap_or(0);
        Outcome {
            max_rel_err: self.ours[worst],
            tolerance: self.bound(worst),
        }
    }
}

/// What one accuracy check runs: random inputs of `shape` and `dtype` (from `seed`), logits
/// scaled by `sharpness` / √dh, optional key lengths and dropout.
#[derive(Clone, Debug)]
pub struct CheckSpec {
    /// `(batch, heads, len, head_dim)` of q, k and v.
    pub shape: (usize, usize, usize, usize),
    /// Key length of each batch entry (`[batch]`); None: all `len` keys.
    pub lens: Option<Vec<u32>>,
    /// Logit scale times √dh: larger values give peakier softmaxes.
    pub sharpness: f64,
    /// Dropout on the probabilities, applied identically by both sides.
    pub dropout: Option<Dropout>,
    /// Element type of the inputs.
    pub dtype: DType,
    /// Seed of the random inputs.
    pub seed: u64,
}

/// The fused op (on `dev`, run the calling thread's way) and the composition in the same
/// precision (on `dev`), forward and backward, against the f64 composition on the CPU.
pub fn accuracy(dev: &Device, spec: &CheckSpec) -> Result<Accuracy> {
    let inputs = random_qkv(spec.seed, spec.shape, spec.dtype, dev)?;
    let scale = spec.sharpness / (spec.shape.3 as f64).sqrt();
    let lens = spec
        .lens
        .as_ref()
        .map(|l| KeyLens::new(l, dev))
        .transpose()?;
    let ours = forward_backward(
        |q, k, v| attention(q, k, v, lens.as_ref(), scale, spec.dropout),
        &inputs,
    )?;
    let composed = |inputs: &[Tensor; 4]| {
        forward_backward(
            |q, k, v| composition(q, k, v, spec.lens.as_deref(), scale, spec.dropout),
            inputs,
        )
    };
    let reference = composed(&on_cpu_f64(&inputs)?)?;
    let baseline = composed(&inputs)?;
    Ok(Accuracy {
        ours: errors(&ours, &reference),
        composition: errors(&baseline, &reference),
        dtype: spec.dtype,
    })
}

/// The selftest check of one spec on `dev`.
fn check(dev: &ComputeDevice, spec: &CheckSpec) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let kernels = dev.runs_kernels();
    if kernels && spec.dtype == DType::F32 {
        return refuses_f32(&random_qkv(spec.seed, spec.shape, spec.dtype, &dev.device)?);
    }
    Ok(accuracy(&dev.device, spec)?.outcome())
}

/// f32 attention runs on the native CPU path only: the kernels (on a GPU or the emulator) must
/// refuse it with an error naming q.
fn refuses_f32(inputs: &[Tensor; 4]) -> Result<Outcome> {
    match attention(&inputs[0], &inputs[1], &inputs[2], None, 1.0, None) {
        Err(Error::BadInput { arg: "q", .. }) => Ok(Outcome {
            max_rel_err: 0.0,
            tolerance: 0.0,
        }),
        Err(e) => Err(e),
        Ok(_) => Err(Error::Device(
            "attention accepted f32 for its kernels, which take f16 or bf16 only".into(),
        )),
    }
}

/// Shapes covering every head dimension, a single token, odd lengths and partial tiles, lengths
/// 0 and l in one batch, a peaky softmax and dropout. Errors are [`errors`]' root-mean-square,
/// bounded by twice the same-precision composition's ([`Accuracy::bound`]).
pub fn selftest_cases() -> Vec<Case> {
    let spec = |shape, lens: Option<&[u32]>, sharpness, p: Option<f32>| CheckSpec {
        shape,
        lens: lens.map(<[u32]>::to_vec),
        sharpness,
        dropout: p.map(|p| Dropout {
            p,
            seed: 5,
            offset: 11,
        }),
        dtype: DType::F32,
        seed: 0,
    };
    let specs = [
        spec((1, 1, 1, 32), None, 1.0, None),
        spec((2, 3, 37, 32), Some(&[37, 20]), 1.0, None),
        spec((2, 2, 100, 64), Some(&[0, 77]), 4.0, None),
        spec((1, 2, 128, 128), None, 1.0, None),
        spec((2, 2, 64, 64), Some(&[64, 33]), 1.0, Some(0.1)),
    ];
    let mut cases = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, s) in specs.iter().enumerate() {
            let (b, h, l, dh) = s.shape;
            let spec = CheckSpec {
                dtype,
                seed: 500 + i as u64,
                ..s.clone()
            };
            cases.push(Case {
                op: "attention",
                name: format!(
                    "b={b} h={h} l={l} dh={dh}{}{} {dtype:?}",
                    if s.lens.is_some() { " lens" } else { "" },
                    if s.dropout.is_some() { " drop" } else { "" },
                ),
                run: Box::new(move |dev| check(dev, &spec)),
            });
        }
    }
    cases
}

/// What `realm bench attention` measures.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBench {
    /// Batch entries.
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// Sequence length (queries and keys).
    pub len: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// Fraction of every entry's tokens that are padding (key_lens = l − round(pad_frac · l)).
    pub pad_frac: f64,
    /// Dropout probability on the attention probabilities (BERT trains with 0.1); 0 for none.
    pub dropout: f32,
    /// Element type of q, k and v.
    pub dtype: DType,
    /// Time the forward and the backward pass, not the forward alone.
    pub backward: bool,
    /// Measure the candle composition instead of the fused op.
    pub composition: bool,
}

/// Median time of the fused op (or the composition) on `dev`, with the attained FLOP rate
/// counting only the unpadded work (4·len²·dh per head forward, 3.5× that with the backward).
pub fn bench(dev: &ComputeDevice, spec: AttentionBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    let AttentionBench {
        batch: b,
        heads: h,
        len: l,
        head_dim: dh,
        pad_frac,
        dropout,
        dtype,
        backward,
        composition: composed,
    } = spec;
    if !(0.0..1.0).contains(&pad_frac) {
        return Err(Error::bad_input(
            "bench attention",
            "pad_frac",
            format!("{pad_frac} must be in [0, 1)"),
        ));
    }
    let [q, k, v, _] = random_qkv(7, (b, h, l, dh), dtype, &dev.device)?;
    let (q, k, v) = (
        Var::from_tensor(&q)?,
        Var::from_tensor(&k)?,
        Var::from_tensor(&v)?,
    );
    let len = l - (pad_frac * l as f64).round() as usize;
    let lens = vec![len as u32; b];
    let lens_t = KeyLens::new(&lens, &dev.device)?;
    let padded = len < l;
    let scale = 1.0 / (dh as f64).sqrt();
    // One mask for every run (a new one per run would not change the work).
    let dropout = (dropout != 0.0).then_some(Dropout {
        p: dropout,
        seed: 1,
        offset: 0,
    });
    let run = || -> Result<()> {
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let out = if composed {
            composition(q, k, v, padded.then_some(lens.as_slice()), scale, dropout)?
        } else {
            attention(q, k, v, padded.then_some(&lens_t), scale, dropout)?
        };
        if backward {
            out.to_dtype(DType::F32)?.sum_all()?.backward()?;
        }
        Ok(())
    };
    let timing = measure::time(dev, budget, run)?;
    let fwd_flops = 4.0 * (b * h * len * len * dh) as f64;
    let flops = if backward { 3.5 * fwd_flops } else { fwd_flops };
    Ok(Report::new(
        op_name("attention", composed, backward),
        match dropout {
            Some(d) => format!("b={b} h={h} l={l} dh={dh} len={len} dropout={}", d.p),
            None => format!("b={b} h={h} l={l} dh={dh} len={len}"),
        },
        dtype,
        dev,
        &timing,
    )
    .computing(flops))
}
