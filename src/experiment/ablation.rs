//! `realm experiment ablation`: the REALM paper's pre-training ablation (Guu et al. 2020,
//! Table 2) in miniature. Per seed, one ICT warm start, then from it four arms:
//!
//! - `ict`: the warm start alone;
//! - `salient`: + REALM pre-training with salient-span masks, index refreshed every
//!   `refresh_every` steps, on one of three texts ([`PretrainText`]): the corpus's own sentences
//!   (their own document excluded from retrieval), other documents' sentences, or fact
//!   statements (training questions' cloze forms, the answer the masked span);
//! - `random`: the same with random-token masks;
//! - `stale`: the same as `salient` with the index refreshed 30× less often.
//!
//! Each arm's checkpoint is evaluated by [`crate::eval::evaluate`] on held-out questions that no
//! arm trains on, against an index rebuilt by its own final document tower: recall@1/@5/@20 of an
//! answer-bearing block, and the masked-LM's zero-shot cloze exact match with retrieval and with
//! the null document only. The stages are the library's own ([`run_ict`], [`run_pretrain`]).
//!
//! Beside the arms, one measurement of the pre-training data that decides whether the masked-LM
//! signal can train the retriever at all: the fraction of salient spans whose wordpieces occur
//! (as whole words) in a block of *another* document, the only blocks retrieval may return.
//!
//! Output (`out/`): `summary.json` (every run, and per arm the median, minimum and maximum over
//! seeds; `realm report` renders it), `ablation.csv` (one row per arm and seed), `metrics.jsonl`
//! (one `eval` line per arm and seed, the arm as the stage, for `realm report`'s plots), and
//! `seed-N/` with each stage's run directory.

use crate::data::demo::write_demo_files;
use crate::data::{CorpusReader, Document};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalConfig, EvalReport};
use crate::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use crate::index::RetrieverModel;
use crate::lines::read_text;
use crate::model::{BertTokenizer, TowerPooling};
use crate::report::metrics::Record;
use crate::train::ict::{run_ict, IctConfig};
use crate::train::models::{ModelInit, Origin};
use crate::train::pretrain::{
    check_tower_rates, run_pretrain, PretrainConfig, PretrainData, PretrainReport,
};
use crate::train::{LoopConfig, RunOptions};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

const OP: &str = "experiment ablation";

/// Body wordpieces per block (the demo's: every demo document fits one block).
const BLOCK_LEN: usize = 224;
/// `[CLS] x [SEP]` for ICT and pre-training queries and for questions.
const QUERY_LEN: usize = 48;
/// `[CLS] title [SEP] body [SEP]` for the document tower.
const DOC_LEN: usize = 128;
/// How much staler arm `stale`'s index is (the paper's 30×).
const STALER: u64 = 30;

/// How large a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// A few steps on a few dozen documents: keeps the code path alive in `cargo test`.
    Tiny,
    /// The whole corpus, sized for under 60 minutes for 3 seeds on 2 otherwise idle CPU cores.
    Cpu,
    /// A fifth of the CPU size's steps and half its batches, 1,000 documents and the first 100
    /// questions: what a 2-core machine shared with other jobs finished in about 40 minutes.
    Small,
    /// For one GPU: ICT 1,000 steps of 128, pre-training 1,000 steps of 32 (the CPU size: 300
    /// of 64, 100 of 8) at the CPU size's rates; meant for the whole wiki-vital corpus (10,033
    /// lead sections, 5× the demo's).
    Gpu,
}

/// The settings a [`Size`] stands for.
#[derive(Clone, Debug, Serialize)]
pub struct Shape {
    /// ICT warm-start steps.
    pub ict_steps: u64,
    /// ICT batch size (queries per step, the in-batch candidates).
    pub ict_batch: usize,
    /// ICT peak learning rate.
    pub ict_lr: f64,
    /// REALM pre-training steps per pre-training arm.
    pub pretrain_steps: u64,
    /// REALM pre-training batch size (masked texts per step).
    pub pretrain_batch: usize,
    /// REALM pre-training peak learning rate.
    pub pretrain_lr: f64,
    /// Candidates per pre-training query, the null document included.
    pub top_k: usize,
    /// Index refresh period of arms `salient` and `random` (arm `stale`: 30× this).
    pub refresh_every: u64,
    /// Keep at most this many documents (those the questions are about first).
    pub max_docs: Option<usize>,
    /// Evaluate only the first n questions.
    pub max_questions: Option<usize>,
    /// Blocks retrieved per question for recall@k (20) and the cloze marginal.
    pub eval_k: usize,
}

