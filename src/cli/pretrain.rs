//! `realm pretrain`.

use super::stage::{
    required, set_flags, set_shape, InitArgs, LoopArgs, RetrieverArgs, RunArgs, ShapeArgs,
    NOT_WITH_SETTINGS,
};
use clap::Args;
use realm::error::{Error, Result};
use realm::train::pretrain::{run_pretrain, PretrainConfig, PretrainReport};
use std::path::PathBuf;

/// REALM pre-training: salient-span masking, retrieval over the asynchronously refreshed
/// index, the marginal masked-LM loss into the encoder and both towers.
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
    /// The query tower's learning rate relative to --lr (default 1; 0: it does not learn).
    #[arg(long, conflicts_with = "freeze_retriever")]
    pub query_lr_scale: Option<f64>,
    /// The document tower's learning rate relative to --lr (default 1; 0: it does not learn and
    /// the index stays exact). Shared towers take one rate: with another than the query
    /// tower's, give --separate-towers.
    #[arg(long, conflicts_with = "freeze_retriever")]
    pub doc_lr_scale: Option<f64>,
    /// Add a copy head (a pointer over the retrieved block) to the masked-LM head.
    #[arg(long)]
    pub copy_head: bool,
    /// Mask random wordpieces instead of salient spans (REALM's random-token ablation).
    #[arg(long)]
    pub random_masks: bool,
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
            set_flags!(
                c,
                flags,
                top_k,
                max_masks,
                index_batch,
                query_lr_scale,
                doc_lr_scale
            );
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
            c.random_masks = flags.random_masks;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<PretrainReport> {
        let cfg = self.config()?;
        super::stage::warn_short_run(&cfg.train);
        run_pretrain(&cfg, &self.run.run, &self.run.options()?)
    }
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    super::stage::finish(&args.run, "pretrain", args.execute())
}
