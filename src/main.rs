//! The `realm` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use realm::bench::Budget;
use realm::device::{ComputeDevice, DeviceSpec};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// A line on stdout. Unlike `println!`, a failed write (the reader closed the pipe, as `| head`
/// does) is an error returned to `main`, which ends quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

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
        /// Compute dtype: f32, f16 or bf16 (default: bf16 on a GPU or the emulator, f32 on the CPU).
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
        /// Body wordpieces per block (default: REALM's 288, or as many as the model's positions
        /// hold beside [CLS] and two [SEP]).
        #[arg(long)]
        block_tokens: Option<usize>,
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
        /// Model folder (default: the one the index's manifest names, relative to the index
        /// folder; for an index inside a training checkpoint, that checkpoint).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Blocks to show: 1 to the index's size (default 5, or all of a smaller index).
        #[arg(short, long)]
        k: Option<usize>,
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
        /// Run directory: a new or empty folder, or a previous demo's (then only what that demo
        /// created, as its .realm-demo.json lists, is replaced).
        #[arg(long, default_value = "runs/demo")]
        out: std::path::PathBuf,
        /// Start from a Hugging Face BERT folder instead of a small BERT from scratch.
        #[arg(long)]
        init: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Multiply every stage's step count (1.0: sized for about 10 minutes on 2 CPU cores;
        /// above 0, at most 1000).
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
        /// Blocks read per question: 1 to the index's size (default 5, or all of a smaller
        /// index).
        #[arg(long)]
        beam: Option<usize>,
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
        eprintln!("device: {}", dev.description());
        Ok(dev)
    }
}

#[derive(Args, Clone)]
struct BenchCommon {
    #[command(flatten)]
    device: DeviceArg,
    /// f32, f16 or bf16 (default: the device's, bf16 on a GPU or the emulator, f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// Seconds of measurement after warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

impl BenchCommon {
    /// The dtype asked, else the device's default.
    fn dtype(&self, dev: &ComputeDevice) -> Result<candle_core::DType> {
        match &self.dtype {
            Some(d) => parse_dtype(d),
            None => Ok(dev.default_dtype()),
        }
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
    /// Hidden-state dropout of a [rows, hidden] tensor by the device-drawn Philox mask.
    Dropout {
        #[command(flatten)]
        common: BenchCommon,
        /// Rows (BERT's b·l).
        #[arg(long, default_value_t = 8 * 288)]
        rows: usize,
        #[arg(long, default_value_t = 768)]
        hidden: usize,
        #[arg(long, default_value_t = 0.1)]
        p: f32,
        /// Time the mask drawn on the host and uploaded, multiplied in (what the op replaced).
        #[arg(long)]
        composition: bool,
    },
}

fn main() -> ExitCode {
    realm::alloc::tune_for_tensors();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has stopped reading (`realm search ... | head -1`): done.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Whether an error comes from writing to a pipe whose reader has gone.
fn closed_pipe(e: &anyhow::Error) -> bool {
    let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref::<realm::Error>(), Some(realm::Error::Io(io)) if broken(io))
    })
}

