//! The `realm` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use realm::bench::Budget;
use realm::device::{ComputeDevice, DeviceSpec};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "realm",
    version,
    about = "REALM retrieval-augmented language model kernels and training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every registered kernel check against a float64 reference; non-zero exit on failure.
    Selftest {
        #[command(flatten)]
        device: DeviceArg,
        /// Only the checks whose `op/case` contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Time one op: the median over repeated runs after warm-up.
    Bench {
        #[command(subcommand)]
        op: BenchOp,
    },
}

#[derive(Args, Clone)]
struct DeviceArg {
    /// auto, cpu, emulate (CUDA kernels on the CPU emulator) or cuda[:N].
    #[arg(long, default_value = "auto")]
    device: String,
}

impl DeviceArg {
    fn resolve(&self) -> Result<ComputeDevice> {
        let spec: DeviceSpec = self.device.parse()?;
        let dev = ComputeDevice::resolve(spec)?;
        eprintln!("device: {dev}");
        Ok(dev)
    }
}

#[derive(Args, Clone)]
struct BenchCommon {
    #[command(flatten)]
    device: DeviceArg,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Seconds of measurement after warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

impl BenchCommon {
    fn dtype(&self) -> Result<candle_core::DType> {
        Ok(match self.dtype.as_str() {
            "f32" => candle_core::DType::F32,
            "f16" => candle_core::DType::F16,
            "bf16" => candle_core::DType::BF16,
            other => bail!("--dtype {other}: use f32, f16 or bf16"),
        })
    }

    fn budget(&self) -> Result<Budget> {
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            bail!("--seconds must be a positive number, got {}", self.seconds);
        }
        Ok(Budget {
            time: Duration::from_secs_f64(self.seconds),
            ..Budget::default()
        })
    }
}

#[derive(Subcommand)]
enum BenchOp {
    /// Softmax over retrieved documents, or with --targets the marginal log-likelihood.
    DocSoftmax {
        #[command(flatten)]
        common: BenchCommon,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 5000)]
        k: usize,
        /// Targets per example (masked tokens) for the marginal; 0 = doc_softmax alone.
        #[arg(long, default_value_t = 0)]
        targets: usize,
        /// Forward and backward.
        #[arg(long)]
        backward: bool,
        /// Time the plain candle composition instead of the fused op.
        #[arg(long)]
        composition: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Selftest { device, filter } => selftest(&device.resolve()?, filter.as_deref()),
        Command::Bench { op } => bench(op),
    }
}

fn selftest(dev: &ComputeDevice, filter: Option<&str>) -> Result<()> {
    let rows = realm::selftest::run(dev, filter);
    if rows.is_empty() {
        bail!("no check matches the filter {filter:?}");
    }
    println!(
        "{:<26} {:<34} {:>12} {:>10}  result",
        "op", "case", "max rel err", "bound"
    );
    let mut failures = 0;
    for row in &rows {
        let (err, bound, verdict) = match &row.outcome {
            Ok(o) => (
                format!("{:.3e}", o.max_rel_err),
                format!("{:.1e}", o.tolerance),
                if o.passed() {
                    "ok".to_string()
                } else {
                    "FAIL".to_string()
                },
            ),
            Err(e) => ("-".into(), "-".into(), format!("FAIL: {e}")),
        };
        if !row.passed() {
            failures += 1;
        }
        println!(
            "{:<26} {:<34} {:>12} {:>10}  {verdict}",
            row.op, row.name, err, bound
        );
    }
    println!("{} passed, {} failed", rows.len() - failures, failures);
    if failures > 0 {
        bail!("{failures} of {} checks failed on {dev}", rows.len());
    }
    Ok(())
}

fn bench(op: BenchOp) -> Result<()> {
    let (report, json) = match op {
        BenchOp::DocSoftmax {
            common,
            batch,
            k,
            targets,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::doc_softmax::BenchSpec {
                batch,
                k,
                targets,
                dtype: common.dtype()?,
                backward,
                composition,
            };
            let report = realm::ops::doc_softmax::bench(&dev, spec, common.budget()?)
                .context("bench doc-softmax")?;
            (report, common.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} [{}] {} on {}: median {:.3} ms (min {:.3} ms, {} runs){}",
            report.op,
            report.shape,
            report.dtype,
            report.device,
            report.median_ms,
            report.min_ms,
            report.iters,
            report
                .gb_per_s
                .map(|g| format!(", {g:.1} GB/s"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
