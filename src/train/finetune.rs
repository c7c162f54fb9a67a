//! `realm finetune`: open-QA fine-tuning as ORQA and REALM do it. The document embeddings are
//! frozen (the index of the starting checkpoint stays fixed); the query tower and the reader are
//! trained. Each question retrieves a beam of blocks by exact MIPS; its relevance to them is
//! recomputed with the current query tower against the fixed block embeddings (so gradients reach
//! the query tower only); the reader reads the top `reader_beam` blocks. The loss is ORQA's
//! (`model::reader::qa_loss`): the retriever marginal over the beam blocks that contain an
//! answer, plus the reader marginal over every candidate span that matches one, each zero when
//! nothing matches.

use super::examples::DataOrder;
use super::limits;
use super::models::{self, ModelInit, INDEX, READER};
use super::run::{Stage, StageConfig};
use super::state::step_rng;
use super::trainer::{LoopConfig, RunOptions, Trainer};
use crate::data::{answer_spans, read_qa};
use crate::error::{Error, Result};
use crate::index::build::{corpus_blocks, embed_blocks, EmbedBlocks};
use crate::index::weights_fingerprint;
use crate::index::StoredIndex;
use crate::model::reader::qa_loss;
use crate::model::realm_inputs::{joined_inputs, query_inputs};
use crate::model::{relevance, Mode, ReaderConfig, RealmSettings, RetrieverConfig};
use crate::ops::mips::{mips_top_k, MipsIndex};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const OP: &str = "finetune";
const STREAM_ORDER: u64 = 0xf1e_0001;
const STREAM_DROPOUT: u64 = 0xf1e_0002;

/// What `realm finetune` trains and how (saved as the run's `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// A pre-training (or ICT) checkpoint, whose `index/` is used unless `corpus` is given; or a
    /// BERT folder / size, with `corpus` indexed at the start.
    pub init: ModelInit,
    /// Training questions: NQ-open JSONL or SQuAD JSON.
    pub questions: PathBuf,
    /// A corpus to fine-tune over, indexed at the start with the starting document tower
    /// (instead of the starting checkpoint's `index/`); required when the start has no index.
    pub corpus: Option<PathBuf>,
    /// Used when the retriever starts from BERT rather than a checkpoint.
    pub retriever: RetrieverConfig,
    /// The reader's span scorer, when it does not come from the checkpoint.
    pub reader: ReaderConfig,
    /// Steps, batch (questions per step), learning rate and the rest of the loop.
    pub train: LoopConfig,
    /// Blocks the retriever's marginal runs over (ORQA/REALM: 5,000 on accelerators).
    pub retriever_beam: usize,
    /// Blocks the reader reads per question (ORQA/REALM: 5).
    pub reader_beam: usize,
    /// `[CLS] question [SEP]` in wordpieces.
    pub query_len: usize,
    /// Body wordpieces of a block the reader sees beside the question.
    pub doc_len: usize,
    /// Body wordpieces per block when `corpus` is indexed.
    pub block_len: usize,
    /// Skip (and count) malformed lines of `corpus` instead of stopping at the first.
    pub skip_bad_lines: bool,
}

impl FinetuneConfig {
    /// Small-scale CPU defaults (ORQA's learning rate 1e-5).
    pub fn new(init: ModelInit, questions: PathBuf) -> Self {
        let retriever = models::default_retriever_config(&init);
        FinetuneConfig {
            init,
            questions,
            corpus: None,
            retriever,
            reader: ReaderConfig::default(),
            train: LoopConfig::new(300, 8, 1e-5),
            retriever_beam: 100,
            reader_beam: 5,
            query_len: 64,
            doc_len: 288,
            block_len: 288,
            skip_bad_lines: false,
        }
    }
}

