//! `realm demo`.

use super::{out, DeviceArg};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// The whole REALM pipeline on the embedded demo data, from nothing: tokenizer, a small BERT
/// from scratch (or --init), ICT, index, pre-training with index refresh, open-QA fine-tuning,
/// masked-LM training on the cloze questions, evaluation with and without retrieval, answered
/// questions, a knowledge update.
#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Run directory: a new or empty folder, or a previous demo's (then only what that demo
    /// created, as its .realm-demo.json lists, is replaced).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Start from a Hugging Face BERT folder instead of a small BERT from scratch.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Multiply every stage's step count (1.0: sized for about 10 minutes on 2 CPU cores; above
    /// 0, at most 1000).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let cfg = realm::demo::DemoConfig {
        out: args.out,
        init: args.init,
        seed: args.seed,
        scale: args.scale,
        quiet: args.quiet,
    };
    let summary = realm::demo::run_demo(&cfg, &dev).context("demo")?;
    out!("{}", realm::demo::render(&summary));
    eprintln!("summary: {}", cfg.out.join("summary.json").display());
    Ok(())
}
