//! `realm eval`.

use super::{out, DeviceArg};
use anyhow::{Context, Result};
use clap::Args;
use realm::eval;
use std::path::PathBuf;

/// Evaluate a training checkpoint on questions: retrieval recall@1/@5/@k, the reader's exact
/// match, zero-shot cloze exact match with retrieval and with the null document only, and
/// retrieval utility. The report goes to stdout as JSON.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    device: DeviceArg,
    #[arg(long)]
    checkpoint: PathBuf,
    /// NQ-open style .jsonl ({"question","answers"}) or SQuAD .json.
    #[arg(long)]
    questions: PathBuf,
    /// Index built by the checkpoint's document tower (default: CHECKPOINT/index).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Corpus to index with the checkpoint when it has no index.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Blocks retrieved per question (recall@k, the cloze marginal).
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    /// Blocks the reader reads per question.
    #[arg(long, default_value_t = 5)]
    reader_beam: usize,
    #[arg(long)]
    max_questions: Option<usize>,
    /// Run directory: append the metrics line to RUN/metrics.jsonl.
    #[arg(long)]
    run: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let mut cfg = eval::EvalConfig::new(args.checkpoint, args.questions);
    (cfg.index, cfg.corpus, cfg.top_k) = (args.index, args.corpus, args.k);
    (cfg.reader_beam, cfg.max_questions, cfg.quiet) =
        (args.reader_beam, args.max_questions, args.quiet);
    let report = eval::evaluate(&cfg, &dev).context("eval")?;
    if let Some(run) = args.run {
        eval::log_metrics(&run, &report).context("writing the metrics line")?;
    }
    out!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
