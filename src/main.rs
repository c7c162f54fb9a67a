//! The `realm` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use realm::bench::Budget;
use realm::device::{ComputeDevice, DeviceSpec};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "realm",
    version,
    about = "REALM retrieval-augmented language model kernels and training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every registered kernel check against a float64 reference; non-zero exit on failure.
    Selftest {
        #[command(flatten)]
        device: DeviceArg,
        /// Only the checks whose `op/case` contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Sentence embeddings of a file of texts (one per line, or JSONL with "text") with a BERT
    /// model folder, written as safetensors (`embeddings`, [n, hidden] f32).
    Embed {
        #[command(flatten)]
        device: DeviceArg,
        /// Hugging Face model folder: config.json, model.safetensors, tokenizer.json or vocab.txt.
        #[arg(long)]
        model: std::path::PathBuf,
        #[arg(long)]
        input: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
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
        /// Compute dtype: f32, f16 or bf16 (default: f32 on the CPU, bf16 on a GPU).
        #[arg(long)]
        dtype: Option<String>,
    },
    /// Train a WordPiece vocabulary (BERT's vocab.txt, special tokens at ids 0-4) on a corpus
    /// and optional QA files.
    Vocab {
        /// Corpus: .jsonl ({"id","title","text"}) or DPR .tsv.
        #[arg(long)]
        corpus: std::path::PathBuf,
        /// QA files (NQ-open .jsonl or SQuAD .json) whose questions and answers are added.
        #[arg(long)]
        extra: Vec<std::path::PathBuf>,
        /// Tokens in all, special tokens included.
        #[arg(long, default_value_t = 8000)]
        size: usize,
        /// Keep case (a cased vocabulary); the default is uncased, as BERT-base-uncased.
        #[arg(long)]
        cased: bool,
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Plots (PNG) and a Markdown summary of a run directory's metrics.jsonl (with config.json
    /// and summary.json when present), written into RUN_DIR/report/.
    Report { run_dir: std::path::PathBuf },
    /// Build a document index: cut a corpus (JSONL or DPR TSV) into blocks and embed each with
    /// a model's document tower (a REALM/retriever checkpoint, or a plain BERT folder with a
    /// fixed-seed projection), into a folder (f16 embeddings, block records, manifest).
    Index {
        #[command(flatten)]
        device: DeviceArg,
        #[arg(long)]
        model: std::path::PathBuf,
        #[arg(long)]
        corpus: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
        /// Body wordpieces per block (REALM: 288).
        #[arg(long, default_value_t = 288)]
        block_tokens: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Skip (and count) malformed corpus lines instead of stopping at the first.
        #[arg(long)]
        skip_bad_lines: bool,
    },
    /// Search an index with the query tower of the model that built it.
    Search {
        #[command(flatten)]
        device: DeviceArg,
        /// Index folder written by `realm index` (or by training).
        #[arg(long)]
        index: std::path::PathBuf,
        /// Model folder (default: the one the index's manifest names).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        #[arg(short, long, default_value_t = 5)]
        k: usize,
        /// One JSON object per hit (query, rank, block, doc_id, title, score) instead of text.
        #[arg(long)]
        json: bool,
        query: String,
    },
    /// Evaluate a training checkpoint on questions: retrieval recall@1/@5/@k, the reader's exact
    /// match, zero-shot cloze exact match with retrieval and with the null document only, and
    /// retrieval utility. The report goes to stdout as JSON.
    Eval {
        #[command(flatten)]
        device: DeviceArg,
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// NQ-open style .jsonl ({"question","answers"}) or SQuAD .json.
        #[arg(long)]
        questions: std::path::PathBuf,
        /// Index built by the checkpoint's document tower (default: CHECKPOINT/index).
        #[arg(long)]
        index: Option<std::path::PathBuf>,
        /// Corpus to index with the checkpoint when it has no index.
        #[arg(long)]
        corpus: Option<std::path::PathBuf>,
        /// Blocks retrieved per question (recall@k, the cloze marginal).
        #[arg(short, long, default_value_t = 5)]
        k: usize,
        /// Blocks the reader reads per question.
        #[arg(long, default_value_t = 5)]
        reader_beam: usize,
        #[arg(long)]
        max_questions: Option<usize>,
        /// Run directory: append the metrics line to RUN/metrics.jsonl.
        #[arg(long)]
        run: Option<std::path::PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// The whole REALM pipeline on the embedded demo data, from nothing: tokenizer, a small BERT
    /// from scratch (or --init), ICT, index, pre-training with index refresh, open-QA
    /// fine-tuning, masked-LM training on the cloze questions, evaluation with and without
    /// retrieval, answered questions, a knowledge update.
    Demo {
        #[command(flatten)]
        device: DeviceArg,
        /// Run directory (a previous demo's is reused: its outputs are replaced).
        #[arg(long, default_value = "runs/demo")]
        out: std::path::PathBuf,
        /// Start from a Hugging Face BERT folder instead of a small BERT from scratch.
        #[arg(long)]
        init: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Multiply every stage's step count (1.0: sized for about 10 minutes on 2 CPU cores).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Answer questions with a fine-tuned run (its retriever, reader and index): the answer, its
    /// score, and the top documents with p(z|x), title and the sentence holding the span. Without
    /// a question, reads questions line by line from stdin.
    Ask {
        #[command(flatten)]
        device: DeviceArg,
        /// A run directory: a `realm demo` run or a `realm finetune` run.
        #[arg(long)]
        run: std::path::PathBuf,
        /// An index built by the run's document tower (e.g. of an updated corpus) instead of the
        /// run's own.
        #[arg(long)]
        index: Option<std::path::PathBuf>,
        /// Blocks read per question.
        #[arg(long, default_value_t = 5)]
        beam: usize,
        /// One JSON object per answer.
        #[arg(long)]
        json: bool,
        question: Option<String>,
    },
    /// Time one op: the median over repeated runs after warm-up.
    Bench {
        #[command(subcommand)]
        op: BenchOp,
    },
    /// ICT warm start of the retriever (ORQA's Inverse Cloze Task, in-batch negatives), with
    /// held-out recall@1/@5. Prints the report as JSON.
    Ict(realm::train::cli::IctArgs),
    /// REALM pre-training: salient-span masking, retrieval over the asynchronously refreshed
    /// index, the marginal masked-LM loss into the encoder and both towers.
    Pretrain(realm::train::cli::PretrainArgs),
    /// Open-QA fine-tuning (ORQA/REALM): the index fixed, the query tower and the reader trained.
    Finetune(realm::train::cli::FinetuneArgs),
}

#[derive(Args, Clone)]
struct DeviceArg {
    /// auto, cpu, emulate (CUDA kernels on the CPU emulator) or cuda[:N].
    #[arg(long, default_value = "auto")]
    device: String,
}

impl DeviceArg {
    fn resolve(&self) -> Result<ComputeDevice> {
        let spec: DeviceSpec = self.device.parse()?;
        let dev = ComputeDevice::resolve(spec)?;
        eprintln!("device: {dev}");
        Ok(dev)
    }
}

#[derive(Args, Clone)]
struct BenchCommon {
    #[command(flatten)]
    device: DeviceArg,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Seconds of measurement after warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

impl BenchCommon {
    fn dtype(&self) -> Result<candle_core::DType> {
        parse_dtype(&self.dtype)
    }

    fn budget(&self) -> Result<Budget> {
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            bail!("--seconds must be a positive number, got {}", self.seconds);
        }
        Ok(Budget {
            time: Duration::from_secs_f64(self.seconds),
            ..Budget::default()
        })
    }
}

fn parse_dtype(dtype: &str) -> Result<candle_core::DType> {
    Ok(match dtype {
        "f32" => candle_core::DType::F32,
        "f16" => candle_core::DType::F16,
        "bf16" => candle_core::DType::BF16,
        other => bail!("--dtype {other}: use f32, f16 or bf16"),
    })
}

#[derive(Subcommand)]
enum BenchOp {
    /// One REALM pre-training step, phase by phase (retrieval, forward, backward, optimizer).
    TrainStep(realm::train::cli::TrainStepArgs),
    /// Softmax over retrieved documents, or with --targets the marginal log-likelihood.
    DocSoftmax {
        #[command(flatten)]
        common: BenchCommon,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 5000)]
        k: usize,
        /// Targets per example (masked tokens) for the marginal; 0 = doc_softmax alone.
        #[arg(long, default_value_t = 0)]
        targets: usize,
        /// Forward and backward.
        #[arg(long)]
        backward: bool,
        /// Time the plain candle composition instead of the fused op.
        #[arg(long)]
        composition: bool,
    },
    /// Exact inner-product top-k of random queries (--dtype) over a random f16 index.
    Mips {
        #[command(flatten)]
        common: BenchCommon,
        /// Documents in the index.
        #[arg(long, default_value_t = 1_000_000)]
        docs: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 64)]
        queries: usize,
        #[arg(long, default_value_t = 8)]
        k: usize,
    },
    /// The BERT encoder: tokens/s on random full-length sequences (--dtype is the compute dtype).
    Bert {
        #[command(flatten)]
        common: BenchCommon,
        /// Hugging Face model folder.
        #[arg(long, conflicts_with = "preset")]
        model: Option<std::path::PathBuf>,
        /// Random weights of a named size instead: tiny, mini, small, medium, base or large.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        len: usize,
        /// Forward and backward (training mode).
        #[arg(long)]
        backward: bool,
    },
    /// Fused attention [b, h, l, dh] (--dtype; f16/bf16 on a GPU), optionally with padding.
    Attention {
        #[command(flatten)]
        common: BenchCommon,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 12)]
        heads: usize,
        #[arg(long, default_value_t = 288)]
        len: usize,
        #[arg(long, default_value_t = 64)]
        head_dim: usize,
        /// Fraction of every sequence that is padding (key_lens = len − round(P · len)).
        #[arg(long, default_value_t = 0.0)]
        pad_frac: f64,
        /// Forward and backward.
        #[arg(long)]
        backward: bool,
        /// Time the plain candle composition instead of the fused op.
        #[arg(long)]
        composition: bool,
    },
}