impl Size {
    /// The settings, every step count multiplied by `scale`.
    pub fn shape(self, scale: f64) -> Shape {
        let steps = |n: u64| ((n as f64 * scale).round() as u64).max(2);
        match self {
            Size::Tiny => Shape {
                ict_steps: steps(3),
                ict_batch: 8,
                ict_lr: 1e-3,
                pretrain_steps: steps(2),
                pretrain_batch: 2,
                pretrain_lr: 1e-4,
                top_k: 3,
                refresh_every: 1,
                max_docs: Some(24),
                max_questions: Some(6),
                eval_k: 5,
            },
            // ICT as the demo's (held-out recall@5 of its dev questions 0.68); pre-training at
            // lr 1e-4, where the demo measured the retriever drifting least without freezing
            // (issue 22), with a copy head (without it a 2-layer encoder does not learn to read
            // in a few hundred steps: docs/training.md).
            Size::Cpu => Shape {
                ict_steps: steps(300),
                ict_batch: 64,
                ict_lr: 1e-3,
                pretrain_steps: steps(100),
                pretrain_batch: 8,
                pretrain_lr: 1e-4,
                top_k: 8,
                refresh_every: 10,
                max_docs: None,
                max_questions: None,
                eval_k: 20,
            },
            Size::Small => Shape {
                ict_steps: steps(60),
                ict_batch: 32,
                pretrain_steps: steps(20),
                pretrain_batch: 4,
                refresh_every: 4,
                max_docs: Some(1000),
                max_questions: Some(100),
                ..Size::Cpu.shape(scale)
            },
            // The cpu size's recipe, longer and in larger batches, from scratch as there: from
            // all-MiniLM-L6-v2 the held-out questions are answered by retrieval before any
            // training (recall@5 1.000 over wiki-vital, docs/realm-ablation.md), which leaves
            // pre-training nothing to show. The index refreshed every 50 steps (arm `stale`:
            // every 1,500, so never within the run), 20 times per run.
            Size::Gpu => Shape {
                ict_steps: steps(1000),
                ict_batch: 128,
                pretrain_steps: steps(1000),
                pretrain_batch: 32,
                refresh_every: 50,
                ..Size::Cpu.shape(scale)
            },
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct AblationConfig {
    /// A new or empty folder.
    pub out: PathBuf,
    /// How large a run is.
    pub size: Size,
    /// Multiplies every step count of the size.
    pub scale: f64,
    /// One warm start and four arms per seed (the paper's claim needs at least 3).
    pub seeds: Vec<u64>,
    /// The knowledge corpus (JSONL `{"id","title","text"}`); None: the embedded demo corpus.
    pub corpus: Option<PathBuf>,
    /// Held-out questions (JSONL with `question`, `answers`, `doc_id`); None: the demo's dev set.
    pub questions: Option<PathBuf>,
    /// The texts the pre-training arms mask.
    pub text: PretrainText,
    /// A BERT folder to start from; None: the demo's small BERT from scratch, with the demo's
    /// vocabulary whatever the corpus (on wiki-vital: 0.02% `[UNK]`, 1.54 wordpieces a word).
    pub init: Option<PathBuf>,
    /// The retriever towers of the pre-training arms and their learning rates.
    pub towers: Towers,
    /// No progress bars (the one line per finished arm stays).
    pub quiet: bool,
}

/// The texts the pre-training arms mask.
#[derive(Clone, Debug, PartialEq)]
pub enum PretrainText {
    /// The corpus's own sentences; a text never retrieves its own document (REALM's "no trivial
    /// retrievals").
    Corpus,
    /// The sentences of these JSONL documents (e.g. a larger Wikipedia than the corpus); a text
    /// of a corpus document still never retrieves it.
    Examples(PathBuf),
    /// Fact statements: the cloze forms of these training questions (JSONL as the held-out
    /// ones; `question answer`, the answer the one salient span), which state facts the
    /// corpus's documents hold from outside the corpus, as news text does in REALM; None: the
    /// demo's training split, whose subjects no held-out question is about. A held-out question
    /// among them is an error. No document is excluded from their retrieval.
    Facts(Option<PathBuf>),
}

impl PretrainText {
    /// `corpus`, `examples` or `facts`.
    pub fn kind(&self) -> &'static str {
        match self {
            PretrainText::Corpus => "corpus",
            PretrainText::Examples(_) => "examples",
            PretrainText::Facts(_) => "facts",
        }
    }
}

/// The retriever towers of the pre-training arms (`PretrainConfig`'s fields of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Towers {
    /// Untie the ICT warm start's shared tower into a query and a document tower, each a copy
    /// (REALM's two embedders start from the one ICT module).
    pub separate: bool,
    /// The query tower's learning rate relative to the arm's.
    pub query_lr_scale: f64,
    /// The document tower's (0: kept as ICT left it, the index never refreshed).
    pub doc_lr_scale: f64,
}

impl Default for Towers {
    /// One shared tower, trained at the arm's rate (REALM's default).
    fn default() -> Self {
        Towers {
            separate: false,
            query_lr_scale: 1.0,
            doc_lr_scale: 1.0,
        }
    }
}

/// The arms, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// (a) The ICT warm start alone.
    Ict,
    /// (b) + REALM pre-training with salient-span masks.
    Salient,
    /// (c) (b) with random-token masks.
    Random,
    /// (d) (b) with the index refreshed 30× less often.
    Stale,
}

impl Arm {
    /// Every arm, in the order they run.
    pub const ALL: [Arm; 4] = [Arm::Ict, Arm::Salient, Arm::Random, Arm::Stale];

    /// The arm's short name: its run folder, CSV cell and metrics stage.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Ict => "ict",
            Arm::Salient => "salient",
            Arm::Random => "random",
            Arm::Stale => "stale",
        }
    }

    /// The paper's label of the arm.
    pub fn label(self) -> &'static str {
        match self {
            Arm::Ict => "(a) ICT only",
            Arm::Salient => "(b) + REALM pre-training, salient spans",
            Arm::Random => "(c) (b) with random-token masks",
            Arm::Stale => "(d) (b) with a 30x staler index",
        }
    }
}

