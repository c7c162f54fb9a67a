//! What the training stages' commands share (`realm ict`, `realm pretrain`, `realm finetune`):
//! each takes a run directory, its settings as flags (or a JSON config file of the stage's config
//! struct, `--config`), and `--resume`, which continues the run directory's checkpoint with the
//! configuration saved there.

use super::DeviceArg;
use clap::Args;
use realm::error::{Error, Result};
use realm::model::TowerPooling;
use realm::train::interrupt::{exit_status, install_signal_handlers};
use realm::train::models::ModelInit;
use realm::train::run::{RunDir, StageConfig};
use realm::train::trainer::{LoopConfig, RunOptions};
use std::path::{Path, PathBuf};

/// The flags that take a stage's configuration from elsewhere (the run's saved one, a JSON
/// file): none of the settings flags goes with them.
pub const NOT_WITH_SETTINGS: [&str; 2] = ["resume", "config"];

/// Where and how a stage runs.
#[derive(Args, Clone, Debug)]
#[group(id = "run_flags")]
pub struct RunArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// The run directory: config.json, metrics.jsonl, checkpoint/, index/.
    #[arg(long)]
    pub run: PathBuf,
    /// Continue the run directory's checkpoint with its saved configuration (no settings flags).
    #[arg(long, conflicts_with = "config")]
    pub resume: bool,
    /// The stage's configuration as JSON (the fields of its config struct, as the run directory's
    /// config.json shows them), instead of the flags below.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// The run options; Ctrl-C and SIGTERM from now on stop the training loop after its step,
    /// with a checkpoint.
    /// In a distributed run each rank takes the GPU of its local rank (`--device cuda` or
    /// `auto`) and, with the `nccl` feature, sums gradients through NCCL.
    pub fn options(&self) -> Result<RunOptions> {
        let device = self.device.resolve_for_rank(realm::dist::local_rank())?;
        let dist = realm::dist::world().for_device(&device.device)?;
        Ok(RunOptions {
            device,
            resume: self.resume,
            quiet: self.quiet,
            stop_after: None,
            stop: Some(install_signal_handlers()?),
            dist,
        })
    }

    /// Prints a stage's report as JSON on stdout. When a signal stopped the run, also says on
    /// stderr where it stopped and how to continue, and returns the exit status the signal
    /// implies (128 + its number).
    /// In a distributed run only rank 0 prints.
    pub fn finish<R: serde::Serialize>(&self, stage: &str, report: &R) -> Result<Option<i32>> {
        let root = realm::dist::world().is_root();
        if root {
            print_report(report)?;
        }
        let Some(signal) = install_signal_handlers()?.signal() else {
            return Ok(None);
        };
        if !root {
            return Ok(Some(exit_status(signal)));
        }
        let ckpt = self.run.join(realm::train::run::CHECKPOINT);
        let (state, _) = realm::train::state::load_trainer(&ckpt)?;
        eprintln!(
            "realm {stage}: stopped by signal {signal} at step {} of {}; checkpoint: {}\n\
             continue with: realm {stage} --run {} --resume",
            state.step,
            state.total_steps,
            ckpt.display(),
            self.run.display()
        );
        Ok(Some(exit_status(signal)))
    }

    /// The configuration: the run's own when resuming, `--config` when given, else `flags()`;
    /// a configuration read from a file is validated, errors naming the file.
    pub fn config<C: StageConfig>(&self, flags: impl FnOnce() -> Result<C>) -> Result<C> {
        let (config, path): (C, PathBuf) = if self.resume {
            let run = RunDir::open(&self.run)?;
            (run.config()?, run.root().join(realm::train::run::CONFIG))
        } else if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
            let config = serde_json::from_str(&text).map_err(|e| Error::file(path, e))?;
            (config, path.clone())
        } else {
            return flags();
        };
        config.validate().map_err(|e| Error::file(path, e))?;
        Ok(config)
    }
}

/// Where the models start.
#[derive(Args, Clone, Debug)]
#[group(id = "init_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct InitArgs {
    /// A Hugging Face BERT folder, or the checkpoint of an earlier stage (RUN/checkpoint).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Random weights of a named size (tiny, mini, small, medium, base, large) instead ...
    #[arg(long, requires = "vocab")]
    pub preset: Option<String>,
    /// ... with this vocab.txt (uncased WordPiece).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
}

impl InitArgs {
    pub fn init(&self) -> Result<ModelInit> {
        ModelInit::from_args(
            self.init.as_deref(),
            self.preset.as_deref(),
            self.vocab.as_deref(),
        )
    }
}

/// The optimisation flags every stage has; unset ones keep the stage's default.
#[derive(Args, Clone, Debug)]
#[group(id = "loop_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct LoopArgs {
    #[arg(long)]
    pub steps: Option<u64>,
    /// Examples (queries, questions) per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warm-up steps (default min(10000, max(100, steps/10)), capped at the steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip (0: none).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Checkpoint every N steps (default 500; 0: not by steps). Runs also checkpoint at the
    /// end and on Ctrl-C / SIGTERM.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoint whenever M minutes have passed since the last one (default 10; 0: not by
    /// time).
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    /// A metrics line every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// BERT compute dtype: f32, bf16 or f16 (default: bf16 on a GPU or the emulator, f32 on the CPU).
    #[arg(long)]
    pub dtype: Option<String>,
}

