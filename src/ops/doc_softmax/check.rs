//! The plain candle composition that the fused ops replace (also the float64 reference), and the
//! op's `realm selftest` cases and `realm bench` measurement.

use crate::check::{host_f64, max_rel_err, tolerance, Case, Outcome};
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::measure::{self, op_name, Budget, Report};
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor, Var, D};

/// softmax over the last dimension, composed of candle ops (NaN for a row that is all -inf).
pub fn softmax_composition(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(logits, D::Minus1)?)
}

/// `logsumexp_z(log_softmax(x)_z + c_z)` composed of candle ops; `c` is [b, k] or [b, k, m].
pub fn mll_composition(doc_logits: &Tensor, cond_logprob: &Tensor) -> Result<Tensor> {
    let log_prior = candle_nn::ops::log_softmax(doc_logits, D::Minus1)?;
    Ok(if cond_logprob.rank() == 3 {
        log_prior
            .unsqueeze(2)?
            .broadcast_add(cond_logprob)?
            .log_sum_exp(1)?
    } else {
        (log_prior + cond_logprob)?.log_sum_exp(1)?
    })
}

/// Random logits `[b, k]`: normal with the given scale, a few entries -inf (absent candidates),
/// never a whole row.
pub fn random_logits(rng: &mut SplitMix64, b: usize, k: usize, scale: f64) -> Vec<f64> {
    let mut x = rng.normal_vec(b * k, scale);
    for r in 0..b {
        if k > 1 && rng.below(3) == 0 {
            let z = rng.below(k as u64) as usize;
            x[r * k + z] = f64::NEG_INFINITY;
        }
    }
    x
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

/// Forward and backward of doc_softmax on `dev` against the f64 composition.
fn check_softmax(
    dev: &ComputeDevice,
    b: usize,
    k: usize,
    dtype: DType,
    seed: u64,
) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let (x, x64) = input(
        random_logits(&mut rng, b, k, 3.0),
        &[b, k],
        dtype,
        &dev.device,
    )?;
    let (g, g64) = input(rng.normal_vec(b * k, 1.0), &[b, k], dtype, &dev.device)?;

    let xv = Var::from_tensor(&x)?;
    let p = super::doc_softmax(xv.as_tensor())?;
    let dx = (p.to_dtype(DType::F32)? * g.to_dtype(DType::F32)?)?
        .sum_all()?
        .backward()?;
    let dx = dx.get(&xv).cloned().unwrap_or(x.zeros_like()?);

    let xr = Var::from_tensor(&x64)?;
    let pr = softmax_composition(xr.as_tensor())?;
    let dxr = (&pr * &g64)?.sum_all()?.backward()?;
    let dxr = dxr.get(&xr).cloned().unwrap_or(x64.zeros_like()?);

    let err = max_rel_err(&host_f64(&p)?, &host_f64(&pr)?)
        .max(max_rel_err(&host_f64(&dx)?, &host_f64(&dxr)?));
    Ok(Outcome {
        max_rel_err: err,
        tolerance: tolerance(dtype),
    })
}

/// Forward and both gradients of the marginal on `dev` against the f64 composition.
fn check_mll(
    dev: &ComputeDevice,
    b: usize,
    k: usize,
    m: usize,
    dtype: DType,
    seed: u64,
) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let (x, x64) = input(
        random_logits(&mut rng, b, k, 3.0),
        &[b, k],
        dtype,
        &dev.device,
    )?;
    let cond: Vec<f64> = rng
        .normal_vec(b * k * m, 2.0)
        .into_iter()
        .map(|v| -v.abs())
        .collect();
    let (c, c64) = input(cond, &[b, k, m], dtype, &dev.device)?;
    let (g, g64) = input(rng.normal_vec(b * m, 1.0), &[b, m], dtype, &dev.device)?;

    let (xv, cv) = (Var::from_tensor(&x)?, Var::from_tensor(&c)?);
    let out = super::marginal_log_likelihood(xv.as_tensor(), cv.as_tensor())?;
    let grads = (out.to_dtype(DType::F32)? * g.to_dtype(DType::F32)?)?
        .sum_all()?
        .backward()?;

    let (xr, cr) = (Var::from_tensor(&x64)?, Var::from_tensor(&c64)?);
    let outr = mll_composition(xr.as_tensor(), cr.as_tensor())?;
    let gradsr = (&outr * &g64)?.sum_all()?.backward()?;

    let mut err = max_rel_err(&host_f64(&out)?, &host_f64(&outr)?);
    for (v, vr) in [(&xv, &xr), (&cv, &cr)] {
        let (Some(d), Some(dr)) = (grads.get(v), gradsr.get(vr)) else {
            return Err(crate::Error::Device(
                "marginal_log_likelihood: a gradient is missing".into(),
            ));
        };
        err = err.max(max_rel_err(&host_f64(d)?, &host_f64(dr)?));
    }
    // The gradient is a difference of probabilities: allow for the cancellation in f16/bf16.
    Ok(Outcome {
        max_rel_err: err,
        tolerance: 2.0 * tolerance(dtype),
    })
}