fn main() -> Result<()> {
    realm::alloc::tune_for_tensors();
    let cli = Cli::parse();
    match cli.command {
        Command::Selftest { device, filter } => selftest(&device.resolve()?, filter.as_deref()),
        Command::Embed {
            device,
            model,
            input,
            out,
            pooling,
            no_normalize,
            batch,
            max_len,
            dtype,
        } => {
            let dev = device.resolve()?;
            let opts = realm::model::embed::EmbedOptions {
                model,
                input,
                out,
                pooling: pooling.parse()?,
                normalize: !no_normalize,
                batch,
                max_len,
                dtype: dtype.as_deref().map(parse_dtype).transpose()?,
            };
            let n = realm::model::embed::embed_file(&dev, &opts).context("embed")?;
            eprintln!("embedded {n} texts into {}", opts.out.display());
            Ok(())
        }
        Command::Index {
            device,
            model,
            corpus,
            out,
            block_tokens,
            batch,
            skip_bad_lines,
        } => index(
            &device.resolve()?,
            &model,
            &corpus,
            &out,
            block_tokens,
            batch,
            skip_bad_lines,
        ),
        Command::Search {
            device,
            index,
            model,
            k,
            json,
            query,
        } => search(
            &device.resolve()?,
            &index,
            model.as_deref(),
            k,
            json,
            &query,
        ),
        Command::Eval {
            device,
            checkpoint,
            questions,
            index,
            corpus,
            k,
            reader_beam,
            max_questions,
            run,
            quiet,
        } => {
            use realm::train::eval;
            let dev = device.resolve()?;
            let mut cfg = eval::EvalConfig::new(checkpoint, questions);
            (cfg.index, cfg.corpus, cfg.top_k) = (index, corpus, k);
            (cfg.reader_beam, cfg.max_questions, cfg.quiet) = (reader_beam, max_questions, quiet);
            let report = eval::evaluate(&cfg, &dev).context("eval")?;
            if let Some(run) = run {
                eval::log_metrics(&run, &report).context("writing the metrics line")?;
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Demo {
            device,
            out,
            init,
            seed,
            scale,
            quiet,
        } => {
            let dev = device.resolve()?;
            let cfg = realm::demo::DemoConfig {
                out,
                init,
                seed,
                scale,
                quiet,
            };
            let summary = realm::demo::run_demo(&cfg, &dev).context("demo")?;
            println!("{}", realm::demo::render(&summary));
            eprintln!("summary: {}", cfg.out.join("summary.json").display());
            Ok(())
        }
        Command::Ask {
            device,
            run,
            index,
            beam,
            json,
            question,
        } => ask(
            &device.resolve()?,
            &run,
            index.as_deref(),
            beam,
            json,
            question.as_deref(),
        ),
        Command::Bench { op } => bench(op),
        Command::Ict(args) => {
            let report = args.execute().context("ict")?;
            exit_if_stopped(args.run.finish("ict", &report).context("ict")?)
        }
        Command::Pretrain(args) => {
            let report = args.execute().context("pretrain")?;
            exit_if_stopped(args.run.finish("pretrain", &report).context("pretrain")?)
        }
        Command::Finetune(args) => {
            let report = args.execute().context("finetune")?;
            exit_if_stopped(args.run.finish("finetune", &report).context("finetune")?)
        }
        Command::Report { run_dir } => {
            let report = realm::report::write_report(&run_dir).context("report")?;
            println!(
                "{} records: {} plots and {}",
                report.records,
                report.images.len(),
                report.readme.display()
            );
            Ok(())
        }
        Command::Vocab {
            corpus,
            extra,
            size,
            cased,
            min_frequency,
            out,
        } => {
            let spec = realm::model::vocab::VocabSpec {
                corpus,
                extra,
                size,
                lowercase: !cased,
                min_frequency,
            };
            let summary = realm::model::vocab::build_vocab(&spec, &out).context("vocab")?;
            eprintln!(
                "{} tokens from {} texts written to {}",
                summary.tokens,
                summary.texts,
                out.display()
            );
            Ok(())
        }
    }
}

/// A training command stopped by a signal exits with the status the signal implies, after its
/// checkpoint is written.
fn exit_if_stopped(status: Option<i32>) -> Result<()> {
    match status {
        Some(code) => std::process::exit(code),
        None => Ok(()),
    }
}

fn selftest(dev: &ComputeDevice, filter: Option<&str>) -> Result<()> {
    let rows = realm::selftest::run(dev, filter);
    if rows.is_empty() {
        bail!("no check matches the filter {filter:?}");
    }
    println!(
        "{:<26} {:<34} {:>12} {:>10}  result",
        "op", "case", "max rel err", "bound"
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
        println!(
            "{:<26} {:<34} {:>12} {:>10}  {verdict}",
            row.op, row.name, err, bound
        );
    }
    println!("{} passed, {} failed", rows.len() - failures, failures);
    if failures > 0 {
        bail!("{failures} of {} checks failed on {dev}", rows.len());
    }
    Ok(())
}

fn bench(op: BenchOp) -> Result<()> {
    let (report, json) = match op {
        BenchOp::TrainStep(args) => {
            let report = args.execute().context("bench train-step")?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            return Ok(());
        }
        BenchOp::DocSoftmax {
            common,
            batch,
            k,
            targets,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::doc_softmax::BenchSpec {
                batch,
                k,
                targets,
                dtype: common.dtype()?,
                backward,
                composition,
            };
            let report = realm::ops::doc_softmax::bench(&dev, spec, common.budget()?)
                .context("bench doc-softmax")?;
            (report, common.json)
        }
        BenchOp::Mips {
            common,
            docs,
            dim,
            queries,
            k,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::mips::BenchSpec {
                docs,
                dim,
                queries,
                k,
                dtype: common.dtype()?,
            };
            let report =
                realm::ops::mips::bench(&dev, spec, common.budget()?).context("bench mips")?;
            (report, common.json)
        }
        BenchOp::Bert {
            common,
            model,
            preset,
            batch,
            len,
            backward,
        } => {
            let dev = common.device.resolve()?;
            let model = match (model, preset) {
                (Some(dir), _) => realm::model::bench::ModelSource::Dir(dir),
                (None, Some(name)) => realm::model::bench::ModelSource::Preset(name),
                (None, None) => bail!("bench bert needs --model DIR or --preset NAME"),
            };
            let spec = realm::model::bench::BenchSpec {
                model,
                batch,
                len,
                dtype: common.dtype()?,
                backward,
            };
            let report =
                realm::model::bench::bench(&dev, &spec, common.budget()?).context("bench bert")?;
            if common.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            return Ok(());
        }
        BenchOp::Attention {
            common,
            batch,
            heads,
            len,
            head_dim,
            pad_frac,
            backward,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::attention::BenchSpec {
                batch,
                heads,
                len,
                head_dim,
                pad_frac,
                dtype: common.dtype()?,
                backward,
                composition,
            };
            let report = realm::ops::attention::bench(&dev, spec, common.budget()?)
                .context("bench attention")?;
            (report, common.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} [{}] {} on {}: median {:.3} ms (min {:.3} ms, {} runs){}",
            report.op,
            report.shape,
            report.dtype,
            report.device,
            report.median_ms,
            report.min_ms,
            report.iters,
            report
                .gb_per_s
                .map(|g| format!(", {g:.1} GB/s"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn index(
    dev: &ComputeDevice,
    model: &std::path::Path,
    corpus: &std::path::Path,
    out: &std::path::Path,
    block_tokens: usize,
    batch: usize,
    skip_bad_lines: bool,
) -> Result<()> {
    use realm::index::{build, RetrieverModel};
    let _exec = dev.enter()?;
    let model = RetrieverModel::load(model, &dev.device).context("loading the model")?;
    let opts = build::IndexCorpus {
        max_block_tokens: block_tokens,
        skip_bad_lines,
        embed: build::EmbedOptions {
            batch,
            max_len: model
                .retriever
                .bert_config()
                .max_position_embeddings
                .min(block_tokens + 64),
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

fn search(
    dev: &ComputeDevice,
    index: &std::path::Path,
    model: Option<&std::path::Path>,
    k: usize,
    json: bool,
    query: &str,
) -> Result<()> {
    let _exec = dev.enter()?;
    let searcher = realm::index::Searcher::open(index, model, &dev.device)
        .with_context(|| format!("opening the index {}", index.display()))?;
    let hits = searcher.search(&[query], k)?.remove(0);
    for (rank, hit) in hits.iter().enumerate() {
        if json {
            let mut obj = serde_json::to_value(hit)?;
            obj["rank"] = (rank + 1).into();
            obj["query"] = query.into();
            println!("{obj}");
        } else {
            let text = realm::model::reader::span_text(
                &searcher.model.tokenizer,
                &searcher.block(hit).tokens,
            )?;
            let snippet: String = text.chars().take(100).collect();
            println!(
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

fn ask(
    dev: &ComputeDevice,
    run: &std::path::Path,
    index: Option<&std::path::Path>,
    beam: usize,
    json: bool,
    question: Option<&str>,
) -> Result<()> {
    use std::io::BufRead;
    let _exec = dev.enter()?;
    let checkpoint = realm::ask::find_checkpoint(run)?;
    let mut asker = realm::ask::Asker::load(&checkpoint, index, &dev.device)
        .with_context(|| format!("loading {}", checkpoint.display()))?;
    if beam == 0 {
        bail!("--beam must be at least 1");
    }
    asker.beam = beam;
    let answer = |q: &str| -> Result<()> {
        let a = asker.ask(q)?;
        if json {
            println!("{}", serde_json::to_string(&a)?);
            return Ok(());
        }
        println!("{}  (score {:.2})", a.answer, a.score);
        for (i, e) in a.evidence.iter().enumerate() {
            let mark = if i == a.from { "*" } else { " " };
            println!("  {mark} p={:.3}  {}: {}", e.p, e.title, e.sentence);
        }
        Ok(())
    };
    match question {
        Some(q) => answer(q),
        None => {
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                if let Err(e) = answer(&line) {
                    eprintln!("error: {e:#}");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
