//! `realm embed`.

use super::{parse_dtype, DeviceArg};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Sentence embeddings of a file of texts (one per line, or JSONL with "text") with a BERT
/// model folder, written as safetensors (`embeddings`, [n, hidden] f32).
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Hugging Face model folder: config.json, model.safetensors, tokenizer.json or vocab.txt.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// mean (sentence-transformers) or cls.
    #[arg(long, default_value = "mean")]
    pooling: String,
    /// Keep the pooled vectors as they are instead of L2-normalising them.
    #[arg(long)]
    no_normalize: bool,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Truncate texts to this many wordpieces (default: the model's max_position_embeddings).
    #[arg(long)]
    max_len: Option<usize>,
    /// Compute dtype: f32, f16 or bf16 (default: bf16 on a GPU or the emulator, f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    realm::io::check_new_output(&args.out, "--out")?;
    let dev = args.device.resolve()?;
    let opts = realm::embed::EmbedFile {
        model: args.model,
        input: args.input,
        out: args.out,
        pooling: args.pooling.parse()?,
        normalize: !args.no_normalize,
        batch: args.batch,
        max_len: args.max_len,
        dtype: args.dtype.as_deref().map(parse_dtype).transpose()?,
    };
    let n = realm::embed::embed_file(&dev, &opts).context("embed")?;
    eprintln!("embedded {n} texts into {}", opts.out.display());
    Ok(())
}
