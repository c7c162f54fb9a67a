//! What a kernel check is: a case that runs on a device and measures its largest error against
//! a float64 reference, and the error measure and bounds the checks share. The ops define their
//! cases with these (their `check.rs`); [`crate::selftest`] runs them all.

use crate::device::ComputeDevice;
use crate::error::Result;

/// Runs one check on a device.
pub type CheckFn = Box<dyn Fn(&ComputeDevice) -> Result<Outcome> + Send + Sync>;

/// One check: an op, a case name (shape, dtype, direction) and how to run it on a device.
pub struct Case {
    /// The op checked, e.g. `mips_top_k`.
    pub op: &'static str,
    /// The case: shape, dtype and direction, e.g. `b=3 k=7 F16 fwd+bwd`.
    pub name: String,
    /// Runs the case on a device and measures it.
    pub run: CheckFn,
}

/// What a check measured: the largest error against the reference and the bound it must meet.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Largest error against the f64 reference, as [`max_rel_err`] measures it.
    pub max_rel_err: f64,
    /// The bound `max_rel_err` must not exceed (fitted to the dtype).
    pub tolerance: f64,
}

impl Outcome {
    /// Whether the error is within the tolerance (a NaN error fails).
    pub fn passed(&self) -> bool {
        self.max_rel_err <= self.tolerance
    }
}

/// A finished check.
pub struct Row {
    /// The case's [`Case::op`].
    pub op: &'static str,
    /// The case's [`Case::name`].
    pub name: String,
    /// What it measured, or the error that stopped it.
    pub outcome: Result<Outcome>,
}

impl Row {
    /// Whether the case ran and its outcome passed.
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, Ok(o) if o.passed())
    }
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
