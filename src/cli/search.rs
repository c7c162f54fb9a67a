//! `realm search`.

use super::{blocks_per_query, out, DeviceArg};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Search an index with the query tower of the model that built it.
#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Index folder written by `realm index` (or by training).
    #[arg(long)]
    index: PathBuf,
    /// Model folder (default: the one the index's manifest names, relative to the index folder;
    /// for an index inside a training checkpoint, that checkpoint).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Blocks to show: 1 to the index's size (default 5, or all of a smaller index).
    #[arg(short, long)]
    k: Option<usize>,
    /// One JSON object per hit (query, rank, block, doc_id, title, score) instead of text.
    #[arg(long)]
    json: bool,
    query: String,
}

pub fn run(args: SearchArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let (index, query) = (&args.index, args.query.as_str());
    if query.trim().is_empty() {
        bail!("the query is empty");
    }
    let _exec = dev.enter()?;
    let searcher = realm::index::Searcher::open(index, args.model.as_deref(), &dev.device)
        .with_context(|| format!("opening the index {}", index.display()))?;
    if !searcher.index.manifest.has_checksums() {
        eprintln!(
            "note: {} predates index checksums (format 1), so its files were not checked against \
             each other; rebuilding it with `realm index` adds them",
            index.display()
        );
    }
    let k = blocks_per_query("-k", args.k, searcher.index.blocks.len())?;
    let hits = searcher.search(&[query], k)?.remove(0);
    for (rank, hit) in hits.iter().enumerate() {
        if args.json {
            let mut obj = serde_json::to_value(hit)?;
            obj["rank"] = (rank + 1).into();
            obj["query"] = query.into();
            out!("{obj}");
        } else {
            let text = realm::model::reader::span_text(
                &searcher.model.tokenizer,
                &searcher.block(hit).tokens,
            )?;
            let snippet: String = text.chars().take(100).collect();
            out!(
                "{:>2}. {:>8.3}  [{}] {}: {snippet}...",
                rank + 1,
                hit.score,
                hit.doc_id,
                hit.title
            );
        }
    }
    Ok(())
}
