//! `realm import`.

use super::out;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Turn another implementation's released model into a realm run directory.
#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    what: ImportWhat,
}

#[derive(Subcommand)]
enum ImportWhat {
    /// A transformers RealmForOpenQA folder (config.json, pytorch_model.bin or
    /// model.safetensors with block_emb, block_records.npy, tokenizer files) → OUT/checkpoint
    /// with the query tower, the reader and an index of the block records, for `realm eval
    /// --checkpoint OUT/checkpoint` and `realm ask --run OUT`.
    HfRealm {
        /// The transformers folder.
        dir: PathBuf,
        /// A new (or empty) folder for the run directory.
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

pub fn run(args: ImportArgs) -> Result<()> {
    match args.what {
        ImportWhat::HfRealm { dir, out, quiet } => {
            let report = realm::import::import_hf_realm(&dir, &out, !quiet)
                .with_context(|| format!("importing {}", dir.display()))?;
            out!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
