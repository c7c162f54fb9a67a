//! `realm experiment`.

use super::{out, DeviceArg};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use realm::experiment::ablation::{
    render, run_ablation, AblationConfig, PretrainText, Size, Towers,
};
use std::path::PathBuf;

/// Experiments that chain the training stages over several seeds.
#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    experiment: Experiment,
}

#[derive(Subcommand)]
enum Experiment {
    /// REALM's pre-training ablation: from one ICT warm start per seed, (a) ICT only, (b) + REALM
    /// pre-training with salient spans, (c) with random-token masks, (d) with a 30x staler
    /// index; zero-shot recall@1/5/20 and cloze exact match on held-out questions.
    Ablation(AblationArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SizeArg {
    /// A few steps on a few dozen documents (a check that the code path runs).
    Tiny,
    /// The whole corpus, about 60 minutes for 3 seeds on 2 idle CPU cores.
    Cpu,
    /// Fewer steps, 1,000 documents, 100 questions (a busy 2-core machine, about 45 minutes).
    Small,
    /// One GPU: longer runs in larger batches, for the whole wiki-vital corpus (--corpus).
    Gpu,
}

#[derive(Args)]
struct AblationArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Output folder: new or empty.
    #[arg(long, default_value = "runs/ablation")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    size: SizeArg,
    /// Multiply every step count of the size.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seeds 0..N (at least 3 for the claim).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Knowledge corpus (JSONL, TSV or SQuAD JSON); default: the embedded demo corpus. Without
    /// --questions it must hold the demo's held-out questions' documents (wiki-vital does).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Held-out questions (JSONL with doc_id) about --corpus; default: the demo's dev questions.
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Start from this BERT folder instead of the demo's small BERT from scratch (whose
    /// vocabulary, the demo's, serves any corpus).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Texts the pre-training arms mask (a corpus file: JSONL, TSV or SQuAD JSON, e.g. a larger
    /// Wikipedia than the corpus, or news); default: the corpus's own. A corpus document's texts
    /// never retrieve it.
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Pre-training arms mask fact statements instead: the cloze forms (`question answer`, the
    /// answer masked) of these training questions (JSONL); without FILE, the demo's training
    /// split, whose subjects no held-out question is about. A held-out question among them is
    /// an error.
    #[arg(long, value_name = "FILE", num_args = 0..=1, conflicts_with = "examples")]
    facts: Option<Option<PathBuf>>,
    /// Pre-training arms: untie the warm start's shared tower into a query and a document
    /// tower (REALM's two embedders, both from the ICT module).
    #[arg(long)]
    separate_towers: bool,
    /// Pre-training arms: the query tower's learning rate relative to the arm's.
    #[arg(long, default_value_t = 1.0)]
    query_lr_scale: f64,
    /// Pre-training arms: the document tower's (0: kept as ICT left it, no refresh); with
    /// shared towers, the query tower's.
    #[arg(long, default_value_t = 1.0)]
    doc_lr_scale: f64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: ExperimentArgs) -> Result<()> {
    let Experiment::Ablation(args) = args.experiment;
    if args.seeds == 0 {
        bail!("--seeds {}: give at least 1", args.seeds);
    }
    let dev = args.device.resolve()?;
    let cfg = AblationConfig {
        out: args.out,
        size: match args.size {
            SizeArg::Tiny => Size::Tiny,
            SizeArg::Cpu => Size::Cpu,
            SizeArg::Small => Size::Small,
            SizeArg::Gpu => Size::Gpu,
        },
        scale: args.scale,
        seeds: (0..args.seeds).collect(),
        corpus: args.corpus,
        questions: args.questions,
        text: match (args.facts, args.examples) {
            (Some(facts), _) => PretrainText::Facts(facts),
            (None, Some(examples)) => PretrainText::Examples(examples),
            (None, None) => PretrainText::Corpus,
        },
        init: args.init,
        towers: Towers {
            separate: args.separate_towers,
            query_lr_scale: args.query_lr_scale,
            doc_lr_scale: args.doc_lr_scale,
        },
        quiet: args.quiet,
    };
    let summary = run_ablation(&cfg, &dev).context("experiment ablation")?;
    out!("{}", render(&summary));
    eprintln!("results: {}", cfg.out.join("summary.json").display());
    Ok(())
}
