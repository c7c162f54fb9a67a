//! `realm bench`: one subcommand per op, each printing its report as a line of text or, with
//! `--json`, one JSON object.

use super::{out, parse_dtype, DeviceArg};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use realm::bench::train_step::{bench_train_step, TrainStepReport, TrainStepSpec};
use realm::bench::Budget;
use realm::device::ComputeDevice;
use realm::train::trainer::LoopConfig;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

/// Time one op: the median over repeated runs after warm-up.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    op: BenchOp,
}

/// The flags every op's benchmark has.
#[derive(Args, Clone)]
struct BenchCommon {
    #[command(flatten)]
    device: DeviceArg,
    /// f32, f16 or bf16 (default: the device's, bf16 on a GPU or the emulator, f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// Seconds of measurement after warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

impl BenchCommon {
    /// The dtype asked, else the device's default.
    fn dtype(&self, dev: &ComputeDevice) -> Result<candle_core::DType> {
        match &self.dtype {
            Some(d) => parse_dtype(d),
            None => Ok(dev.default_dtype()),
        }
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
    /// A synthetic index of format 3 with REALM's block lengths (written into --dir, or reused
    /// when it holds one of --blocks and --dim): size on disk, open time, resident memory, exact
    /// CPU search at each --queries batch size, random block reads.
    Index {
        #[arg(long)]
        dir: PathBuf,
        /// Blocks (REALM's Wikipedia: 13,353,718).
        #[arg(long, default_value_t = 1_000_000)]
        blocks: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Query batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        queries: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Searches timed per batch size after the first.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// 3 (mapped, the default) or 2 (blocks.jsonl parsed into memory, for comparison).
        #[arg(long, default_value_t = 3)]
        format: u32,
        #[arg(long)]
        json: bool,
    },
    /// One REALM pre-training step, phase by phase (retrieval, forward, backward, optimizer).
    TrainStep(TrainStepArgs),
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
    /// LayerNorm or GELU over [rows, hidden] (--dtype), or the candle composition it replaces.
    Nn {
        #[command(flatten)]
        common: BenchCommon,
        /// layer-norm, gelu-erf or gelu-tanh.
        #[arg(long, default_value = "layer-norm")]
        op: String,
        #[arg(long, default_value_t = 4096)]
        rows: usize,
        #[arg(long, default_value_t = 768)]
        hidden: usize,
        /// Forward and backward.
        #[arg(long)]
        backward: bool,
        /// Time the plain candle composition instead of the fused op.
        #[arg(long)]
        composition: bool,
    },
    /// Hidden-state dropout of a [rows, hidden] tensor by the device-drawn Philox mask.
    Dropout {
        #[command(flatten)]
        common: BenchCommon,
        /// Rows (BERT's b·l).
        #[arg(long, default_value_t = 8 * 288)]
        rows: usize,
        #[arg(long, default_value_t = 768)]
        hidden: usize,
        #[arg(long, default_value_t = 0.1)]
        p: f32,
        /// Time the mask drawn on the host and uploaded, multiplied in (what the op replaced).
        #[arg(long)]
        composition: bool,
    },
    /// One multi-tensor AdamW update (f32 parameters, clipped to norm 1) of --tensors
    /// parameters of --numel elements in all (BERT-base: 199 tensors, 110M elements).
    Adamw {
        #[command(flatten)]
        common: BenchCommon,
        #[arg(long, default_value_t = 199)]
        tensors: usize,
        #[arg(long, default_value_t = 110_000_000)]
        numel: usize,
        /// Time the composition it replaced (the norm read, candle ops per parameter).
        #[arg(long)]
        composition: bool,
    },
    /// Exact inner-product top-k of random queries (--dtype) over a random f16 index.
    Mips {
        #[command(flatten)]
        common: BenchCommon,
        /// Documents in the index.
        #[arg(long, default_value_t = 1_000_000)]
        docs: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 64)]
        queries: usize,
        #[arg(long, default_value_t = 8)]
        k: usize,
        /// After timing, compare the top k of the first N queries with the float64 reference
        /// (ids and scores exact); a difference is an error.
        #[arg(long, default_value_t = 0, value_name = "N")]
        check: usize,
    },
    /// The BERT encoder: tokens/s on random full-length sequences (--dtype is the compute dtype).
    Bert {
        #[command(flatten)]
        common: BenchCommon,
        /// Hugging Face model folder.
        #[arg(long, conflicts_with = "preset")]
        model: Option<PathBuf>,
        /// Random weights of a named size instead: tiny, mini, small, medium, base or large.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        len: usize,
        /// Forward and backward (training mode).
        #[arg(long)]
        backward: bool,
    },
    /// Fused attention [b, h, l, dh] (--dtype; f16/bf16 on a GPU), optionally with padding.
    Attention {
        #[command(flatten)]
        common: BenchCommon,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 12)]
        heads: usize,
        #[arg(long, default_value_t = 288)]
        len: usize,
        #[arg(long, default_value_t = 64)]
        head_dim: usize,
        /// Fraction of every sequence that is padding (key_lens = len − round(P · len)).
        #[arg(long, default_value_t = 0.0)]
        pad_frac: f64,
        /// Dropout probability on the attention probabilities (BERT trains with 0.1).
        #[arg(long, default_value_t = 0.0)]
        dropout: f32,
        /// Forward and backward.
        #[arg(long)]
        backward: bool,
        /// Time the plain candle composition instead of the fused op.
        #[arg(long)]
        composition: bool,
    },
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.op {
        BenchOp::TrainStep(args) => {
            let report = args.execute().context("bench train-step")?;
            print(&report, args.json)
        }
        BenchOp::Index {
            dir,
            blocks,
            dim,
            queries,
            k,
            runs,
            format,
            json,
        } => {
            use realm::index::bench::{bench_index, ensure_synthetic, BenchFormat, SyntheticSpec};
            let format = match format {
                3 => BenchFormat::Mapped,
                2 => BenchFormat::Parsed,
                other => bail!("--format {other}: 2 or 3"),
            };
            let spec = SyntheticSpec {
                blocks,
                dim,
                max_tokens: realm::index::build::REALM_BLOCK_TOKENS,
                vocab: 30_522,
                seed: 1,
            };
            let written = ensure_synthetic(&dir, format, &spec).context("the synthetic index")?;
            if let Some(s) = written {
                eprintln!(
                    "wrote {blocks} blocks in {s:.1} s ({:.0} blocks/s)",
                    blocks as f64 / s
                );
            }
            let report = bench_index(&dir, format, &queries, runs, k).context("bench index")?;
            print(&report, json)
        }
        BenchOp::DocSoftmax {
            common,
            batch,
            k,
            targets,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::doc_softmax::DocSoftmaxBench {
                batch,
                k,
                targets,
                dtype: common.dtype(&dev)?,
                backward,
                composition,
            };
            let report = realm::ops::doc_softmax::bench(&dev, spec, common.budget()?)
                .context("bench doc-softmax")?;
            print(&report, common.json)
        }
        BenchOp::Nn {
            common,
            op,
            rows,
            hidden,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::nn::NnBench {
                op: op.parse()?,
                rows,
                hidden,
                dtype: common.dtype(&dev)?,
                backward,
                composition,
            };
            let report = realm::ops::nn::bench(&dev, spec, common.budget()?).context("bench nn")?;
            print(&report, common.json)
        }
        BenchOp::Dropout {
            common,
            rows,
            hidden,
            p,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::dropout::DropoutBench {
                rows,
                hidden,
                p,
                dtype: common.dtype(&dev)?,
                composition,
            };
            let report = realm::ops::dropout::bench(&dev, spec, common.budget()?)
                .context("bench dropout")?;
            print(&report, common.json)
        }
        BenchOp::Adamw {
            common,
            tensors,
            numel,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::adamw::AdamWBench {
                tensors,
                numel,
                composition,
            };
            let report =
                realm::ops::adamw::bench(&dev, spec, common.budget()?).context("bench adamw")?;
            print(&report, common.json)
        }
        BenchOp::Mips {
            common,
            docs,
            dim,
            queries,
            k,
            check,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::mips::MipsBench {
                docs,
                dim,
                queries,
                k,
                dtype: common.dtype(&dev)?,
                check,
            };
            let report =
                realm::ops::mips::bench(&dev, spec, common.budget()?).context("bench mips")?;
            print(&report, common.json)
        }
        BenchOp::Bert {
            common,
            model,
            preset,
            batch,
            len,
            backward,
        } => {
            let dev = common.device.resolve()?;
            let model = match (model, preset) {
                (Some(dir), _) => realm::bench::bert::ModelSource::Dir(dir),
                (None, Some(name)) => realm::bench::bert::ModelSource::Preset(name),
                (None, None) => bail!("bench bert needs --model DIR or --preset NAME"),
            };
            let spec = realm::bench::bert::BertBench {
                model,
                batch,
                len,
                dtype: common.dtype(&dev)?,
                backward,
            };
            let report =
                realm::bench::bert::bench(&dev, &spec, common.budget()?).context("bench bert")?;
            print(&report, common.json)
        }
        BenchOp::Attention {
            common,
            batch,
            heads,
            len,
            head_dim,
            pad_frac,
            dropout,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::attention::AttentionBench {
                batch,
                heads,
                len,
                head_dim,
                pad_frac,
                dropout,
                dtype: common.dtype(&dev)?,
                backward,
                composition,
            };
            let report = realm::ops::attention::bench(&dev, spec, common.budget()?)
                .context("bench attention")?;
            print(&report, common.json)
        }
    }
}

