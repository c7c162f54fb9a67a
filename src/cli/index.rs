//! `realm index`, and its subcommands upgrade, verify and merge.

use super::DeviceArg;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use realm::index::{build, stream, writer, BlockIndex, RetrieverModel, StoredIndex};
use std::path::PathBuf;

/// Build a document index: cut a corpus (JSONL or DPR TSV) into blocks and embed each with a
/// model's document tower (a REALM/retriever checkpoint, or a plain BERT folder with a
/// fixed-seed projection), streaming, into a folder of format 3 (mapped arrays, manifest).
/// Subcommands upgrade, verify and merge index folders.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct IndexArgs {
    #[command(subcommand)]
    action: Option<IndexAction>,
    #[command(flatten)]
    device: DeviceArg,
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    #[arg(long, required = true)]
    corpus: Option<PathBuf>,
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Body wordpieces per block (default: REALM's 288, or as many as the model's positions hold
    /// beside [CLS] and two [SEP]).
    #[arg(long)]
    block_tokens: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Skip (and count) malformed corpus lines instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Go on from the last checkpoint of a build of the same options that was killed.
    #[arg(long)]
    resume: bool,
    /// Blocks between checkpoints (written at the end of the chunk that reaches them).
    #[arg(long, default_value_t = 100_000)]
    checkpoint_every: usize,
    /// Documents per chunk: the unit of embedding batches, checkpoints and shards (a different
    /// value gives embeddings that differ in the last bits).
    #[arg(long, default_value_t = 512)]
    chunk_docs: usize,
    /// Build one part I of N (chunks c with c % N == I), for `realm index merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

#[derive(Subcommand)]
enum IndexAction {
    /// Rewrite an index of format 1 or 2 (blocks.jsonl) in format 3, in place.
    Upgrade { dir: PathBuf },
    /// Read a format-3 index whole: checksums, every block, the rows' finiteness and norms.
    Verify { dir: PathBuf },
    /// Join the shards of `realm index --shard I/N` (all N, any order) into one index.
    Merge {
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
}

pub fn run(args: IndexArgs) -> Result<()> {
    if let Some(action) = args.action {
        return run_action(action);
    }
    let (Some(model), Some(corpus), Some(out)) = (&args.model, &args.corpus, &args.out) else {
        bail!("realm index needs --model, --corpus and --out");
    };
    let dev = args.device.resolve()?;
    // Everything that can be checked is checked before the corpus is read and embedded.
    StoredIndex::check_replaceable(out, "--out")?;
    realm::io::check_new_output_dir(out, "--out")?;
    if args.block_tokens == Some(0)
        || args.batch == 0
        || args.checkpoint_every == 0
        || args.chunk_docs == 0
    {
        bail!("--block-tokens, --batch, --checkpoint-every and --chunk-docs must be at least 1");
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    realm::data::CorpusFormat::from_path(corpus)?;
    std::fs::File::open(corpus).with_context(|| format!("--corpus {}", corpus.display()))?;
    let _exec = dev.enter()?;
    let model = RetrieverModel::load(model, &dev.device)
        .with_context(|| format!("--model {}: loading the model", model.display()))?;
    let positions = model.retriever.bert_config().max_position_embeddings;
    let room = build::max_block_tokens(positions);
    let block_tokens = match args.block_tokens {
        Some(n) if n > room => bail!(
            "--block-tokens {n}: the model reads at most {positions} positions, so a block holds \
             at most {room} wordpieces ([CLS], [SEP] and [SEP] take three)"
        ),
        Some(n) => n,
        None if room == 0 => bail!("--model: {positions} positions hold no block"),
        None => build::REALM_BLOCK_TOKENS.min(room),
    };
    let opts = stream::StreamOptions {
        max_block_tokens: block_tokens,
        skip_bad_lines: args.skip_bad_lines,
        embed: build::EmbedBlocks {
            batch: args.batch,
            max_len: build::doc_input_len(positions, block_tokens),
            progress: None,
        },
        step: 0,
        docs_per_chunk: args.chunk_docs,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        shard,
        progress: Some("indexing".into()),
    };
    let stats = stream::build_index(&model, corpus, out, &opts, &dev.device)
        .with_context(|| format!("indexing {}", corpus.display()))?;
    let resumed = if stats.resumed_chunks > 0 {
        format!(", resumed after {} chunks", stats.resumed_chunks)
    } else {
        String::new()
    };
    eprintln!(
        "{} documents ({} malformed lines skipped) -> {} blocks in {:.1} s ({:.1} blocks/s{resumed}); \
         index in {}",
        stats.documents,
        stats.skipped,
        stats.blocks,
        stats.seconds,
        stats.blocks as f64 / stats.seconds,
        out.display()
    );
    Ok(())
}

/// `I/N` with I < N.
fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let parsed = text
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((i, n)) if i < n => Ok((i, n)),
        _ => bail!("--shard {text}: give I/N with 0 <= I < N, e.g. 0/4"),
    }
}

fn run_action(action: IndexAction) -> Result<()> {
    match action {
        IndexAction::Upgrade { dir } => {
            let n =
                writer::upgrade(&dir).with_context(|| format!("upgrading {}", dir.display()))?;
            eprintln!("{}: {n} blocks rewritten in format 3", dir.display());
        }
        IndexAction::Verify { dir } => {
            let n = BlockIndex::open(&dir)
                .and_then(|index| index.verify().map(|()| index.len()))
                .with_context(|| format!("verifying {}", dir.display()))?;
            eprintln!("{}: {n} blocks, all checked", dir.display());
        }
        IndexAction::Merge { out, shards } => {
            StoredIndex::check_replaceable(&out, "--out")?;
            let n = stream::merge(&shards, &out).context("merging the shards")?;
            eprintln!(
                "{} shards, {n} blocks: index in {}",
                shards.len(),
                out.display()
            );
        }
    }
    Ok(())
}