/// One arm of one seed.
#[derive(Clone, Debug, Serialize)]
pub struct ArmRun {
    /// The arm.
    pub arm: Arm,
    /// The seed of the warm start and of the arm's stage.
    pub seed: u64,
    /// Retrieval recall@1 of the held-out questions (0..=1).
    pub recall_at_1: f64,
    /// Retrieval recall@5 of the held-out questions (0..=1); None with fewer than 5 blocks.
    pub recall_at_5: Option<f64>,
    /// Recall at the evaluation's k (20 at the CPU size).
    pub recall_at_k: f64,
    /// Zero-shot cloze exact match with retrieval (0..=1); None for `ict` or no cloze questions.
    pub em_cloze_retrieval: Option<f64>,
    /// Zero-shot cloze exact match with the null document only (0..=1); None as above.
    pub em_cloze_null_doc: Option<f64>,
    /// Evaluation: log p(answer | top-1 block) − log p(answer | ∅), nats.
    pub retrieval_utility: Option<f64>,
    /// Pre-training: the retrieval utility (marginal) of the last logged window.
    pub pretrain_retrieval_utility: Option<f64>,
    /// Pre-training: mean masked-LM loss of the first logged window, nats; None for `ict`.
    pub pretrain_first_loss: Option<f64>,
    /// Pre-training: mean masked-LM loss of the last logged window, nats; None for `ict`.
    pub pretrain_last_loss: Option<f64>,
    /// Pre-training: index refreshes swapped in; None for `ict`.
    pub refreshes: Option<usize>,
    /// Training seconds of the arm's own stage (the shared warm start for `ict`).
    pub train_seconds: f64,
}

/// Median, minimum and maximum over seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Median over seeds.
    pub median: f64,
    /// Minimum over seeds.
    pub min: f64,
    /// Maximum over seeds.
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn range(&self) -> f64 {
        self.max - self.min
    }
}

/// One arm over all seeds.
#[derive(Clone, Debug, Serialize)]
pub struct ArmSummary {
    /// The arm.
    pub arm: Arm,
    /// The paper's label of the arm ([`Arm::label`]).
    pub label: &'static str,
    /// Retrieval recall@1 of the held-out questions (0..=1).
    pub recall_at_1: Option<Spread>,
    /// Retrieval recall@5 of the held-out questions (0..=1).
    pub recall_at_5: Option<Spread>,
    /// Retrieval recall at the evaluation's k (0..=1).
    pub recall_at_k: Option<Spread>,
    /// Zero-shot cloze exact match with retrieval (0..=1).
    pub em_cloze_retrieval: Option<Spread>,
    /// Zero-shot cloze exact match with the null document only (0..=1).
    pub em_cloze_null_doc: Option<Spread>,
    /// Evaluation: log p(answer | top-1 block) − log p(answer | ∅), nats.
    pub retrieval_utility: Option<Spread>,
    /// Pre-training: the retrieval utility (marginal) of the last logged window, nats.
    pub pretrain_retrieval_utility: Option<Spread>,
}

/// The paper's claim on recall@5: does (b) beat (a) by more than the spread over seeds?
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// median(b) − median(a).
    pub gain: f64,
    /// The larger of the two arms' max − min.
    pub spread: f64,
    /// Seeds behind the medians.
    pub seeds: usize,
    /// Whether `gain` exceeds `spread` over at least [`MIN_VERDICT_SEEDS`] seeds (with fewer, the
    /// spread says nothing of the seed noise).
    pub beats: bool,
}

/// Seeds a [`Verdict`] needs.
pub const MIN_VERDICT_SEEDS: usize = 3;

