//! `realm selftest`.

use super::{out, DeviceArg};
use anyhow::{bail, Result};
use clap::Args;

/// Run every registered kernel check against a float64 reference; non-zero exit on failure.
#[derive(Args)]
pub struct SelftestArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Only the checks whose `op/case` contains this text.
    #[arg(long)]
    filter: Option<String>,
}

pub fn run(args: SelftestArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let filter = args.filter.as_deref();
    let rows = realm::selftest::run(&dev, filter);
    if rows.is_empty() {
        match filter {
            Some(f) => bail!("--filter {f}: no check's op/case contains it (run without --filter to see them all)"),
            None => bail!("no check is registered for {dev}"),
        }
    }
    out!(
        "{:<26} {:<34} {:>12} {:>10}  result",
        "op",
        "case",
        "max rel err",
        "bound"
    );
    let mut failures = 0;
    for row in &rows {
        let (err, bound, verdict) = match &row.outcome {
            Ok(o) => (
                format!("{:.3e}", o.max_rel_err),
                format!("{:.1e}", o.tolerance),
                if o.passed() {
                    "ok".to_string()
                } else {
                    "FAIL".to_string()
                },
            ),
            Err(e) => ("-".into(), "-".into(), format!("FAIL: {e}")),
        };
        if !row.passed() {
            failures += 1;
        }
        out!(
            "{:<26} {:<34} {:>12} {:>10}  {verdict}",
            row.op,
            row.name,
            err,
            bound
        );
    }
    out!("{} passed, {} failed", rows.len() - failures, failures);
    if failures > 0 {
        bail!("{failures} of {} checks failed on {dev}", rows.len());
    }
    Ok(())
}
