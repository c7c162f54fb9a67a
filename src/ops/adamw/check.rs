//! The composition the multi-tensor update replaces (the global norm read to the host, then
//! about a dozen candle ops per parameter: also the reference, in f64), the op's `realm
//! selftest` cases and its `realm bench` measurement.

use super::{adamw_step, stats_len, AdamWParam, AdamWStep};
use crate::check::{Case, Outcome};
use crate::device::{read_scalar, ComputeDevice};
use crate::error::{Error, Result};
use crate::measure::{self, Budget, Report};
use crate::rng::SplitMix64;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

/// The global L2 norm of the gradients of `vars` (those without one count as zero): each
/// gradient's sum of squares in f32, their sum in f64 in the order of `vars`, reduced on the
/// device and read once (one synchronisation, not one per parameter).
pub fn global_grad_norm<'a>(
    grads: &GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
) -> Result<f64> {
    let squares = vars
        .into_iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| Ok(g.to_dtype(DType::F32)?.sqr()?.sum_all()?))
        .collect::<Result<Vec<Tensor>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sum = Tensor::stack(&squares, 0)?
        .to_dtype(DType::F64)?
        .sum_all()?;
    Ok(read_scalar::<f64>(&sum)?.sqrt())
}

/// The factor that brings a gradient of global norm `norm` to at most `max_norm` (1 when it is
/// already within; `max_norm` ≤ 0 or infinite: no clipping). A non-finite norm is an error: the
/// step must not be taken.
pub fn clip_factor(norm: f64, max_norm: f64) -> Result<f64> {
    if !norm.is_finite() {
        return Err(Error::bad_input(
            "clip_grad_norm",
            "grads",
            format!("the gradient norm is {norm}: a loss or gradient is not finite"),
        ));
    }
    Ok(
        if max_norm > 0.0 && max_norm.is_finite() && norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        },
    )
}

/// One parameter's update as candle ops in θ's dtype, the gradient multiplied by `grad_scale`
/// (the clip factor) first: (θ', m', v'). What the optimizer ran on a GPU before the fused op.
pub fn composition(
    (theta, g, m, v): (&Tensor, &Tensor, &Tensor, &Tensor),
    s: &AdamWStep,
    decay: bool,
    grad_scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let t = s.t.min(i32::MAX as u64) as i32;
    let (bias1, bias2) = (1.0 - s.beta1.powi(t), 1.0 - s.beta2.powi(t));
    let wd = if decay { s.weight_decay } else { 0.0 };
    let g = (g * grad_scale)?;
    let m = ((m * s.beta1)? + (&g * (1.0 - s.beta1))?)?;
    let v = ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let denom = ((&v / bias2)?.sqrt()? + s.eps)?;
    let step = ((&m / bias1)? / denom)?;
    let next = ((theta.detach() * (1.0 - s.lr * wd))? - (step * s.lr)?)?;
    Ok((next, m, v))
}

/// Parameter k's learning rate relative to the step's in the checks: full, a quarter, none.
fn lr_scale(k: usize) -> f64 {
    [1.0, 0.25, 0.0][k % 3]
}

/// Parameters of `sizes` (even ones decayed, learning rates by [`lr_scale`]) with random
/// values, gradients and moments.
struct Problem {
    theta: Vec<Vec<f64>>,
    grads: Vec<Vec<Vec<f64>>>,
}

impl Problem {
    fn new(sizes: &[usize], steps: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Problem {
            theta: sizes.iter().map(|&n| rng.normal_vec(n, 1.0)).collect(),
            grads: (0..steps)
                .map(|_| sizes.iter().map(|&n| rng.normal_vec(n, 0.5)).collect())
                .collect(),
        }
    }
}

