//! `realm selftest`: every registered kernel check, run on one device against a float64
//! reference on fresh random inputs, one table row per check.

use crate::device::ComputeDevice;
use crate::error::Result;

/// Runs one check on a device.
pub type CheckFn = Box<dyn Fn(&ComputeDevice) -> Result<Outcome> + Send + Sync>;

/// One check: an op, a case name (shape, dtype, direction) and how to run it on a device.
pub struct Case {
    pub op: &'static str,
    pub name: String,
    pub run: CheckFn,
}

/// What a check measured: the largest error against the reference and the bound it must meet.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub max_rel_err: f64,
    pub tolerance: f64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.max_rel_err <= self.tolerance
    }
}

/// A finished check.
pub struct Row {
    pub op: &'static str,
    pub name: String,
    pub outcome: Result<Outcome>,
}

impl Row {
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, Ok(o) if o.passed())
    }
}

/// Every registered check. Ops add theirs here.
pub fn cases() -> Vec<Case> {
    let mut cases = crate::ops::doc_softmax::selftest_cases();
    cases.extend(crate::ops::mips::selftest_cases());
    cases.extend(crate::ops::attention::selftest_cases());
    cases.extend(crate::ops::dropout::selftest_cases());
    cases.extend(conformance_cases());
    cases
}

/// The portability layer's conformance kernels, on the emulator or a GPU (they have no native
/// CPU form). One case runs the whole suite; a failure names the kernels that disagreed.
fn conformance_cases() -> Vec<Case> {
    vec![Case {
        op: "conformance",
        name: "portability layer (exact)".to_string(),
        run: Box::new(|dev: &ComputeDevice| {
            let outcomes = match &dev.device {
                #[cfg(feature = "cuda")]
                candle_core::Device::Cuda(d) => {
                    crate::conformance::all(&crate::kernels::Cuda::new(d, dev.exec.clone()))
                }
                _ if dev.is_emulated() => {
                    crate::conformance::all(&crate::kernels::Emulator::new(dev.exec.clone()))
                }
                _ => {
                    return Err(crate::Error::Device(format!(
                        "the conformance kernels run on the emulator or a GPU, not on {dev}"
                    )))
                }
            };
            let mut failed = Vec::new();
            for outcome in outcomes {
                let outcome = outcome?;
                if !outcome.passed {
                    failed.push(format!("{}: {}", outcome.name, outcome.detail));
                }
            }
            if !failed.is_empty() {
                return Err(crate::Error::Emulator(failed.join("; ")));
            }
            Ok(Outcome {
                max_rel_err: 0.0,
                tolerance: 0.0,
            })
        }),
    }]
}

/// Runs the cases whose `op/name` contains `filter` (all when `None`), in order, with kernel
/// outputs poisoned before each launch (so that an element a kernel leaves unwritten fails its
/// check; free on the emulator, a memset per output on a GPU). Only this call's device is
/// affected: the poisoning travels in its execution mode.
pub fn run(dev: &ComputeDevice, filter: Option<&str>) -> Vec<Row> {
    let dev = ComputeDevice {
        exec: dev.exec.with_poison_outputs(true),
        ..dev.clone()
    };
    cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| format!("{}/{}", c.op, c.name).contains(f)))
        .filter(|c| c.op != "conformance" || dev.runs_kernels())
        .map(|c| Row {
            op: c.op,
            outcome: (c.run)(&dev),
            name: c.name,
        })
        .collect()
}

/// The values of `t` as f64, on the host.
pub fn host_f64(t: &candle_core::Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Largest error of `actual` against `reference`: |a − r| / max(|r|, 1), so relative for large
/// values and absolute for small ones (probabilities). Infinities must match exactly; NaN in
/// either is an infinite error.
pub fn max_rel_err(actual: &[f64], reference: &[f64]) -> f64 {
    if actual.len() != reference.len() {
        return f64::INFINITY;
    }
    actual
        .iter()
        .zip(reference)
        .map(|(&a, &r)| {
            if a.is_nan() || r.is_nan() {
                f64::INFINITY
            } else if a.is_infinite() || r.is_infinite() {
                if a == r {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                (a - r).abs() / r.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max)
}

/// Relative-error bound for results stored in `dtype` and computed in f32.
pub fn tolerance(dtype: candle_core::DType) -> f64 {
    match dtype {
        candle_core::DType::F16 => 2e-3,
        candle_core::DType::BF16 => 1.6e-2,
        _ => 1e-4,
    }
}
