//! The composition the dropout op replaces (the mask drawn on the host, uploaded, multiplied in:
//! also the reference, exact), the op's `realm selftest` cases and `realm bench` measurement.

use super::{dropout, DropoutMask};
use crate::check::{Case, Outcome};
use crate::device::{self, ComputeDevice};
use crate::error::{Error, Result};
use crate::measure::{self, Budget, Report};
use crate::rng::{Philox4x32, SplitMix64};
use candle_core::{DType, Device, Tensor, Var};

/// `x * m` in x's dtype, m the mask of 0 and 1 / (1 − p) drawn on the host from the same Philox
/// words and uploaded (one upload): what the op does in one launch.
pub fn composition(x: &Tensor, mask: DropoutMask) -> Result<Tensor> {
    let philox = Philox4x32::from_seed(mask.seed);
    let threshold = mask.threshold();
    let keep = (1.0 / (1.0 - f64::from(mask.p))) as f32;
    let mut m = Vec::with_capacity(x.elem_count() + 3);
    for g in 0..x.elem_count().div_ceil(4) {
        let draws = philox.block(mask.counter(g as u32));
        m.extend(draws.map(|d| if d < threshold { 0.0 } else { keep }));
    }
    m.truncate(x.elem_count());
    let m = device::upload(m, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * m)?)
}

/// The op and the composition on `dev`, forward and backward (the gradient of Σ w ⊙ out): the
/// number of elements whose bits differ, which must be 0.
fn check(dev: &ComputeDevice, n: usize, p: f32, dtype: DType, seed: u64) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let values = |rng: &mut SplitMix64| -> Result<Tensor> {
        let v: Vec<f32> = rng
            .normal_vec(n, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        Ok(Tensor::from_vec(v, n, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(&dev.device)?)
    };
    let x = Var::from_tensor(&values(&mut rng)?)?;
    let w = values(&mut rng)?;
    let mask = DropoutMask {
        p,
        seed: rng.next_u64(),
        stream: rng.next_u64() as u32,
        step: rng.next_u64(),
    };
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<(Tensor, Tensor)> {
        let out = f(x.as_tensor())?;
        let grads = (&out * &w)?.to_dtype(DType::F32)?.sum_all()?.backward()?;
        let dx = grads
            .get(x.as_tensor())
            .ok_or_else(|| Error::Device("dropout: no gradient for x".into()))?
            .clone();
        Ok((out, dx))
    };
    let (out, dx) = run(&|x| dropout(x, mask))?;
    let (want, want_dx) = run(&|x| composition(x, mask))?;
    let differing = |a: &Tensor, b: &Tensor| -> Result<f64> {
        let bits = |t: &Tensor| -> Result<Vec<u32>> {
            Ok(t.to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f32::to_bits)
                .collect())
        };
        let (a, b) = (bits(a)?, bits(b)?);
        Ok(a.iter().zip(&b).filter(|(a, b)| a != b).count() as f64)
    };
    Ok(Outcome {
        max_rel_err: differing(&out, &want)? + differing(&dx, &want_dx)?,
        tolerance: 0.0,
    })
}

/// Sizes around the group of four and a block's groups; p near 0, BERT's 0.1, a half.
pub fn selftest_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &(n, p)) in [(1, 0.5), (7, 0.1), (4096, 0.1), (100_003, 0.5), (9, 1e-3)]
            .iter()
            .enumerate()
        {
            cases.push(Case {
                op: "dropout",
                name: format!("n={n} p={p} {dtype:?} fwd+bwd, bit-exact"),
                run: Box::new(move |dev| check(dev, n, p, dtype, 400 + i as u64)),
            });
        }
    }
    cases
}

/// What `realm bench dropout` measures.
#[derive(Clone, Copy, Debug)]
pub struct DropoutBench {
    /// Rows × hidden size, e.g. BERT's b·l × 768.
    pub rows: usize,
    pub hidden: usize,
    pub p: f32,
    pub dtype: DType,
    /// Measure the composition (mask drawn on the host and uploaded) instead of the op.
    pub composition: bool,
}

/// Median time of one masking of a `[rows, hidden]` tensor on `dev`.
pub fn bench(dev: &ComputeDevice, spec: DropoutBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    let (n, dtype) = (spec.rows * spec.hidden, spec.dtype);
    let x = Tensor::ones((spec.rows, spec.hidden), dtype, &dev.device)?;
    let mut step = 0;
    let timing = measure::time(dev, budget, || {
        step += 1;
        let mask = DropoutMask {
            p: spec.p,
            seed: 7,
            stream: 0,
            step,
        };
        if spec.composition {
            composition(&x, mask)?;
        } else {
            dropout(&x, mask)?;
        }
        Ok(())
    })?;
    let bytes = 2.0 * (n * dtype.size_in_bytes()) as f64;
    Ok(Report {
        op: format!(
            "dropout{}",
            if spec.composition {
                " (host mask + upload)"
            } else {
                ""
            }
        ),
        shape: format!("{}x{} p={}", spec.rows, spec.hidden, spec.p),
        dtype: format!("{dtype:?}").to_lowercase(),
        device: dev.to_string(),
        median_ms: timing.median_ms,
        min_ms: timing.min_ms,
        iters: timing.iters,
        gb_per_s: Some(bytes / (timing.median_ms * 1e-3) / 1e9),
        tflop_per_s: None,
    })
}