fn run(cli: Cli) -> Result<()> {
    realm::ops::check_cpu_simd_env()?;
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
            realm::io::check_new_output(&out, "--out")?;
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
            out!("{}", serde_json::to_string_pretty(&report)?);
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
            out!("{}", realm::demo::render(&summary));
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
            out!(
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
            realm::io::check_new_output(&out, "--out")?;
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

fn bench(op: BenchOp) -> Result<()> {
    let (report, json) = match op {
        BenchOp::TrainStep(args) => {
            let report = args.execute().context("bench train-step")?;
            if args.json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out!("{report}");
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
                dtype: common.dtype(&dev)?,
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
                dtype: common.dtype(&dev)?,
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
                dtype: common.dtype(&dev)?,
                backward,
            };
            let report =
                realm::model::bench::bench(&dev, &spec, common.budget()?).context("bench bert")?;
            if common.json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out!("{report}");
            }
            return Ok(());
        }
        BenchOp::Dropout {
            common,
            rows,
            hidden,
            p,
            composition,
        } => {
            let dev = common.device.resolve()?;
            let spec = realm::ops::dropout::BenchSpec {
                rows,
                hidden,
                p,
                dtype: common.dtype(&dev)?,
                composition,
            };
            let report = realm::ops::dropout::bench(&dev, spec, common.budget()?)
                .context("bench dropout")?;
            (report, common.json)
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
                dtype: common.dtype(&dev)?,
                backward,
                composition,
            };
            let report = realm::ops::attention::bench(&dev, spec, common.budget()?)
                .context("bench attention")?;
            (report, common.json)
        }
    };
    if json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        out!(
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
    block_tokens: Option<usize>,
    batch: usize,
    skip_bad_lines: bool,
) -> Result<()> {
    use realm::index::{build, RetrieverModel, StoredIndex};
    // Everything that can be checked is checked before the corpus is read and embedded.
    StoredIndex::check_replaceable(out, "--out")?;
    realm::io::check_new_output_dir(out, "--out")?;
    if block_tokens == Some(0) || batch == 0 {
        bail!("--block-tokens and --batch must be at least 1");
    }
    realm::data::CorpusFormat::from_path(corpus)?;
    std::fs::File::open(corpus).with_context(|| format!("--corpus {}", corpus.display()))?;
    let _exec = dev.enter()?;
    let model = RetrieverModel::load(model, &dev.device)
        .with_context(|| format!("--model {}: loading the model", model.display()))?;
    let positions = model.retriever.bert_config().max_position_embeddings;
    // `[CLS] title [SEP] body [SEP]`: the body alone must fit beside the three special tokens.
    let room = positions.saturating_sub(3);
    let block_tokens = match block_tokens {
        Some(n) if n > room => bail!(
            "--block-tokens {n}: the model reads at most {positions} positions, so a block holds \
             at most {room} wordpieces ([CLS], [SEP] and [SEP] take three)"
        ),
        Some(n) => n,
        None if room == 0 => bail!("--model: {positions} positions hold no block"),
        None => REALM_BLOCK_TOKENS.min(room),
    };
    let opts = build::IndexCorpus {
        max_block_tokens: block_tokens,
        skip_bad_lines,
        embed: build::EmbedOptions {
            batch,
            max_len: positions.min(block_tokens + 64),
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

/// REALM's block length in wordpieces.
const REALM_BLOCK_TOKENS: usize = 288;

/// The one rule for how many blocks a command reads per query (`search -k`, `ask --beam`): at
/// least 1 and at most the blocks in the index.
/// Without the flag: 5, or all blocks of a smaller index.
fn blocks_per_query(flag: &str, n: Option<usize>, index_blocks: usize) -> Result<usize> {
    match n {
        None => Ok(realm::index::search::DEFAULT_K.min(index_blocks)),
        Some(n) if n == 0 || n > index_blocks => {
            bail!("{flag} {n}: must be between 1 and the index's {index_blocks} blocks")
        }
        Some(n) => Ok(n),
    }
}

fn search(
    dev: &ComputeDevice,
    index: &std::path::Path,
    model: Option<&std::path::Path>,
    k: Option<usize>,
    json: bool,
    query: &str,
) -> Result<()> {
    if query.trim().is_empty() {
        bail!("the query is empty");
    }
    let _exec = dev.enter()?;
    let searcher = realm::index::Searcher::open(index, model, &dev.device)
        .with_context(|| format!("opening the index {}", index.display()))?;
    if !searcher.index.manifest.has_checksums() {
        eprintln!(
            "note: {} predates index checksums (format 1), so its files were not checked against \
             each other; rebuilding it with `realm index` adds them",
            index.display()
        );
    }
    let k = blocks_per_query("-k", k, searcher.index.blocks.len())?;
    let hits = searcher.search(&[query], k)?.remove(0);
    for (rank, hit) in hits.iter().enumerate() {
        if json {
            let mut obj = serde_json::to_value(hit)?;
            obj["rank"] = (rank + 1).into();
            obj["query"] = query.into();
            out!("{obj}");
        } else {
            let text = realm::model::reader::span_text(
                &searcher.model.tokenizer,
                &searcher.block(hit).tokens,
            )?;
            let snippet: String = text.chars().take(100).collect();
            out!(
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
    beam: Option<usize>,
    json: bool,
    question: Option<&str>,
) -> Result<()> {
    let _exec = dev.enter()?;
    let checkpoint = realm::ask::find_checkpoint(run)?;
    let mut asker = realm::ask::Asker::load(&checkpoint, index, &dev.device)
        .with_context(|| format!("loading {}", checkpoint.display()))?;
    asker.beam = blocks_per_query("--beam", beam, asker.searcher().index.blocks.len())?;
    // Questions from stdin are echoed, so that each answer can be told from the next.
    let answer = |q: &str, echo: bool| -> Result<()> {
        let a = asker.ask(q)?;
        if json {
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
    if let Some(q) = question {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