/// A report as one JSON object or its line of text.
fn print(report: &(impl serde::Serialize + Display), json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string(report)?);
    } else {
        out!("{report}");
    }
    Ok(())
}

/// `realm bench train-step`.
#[derive(Args, Clone, Debug)]
pub struct TrainStepArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// A preset size (tiny, mini, small, medium, base, large) or a Hugging Face BERT folder.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Queries per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Candidates per query, the null document included.
    #[arg(long, default_value_t = 8)]
    pub docs: usize,
    /// Joined encoder row length `[CLS] x [SEP] body [SEP]`.
    #[arg(long, default_value_t = 288)]
    pub len: usize,
    #[arg(long, default_value_t = 64)]
    pub query_len: usize,
    #[arg(long, default_value_t = 10)]
    pub masks: usize,
    /// Blocks in the random index.
    #[arg(long, default_value_t = 100_000)]
    pub index_size: usize,
    /// f32, bf16 or f16 (default: bf16 on a GPU or the emulator, f32 on the CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Measured steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// One JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

impl TrainStepArgs {
    pub fn execute(&self) -> Result<TrainStepReport> {
        let device = self.device.resolve()?;
        let loop_cfg = LoopConfig {
            dtype: self.dtype.clone(),
            ..LoopConfig::new(1, 1, 1e-5)
        };
        let spec = TrainStepSpec {
            model: self.model.clone(),
            batch: self.batch,
            docs: self.docs,
            len: self.len,
            query_len: self.query_len,
            masks: self.masks,
            index_size: self.index_size,
            dtype: loop_cfg.compute_dtype(device.default_dtype())?,
            steps: self.steps,
        };
        Ok(bench_train_step(&device, &spec)?)
    }
}
