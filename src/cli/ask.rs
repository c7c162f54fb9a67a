//! `realm ask`.

use super::{blocks_per_query, closed_pipe, out, DeviceArg};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Answer questions with a fine-tuned run (its retriever, reader and index): the answer, its
/// score, and the top documents with p(z|x), title and the sentence holding the span. Without a
/// question, reads questions line by line from stdin.
#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// A run directory: a `realm demo` run or a `realm finetune` run.
    #[arg(long)]
    run: PathBuf,
    /// An index built by the run's document tower (e.g. of an updated corpus) instead of the
    /// run's own.
    #[arg(long)]
    index: Option<PathBuf>,
    /// Blocks read per question: 1 to the index's size (default 5, or all of a smaller index).
    #[arg(long)]
    beam: Option<usize>,
    /// One JSON object per answer.
    #[arg(long)]
    json: bool,
    question: Option<String>,
}

pub fn run(args: AskArgs) -> Result<()> {
    let dev = args.device.resolve()?;
    let _exec = dev.enter()?;
    let checkpoint = realm::ask::find_checkpoint(&args.run)?;
    let mut asker = realm::ask::Asker::load(&checkpoint, args.index.as_deref(), &dev.device)
        .with_context(|| format!("loading {}", checkpoint.display()))?;
    asker.beam = blocks_per_query("--beam", args.beam, asker.searcher().len())?;
    // Questions from stdin are echoed, so that each answer can be told from the next.
    let answer = |q: &str, echo: bool| -> Result<()> {
        let a = asker.ask(q)?;
        if args.json {
            out!("{}", serde_json::to_string(&a)?);
            return Ok(());
        }
        if echo {
            out!("Q: {}", a.question);
        }
        out!("{}  (score {:.2})", a.answer, a.score);
        for (i, e) in a.evidence.iter().enumerate() {
            let mark = if i == a.from { "*" } else { " " };
            out!("  {mark} p={:.3}  {}: {}", e.p, e.title, e.sentence);
        }
        Ok(())
    };
    if let Some(q) = &args.question {
        return answer(q, false);
    }
    let mut lines = realm::lines::Lines::new(std::io::stdin().lock(), "stdin");
    while let Some((number, line)) = lines.next() {
        let result = line
            .map_err(|e| anyhow::Error::from(lines.error(number, &e)))
            .and_then(|q| {
                if q.trim().is_empty() {
                    Ok(())
                } else {
                    answer(&q, true)
                }
            });
        match result {
            Ok(()) => {}
            Err(e) if closed_pipe(&e) => return Err(e),
            // One bad question does not end the session.
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}