/// How many salient spans of the pre-training texts could be read off a retrievable block.
#[derive(Clone, Debug, Serialize)]
pub struct Answerable {
    /// Salient spans in all pre-training texts.
    pub spans: usize,
    /// Of those, spans whose wordpieces occur as whole words in a block of another document
    /// (for fact statements, which have no document of their own: in any block).
    pub in_other_document: usize,
    /// `in_other_document` / `spans` (0..=1).
    pub fraction: f64,
    /// Pre-training texts with no salient span (masked by the random fallback).
    pub texts_without_span: usize,
    /// Pre-training texts in all.
    pub texts: usize,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AblationSummary {
    /// The experiment's name: `"ablation"`.
    pub experiment: &'static str,
    /// How large the run was.
    pub size: Size,
    /// The multiplier of every step count.
    pub scale: f64,
    /// The settings the size and scale stood for.
    pub shape: Shape,
    /// The compute device, in words.
    pub device: String,
    /// The BERT folder started from, or the demo's small BERT from scratch.
    pub init: String,
    /// The retriever towers of the pre-training arms and their learning rates.
    pub towers: Towers,
    /// Path of the knowledge corpus used (a cut copy in `out/data/` when the size limits it).
    pub corpus: String,
    /// Path of the held-out questions used (a cut copy in `out/data/` when the size limits it).
    pub questions: String,
    /// What the pre-training arms masked: `corpus`, `examples` or `facts` ([`PretrainText`]).
    pub pretrain_text: &'static str,
    /// Path of the texts the pre-training arms masked (the corpus's, the documents' or the fact
    /// statements').
    pub examples: String,
    /// Held-out questions evaluated, and of those cloze statements.
    pub eval_questions: usize,
    /// Of the held-out questions evaluated, the cloze statements.
    pub eval_cloze_questions: usize,
    /// Blocks in the evaluation index.
    pub blocks: usize,
    /// The seeds run, in order.
    pub seeds: Vec<u64>,
    /// Per arm, the spread over seeds, in [`Arm::ALL`] order.
    pub arms: Vec<ArmSummary>,
    /// The paper's claim on recall@5, (b) against (a); None without recall@5.
    pub recall_at_5_b_vs_a: Option<Verdict>,
    /// How many salient spans a retrievable block could answer.
    pub answerable: Answerable,
    /// Every arm of every seed, in the order run.
    pub runs: Vec<ArmRun>,
    /// Wall-clock seconds of the whole experiment.
    pub total_seconds: f64,
}

/// Runs every seed's warm start and arms, writes the results into `cfg.out` and returns them.
pub fn run_ablation(cfg: &AblationConfig, device: &ComputeDevice) -> Result<AblationSummary> {
    let start = Instant::now();
    check(cfg)?;
    let shape = cfg.size.shape(cfg.scale);
    let data = prepare_data(cfg, &shape)?;
    let init = match &cfg.init {
        Some(dir) => ModelInit::Origin(Origin::Bert { dir: dir.clone() }),
        None => ModelInit::Origin(Origin::Scratch {
            config: crate::demo::scratch_config(
                BertTokenizer::from_vocab(&data.vocab, true)?.vocab_size(),
            ),
            vocab: data.vocab.clone(),
            lowercase: true,
        }),
    };
    let mut opts = RunOptions::new(device.clone());
    opts.quiet = cfg.quiet;
    let mut runs = Vec::new();
    let mut last_eval = None;
    let mut answerable = None;
    for &seed in &cfg.seeds {
        let dir = cfg.out.join(format!("seed-{seed}"));
        let ict_dir = dir.join(Arm::Ict.name());
        let mut ict = IctConfig::new(init.clone(), data.corpus.clone());
        ict.train = stage_loop(shape.ict_steps, shape.ict_batch, shape.ict_lr, seed);
        if cfg.init.is_none() {
            // As the demo: the untrained [CLS] pooler learns too slowly (docs/realm.md).
            ict.retriever.pooling = TowerPooling::Mean;
        }
        (ict.block_len, ict.query_len, ict.doc_len) = (BLOCK_LEN, QUERY_LEN, DOC_LEN);
        ict.heldout = (data.docs / 10).clamp(2, 200);
        ict.eval_pool = data.docs.min(2000);
        let ict_report = run_ict(&ict, &ict_dir, &opts)?;
        let ict_ckpt = ict_dir.join("checkpoint");
        let ict_index = build_index(&ict_ckpt, &data.corpus, &dir.join("index-ict"), device)?;
        let report = eval_arm(&ict_ckpt, &ict_index, &data, &shape, cfg.quiet, device)?;
        runs.push(arm_run(Arm::Ict, seed, &report, None, ict_report.seconds));
        log_progress(runs.last());
        for arm in [Arm::Salient, Arm::Random, Arm::Stale] {
            let pre = pretrain_config(arm, cfg, &ict_ckpt, &ict_index, &data, &shape, seed);
            if answerable.is_none() {
                answerable = Some(answerable_spans(&pre, &ict_ckpt)?);
            }
            let arm_dir = dir.join(arm.name());
            let pre_report = run_pretrain(&pre, &arm_dir, &opts)?;
            let ckpt = arm_dir.join("checkpoint");
            let index = build_index(
                &ckpt,
                &data.corpus,
                &dir.join(format!("index-{}", arm.name())),
                device,
            )?;
            let report = eval_arm(&ckpt, &index, &data, &shape, cfg.quiet, device)?;
            runs.push(arm_run(
                arm,
                seed,
                &report,
                Some(&pre_report),
                pre_report.seconds,
            ));
            log_progress(runs.last());
            last_eval = Some(report);
        }
        // The results so far, so that a long run that is stopped keeps its finished seeds.
        if let (Some(eval), Some(answerable)) = (&last_eval, &answerable) {
            let summary = assemble(cfg, device, &shape, &data, eval, answerable, &runs, start);
            write_outputs(&cfg.out, &summary)?;
        }
    }
    match (last_eval, answerable) {
        (Some(eval), Some(answerable)) => Ok(assemble(
            cfg,
            device,
            &shape,
            &data,
            &eval,
            &answerable,
            &runs,
            start,
        )),
        _ => Err(Error::bad_input(OP, "seeds", "no seed given")),
    }
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    cfg: &AblationConfig,
    device: &ComputeDevice,
    shape: &Shape,
    data: &Data,
    last_eval: &EvalReport,
    answerable: &Answerable,
    runs: &[ArmRun],
    start: Instant,
) -> AblationSummary {
    let arms: Vec<ArmSummary> = Arm::ALL.iter().map(|&a| summarize(a, runs)).collect();
    let verdict = match (&arms[0].recall_at_5, &arms[1].recall_at_5) {
        (Some(a), Some(b)) => {
            let spread = a.range().max(b.range());
            let gain = b.median - a.median;
            let seeds = runs.iter().filter(|r| r.arm == Arm::Salient).count();
            Some(Verdict {
                gain,
                spread,
                seeds,
                beats: seeds >= MIN_VERDICT_SEEDS && gain > spread,
            })
        }
        _ => None,
    };
    AblationSummary {
        experiment: "ablation",
        size: cfg.size,
        scale: cfg.scale,
        shape: shape.clone(),
        device: device.description(),
        init: match &cfg.init {
            Some(d) => d.display().to_string(),
            None => "the demo's small BERT from scratch".to_string(),
        },
        towers: cfg.towers,
        corpus: data.corpus.display().to_string(),
        questions: data.questions.display().to_string(),
        pretrain_text: cfg.text.kind(),
        examples: data.texts.display().to_string(),
        eval_questions: last_eval.questions,
        eval_cloze_questions: last_eval.cloze_questions,
        blocks: last_eval.blocks,
        seeds: runs
            .iter()
            .filter(|r| r.arm == Arm::Ict)
            .map(|r| r.seed)
            .collect(),
        arms,
        recall_at_5_b_vs_a: verdict,
        answerable: answerable.clone(),
        runs: runs.to_vec(),
        total_seconds: start.elapsed().as_secs_f64(),
    }
}

fn check(cfg: &AblationConfig) -> Result<()> {
    if cfg.seeds.is_empty() {
        return Err(Error::bad_input(OP, "seeds", "give at least one seed"));
    }
    if !(cfg.scale > 0.0 && cfg.scale <= 1000.0) {
        return Err(Error::bad_input(
            OP,
            "scale",
            format!("{}: must be above 0 and at most 1000", cfg.scale),
        ));
    }
    match &cfg.text {
        PretrainText::Examples(p) if !p.is_file() => {
            return Err(Error::file(
                p,
                "--examples: no such file (the texts to mask, JSONL documents)",
            ))
        }
        PretrainText::Facts(Some(p)) if !p.is_file() => {
            return Err(Error::file(
                p,
                "--facts: no such file (training questions, JSONL)",
            ))
        }
        PretrainText::Facts(None) if cfg.questions.is_some() => {
            return Err(Error::bad_input(
                OP,
                "facts",
                "held-out questions of your own need training questions of your own (--facts \
                 FILE); the demo's training split is disjoint from the demo's questions only",
            ))
        }
        _ => {}
    }
    let t = cfg.towers;
    check_tower_rates(OP, t.query_lr_scale, t.doc_lr_scale, Some(!t.separate))?;
    if cfg.questions.is_some() && cfg.corpus.is_none() {
        return Err(Error::bad_input(
            OP,
            "questions",
            "questions of your own need the corpus they are about (--corpus)",
        ));
    }
    crate::io::check_new_output_dir(&cfg.out, "--out")?;
    let busy = std::fs::read_dir(&cfg.out)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if busy {
        return Err(Error::file(
            &cfg.out,
            "--out: must be a new or empty folder",
        ));
    }
    Ok(())
}

/// The files the experiment reads.
struct Data {
    corpus: PathBuf,
    questions: PathBuf,
    vocab: PathBuf,
    docs: usize,
    /// The texts the pre-training arms mask (the corpus, documents or fact statements).
    texts: PathBuf,
}

/// The corpus and questions (the demo's unless given), cut to the size's limits into
/// `out/data/`: the first `max_questions` questions, and the documents they are about before
/// others in file order up to `max_docs`; and the texts to mask.
///
/// The demo's questions and documents keep wiki-vital's document ids, so a corpus that holds
/// the documents of the demo's held-out questions (wiki-vital itself) is evaluated on them, and
/// pre-trained on the demo's training statements with `--facts`.
fn prepare_data(cfg: &AblationConfig, shape: &Shape) -> Result<Data> {
    let dir = cfg.out.join("data");
    let demo = write_demo_files(&dir)?;
    let corpus = cfg.corpus.clone().unwrap_or(demo.docs);
    let questions = match &cfg.questions {
        Some(q) => q.clone(),
        None => {
            check_documents_held(&corpus, &demo.dev)?;
            demo.dev
        }
    };
    let data = cut_data(&dir, corpus, questions, demo.vocab, shape)?;
    let texts = match &cfg.text {
        PretrainText::Corpus => data.corpus.clone(),
        PretrainText::Examples(p) => p.clone(),
        PretrainText::Facts(p) => {
            let facts = p.clone().unwrap_or(demo.train);
            check_held_out(&facts, &data.questions)?;
            facts
        }
    };
    Ok(Data { texts, ..data })
}

/// An error unless `corpus` holds the document (`doc_id`) of every question of `questions`.
fn check_documents_held(corpus: &Path, questions: &Path) -> Result<()> {
    let held: HashSet<String> = read_corpus(corpus)?.into_iter().map(|d| d.id).collect();
    let missing: Vec<String> = json_lines(&read_text(questions)?)
        .into_iter()
        .map(|line| json_id(line, "doc_id", questions))
        .filter(|id| id.as_ref().map_or(true, |id| !held.contains(id)))
        .collect::<Result<_>>()?;
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(Error::file(
            corpus,
            format!(
                "--corpus: {} of the demo's held-out questions are about documents it does not \
                 hold (the first: id {first}); give the questions about it (--questions)",
                missing.len()
            ),
        )),
    }
}