impl StageConfig for FinetuneConfig {
    fn validate(&self) -> Result<()> {
        self.init.validate(OP)?;
        limits::retriever(OP, &self.retriever)?;
        self.reader.validate()?;
        limits::within(
            OP,
            "reader.span_hidden_size",
            self.reader.span_hidden_size,
            1,
            1 << 16,
        )?;
        limits::within(
            OP,
            "reader.max_span_width",
            self.reader.max_span_width,
            1,
            1 << 12,
        )?;
        self.train.validate()?;
        limits::within(
            OP,
            "retriever_beam",
            self.retriever_beam,
            1,
            limits::MAX_LEN,
        )?;
        limits::within(OP, "reader_beam", self.reader_beam, 1, self.retriever_beam)?;
        limits::within(OP, "query_len", self.query_len, 3, limits::MAX_LEN)?;
        limits::within(OP, "doc_len", self.doc_len, 1, limits::MAX_LEN)?;
        limits::within(OP, "block_len", self.block_len, 1, limits::MAX_LEN)?;
        Ok(())
    }
}

/// What a run of the stage did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// Steps done in all (resumed ones included).
    pub steps: u64,
    /// Mean loss of the first logged window of this invocation (None: nothing logged).
    pub first_loss: Option<f64>,
    /// Mean loss of the last logged window.
    pub last_loss: Option<f64>,
    /// Fraction of the last logged window's questions with an answer in the reader's blocks.
    pub train_recall_at_reader_beam: Option<f64>,
    /// Seconds in the stage, across resumes.
    pub seconds: f64,
    /// Whether the run stopped before its last step (a stop request or `stop_after`).
    pub interrupted: bool,
}

/// A training question, tokenized.
struct Question {
    pieces: Vec<u32>,
    answers: Vec<Vec<u32>>,
}

