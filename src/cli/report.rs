//! `realm report`.

use super::out;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Plots (PNG) and a Markdown summary of a run directory's metrics.jsonl (with config.json and
/// summary.json when present), written into RUN_DIR/report/.
#[derive(Args)]
pub struct ReportArgs {
    run_dir: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let report = realm::report::write_report(&args.run_dir).context("report")?;
    out!(
        "{} records: {} plots and {}",
        report.records,
        report.images.len(),
        report.readme.display()
    );
    Ok(())
}