/// The lines of a JSONL text that are not blank, with their 1-based line numbers.
fn json_lines(text: &str) -> Vec<(usize, &str)> {
    (1..)
        .zip(text.lines())
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// A JSON line's `field` as a string (a number as its digits): documents' and questions' ids.
fn json_id((number, line): (usize, &str), field: &str, path: &Path) -> Result<String> {
    let bad = |why: String| Error::file(path, format!("line {number}: {why}"));
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    match v.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(bad(format!("no `{field}`"))),
    }
}

/// An error naming a question of `facts` that is also one of the held-out `questions` (the same
/// text, compared without case and surrounding space): no arm may train on a held-out question.
fn check_held_out(facts: &Path, questions: &Path) -> Result<()> {
    let key = |q: &crate::data::QaExample| q.question.trim().to_lowercase();
    let held_out: HashSet<String> = crate::data::read_qa(questions)?.iter().map(key).collect();
    let train = crate::data::read_qa(facts)?;
    let shared: Vec<&str> = train
        .iter()
        .filter(|q| held_out.contains(&key(q)))
        .map(|q| q.question.as_str())
        .collect();
    match shared.first() {
        None => Ok(()),
        Some(first) => Err(Error::file(
            facts,
            format!(
                "--facts: {} of its questions are held-out questions too (the first: {first:?}); \
                 no arm may train on a held-out question",
                shared.len()
            ),
        )),
    }
}

