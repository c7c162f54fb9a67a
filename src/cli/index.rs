//! `realm index`.

use super::DeviceArg;
use anyhow::{bail, Context, Result};
use clap::Args;
use realm::index::{build, RetrieverModel, StoredIndex};
use std::path::PathBuf;

/// Build a document index: cut a corpus (JSONL or DPR TSV) into blocks and embed each with a
/// model's document tower (a REALM/retriever checkpoint, or a plain BERT folder with a
/// fixed-seed projection), into a folder (f16 embeddings, block records, manifest).
#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    device: DeviceArg,
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    corpus: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Body wordpieces per block (default: REALM's 288, or as many as the model's positions hold
    /// beside [CLS] and two [SEP]).
    #[arg(long)]
    block_tokens: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Skip (and count) malformed corpus lines instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
}

pub fn run(args: IndexArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let (corpus, out) = (&args.corpus, &args.out);
    // Everything that can be checked is checked before the corpus is read and embedded.
    StoredIndex::check_replaceable(out, "--out")?;
    realm::io::check_new_output_dir(out, "--out")?;
    if args.block_tokens == Some(0) || args.batch == 0 {
        bail!("--block-tokens and --batch must be at least 1");
    }
    realm::data::CorpusFormat::from_path(corpus)?;
    std::fs::File::open(corpus).with_context(|| format!("--corpus {}", corpus.display()))?;
    let _exec = dev.enter()?;
    let model = RetrieverModel::load(&args.model, &dev.device)
        .with_context(|| format!("--model {}: loading the model", args.model.display()))?;
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
    let opts = build::IndexCorpus {
        max_block_tokens: block_tokens,
        skip_bad_lines: args.skip_bad_lines,
        embed: build::EmbedBlocks {
            batch: args.batch,
            max_len: build::doc_input_len(positions, block_tokens),
            progress: Some("embedding".into()),
        },
        step: 0,
    };
    let (index, stats) = build::index_corpus(&model, corpus, &opts, &dev.device)
        .with_context(|| format!("indexing {}", corpus.display()))?;
    index
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{} documents ({} malformed lines skipped) -> {} blocks, embedded in {:.1} s ({:.1} blocks/s); \
         index in {}",
        stats.documents,
        stats.skipped,
        stats.blocks,
        stats.embed_seconds,
        stats.blocks as f64 / stats.embed_seconds,
        out.display()
    );
    Ok(())
}