impl LoopArgs {
    pub fn apply(&self, c: &mut LoopConfig) {
        if let Some(v) = self.steps {
            c.steps = v;
        }
        if let Some(v) = self.batch {
            c.batch = v;
        }
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if self.warmup.is_some() {
            c.warmup = self.warmup;
        }
        if let Some(v) = self.weight_decay {
            c.adamw.weight_decay = v;
        }
        if let Some(v) = self.clip_norm {
            c.clip_norm = v;
        }
        if let Some(v) = self.checkpoint_every {
            c.checkpoint_every = v;
        }
        if let Some(v) = self.checkpoint_minutes {
            c.checkpoint_minutes = v;
        }
        if let Some(v) = self.log_every {
            c.log_every = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if self.dtype.is_some() {
            c.dtype = self.dtype.clone();
        }
    }
}

/// Text shapes every stage has; unset ones keep the stage's default.
#[derive(Args, Clone, Debug)]
#[group(id = "shape_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct ShapeArgs {
    /// `[CLS] query [SEP]` in wordpieces.
    #[arg(long)]
    pub query_len: Option<usize>,
    /// Document inputs in wordpieces (see the stage's config).
    #[arg(long)]
    pub doc_len: Option<usize>,
    /// Body wordpieces per block when a corpus is cut into blocks.
    #[arg(long)]
    pub block_len: Option<usize>,
    /// Skip (and count) malformed corpus lines instead of stopping.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

/// The retriever's shape, when it starts from BERT rather than a checkpoint.
#[derive(Args, Clone, Debug)]
#[group(id = "retriever_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct RetrieverArgs {
    /// Projection width (128).
    #[arg(long)]
    pub proj_size: Option<usize>,
    /// Separate query and document towers (default: shared). From a checkpoint whose towers
    /// are shared, both start as its tower (REALM's two embedders start from the ICT module).
    #[arg(long)]
    pub separate_towers: bool,
    /// What the projection reads: `mean` (the mean of the hidden states; the default from a
    /// BERT folder, whose towers then start as that encoder's own mean-pooled cosine retrieval)
    /// or `pooler` (REALM's [CLS] pooler output; the default from scratch).
    #[arg(long, value_parser = ["mean", "pooler"])]
    pub pooling: Option<String>,
}

impl RetrieverArgs {
    /// Sets the retriever's shape; an error when the models start from a checkpoint, whose
    /// retriever keeps its own (except that its shared towers may be separated).
    pub fn apply(&self, init: &ModelInit, c: &mut realm::model::RetrieverConfig) -> Result<()> {
        if let (Some(dir), true) = (
            init.checkpoint(),
            self.proj_size.is_some() || self.pooling.is_some(),
        ) {
            return Err(Error::bad_input(
                "command line",
                "--proj-size/--pooling",
                format!(
                    "shape a retriever that starts from BERT; {} is a checkpoint, whose retriever keeps its shape",
                    dir.display()
                ),
            ));
        }
        if let Some(p) = self.proj_size {
            c.proj_size = p;
        }
        c.shared_towers = !self.separate_towers;
        match self.pooling.as_deref() {
            Some("mean") => c.pooling = TowerPooling::Mean,
            Some(_) => c.pooling = TowerPooling::Pooler,
            None => {}
        }
        Ok(())
    }
}

/// Says on stderr what makes the run too short to train at its learning rate
/// ([`LoopConfig::short_run_warnings`]); the run goes ahead.
pub fn warn_short_run(train: &LoopConfig) {
    for warning in train.short_run_warnings() {
        eprintln!("warning: {warning}");
    }
}

/// Sets `$cfg.$field` from an `Option` flag when given.
macro_rules! set_flags {
    ($cfg:expr, $args:expr, $($field:ident),+) => {
        $(if let Some(v) = $args.$field.clone() { $cfg.$field = v; })+
    };
}

/// Sets the text shapes of a stage config from [`ShapeArgs`].
macro_rules! set_shape {
    ($cfg:expr, $shape:expr) => {
        set_flags!($cfg, $shape, query_len, doc_len, block_len);
        $cfg.skip_bad_lines = $shape.skip_bad_lines;
    };
}
pub(crate) use {set_flags, set_shape};

pub fn required(value: &Option<PathBuf>, flag: &'static str) -> Result<PathBuf> {
    value.clone().ok_or_else(|| {
        Error::bad_input(
            "command line",
            flag,
            format!("{flag} FILE is required (or --config FILE, or --resume)"),
        )
    })
}

/// Prints a stage's report as pretty JSON on stdout (a closed pipe is an `Error::Io`, not a
/// panic).
pub fn print_report<T: serde::Serialize>(report: &T) -> Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(report).map_err(|e| Error::file(Path::new("-"), e))?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Runs a stage and prints its report; a stage stopped by a signal exits with the status the
/// signal implies, after its checkpoint is written.
pub fn finish<R: serde::Serialize>(
    run: &RunArgs,
    stage: &'static str,
    report: Result<R>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let report = report.context(stage)?;
    match run.finish(stage, &report).context(stage)? {
        Some(code) => std::process::exit(code),
        None => Ok(()),
    }
}