/// The marginal at large logits (rows around ±3000 and 0, a row with no candidate, absent
/// candidates and impossible targets), f32, against float64: the fused op must be at least as
/// accurate as the plain f32 composition it replaces (log_softmax, then logsumexp), which keeps
/// log-probabilities exact where `x − (max + log Σ)` would round at the logits' scale. The
/// tolerance is the composition's own error (times 2, and at least a few f32 ulp at 1).
fn check_mll_large_logits(dev: &ComputeDevice, seed: u64) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let (b, k, m) = (5, 37, 3);
    let mut rng = SplitMix64::new(seed);
    let offsets = [3000.0, -3000.0, 1500.0, 0.0];
    let mut x = rng.normal_vec(b * k, 3.0);
    for (r, row) in x.chunks_mut(k).enumerate() {
        match offsets.get(r) {
            Some(o) => row.iter_mut().for_each(|v| *v += o),
            None => row.fill(f64::NEG_INFINITY),
        }
        row[(r * 7) % k] = f64::NEG_INFINITY;
    }
    let mut cond: Vec<f64> = rng
        .normal_vec(b * k * m, 2.0)
        .into_iter()
        .map(|v| -v.abs())
        .collect();
    for i in (0..cond.len()).step_by(11) {
        cond[i] = f64::NEG_INFINITY;
    }
    let (xd, x64) = input(x, &[b, k], DType::F32, &dev.device)?;
    let (cd, c64) = input(cond, &[b, k, m], DType::F32, &dev.device)?;
    let (gd, g64) = input(rng.normal_vec(b * m, 1.0), &[b, m], DType::F32, &dev.device)?;

    // Output, d/dx and d/dc of Σ g ⊙ f(x, c), each as f64 on the host.
    let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
               x: &Tensor,
               c: &Tensor,
               g: &Tensor|
     -> Result<[Vec<f64>; 3]> {
        let (xv, cv) = (Var::from_tensor(x)?, Var::from_tensor(c)?);
        let out = f(xv.as_tensor(), cv.as_tensor())?;
        let grads = (&out * g)?.sum_all()?.backward()?;
        let grad = |v: &Var| match grads.get(v) {
            Some(d) => host_f64(d),
            None => host_f64(&v.zeros_like()?),
        };
        Ok([host_f64(&out)?, grad(&xv)?, grad(&cv)?])
    };
    let fused = run(&|x, c| super::marginal_log_likelihood(x, c), &xd, &cd, &gd)?;
    let reference = run(&mll_composition, &x64, &c64, &g64)?;
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu);
    let composed = run(&mll_composition, &cpu(&xd)?, &cpu(&cd)?, &cpu(&gd)?)?;
    // Where the f64 composition is NaN (the row with no candidate) the op's own rule applies
    // (−inf, zero gradients), tested elsewhere; compare everything else.
    let err = |a: &[f64], r: &[f64]| {
        let (a, r): (Vec<f64>, Vec<f64>) = a.iter().zip(r).filter(|(_, r)| !r.is_nan()).unzip();
        max_rel_err(&a, &r)
    };
    let (mut fused_err, mut composed_err) = (0.0f64, 0.0f64);
    for ((f, c), r) in fused.iter().zip(&composed).zip(&reference) {
        fused_err = fused_err.max(err(f, r));
        composed_err = composed_err.max(err(c, r));
    }
    Ok(Outcome {
        max_rel_err: fused_err,
        tolerance: (2.0 * composed_err).max(4.0 * f64::from(f32::EPSILON)),
    })
}