/// [`prepare_data`]'s corpus and questions, cut to the size's limits, with the corpus as the
/// texts to mask (which [`prepare_data`] replaces for `--examples` and `--facts`).
fn cut_data(
    dir: &Path,
    corpus: PathBuf,
    questions: PathBuf,
    vocab: PathBuf,
    shape: &Shape,
) -> Result<Data> {
    let docs = read_corpus(&corpus)?;
    if shape.max_docs.is_none() && shape.max_questions.is_none() {
        return Ok(Data {
            docs: docs.len(),
            texts: corpus.clone(),
            corpus,
            questions,
            vocab,
        });
    }
    let question_text = read_text(&questions)?;
    let mut kept_questions = json_lines(&question_text);
    kept_questions.truncate(shape.max_questions.unwrap_or(usize::MAX));
    let wanted: HashSet<String> = kept_questions
        .iter()
        .map(|&line| json_id(line, "doc_id", &questions))
        .collect::<Result<_>>()?;
    let max_docs = shape.max_docs.unwrap_or(usize::MAX).max(wanted.len());
    let mut keep: Vec<bool> = docs.iter().map(|d| wanted.contains(&d.id)).collect();
    let mut kept = keep.iter().filter(|&&k| k).count();
    for k in keep.iter_mut() {
        if kept >= max_docs {
            break;
        }
        if !*k {
            *k = true;
            kept += 1;
        }
    }
    let write_lines = |name: &str, lines: &mut dyn Iterator<Item = String>| -> Result<PathBuf> {
        let path = dir.join(name);
        let text: String = lines.map(|l| format!("{l}\n")).collect();
        crate::io::write_atomic(&path, |w| w.write_all(text.as_bytes()))?;
        Ok(path)
    };
    let corpus = write_lines(
        "corpus.jsonl",
        &mut docs.iter().zip(&keep).filter(|(_, &k)| k).map(|(d, _)| {
            serde_json::json!({"id": d.id, "title": d.title, "text": d.text}).to_string()
        }),
    )?;
    Ok(Data {
        texts: corpus.clone(),
        corpus,
        questions: write_lines(
            "questions.jsonl",
            &mut kept_questions.iter().map(|&(_, l)| l.to_string()),
        )?,
        vocab,
        docs: kept,
    })
}

/// Every document of a corpus file, in any format the stages read.
fn read_corpus(path: &Path) -> Result<Vec<Document>> {
    CorpusReader::open(path, false)?.collect()
}

/// A stage's loop: warm-up over the first tenth, as the demo's stages.
fn stage_loop(steps: u64, batch: usize, lr: f64, seed: u64) -> LoopConfig {
    let mut l = LoopConfig::new(steps, batch, lr);
    l.warmup = Some((steps / 10).max(1));
    l.seed = seed;
    // The experiment's stages are short: a checkpoint at the end is enough.
    l.checkpoint_every = 0;
    l
}

fn pretrain_config(
    arm: Arm,
    cfg: &AblationConfig,
    ict_ckpt: &Path,
    ict_index: &Path,
    data: &Data,
    shape: &Shape,
    seed: u64,
) -> PretrainConfig {
    let init = ModelInit::Checkpoint {
        dir: ict_ckpt.to_path_buf(),
    };
    let towers = cfg.towers;
    let mut pre = PretrainConfig::new(init, data.corpus.clone());
    match &cfg.text {
        PretrainText::Corpus => {}
        PretrainText::Examples(_) => pre.examples = Some(data.texts.clone()),
        PretrainText::Facts(_) => pre.cloze_questions = Some(data.texts.clone()),
    }
    pre.retriever.shared_towers = !towers.separate;
    (pre.query_lr_scale, pre.doc_lr_scale) = (towers.query_lr_scale, towers.doc_lr_scale);
    pre.train = stage_loop(
        shape.pretrain_steps,
        shape.pretrain_batch,
        shape.pretrain_lr,
        seed,
    );
    (pre.block_len, pre.query_len, pre.doc_len) = (BLOCK_LEN, QUERY_LEN, DOC_LEN);
    pre.top_k = shape.top_k;
    pre.index = Some(ict_index.to_path_buf());
    pre.copy_head = true;
    pre.random_masks = arm == Arm::Random;
    pre.refresh.every = match arm {
        Arm::Stale => shape.refresh_every * STALER,
        _ => shape.refresh_every,
    };
    // Each refresh swapped in at a fixed step (half a period after it starts; at the cpu size it
    // takes 3–4 steps), not when ready: otherwise the swap step, and with it the run, depends on
    // the machine's load (measured: recall@5 0.575 and 0.614 from one configuration and seed).
    pre.refresh.swap_after = Some((pre.refresh.every / 2).max(1));
    pre
}

