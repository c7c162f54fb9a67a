//! `realm ict`.

use super::stage::{
    required, set_flags, set_shape, InitArgs, LoopArgs, RetrieverArgs, RunArgs, ShapeArgs,
    NOT_WITH_SETTINGS,
};
use clap::Args;
use realm::error::Result;
use realm::train::ict::{run_ict, IctConfig, IctReport};
use std::path::PathBuf;

/// ICT warm start of the retriever (ORQA's Inverse Cloze Task, in-batch negatives), with
/// held-out recall@1/@5. Prints the report as JSON.
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
            set_flags!(c, flags, remove_prob, heldout, eval_pool, eval_every);
            set_shape!(c, self.shape);
            self.retriever.apply(&c.init, &mut c.retriever)?;
            Ok(c)
        })
    }

    pub fn execute(&self) -> Result<IctReport> {
        let cfg = self.config()?;
        super::stage::warn_short_run(&cfg.train);
        run_ict(&cfg, &self.run.run, &self.run.options()?)
    }
}

pub fn run(args: IctArgs) -> anyhow::Result<()> {
    super::stage::finish(&args.run, "ict", args.execute())
}
