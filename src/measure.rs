//! The measurement harness of `realm bench`: the median time of an op over repeated runs after
//! warm-up, synchronised with the device, reported as one [`Report`]. The ops' benchmarks (their
//! `check.rs`) and those of [`crate::bench`] are written with it.

use crate::device::ComputeDevice;
use crate::error::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One measurement, printed by `realm bench --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was timed, e.g. `mips_top_k` or `attention (candle composition) fwd`.
    pub op: String,
    /// The case's sizes as `name=value` pairs, e.g. `n=100000 d=128 q=8 k=5`.
    pub shape: String,
    /// The element type in lower case (`f32`, `bf16`, ...).
    pub dtype: String,
    /// The device it ran on (`cpu`, `emulate`, `cuda:0`).
    pub device: String,
    /// Median time of one run, in milliseconds.
    pub median_ms: f64,
    /// Fastest run, in milliseconds.
    pub min_ms: f64,
    /// Runs timed (after warm-up).
    pub iters: usize,
    /// Bytes moved per run / median time, when the op is memory-bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gb_per_s: Option<f64>,
    /// Floating-point operations per run / median time, when the op is compute-bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tflop_per_s: Option<f64>,
    /// Outputs of the timed op compared with a reference after timing, all equal (a difference
    /// is an error, not a report): e.g. queries whose top-k was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
}

impl Report {
    /// The report of `timing` for `op` (see [`op_name`]) at `shape`, computing in `dtype` on
    /// `dev`; add rates with [`Report::moving`] and [`Report::computing`].
    pub fn new(
        op: impl Into<String>,
        shape: impl Into<String>,
        dtype: candle_core::DType,
        dev: &ComputeDevice,
        timing: &Timing,
    ) -> Self {
        Report {
            op: op.into(),
            shape: shape.into(),
            dtype: format!("{dtype:?}").to_lowercase(),
            device: dev.to_string(),
            median_ms: timing.median_ms,
            min_ms: timing.min_ms,
            iters: timing.iters,
            gb_per_s: None,
            tflop_per_s: None,
            checked: None,
        }
    }

    /// With what was checked against a reference, e.g. `8 queries against float64`.
    pub fn checked(mut self, what: impl Into<String>) -> Self {
        self.checked = Some(what.into());
        self
    }

    /// With the bandwidth of moving `bytes` per run.
    pub fn moving(mut self, bytes: f64) -> Self {
        self.gb_per_s = Some(bytes / (self.median_ms * 1e-3) / 1e9);
        self
    }

    /// With the throughput of `flops` floating-point operations per run.
    pub fn computing(mut self, flops: f64) -> Self {
        self.tflop_per_s = Some(flops / (self.median_ms * 1e-3) / 1e12);
        self
    }
}

/// A benchmarked variant's name: `name`, `(candle composition)` when the plain composition the
/// op replaces was timed, and `fwd` or `fwd+bwd`.
pub fn op_name(name: &str, composition: bool, backward: bool) -> String {
    format!(
        "{name}{} {}",
        if composition {
            " (candle composition)"
        } else {
            ""
        },
        if backward { "fwd+bwd" } else { "fwd" }
    )
}

/// The line `realm bench` prints without `--json`.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] {} on {}: median {:.3} ms (min {:.3} ms, {} runs)",
            self.op, self.shape, self.dtype, self.device, self.median_ms, self.min_ms, self.iters
        )?;
        if let Some(g) = self.gb_per_s {
            write!(f, ", {g:.1} GB/s")?;
        }
        if let Some(c) = &self.checked {
            write!(f, "; checked: {c}")?;
        }
        Ok(())
    }
}

/// Median and minimum of repeated runs of `f`.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median time of one run, in milliseconds.
    pub median_ms: f64,
    /// Fastest run, in milliseconds.
    pub min_ms: f64,
    /// Runs timed (warm-up runs not counted).
    pub iters: usize,
}

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Untimed runs first (default 3).
    pub warmup: usize,
    /// Timed runs at least, however long they take (default 5).
    pub min_iters: usize,
    /// Timed runs at most (default 200).
    pub max_iters: usize,
    /// Keep timing runs until this much time has passed, within the limits (default 3 s).
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 3,
            min_iters: 5,
            max_iters: 200,
            time: Duration::from_secs(3),
        }
    }
}

/// Runs `f` `budget.warmup` times, then until `budget.time` has passed (within the iteration
/// limits), synchronising the device after each run so that GPU time is counted.
pub fn time(
    dev: &ComputeDevice,
    budget: Budget,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..budget.warmup {
        f()?;
        dev.synchronize()?;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < budget.min_iters
        || (samples.len() < budget.max_iters && start.elapsed() < budget.time)
    {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: samples[samples.len() / 2],
        min_ms: samples[0],
        iters: samples.len(),
    })
}