/// The index of `corpus` by a checkpoint's document tower, built as pre-training builds its own
/// (same blocks, same document-tower input length), saved in `dir`.
fn build_index(
    checkpoint: &Path,
    corpus: &Path,
    dir: &Path,
    device: &ComputeDevice,
) -> Result<PathBuf> {
    let _exec = device.enter()?;
    let model = RetrieverModel::load(checkpoint, &device.device)?;
    let opts = IndexCorpus {
        max_block_tokens: BLOCK_LEN,
        skip_bad_lines: false,
        embed: EmbedBlocks {
            batch: 64,
            max_len: DOC_LEN,
            progress: None,
        },
        step: 0,
    };
    let (index, _) = index_corpus(&model, corpus, &opts, &device.device)?;
    index.save(dir)?;
    Ok(dir.to_path_buf())
}

fn eval_arm(
    checkpoint: &Path,
    index: &Path,
    data: &Data,
    shape: &Shape,
    quiet: bool,
    device: &ComputeDevice,
) -> Result<EvalReport> {
    let mut eval = EvalConfig::new(checkpoint, &data.questions);
    eval.index = Some(index.to_path_buf());
    eval.top_k = shape.eval_k;
    eval.query_len = QUERY_LEN;
    eval.doc_len = BLOCK_LEN;
    eval.max_questions = shape.max_questions;
    eval.quiet = quiet;
    evaluate(&eval, device)
}

fn arm_run(
    arm: Arm,
    seed: u64,
    eval: &EvalReport,
    pre: Option<&PretrainReport>,
    train_seconds: f64,
) -> ArmRun {
    ArmRun {
        arm,
        seed,
        recall_at_1: eval.recall_at_1,
        recall_at_5: eval.recall_at_5,
        recall_at_k: eval.recall_at_k,
        em_cloze_retrieval: eval.em_cloze_retrieval,
        em_cloze_null_doc: eval.em_cloze_null_doc,
        retrieval_utility: eval.retrieval_utility,
        pretrain_retrieval_utility: pre.and_then(|p| p.retrieval_utility),
        pretrain_first_loss: pre.and_then(|p| p.first_loss),
        pretrain_last_loss: pre.and_then(|p| p.last_loss),
        refreshes: pre.map(|p| p.refreshes),
        train_seconds,
    }
}

/// One line per finished arm on stderr (`quiet` hides only the progress bars).
fn log_progress(run: Option<&ArmRun>) {
    if let Some(r) = run {
        eprintln!(
            "ablation: seed {} arm {}: recall@1 {:.3} @5 {} @k {:.3}, cloze EM {} / null doc {}",
            r.seed,
            r.arm.name(),
            r.recall_at_1,
            opt(r.recall_at_5),
            r.recall_at_k,
            opt(r.em_cloze_retrieval),
            opt(r.em_cloze_null_doc)
        );
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.3}"))
}

