//! The plain candle compositions that LayerNorm and GELU replace (also the float64 references),
//! the ops' `realm selftest` cases and their `realm bench` measurement.

use super::GeluForm;
use crate::check::{host_f64, max_rel_err, tolerance, Case, Outcome};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::measure::{self, Budget, Report};
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor, Var};

/// LayerNorm composed of candle ops in `w`'s dtype (f32: what the model ran before the fused op;
/// f64: the reference), the result in `x`'s dtype.
pub fn layer_norm_composition(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let xw = x.to_dtype(w.dtype())?;
    Ok(candle_nn::ops::layer_norm_slow(&xw, w, b, eps as f32)?.to_dtype(x.dtype())?)
}

/// candle's own GELU (`gelu_erf`, or `gelu` for the tanh form), computed in `x`'s dtype.
pub fn gelu_composition(x: &Tensor, form: GeluForm) -> Result<Tensor> {
    Ok(match form {
        GeluForm::Erf => x.gelu_erf()?,
        GeluForm::Tanh => x.gelu()?,
    })
}

/// A tensor of `dtype` on `dev` from f64 values, and the same dtype-rounded values as f64 on the
/// CPU (the reference sees exactly what the op sees).
fn input(
    values: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let rounded = Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_dtype(DType::F64)?;
    let on_dev = rounded.to_dtype(dtype)?.to_device(dev)?;
    Ok((on_dev, rounded))
}

/// The output and the gradients of Σ r ⊙ f(args) with respect to every argument, as f64 on the
/// host (`r` in the output's dtype: the incoming gradient is r exactly).
fn value_and_grads(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    args: &[Tensor],
    r: &Tensor,
) -> Result<Vec<Vec<f64>>> {
    let vars = args
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&inputs)?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let mut out = vec![host_f64(&y)?];
    for v in &vars {
        let g = grads
            .get(v)
            .ok_or_else(|| Error::Device("nn check: a gradient is missing".into()))?;
        out.push(host_f64(g)?);
    }
    Ok(out)
}

/// The largest error over matching outputs.
fn max_err(actual: &[Vec<f64>], reference: &[Vec<f64>]) -> f64 {
    actual
        .iter()
        .zip(reference)
        .map(|(a, r)| max_rel_err(a, r))
        .fold(0.0, f64::max)
}

/// Errors against float64 of the fused op and of the plain composition (on the same device, in
/// the same dtype), output and every gradient.
struct Errors {
    fused: f64,
    composed: f64,
}

/// LayerNorm, forward and the three gradients, on `dev`: rows of `h` values of mean `offset`.
fn layer_norm_errors(
    dev: &ComputeDevice,
    (rows, h): (usize, usize),
    dtype: DType,
    offset: f64,
    seed: u64,
) -> Result<Errors> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let values = |rng: &mut SplitMix64, n, scale, shift: f64| -> Vec<f64> {
        rng.normal_vec(n, scale).iter().map(|v| v + shift).collect()
    };
    let d = &dev.device;
    let (x, x64) = input(
        values(&mut rng, rows * h, 2.0, offset),
        &[rows, h],
        dtype,
        d,
    )?;
    let (w, w64) = input(values(&mut rng, h, 0.5, 1.0), &[h], DType::F32, d)?;
    let (b, b64) = input(values(&mut rng, h, 0.5, 0.0), &[h], DType::F32, d)?;
    // The incoming gradient in x's dtype, so that the reference sees the same.
    let (r, r64) = input(values(&mut rng, rows * h, 1.0, 0.0), &[rows, h], dtype, d)?;
    let eps = 1e-5;
    let fused = value_and_grads(
        &|a| super::layer_norm(&a[0], &a[1], &a[2], eps),
        &[x.clone(), w.clone(), b.clone()],
        &r,
    )?;
    let composed = value_and_grads(
        &|a| layer_norm_composition(&a[0], &a[1], &a[2], eps),
        &[x, w, b],
        &r,
    )?;
    let reference = value_and_grads(
        &|a| layer_norm_composition(&a[0], &a[1], &a[2], eps),
        &[x64, w64.to_dtype(DType::F64)?, b64.to_dtype(DType::F64)?],
        &r64,
    )?;
    Ok(Errors {
        fused: max_err(&fused, &reference),
        composed: max_err(&composed, &reference),
    })
}

/// GELU, forward and gradient, on `dev`: `n` normal values of scale 3 and a sweep over
/// [−12, 12] (the tails, where 1 + erf and 1 + tanh cancel).
fn gelu_errors(
    dev: &ComputeDevice,
    form: GeluForm,
    n: usize,
    dtype: DType,
    seed: u64,
) -> Result<Errors> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let mut values = rng.normal_vec(n, 3.0);
    let sweep = 2401.min(n);
    for (i, v) in values.iter_mut().take(sweep).enumerate() {
        *v = -12.0 + 24.0 * i as f64 / sweep.max(2) as f64;
    }
    let d = &dev.device;
    let (x, x64) = input(values, &[n], dtype, d)?;
    let (r, r64) = input(rng.normal_vec(n, 1.0), &[n], dtype, d)?;
    let fused = value_and_grads(&|a| super::gelu(&a[0], form), std::slice::from_ref(&x), &r)?;
    // candle's GELU in f32 (from x's dtype and back), as the model would otherwise run it.
    let composed = value_and_grads(
        &|a| Ok(gelu_composition(&a[0].to_dtype(DType::F32)?, form)?.to_dtype(dtype)?),
        &[x],
        &r,
    )?;
    let reference = value_and_grads(&|a| gelu_composition(&a[0], form), &[x64], &r64)?;
    Ok(Errors {
        fused: max_err(&fused, &reference),
        composed: max_err(&composed, &reference),
    })
}

