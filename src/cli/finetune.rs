//! `realm finetune`.

use super::stage::{
    required, set_flags, set_shape, InitArgs, LoopArgs, RetrieverArgs, RunArgs, ShapeArgs,
    NOT_WITH_SETTINGS,
};
use clap::Args;
use realm::error::{Error, Result};
use realm::train::finetune::{run_finetune, FinetuneConfig, FinetuneReport};
use std::path::PathBuf;

/// Open-QA fine-tuning (ORQA/REALM): the index fixed, the query tower and the reader trained.
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
            set_flags!(c, flags, retriever_beam, reader_beam);
            set_shape!(c, self.shape);
            self.retriever.apply(&c.init, &mut c.retriever)?;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<FinetuneReport> {
        let cfg = self.config()?;
        super::stage::warn_short_run(&cfg.train);
        run_finetune(&cfg, &self.run.run, &self.run.options()?)
    }
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<()> {
    super::stage::finish(&args.run, "finetune", args.execute())
}