fn summarize(arm: Arm, runs: &[ArmRun]) -> ArmSummary {
    let mine: Vec<&ArmRun> = runs.iter().filter(|r| r.arm == arm).collect();
    let spread = |f: &dyn Fn(&ArmRun) -> Option<f64>| {
        Spread::of(&mine.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    ArmSummary {
        arm,
        label: arm.label(),
        recall_at_1: spread(&|r| Some(r.recall_at_1)),
        recall_at_5: spread(&|r| r.recall_at_5),
        recall_at_k: spread(&|r| Some(r.recall_at_k)),
        em_cloze_retrieval: spread(&|r| r.em_cloze_retrieval),
        em_cloze_null_doc: spread(&|r| r.em_cloze_null_doc),
        retrieval_utility: spread(&|r| r.retrieval_utility),
        pretrain_retrieval_utility: spread(&|r| r.pretrain_retrieval_utility),
    }
}

/// The salient spans of the pre-training texts that occur, as whole words, in a block of
/// another document than their own (the blocks retrieval may return).
fn answerable_spans(pre: &PretrainConfig, checkpoint: &Path) -> Result<Answerable> {
    let tok = BertTokenizer::from_dir(checkpoint)?;
    let data = PretrainData::load(pre, &tok)?;
    let continuation: Vec<bool> = (0..tok.vocab_size() as u32)
        .map(|id| tok.id_to_token(id).is_some_and(|t| t.starts_with("##")))
        .collect();
    let is_cont = |id: u32| continuation.get(id as usize).copied().unwrap_or(false);
    let spans: HashSet<&[u32]> = data
        .examples
        .iter()
        .flat_map(|e| e.spans.iter().map(|r| &e.tokens[r.clone()]))
        .collect();
    let lengths: HashSet<usize> = spans.iter().map(|s| s.len()).collect();
    // Per span text: the first document holding it, and whether a second one does.
    let mut found: HashMap<&[u32], (u32, bool)> = HashMap::new();
    for (block, &doc) in data.knowledge.blocks.iter().zip(&data.knowledge.block_doc) {
        let t = &block.tokens;
        for &n in &lengths {
            for s in 0..t.len().saturating_sub(n - 1) {
                let whole = !is_cont(t[s]) && t.get(s + n).is_none_or(|&next| !is_cont(next));
                if let (true, Some(key)) = (whole, spans.get(&t[s..s + n])) {
                    let e = found.entry(key).or_insert((doc, false));
                    e.1 |= e.0 != doc;
                }
            }
        }
    }
    let (mut total, mut other, mut without) = (0, 0, 0);
    for (e, own) in data.examples.iter().zip(&data.exclude) {
        without += usize::from(e.spans.is_empty());
        for r in &e.spans {
            total += 1;
            other += usize::from(match found.get(&e.tokens[r.clone()]) {
                Some(&(doc, many)) => many || Some(doc) != *own,
                None => false,
            });
        }
    }
    Ok(Answerable {
        spans: total,
        in_other_document: other,
        fraction: other as f64 / total.max(1) as f64,
        texts_without_span: without,
        texts: data.examples.len(),
    })
}

fn write_outputs(out: &Path, s: &AblationSummary) -> Result<()> {
    crate::io::write_json_atomic(out.join("summary.json"), s)?;
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut csv = String::from(
        "arm,seed,recall_at_1,recall_at_5,recall_at_k,em_cloze_retrieval,em_cloze_null_doc,\
         retrieval_utility,pretrain_retrieval_utility,pretrain_first_loss,pretrain_last_loss,\
         train_seconds\n",
    );
    for r in &s.runs {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.1}\n",
            r.arm.name(),
            r.seed,
            r.recall_at_1,
            cell(r.recall_at_5),
            r.recall_at_k,
            cell(r.em_cloze_retrieval),
            cell(r.em_cloze_null_doc),
            cell(r.retrieval_utility),
            cell(r.pretrain_retrieval_utility),
            cell(r.pretrain_first_loss),
            cell(r.pretrain_last_loss),
            r.train_seconds
        ));
    }
    crate::io::write_atomic(out.join("ablation.csv"), |w| w.write_all(csv.as_bytes()))?;
    // One eval line per arm and seed, the arm as the stage and the seed's position as the step:
    // `realm report` draws each arm's recall and exact match across seeds.
    let mut lines = String::new();
    for (i, r) in s.runs.iter().enumerate() {
        let position = s.seeds.iter().position(|&x| x == r.seed).unwrap_or(i);
        let rec = Record {
            stage: r.arm.name().to_string(),
            step: position as u64,
            recall_at_1: Some(r.recall_at_1),
            recall_at_5: r.recall_at_5,
            em: r.em_cloze_retrieval,
            retrieval_utility: r.retrieval_utility,
            ..Record::default()
        };
        lines.push_str(&serde_json::to_string(&rec).map_err(|e| Error::file(out, e))?);
        lines.push('\n');
    }
    crate::io::write_atomic(out.join("metrics.jsonl"), |w| w.write_all(lines.as_bytes()))
}

/// The summary as Markdown tables: per arm the median [min–max] over seeds, then the claim.
pub fn render(s: &AblationSummary) -> String {
    let cell = |v: &Option<Spread>| match v {
        Some(v) => format!("{:.3} [{:.3}–{:.3}]", v.median, v.min, v.max),
        None => "-".to_string(),
    };
    let mut md = format!(
        "REALM ablation ({:?} size, scale {}): {} seeds, {} held-out questions ({} cloze), {} blocks; median [min–max] over seeds\n\n\
         | arm | recall@1 | recall@5 | recall@{} | cloze EM, retrieval | cloze EM, null doc | retrieval utility (eval) | retrieval utility (pre-training) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        s.size, s.scale, s.seeds.len(), s.eval_questions, s.eval_cloze_questions, s.blocks, s.shape.eval_k
    );
    for a in &s.arms {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.label,
            cell(&a.recall_at_1),
            cell(&a.recall_at_5),
            cell(&a.recall_at_k),
            cell(&a.em_cloze_retrieval),
            cell(&a.em_cloze_null_doc),
            cell(&a.retrieval_utility),
            cell(&a.pretrain_retrieval_utility),
        ));
    }
    if let Some(v) = &s.recall_at_5_b_vs_a {
        let verdict = if v.seeds < MIN_VERDICT_SEEDS {
            format!(
                "{} seed(s), too few to compare with the seed noise",
                v.seeds
            )
        } else if v.beats {
            "(b) beats (a) by more than the spread".to_string()
        } else {
            "(b) does not beat (a) by more than the spread".to_string()
        };
        md.push_str(&format!(
            "\nrecall@5, (b) − (a): {:+.3} (medians), spread {:.3}: {verdict}\n",
            v.gain, v.spread,
        ));
    }
    let t = &s.towers;
    md.push_str(&format!(
        "pre-training arms: texts masked ({}) from {}; {} towers, query tower at {}x and document tower at {}x the arm's learning rate\n",
        s.pretrain_text,
        s.examples,
        if t.separate { "separate" } else { "shared" },
        t.query_lr_scale,
        t.doc_lr_scale
    ));
    let a = &s.answerable;
    md.push_str(&format!(
        "salient spans found as whole words in a block of another document: {} of {} ({:.1}%); texts without a salient span: {} of {}\n",
        a.in_other_document, a.spans, 100.0 * a.fraction, a.texts_without_span, a.texts
    ));
    md
}
