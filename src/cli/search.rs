//! `realm search`.

use super::{blocks_per_query, out, DeviceArg};
use anyhow::{bail, Context, Result};
use clap::Args;
use realm::index::{batch, Hit, Searcher};
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
    /// One JSON object per hit (query, rank, block, doc_id, title, score) instead of text;
    /// with --queries, one object per query (query, hits).
    #[arg(long)]
    json: bool,
    /// Search every query of a file (one per line, or JSONL with "question"): one result line
    /// per query, the throughput on stderr at the end.
    #[arg(long, conflicts_with = "query")]
    queries: Option<PathBuf>,
    /// Queries per query-tower pass and index scan (with --queries).
    #[arg(long, default_value_t = 64, requires = "queries")]
    batch: usize,
    #[arg(required_unless_present = "queries")]
    query: Option<String>,
}

pub fn run(args: SearchArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let index = &args.index;
    let (queries, batch) = match (&args.queries, args.query) {
        (Some(file), _) => (
            batch::read_queries(file).with_context(|| format!("--queries {}", file.display()))?,
            args.batch,
        ),
        (None, Some(q)) if q.trim().is_empty() => bail!("the query is empty"),
        (None, Some(q)) => (vec![q], 1),
        (None, None) => bail!("give a query or --queries FILE"),
    };
    let one = queries.len() == 1 && batch == 1;
    let _exec = dev.enter()?;
    let searcher = Searcher::open(index, args.model.as_deref(), &dev.device)
        .with_context(|| format!("opening the index {}", index.display()))?;
    if !searcher.index.manifest.has_checksums() {
        eprintln!(
            "note: {} predates index checksums (format 1), so its files were not checked against \
             each other; rebuilding it with `realm index` adds them",
            index.display()
        );
    }
    let k = blocks_per_query("-k", args.k, searcher.len())?;
    let json = args.json;
    let speed = batch::search_all(&searcher, &queries, k, batch, |query, hits| {
        if one {
            print_hits(&searcher, query, hits, json)
        } else {
            print_query_line(query, hits, json)
        }
    })?;
    if !one {
        eprintln!(
            "{} queries in {:.3} s: {:.1} queries/s (batches of {batch}, k = {k}, {} blocks)",
            speed.queries,
            speed.seconds,
            speed.per_second(),
            searcher.len()
        );
    }
    Ok(())
}

/// One query's hits, one line each (text with a snippet, or JSON objects).
fn print_hits(searcher: &Searcher, query: &str, hits: &[Hit], json: bool) -> Result<()> {
    for (rank, hit) in hits.iter().enumerate() {
        if json {
            let mut obj = serde_json::to_value(hit)?;
            obj["rank"] = (rank + 1).into();
            obj["query"] = query.into();
            out!("{obj}");
        } else {
            let text = realm::model::reader::span_text(
                &searcher.model.tokenizer,
                &searcher.block(hit)?.tokens,
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

/// One line for a query of a batch: JSON `{"query", "hits": [...]}`, or the query, a tab and
/// `[block] title (score)` per hit.
fn print_query_line(query: &str, hits: &[Hit], json: bool) -> Result<()> {
    if json {
        let obj = serde_json::json!({ "query": query, "hits": hits });
        out!("{obj}");
    } else {
        let found: Vec<String> = hits
            .iter()
            .map(|h| format!("[{}] {} ({:.3})", h.block, h.title, h.score))
            .collect();
        out!("{query}\t{}", found.join("; "));
    }
    Ok(())
}
