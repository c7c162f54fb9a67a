//! The command-line face of the training stages: `realm ict`, `realm pretrain`, `realm finetune`
//! and `realm bench train-step`. Each stage takes a run directory, its settings as flags (or a
//! JSON config file of the stage's config struct, `--config`), and `--resume`, which continues the
//! run directory's checkpoint with the configuration saved there.

use super::bench::{bench_train_step, TrainStepReport, TrainStepSpec};
use super::finetune::{run_finetune, FinetuneConfig, FinetuneReport};
use super::ict::{run_ict, IctConfig, IctReport};
use super::interrupt::{exit_status, install_signal_handlers};
use super::models::ModelInit;
use super::pretrain::{run_pretrain, PretrainConfig, PretrainReport};
use super::run::{RunDir, StageConfig};
use super::trainer::{LoopConfig, RunOptions};
use crate::device::{ComputeDevice, DeviceSpec};
use crate::error::{Error, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The flags that take a stage's configuration from elsewhere (the run's saved one, a JSON
/// file): none of the settings flags goes with them.
const NOT_WITH_SETTINGS: [&str; 2] = ["resume", "config"];

/// Where and how a stage runs.
#[derive(Args, Clone, Debug)]
#[group(id = "run_flags")]
pub struct RunArgs {
    /// auto, cpu, emulate, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
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
    fn options(&self) -> Result<RunOptions> {
        let spec: DeviceSpec = self.device.parse()?;
        let device = ComputeDevice::resolve(spec)?;
        eprintln!("device: {}", device.description());
        Ok(RunOptions {
            device,
            resume: self.resume,
            quiet: self.quiet,
            stop_after: None,
            stop: Some(install_signal_handlers()?),
        })
    }

    /// Prints a stage's report as JSON on stdout. When a signal stopped the run, also says on
    /// stderr where it stopped and how to continue, and returns the exit status the signal
    /// implies (128 + its number).
    pub fn finish<R: serde::Serialize>(&self, stage: &str, report: &R) -> Result<Option<i32>> {
        print_report(report)?;
        let Some(signal) = install_signal_handlers()?.signal() else {
            return Ok(None);
        };
        let ckpt = self.run.join(super::run::CHECKPOINT);
        let (state, _) = super::state::load_trainer(&ckpt)?;
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
    fn config<C: StageConfig>(&self, flags: impl FnOnce() -> Result<C>) -> Result<C> {
        let (config, path): (C, PathBuf) = if self.resume {
            let run = RunDir::open(&self.run)?;
            (run.config()?, run.root().join(super::run::CONFIG))
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
    fn init(&self) -> Result<ModelInit> {
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
    fn apply(&self, c: &mut LoopConfig) {
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
    /// Separate query and document towers (default: shared).
    #[arg(long)]
    pub separate_towers: bool,
}

impl RetrieverArgs {
    /// Sets the retriever's shape; an error when the models start from a checkpoint, whose
    /// retriever keeps its own.
    fn apply(&self, init: &ModelInit, c: &mut crate::model::RetrieverConfig) -> Result<()> {
        if let (Some(dir), true) = (
            init.checkpoint(),
            self.proj_size.is_some() || self.separate_towers,
        ) {
            return Err(Error::bad_input(
                "command line",
                "--proj-size/--separate-towers",
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
        Ok(())
    }
}

/// Sets `$cfg.$field` from an `Option` flag when given.
macro_rules! set {
    ($cfg:expr, $args:expr, $($field:ident),+) => {
        $(if let Some(v) = $args.$field.clone() { $cfg.$field = v; })+
    };
}

/// Sets the text shapes of a stage config from [`ShapeArgs`].
macro_rules! set_shape {
    ($cfg:expr, $shape:expr) => {
        set!($cfg, $shape, query_len, doc_len, block_len);
        $cfg.skip_bad_lines = $shape.skip_bad_lines;
    };
}

/// `realm ict`.
#[derive(Args, Clone, Debug)]
pub struct IctArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub init: InitArgs,
    #[command(flatten)]
    pub train: LoopArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    #[command(flatten)]
    pub stage: IctFlags,
}

/// The flags of `realm ict` alone.
#[derive(Args, Clone, Debug)]
#[group(id = "stage_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct IctFlags {
    /// Corpus: JSONL {"id","title","text"} or DPR TSV.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Probability of removing the query sentence from its block (ORQA: 0.9).
    #[arg(long)]
    pub remove_prob: Option<f64>,
    /// Blocks held out for recall@1/@5.
    #[arg(long)]
    pub heldout: Option<usize>,
    /// Contexts the held-out queries retrieve among.
    #[arg(long)]
    pub eval_pool: Option<usize>,
    /// Held-out recall every N steps (0: before and after only).
    #[arg(long)]
    pub eval_every: Option<u64>,
}

impl IctArgs {
    pub fn config(&self) -> Result<IctConfig> {
        self.run.config(|| {
            let flags = &self.stage;
            let corpus = required(&flags.corpus, "--corpus")?;
            let mut c = IctConfig::new(self.init.init()?, corpus);
            self.train.apply(&mut c.train);
            set!(c, flags, remove_prob, heldout, eval_pool, eval_every);
            set_shape!(c, self.shape);
            self.retriever.apply(&c.init, &mut c.retriever)?;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<IctReport> {
        let cfg = self.config()?;
        run_ict(&cfg, &self.run.run, &self.run.options()?)
    }
}

/// `realm pretrain`.
#[derive(Args, Clone, Debug)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub init: InitArgs,
    #[command(flatten)]
    pub train: LoopArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    #[command(flatten)]
    pub stage: PretrainFlags,
}

/// The flags of `realm pretrain` alone.
#[derive(Args, Clone, Debug)]
#[group(id = "stage_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct PretrainFlags {
    /// The knowledge corpus (retrieved blocks).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Texts to mask (default: the corpus).
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Pre-train on these questions' cloze forms (NQ-open JSONL or SQuAD), the answer masked,
    /// instead of masking texts.
    #[arg(long, conflicts_with = "examples")]
    pub cloze_questions: Option<PathBuf>,
    /// A prebuilt index of the corpus by the starting document tower (`realm index`).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Candidates per query, the null document included (REALM: 8; 1: null document only).
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub max_masks: Option<usize>,
    /// Refresh the index every N steps (0: never; REALM: 500).
    #[arg(long)]
    pub refresh_every: Option<u64>,
    /// Swap a refresh in exactly N steps after it starts (reproducible runs) instead of as soon
    /// as it is ready.
    #[arg(long)]
    pub refresh_swap_after: Option<u64>,
    /// Threads of the refresh on the CPU.
    #[arg(long)]
    pub refresh_threads: Option<usize>,
    #[arg(long)]
    pub index_batch: Option<usize>,
    /// Let an example retrieve blocks of its own source document.
    #[arg(long)]
    pub keep_own_doc: bool,
    /// Train only the knowledge-augmented encoder; the retriever and the index stay fixed.
    #[arg(long)]
    pub freeze_retriever: bool,
    /// Add a copy head (a pointer over the retrieved block) to the masked-LM head.
    #[arg(long)]
    pub copy_head: bool,
}

impl PretrainArgs {
    pub fn config(&self) -> Result<PretrainConfig> {
        self.run.config(|| {
            let flags = &self.stage;
            let corpus = required(&flags.corpus, "--corpus")?;
            let mut c = PretrainConfig::new(self.init.init()?, corpus);
            self.train.apply(&mut c.train);
            c.examples = flags.examples.clone();
            c.cloze_questions = flags.cloze_questions.clone();
            c.index = flags.index.clone();
            set!(c, flags, top_k, max_masks, index_batch);
            set_shape!(c, self.shape);
            self.retriever.apply(&c.init, &mut c.retriever)?;
            if let Some(v) = flags.refresh_every {
                c.refresh.every = v;
            }
            if flags.refresh_swap_after.is_some() {
                c.refresh.swap_after = flags.refresh_swap_after;
            }
            if let Some(v) = flags.refresh_threads {
                c.refresh.threads = v;
            }
            let refresh_flags = flags.refresh_every.is_some()
                || flags.refresh_swap_after.is_some()
                || flags.refresh_threads.is_some();
            if flags.freeze_retriever && refresh_flags {
                return Err(Error::bad_input(
                    "command line",
                    "--refresh-*",
                    "a frozen retriever (--freeze-retriever) never refreshes its index",
                ));
            }
            c.exclude_own_doc = !flags.keep_own_doc;
            c.freeze_retriever = flags.freeze_retriever;
            c.copy_head = flags.copy_head;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<PretrainReport> {
        let cfg = self.config()?;
        run_pretrain(&cfg, &self.run.run, &self.run.options()?)
    }
}

/// `realm finetune`.
#[derive(Args, Clone, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub init: InitArgs,
    #[command(flatten)]
    pub train: LoopArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    #[command(flatten)]
    pub stage: FinetuneFlags,
}

/// The flags of `realm finetune` alone.
#[derive(Args, Clone, Debug)]
#[group(id = "stage_flags", conflicts_with_all = NOT_WITH_SETTINGS)]
pub struct FinetuneFlags {
    /// Training questions: NQ-open JSONL or SQuAD JSON.
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// A corpus to index with the starting document tower and fine-tune over (default: the
    /// starting checkpoint's index/).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Blocks per question for the retriever's loss (ORQA: 5,000 on accelerators).
    #[arg(long)]
    pub retriever_beam: Option<usize>,
    /// Blocks the reader reads per question (5).
    #[arg(long)]
    pub reader_beam: Option<usize>,
}

impl FinetuneArgs {
    pub fn config(&self) -> Result<FinetuneConfig> {
        self.run.config(|| {
            let flags = &self.stage;
            let questions = required(&flags.questions, "--questions")?;
            if flags.corpus.is_none() && self.shape.block_len.is_some() {
                return Err(Error::bad_input(
                    "command line",
                    "--block-len",
                    "cuts a corpus into blocks: it needs --corpus (the checkpoint's index has its blocks)",
                ));
            }
            let mut c = FinetuneConfig::new(self.init.init()?, questions);
            self.train.apply(&mut c.train);
            c.corpus = flags.corpus.clone();
            set!(c, flags, retriever_beam, reader_beam);
            set_shape!(c, self.shape);
            self.retriever.apply(&c.init, &mut c.retriever)?;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<FinetuneReport> {
        let cfg = self.config()?;
        run_finetune(&cfg, &self.run.run, &self.run.options()?)
    }
}

/// `realm bench train-step`.
#[derive(Args, Clone, Debug)]
pub struct TrainStepArgs {
    #[arg(long, default_value = "auto")]
    pub device: String,
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
        let device = ComputeDevice::resolve(self.device.parse()?)?;
        eprintln!("device: {}", device.description());
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
        bench_train_step(&device, &spec)
    }
}

fn required(value: &Option<PathBuf>, flag: &'static str) -> Result<PathBuf> {
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
