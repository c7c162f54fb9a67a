//! `realm vocab`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Train a WordPiece vocabulary (BERT's vocab.txt, special tokens at ids 0-4) on a corpus and
/// optional QA files.
#[derive(Args)]
pub struct VocabArgs {
    /// Corpus: .jsonl ({"id","title","text"}) or DPR .tsv.
    #[arg(long)]
    corpus: PathBuf,
    /// QA files (NQ-open .jsonl or SQuAD .json) whose questions and answers are added.
    #[arg(long)]
    extra: Vec<PathBuf>,
    /// Tokens in all, special tokens included.
    #[arg(long, default_value_t = 8000)]
    size: usize,
    /// Keep case (a cased vocabulary); the default is uncased, as BERT-base-uncased.
    #[arg(long)]
    cased: bool,
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: VocabArgs) -> Result<()> {
    realm::io::check_new_output(&args.out, "--out")?;
    let spec = realm::data::vocab::VocabSpec {
        corpus: args.corpus,
        extra: args.extra,
        size: args.size,
        lowercase: !args.cased,
        min_frequency: args.min_frequency,
    };
    let summary = realm::data::vocab::build_vocab(&spec, &args.out).context("vocab")?;
    eprintln!(
        "{} tokens from {} texts written to {}",
        summary.tokens,
        summary.texts,
        args.out.display()
    );
    Ok(())
}