/// Runs (or resumes) fine-tuning in `run_dir`; the checkpoint holds the model, `reader/` and the
/// fixed `index/`.
pub fn run_finetune(
    cfg: &FinetuneConfig,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<FinetuneReport> {
    super::run::removed_on_failure(run_dir, &opts.dist, || train(cfg, run_dir, opts))
}

fn train(cfg: &FinetuneConfig, run_dir: &Path, opts: &RunOptions) -> Result<FinetuneReport> {
    cfg.validate()?;
    let _exec = opts.device.enter()?;
    let dev = opts.device.device.clone();
    let models::StageStart {
        run,
        init,
        origin,
        tok_dir,
        tokenizer: tok,
    } = models::start_stage(run_dir, cfg, &cfg.init, opts.resume, &opts.dist)?;
    let settings = RealmSettings {
        query_seq_len: cfg.query_len,
        candidate_seq_len: cfg.doc_len,
        ..RealmSettings::default()
    };
    let fresh = fresh_blocks(cfg, &init, opts.resume, &tok)?;
    let fit = fresh.as_ref().map(|blocks| models::ProjectionFit {
        tokenizer: &tok,
        blocks,
        doc_len: cfg.doc_len,
    });
    let model = models::realm_model(
        &init,
        &cfg.retriever,
        &settings,
        cfg.train.seed,
        &dev,
        &tok_dir,
        fit.as_ref(),
    )?;
    let mut reader = models::reader(
        &init,
        &cfg.reader,
        cfg.train.seed,
        &dev,
        &run.root().join("reader-scratch"),
    )?;
    let dtype = cfg.train.compute_dtype(opts.device.default_dtype())?;
    reader.set_compute_dtype(dtype)?;
    limits::fits_positions(
        OP,
        model.retriever().bert_config(),
        &[
            ("query_len", cfg.query_len),
            ("query_len + doc_len + 3", cfg.query_len + cfg.doc_len + 3),
        ],
    )?;

    let index = starting_index(cfg, &init, fresh, &model, &tok, &dev)?;
    let n = index.blocks.len();
    if cfg.retriever_beam > n {
        return Err(Error::bad_input(
            OP,
            "retriever_beam",
            format!("{} exceeds the {n} blocks of the index", cfg.retriever_beam),
        ));
    }
    let mips = MipsIndex::new(&index.embeddings.to_device(&dev)?)?;
    let frozen = index.embeddings.to_device(&dev)?.to_dtype(DType::F32)?;

    let questions: Vec<Question> = read_qa(&cfg.questions)?
        .into_iter()
        .map(|q| {
            let answers: Vec<&str> = q.answers.iter().map(|a| a.text.as_str()).collect();
            Ok(Question {
                pieces: tok.wordpieces(&[q.question.as_str()])?.remove(0),
                answers: tok.wordpieces(&answers)?,
            })
        })
        .collect::<Result<_>>()?;
    if questions.is_empty() {
        return Err(Error::file(&cfg.questions, "no questions"));
    }

    // Trained: the query tower (all of a shared retriever) and the reader.
    let separate = !model.retriever().config().shared_towers;
    let mut vars: Vec<_> = model
        .retriever()
        .vars()
        .into_iter()
        .filter(|(name, _)| !separate || name.starts_with("query_embedder."))
        .collect();
    vars.extend(
        reader
            .vars()
            .iter()
            .map(|(name, v)| (format!("reader.{name}"), v.clone())),
    );
    let mut trainer = Trainer::new(&run, Stage::Finetune, vars, &cfg.train, opts)?;
    let mut order = DataOrder::new(
        questions.len(),
        cfg.train.batch,
        cfg.train.seed,
        STREAM_ORDER,
    )?;
    let max_len = cfg.query_len + cfg.doc_len + 3;
    let mut report = FinetuneReport {
        steps: 0,
        first_loss: None,
        last_loss: None,
        train_recall_at_reader_beam: None,
        seconds: 0.0,
        interrupted: false,
    };
    let (mut window_loss, mut window_n, mut window_hits, mut window_q) = (0.0, 0usize, 0usize, 0);
    while !trainer.done() {
        let step = trainer.step();
        let (ids, cursor) = order.batch(step);
        let part = opts.dist.shard(ids.len());
        let first = part.start as u64;
        let batch: Vec<&Question> = ids[part].iter().map(|&i| &questions[i]).collect();
        let seed = opts
            .dist
            .replica_seed(step_rng(cfg.train.seed, STREAM_DROPOUT, step).next_u64());
        let pieces: Vec<&[u32]> = batch.iter().map(|q| q.pieces.as_slice()).collect();
        let q_in = query_inputs(&tok, &pieces, cfg.query_len, &dev)?;
        let q = model
            .retriever()
            .query_tower()
            .embed(&q_in, Mode::Train { seed, step })?;
        let (_, top) = mips_top_k(&q.detach(), &mips, cfg.retriever_beam, None)?;
        let top_cpu = top.to_device(&candle_core::Device::Cpu)?.to_vec2::<u32>()?;
        let docs = frozen.index_select(&top.flatten_all()?, 0)?;
        let rel = relevance(&q, &docs)?;

        let mut losses = Vec::with_capacity(batch.len());
        for (i, question) in batch.iter().enumerate() {
            let beam = &top_cpu[i];
            let has_answer: Vec<bool> = beam
                .iter()
                .map(|&b| {
                    !answer_spans(
                        &index.blocks[b as usize].tokens,
                        &question.answers,
                        usize::MAX,
                    )
                    .is_empty()
                })
                .collect();
            let read = &beam[..cfg.reader_beam];
            window_hits += usize::from(has_answer[..cfg.reader_beam].iter().any(|&h| h));
            window_q += 1;
            let bodies: Vec<Option<&[u32]>> = read
                .iter()
                .map(|&b| Some(index.blocks[b as usize].tokens.as_slice()))
                .collect();
            let (input, offsets) =
                joined_inputs(&tok, &[question.pieces.as_slice()], &bodies, max_len, &dev)?;
            let gold: Vec<Vec<(usize, usize)>> = read
                .iter()
                .map(|&b| {
                    answer_spans(
                        &index.blocks[b as usize].tokens,
                        &question.answers,
                        cfg.reader.max_span_width,
                    )
                })
                .collect();
            let rel_i = rel.get(i)?;
            let spans = reader
                .span_logits(
                    &input,
                    &offsets,
                    Mode::Train {
                        seed: seed ^ 0x7265_6164,
                        step: step * ids.len() as u64 + first + i as u64,
                    },
                )?
                .plus_relevance(&rel_i.narrow(0, 0, cfg.reader_beam)?)?;
            losses.push(qa_loss(&spans, &gold, &rel_i, &has_answer)?.loss);
        }
        let loss = Tensor::stack(&losses, 0)?.mean_all()?;
        let grads = trainer.backward(&loss)?;
        let (grads, loss) = trainer.all_reduce(grads, &loss, batch.len())?;
        let update = trainer.update(grads)?;
        trainer.state.data = cursor;
        window_loss += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        window_n += 1;
        if trainer.log_due() {
            let mut m = trainer.metric();
            let mean = window_loss / window_n as f64;
            report.first_loss.get_or_insert(mean);
            report.last_loss = Some(mean);
            m.loss = Some(mean);
            m.lr = Some(update.lr);
            let recall = window_hits as f64 / window_q.max(1) as f64;
            report.train_recall_at_reader_beam = Some(recall);
            if cfg.reader_beam == 5 {
                m.recall_at_5 = Some(recall);
            }
            trainer.log(&m)?;
            (window_loss, window_n, window_hits, window_q) = (0.0, 0, 0, 0);
        }
        if trainer.checkpoint_due()? {
            trainer.save(&run.checkpoint(), |d| {
                model.save(d)?;
                reader.save(d.join(READER))?;
                models::write_origin(&origin, d)?;
                index.save(d.join(INDEX))
            })?;
        }
    }
    trainer.finish();
    report.steps = trainer.step();
    report.interrupted = trainer.interrupted();
    report.seconds = trainer.time_s();
    Ok(report)
}

/// The blocks of `corpus` when fine-tuning indexes it at the start: not when resuming (the run's
/// checkpoint holds the index it started with), and only when given (else the starting
/// checkpoint's `index/` is read).
fn fresh_blocks(
    cfg: &FinetuneConfig,
    init: &ModelInit,
    resume: bool,
    tok: &crate::model::BertTokenizer,
) -> Result<Option<Vec<crate::data::Block>>> {
    let own = init.checkpoint().is_some_and(|d| d.join(INDEX).exists());
    match &cfg.corpus {
        Some(corpus) if !resume || !own => Ok(Some(
            corpus_blocks(corpus, tok, cfg.block_len, cfg.skip_bad_lines)?.blocks,
        )),
        _ => Ok(None),
    }
}

/// The index fine-tuning reads: `fresh` blocks (see [`fresh_blocks`]) embedded by the starting
/// document tower, else the starting checkpoint's `index/` (when resuming, the run's own).
fn starting_index(
    cfg: &FinetuneConfig,
    init: &ModelInit,
    fresh: Option<Vec<crate::data::Block>>,
    model: &crate::model::RealmModel,
    tok: &crate::model::BertTokenizer,
    dev: &candle_core::Device,
) -> Result<StoredIndex> {
    let Some(blocks) = fresh else {
        return match init
            .checkpoint()
            .map(|d| d.join(INDEX))
            .filter(|d| d.exists())
        {
            Some(dir) => StoredIndex::load(dir, None),
            None => Err(Error::bad_input(
                OP,
                "corpus",
                "the starting checkpoint has no index/: give a corpus to index",
            )),
        };
    };
    let tower = model.retriever().doc_tower();
    let opts = EmbedBlocks {
        batch: 64,
        max_len: cfg.doc_len,
        progress: None,
    };
    let embeddings = embed_blocks(tower, tok, &blocks, &opts, dev)?;
    StoredIndex::new(
        &weights_fingerprint(tower.vars())?,
        "finetune start",
        0,
        blocks,
        embeddings,
    )
}