/// Shapes chosen to cover both kernel variants and their edges: 1, odd sizes, rows that do not
/// fill a block, k at and just past the warp limit, the largest beams.
pub fn selftest_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let softmax_shapes = [
        (1, 1),
        (3, 7),
        (9, 33),
        (5, 256),
        (4, 257),
        (2, 5000),
        (1, 16384),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &(b, k)) in softmax_shapes.iter().enumerate() {
            cases.push(Case {
                op: "doc_softmax",
                name: format!("b={b} k={k} {dtype:?} fwd+bwd"),
                run: Box::new(move |dev| check_softmax(dev, b, k, dtype, 100 + i as u64)),
            });
        }
    }
    let mll_shapes = [(1, 1, 1), (3, 8, 1), (5, 9, 3), (2, 300, 2), (1, 5000, 4)];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &(b, k, m)) in mll_shapes.iter().enumerate() {
            cases.push(Case {
                op: "marginal_log_likelihood",
                name: format!("b={b} k={k} m={m} {dtype:?} fwd+bwd"),
                run: Box::new(move |dev| check_mll(dev, b, k, m, dtype, 200 + i as u64)),
            });
        }
    }
    for seed in [300, 301] {
        cases.push(Case {
            op: "marginal_log_likelihood",
            name: format!("b=5 k=37 m=3 F32 logits ±3000 vs the f32 composition (seed {seed})"),
            run: Box::new(move |dev| check_mll_large_logits(dev, seed)),
        });
    }
    cases
}

/// What `realm bench doc-softmax` measures.
#[derive(Clone, Copy, Debug)]
pub struct DocSoftmaxBench {
    /// Examples: rows of the `[batch, k]` logits.
    pub batch: usize,
    /// Candidate documents per example.
    pub k: usize,
    /// Targets per example for the marginal; 0 measures doc_softmax alone.
    pub targets: usize,
    /// Element type of the logits and conditionals.
    pub dtype: DType,
    /// Time the forward and the backward pass, not the forward alone.
    pub backward: bool,
    /// Measure the candle composition instead of the fused op.
    pub composition: bool,
}

/// Median time of the fused op (or the composition) on `dev`.
pub fn bench(dev: &ComputeDevice, spec: DocSoftmaxBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    let DocSoftmaxBench {
        batch: b,
        k,
        targets: m,
        dtype,
        backward,
        composition,
    } = spec;
    let mut rng = SplitMix64::new(7);
    let (x, _) = input(
        random_logits(&mut rng, b, k, 3.0),
        &[b, k],
        dtype,
        &dev.device,
    )?;
    let xv = Var::from_tensor(&x)?;
    let c = if m > 0 {
        let cond: Vec<f64> = rng
            .normal_vec(b * k * m, 2.0)
            .into_iter()
            .map(|v| -v.abs())
            .collect();
        Some(input(cond, &[b, k, m], dtype, &dev.device)?.0)
    } else {
        None
    };
    let run = || -> Result<()> {
        let out = match (&c, composition) {
            (None, false) => super::doc_softmax(xv.as_tensor())?,
            (None, true) => softmax_composition(xv.as_tensor())?,
            (Some(c), false) => super::marginal_log_likelihood(xv.as_tensor(), c)?,
            (Some(c), true) => mll_composition(xv.as_tensor(), c)?,
        };
        if backward {
            out.to_dtype(DType::F32)?.sum_all()?.backward()?;
        }
        Ok(())
    };
    let timing = measure::time(dev, budget, run)?;
    // Bytes: read logits (and conditionals), write the output; the backward reads and writes
    // about twice as much again.
    let elem = dtype.size_in_bytes() as f64;
    let fwd_bytes = elem * (2 * b * k + b * k * m + b * m) as f64;
    let bytes = if backward { 3.0 * fwd_bytes } else { fwd_bytes };
    let op = if m > 0 {
        "marginal_log_likelihood"
    } else {
        "doc_softmax"
    };
    let shape = if m > 0 {
        format!("b={b} k={k} m={m}")
    } else {
        format!("b={b} k={k}")
    };
    Ok(Report::new(
        op_name(op, composition, backward),
        shape,
        dtype,
        dev,
        &timing,
    )
    .moving(bytes))
}