/// θ, m and v of every parameter after `steps` updates by the fused op (f32, on `dev`).
fn fused(dev: &Device, p: &Problem, s: &AdamWStep) -> Result<Vec<Vec<f64>>> {
    let tensor = |x: &[f64]| -> Result<Tensor> {
        Ok(Tensor::new(x, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(dev)?)
    };
    let theta = p
        .theta
        .iter()
        .map(|x| tensor(x))
        .collect::<Result<Vec<_>>>()?;
    let sizes: Vec<usize> = p.theta.iter().map(Vec::len).collect();
    let total: usize = sizes.iter().sum();
    let m = Tensor::zeros(total, DType::F32, dev)?;
    let v = Tensor::zeros(total, DType::F32, dev)?;
    let stats = Tensor::zeros(stats_len(sizes.iter().copied()), DType::F64, dev)?;
    for (i, grads) in p.grads.iter().enumerate() {
        let grads = grads
            .iter()
            .map(|x| tensor(x))
            .collect::<Result<Vec<_>>>()?;
        let mut offset = 0;
        let params: Vec<AdamWParam> = theta
            .iter()
            .zip(&grads)
            .enumerate()
            .map(|(k, (theta, grad))| {
                let p = AdamWParam {
                    theta,
                    grad,
                    offset,
                    decay: k % 2 == 0,
                    lr_scale: lr_scale(k),
                };
                offset += theta.elem_count();
                p
            })
            .collect();
        adamw_step(
            &params,
            &m,
            &v,
            &stats,
            &AdamWStep {
                t: i as u64 + 1,
                ..*s
            },
        )?;
    }
    let mut out = Vec::new();
    let mut offset = 0;
    for t in &theta {
        let n = t.elem_count();
        out.push(crate::check::host_f64(t)?);
        out.push(crate::check::host_f64(&m.narrow(0, offset, n)?)?);
        out.push(crate::check::host_f64(&v.narrow(0, offset, n)?)?);
        offset += n;
    }
    out.push(crate::check::host_f64(&stats.narrow(0, 0, 1)?)?);
    Ok(out)
}

/// The same by the composition in `dtype` on `dev` (the clip factor from the norm computed in
/// `dtype`), in the fused op's order.
fn composed(dev: &Device, p: &Problem, s: &AdamWStep, dtype: DType) -> Result<Vec<Vec<f64>>> {
    let tensor = |x: &[f64]| -> Result<Tensor> {
        Ok(Tensor::new(x, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_dtype(dtype)?
            .to_device(dev)?)
    };
    let mut theta = p
        .theta
        .iter()
        .map(|x| tensor(x))
        .collect::<Result<Vec<_>>>()?;
    let mut m: Vec<Tensor> = theta
        .iter()
        .map(|t| t.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let mut v = m.clone();
    let mut sq = 0.0;
    for (i, grads) in p.grads.iter().enumerate() {
        let grads = grads
            .iter()
            .map(|x| tensor(x))
            .collect::<Result<Vec<_>>>()?;
        sq = 0.0;
        for g in &grads {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        let factor = clip_factor(sq.sqrt(), s.max_norm)?;
        let step = AdamWStep {
            t: i as u64 + 1,
            ..*s
        };
        for k in 0..theta.len() {
            let own = AdamWStep {
                lr: s.lr * lr_scale(k),
                ..step
            };
            let (t2, m2, v2) = composition(
                (&theta[k], &grads[k], &m[k], &v[k]),
                &own,
                k % 2 == 0,
                factor,
            )?;
            (theta[k], m[k], v[k]) = (t2, m2, v2);
        }
    }
    let mut out = Vec::new();
    for k in 0..theta.len() {
        for t in [&theta[k], &m[k], &v[k]] {
            out.push(crate::check::host_f64(t)?);
        }
    }
    out.push(vec![sq]);
    Ok(out)
}

/// The largest error of `actual` against `reference`, each vector's relative to its largest
/// reference value (m and v are small: an absolute error would hide a wrong one).
fn max_err(actual: &[Vec<f64>], reference: &[Vec<f64>]) -> f64 {
    actual
        .iter()
        .zip(reference)
        .map(|(a, r)| {
            let scale = r.iter().fold(f64::MIN_POSITIVE, |s, x| s.max(x.abs()));
            a.iter()
                .zip(r)
                .map(|(a, r)| {
                    if a.is_nan() {
                        f64::INFINITY
                    } else {
                        (a - r).abs() / scale
                    }
                })
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// The fused op on `dev` and the f32 composition against the f64 composition: the fused op is
/// never less accurate than what it replaces (twice its error, at least 16 f32 ulp).
fn check(dev: &ComputeDevice, sizes: &[usize], max_norm: f64, seed: u64) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let p = Problem::new(sizes, 3, seed);
    let s = AdamWStep {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        weight_decay: 0.1,
        t: 1,
        max_norm,
    };
    let reference = composed(&Device::Cpu, &p, &s, DType::F64)?;
    let fused_err = max_err(&fused(&dev.device, &p, &s)?, &reference);
    let composed_err = max_err(&composed(&dev.device, &p, &s, DType::F32)?, &reference);
    Ok(Outcome {
        max_rel_err: fused_err,
        tolerance: (2.0 * composed_err).max(16.0 * f64::from(f32::EPSILON)),
    })
}

/// Parameters around a chunk's edges (and of one element), with the clipping on and off.
pub fn selftest_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let sets: [&[usize]; 3] = [&[1], &[3, 4096, 4097, 1], &[9000, 768, 2, 12_289]];
    for (i, sizes) in sets.into_iter().enumerate() {
        for max_norm in [0.0, 1.0] {
            cases.push(Case {
                op: "adamw",
                name: format!("sizes {sizes:?} max_norm {max_norm}, 3 steps"),
                run: Box::new(move |dev| check(dev, sizes, max_norm, 600 + i as u64)),
            });
        }
    }
    cases
}

/// What `realm bench adamw` measures: one update of `tensors` parameters of `numel` elements
/// in all (f32), clipped.
#[derive(Clone, Copy, Debug)]
pub struct AdamWBench {
    /// Parameter tensors in the update.
    pub tensors: usize,
    /// Elements over all of them.
    pub numel: usize,
    /// Measure the composition (the norm read to the host, candle ops per parameter) instead.
    pub composition: bool,
}

/// Median time of one update on `dev`.
pub fn bench(dev: &ComputeDevice, spec: AdamWBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    if spec.tensors == 0 || spec.numel < spec.tensors {
        return Err(Error::bad_input(
            "bench adamw",
            "tensors",
            format!(
                "{} tensors of {} elements in all: need 1 ≤ tensors ≤ numel",
                spec.tensors, spec.numel
            ),
        ));
    }
    let d = &dev.device;
    let sizes: Vec<usize> = (0..spec.tensors)
        .map(|i| spec.numel / spec.tensors + usize::from(i < spec.numel % spec.tensors))
        .collect();
    let theta = sizes
        .iter()
        .map(|&n| Ok(Var::from_tensor(&Tensor::ones(n, DType::F32, d)?)?))
        .collect::<Result<Vec<_>>>()?;
    let grads = sizes
        .iter()
        .map(|&n| Ok(Tensor::full(1e-3f32, n, d)?))
        .collect::<Result<Vec<_>>>()?;
    let m = Tensor::zeros(spec.numel, DType::F32, d)?;
    let v = Tensor::zeros(spec.numel, DType::F32, d)?;
    let stats = Tensor::zeros(stats_len(sizes.iter().copied()), DType::F64, d)?;
    let mut moments: Vec<(Tensor, Tensor)> = theta
        .iter()
        .map(|t| Ok((t.zeros_like()?, t.zeros_like()?)))
        .collect::<Result<_>>()?;
    let mut t = 0;
    let timing = measure::time(dev, budget, || {
        t += 1;
        let s = AdamWStep {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
            t,
            max_norm: 1.0,
        };
        if spec.composition {
            let mut sq = 0.0;
            let sums = grads
                .iter()
                .map(|g| Ok(g.sqr()?.sum_all()?))
                .collect::<Result<Vec<_>>>()?;
            sq += read_scalar::<f64>(&Tensor::stack(&sums, 0)?.to_dtype(DType::F64)?.sum_all()?)?;
            let factor = clip_factor(sq.sqrt(), s.max_norm)?;
            for ((theta, g), (m, v)) in theta.iter().zip(&grads).zip(&mut moments) {
                let (t2, m2, v2) = composition((theta.as_tensor(), g, m, v), &s, true, factor)?;
                theta.set(&t2)?;
                (*m, *v) = (m2, v2);
            }
        } else {
            let mut offset = 0;
            let params: Vec<AdamWParam> = theta
                .iter()
                .zip(&grads)
                .map(|(theta, grad)| {
                    let p = AdamWParam {
                        theta: theta.as_tensor(),
                        grad,
                        offset,
                        decay: true,
                        lr_scale: 1.0,
                    };
                    offset += grad.elem_count();
                    p
                })
                .collect();
            adamw_step(&params, &m, &v, &stats, &s)?;
        }
        Ok(())
    })?;
    // Bytes: θ, m, v read and written, g read (twice by the fused op: norm and update).
    let bytes = 4.0 * 8.0 * spec.numel as f64;
    Ok(Report {
        op: format!(
            "adamw{}",
            if spec.composition {
                " (norm read + candle ops per parameter)"
            } else {
                ""
            }
        ),
        shape: format!("{} tensors, {} elements", spec.tensors, spec.numel),
        dtype: "f32".into(),
        device: dev.to_string(),
        median_ms: timing.median_ms,
        min_ms: timing.min_ms,
        iters: timing.iters,
        gb_per_s: Some(bytes / (timing.median_ms * 1e-3) / 1e9),
        tflop_per_s: None,
        checked: None,
    })
}