/// The bound: the dtype's, and the plain composition's own error where that is smaller (twice
/// it, and at least 16 f32 ulp at 1: candle's CPU GELU computes in f64, the fused op's f32 erf
/// and slope add a few ulp): the fused op is never less accurate than what it replaces.
fn outcome(e: Errors, dtype: DType) -> Outcome {
    let composed = (2.0 * e.composed).max(16.0 * f64::from(f32::EPSILON));
    Outcome {
        max_rel_err: e.fused,
        tolerance: tolerance(dtype).min(composed),
    }
}

/// Shapes chosen to cover the kernels' variants and edges: 1, odd widths, both forward variants
/// (h ≤ 1024 a warp per row, wider a block), several rows per backward block (rows > 512), and
/// rows whose mean is far from 0.
pub fn selftest_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let shapes = [
        ((1, 1), 0.0),
        ((3, 7), 0.0),
        ((5, 33), 3.0),
        ((17, 768), 0.0),
        ((9, 1025), 0.0),
        ((700, 24), 0.0),
        ((4, 256), 1000.0),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &((rows, h), offset)) in shapes.iter().enumerate() {
            cases.push(Case {
                op: "layer_norm",
                name: format!("rows={rows} h={h} mean {offset} {dtype:?} fwd+bwd"),
                run: Box::new(move |dev| {
                    let e = layer_norm_errors(dev, (rows, h), dtype, offset, 400 + i as u64)?;
                    Ok(outcome(e, dtype))
                }),
            });
        }
    }
    for form in [GeluForm::Erf, GeluForm::Tanh] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (i, n) in [1usize, 3000, 70_001].into_iter().enumerate() {
                cases.push(Case {
                    op: "gelu",
                    name: format!("{form:?} n={n} {dtype:?} fwd+bwd"),
                    run: Box::new(move |dev| {
                        let e = gelu_errors(dev, form, n, dtype, 500 + i as u64)?;
                        Ok(outcome(e, dtype))
                    }),
                });
            }
        }
    }
    cases
}

/// Which op `realm bench nn` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NnBenchOp {
    LayerNorm,
    Gelu(GeluForm),
}

impl std::str::FromStr for NnBenchOp {
    type Err = Error;

    /// `layer-norm`, `gelu-erf` or `gelu-tanh`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer-norm" => Ok(NnBenchOp::LayerNorm),
            "gelu-erf" => Ok(NnBenchOp::Gelu(GeluForm::Erf)),
            "gelu-tanh" => Ok(NnBenchOp::Gelu(GeluForm::Tanh)),
            other => Err(Error::bad_input(
                "bench nn",
                "op",
                format!("{other:?}: use layer-norm, gelu-erf or gelu-tanh"),
            )),
        }
    }
}

/// What `realm bench nn` measures: `rows` rows of `hidden` values.
#[derive(Clone, Copy, Debug)]
pub struct NnBench {
    pub op: NnBenchOp,
    pub rows: usize,
    pub hidden: usize,
    pub dtype: DType,
    pub backward: bool,
    /// Measure the candle composition (in f32, as the model ran before) instead of the fused op.
    pub composition: bool,
}

/// Median time of the fused op (or the composition) on `dev`.
pub fn bench(dev: &ComputeDevice, spec: NnBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    let NnBench {
        op,
        rows,
        hidden: h,
        dtype,
        backward,
        composition,
    } = spec;
    let mut rng = SplitMix64::new(7);
    let d = &dev.device;
    let x = Var::from_tensor(&input(rng.normal_vec(rows * h, 2.0), &[rows, h], dtype, d)?.0)?;
    let w = Var::from_tensor(&input(rng.normal_vec(h, 1.0), &[h], DType::F32, d)?.0)?;
    let b = Var::from_tensor(&input(rng.normal_vec(h, 1.0), &[h], DType::F32, d)?.0)?;
    let run = || -> Result<()> {
        let (x, w, b) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let y = match (op, composition) {
            (NnBenchOp::LayerNorm, false) => super::layer_norm(x, w, b, 1e-12)?,
            (NnBenchOp::LayerNorm, true) => layer_norm_composition(x, w, b, 1e-12)?,
            (NnBenchOp::Gelu(form), false) => super::gelu(x, form)?,
            (NnBenchOp::Gelu(form), true) => {
                gelu_composition(&x.to_dtype(DType::F32)?, form)?.to_dtype(dtype)?
            }
        };
        if backward {
            y.to_dtype(DType::F32)?.sum_all()?.backward()?;
        }
        Ok(())
    };
    let timing = measure::time(dev, budget, run)?;
    // Bytes: read x, write y; the backward reads x and dy and writes dx.
    let elem = dtype.size_in_bytes() as f64;
    let fwd_bytes = 2.0 * elem * (rows * h) as f64;
    let bytes = if backward {
        fwd_bytes + 3.0 * elem * (rows * h) as f64
    } else {
        fwd_bytes
    };
    let name = match op {
        NnBenchOp::LayerNorm => "layer_norm".to_string(),
        NnBenchOp::Gelu(form) => format!("gelu_{}", format!("{form:?}").to_lowercase()),
    };
    Ok(Report {
        op: format!(
            "{name}{}{}",
            if composition {
                " (candle composition)"
            } else {
                ""
            },
            if backward { " fwd+bwd" } else { " fwd" }
        ),
        shape: format!("rows={rows} h={h}"),
        dtype: format!("{dtype:?}").to_lowercase(),
        device: dev.to_string(),
        median_ms: timing.median_ms,
        min_ms: timing.min_ms,
        iters: timing.iters,
        gb_per_s: Some(bytes / (timing.median_ms * 1e-3) / 1e9),
        tflop_per_s: None,
    })
}
