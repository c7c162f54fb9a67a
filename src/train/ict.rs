//! `realm ict`: the Inverse Cloze Task warm start of the retriever (ORQA, Lee et al. 2019; REALM
//! §3.4 starts from it). A random sentence of a block is the pseudo-query, the block (without that
//! sentence 90% of the time) its positive context, and the other blocks of the batch are the
//! negatives: the loss is the cross-entropy of the softmax over the batch's contexts.
//!
//! Held-out recall@1/@5: queries from held-out blocks (their sentence always removed from the
//! context) retrieve among a fixed pool of contexts (the held-out ones plus other blocks).

use super::examples::DataOrder;
use super::limits;
use super::models::{self, ModelInit};
use super::run::{Stage, StageConfig};
use super::state::step_rng;
use super::trainer::{LoopConfig, RunOptions, Trainer};
use crate::data::masking::shuffle;
use crate::data::{ict_example, Block, IctExample};
use crate::error::{Error, Result};
use crate::index::build::corpus_blocks;
use crate::model::{doc_inputs, query_inputs, BertTokenizer, Mode, Retriever, RetrieverConfig};
use crate::ops::mips::{mips_top_k, MipsIndex};
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const OP: &str = "ict";
/// Random streams of the stage (see [`step_rng`]).
const STREAM_ORDER: u64 = 0x1c7_0001;
const STREAM_EXAMPLES: u64 = 0x1c7_0002;
const STREAM_HELDOUT: u64 = 0x1c7_0003;

/// What `realm ict` trains and how (saved as the run's `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IctConfig {
    /// A BERT folder, a from-scratch size, or an earlier ICT checkpoint.
    pub init: ModelInit,
    /// Corpus file (JSONL or DPR TSV).
    pub corpus: PathBuf,
    /// The towers' projection, when the retriever starts from BERT.
    pub retriever: RetrieverConfig,
    /// Steps, batch (queries per step, each with its context), learning rate and the rest of
    /// the loop.
    pub train: LoopConfig,
    /// Body wordpieces per block.
    pub block_len: usize,
    /// Query tower inputs, `[CLS] x [SEP]`.
    pub query_len: usize,
    /// Document tower inputs, `[CLS] title [SEP] body [SEP]`.
    pub doc_len: usize,
    /// Probability that the query sentence is removed from its context (ORQA: 0.9).
    pub remove_prob: f64,
    /// Blocks held out of training for the recall measurement.
    pub heldout: usize,
    /// Contexts the held-out queries retrieve among (held-out ones included).
    pub eval_pool: usize,
    /// Measure held-out recall every this many steps (0: only before and after).
    pub eval_every: u64,
    /// Skip (and count) malformed corpus lines instead of stopping at the first.
    pub skip_bad_lines: bool,
}

impl IctConfig {
    /// Small-scale CPU defaults.
    pub fn new(init: ModelInit, corpus: PathBuf) -> Self {
        let retriever = models::default_retriever_config(&init);
        IctConfig {
            init,
            corpus,
            retriever,
            train: LoopConfig::new(200, 32, 1e-4),
            block_len: 288,
            query_len: 64,
            doc_len: 288,
            remove_prob: 0.9,
            heldout: 200,
            eval_pool: 1000,
            eval_every: 0,
            skip_bad_lines: false,
        }
    }
}

impl StageConfig for IctConfig {
    fn validate(&self) -> Result<()> {
        self.init.validate(OP)?;
        limits::retriever(OP, &self.retriever)?;
        self.train.validate()?;
        limits::within(OP, "block_len", self.block_len, 1, limits::MAX_LEN)?;
        limits::within(OP, "query_len", self.query_len, 3, limits::MAX_LEN)?;
        limits::within(OP, "doc_len", self.doc_len, 4, limits::MAX_LEN)?;
        limits::within(OP, "heldout", self.heldout, 0, limits::MAX_COUNT)?;
        if !(0.0..=1.0).contains(&self.remove_prob) {
            return Err(Error::bad_input(
                OP,
                "remove_prob",
                format!("{} must be in [0, 1]", self.remove_prob),
            ));
        }
        Ok(())
    }
}

/// Held-out retrieval quality.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    /// Fraction of the held-out queries whose own context ranks first in the pool.
    pub recall_at_1: f64,
    /// Fraction whose own context is among the top 5.
    pub recall_at_5: f64,
    /// Held-out queries measured.
    pub queries: usize,
    /// Contexts searched among (the held-out ones included).
    pub pool: usize,
}

/// What a run of the stage did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IctReport {
    /// Steps done in all (resumed ones included).
    pub steps: u64,
    /// Mean loss of the last logged window.
    pub loss: Option<f64>,
    /// Held-out recall of the starting retriever (None when resumed).
    pub recall_before: Option<Recall>,
    /// Held-out recall of the trained retriever (None when the run stopped early).
    pub recall_after: Option<Recall>,
    /// Seconds in the stage, across resumes.
    pub seconds: f64,
    /// Whether the run stopped before its last step (a stop request or `stop_after`).
    pub interrupted: bool,
}

/// Runs (or resumes) the stage in `run_dir`; the checkpoint holds the retriever.
pub fn run_ict(cfg: &IctConfig, run_dir: &Path, opts: &RunOptions) -> Result<IctReport> {
    super::run::removed_on_failure(run_dir, &opts.dist, || train(cfg, run_dir, opts))
}

fn train(cfg: &IctConfig, run_dir: &Path, opts: &RunOptions) -> Result<IctReport> {
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
    let corpus = corpus_blocks(&cfg.corpus, &tok, cfg.block_len, cfg.skip_bad_lines)?;
    let fit = models::ProjectionFit {
        tokenizer: &tok,
        blocks: &corpus.blocks,
        doc_len: cfg.doc_len,
    };
    let mut retriever = models::retriever(&init, &cfg.retriever, cfg.train.seed, &dev, Some(&fit))?;
    tok.check_vocab(retriever.bert_config())?;
    limits::fits_positions(
        OP,
        retriever.bert_config(),
        &[("query_len", cfg.query_len), ("doc_len", cfg.doc_len)],
    )?;
    retriever.set_compute_dtype(cfg.train.compute_dtype(opts.device.default_dtype())?)?;

    let data = IctData::new(&corpus.blocks, cfg)?;

    let mut trainer = Trainer::new(&run, Stage::Ict, retriever.vars(), &cfg.train, opts)?;
    let recall_before = if trainer.step() == 0 {
        let r = data.recall(&retriever, &tok, cfg, &dev)?;
        let mut m = trainer.metric();
        m.recall_at_1 = Some(r.recall_at_1);
        m.recall_at_5 = Some(r.recall_at_5);
        trainer.log(&m)?;
        Some(r)
    } else {
        None
    };
    let mut order = DataOrder::new(
        data.train.len(),
        cfg.train.batch,
        cfg.train.seed,
        STREAM_ORDER,
    )?;
    let (mut window_loss, mut window_n, mut last_loss) = (0.0, 0usize, None);
    let mut recall_after = None;
    let mut window_tokens = 0usize;
    let mut window_start = std::time::Instant::now();
    while !trainer.done() {
        let step = trainer.step();
        let (ids, cursor) = order.batch(step);
        let mut rng = step_rng(cfg.train.seed, STREAM_EXAMPLES, step);
        // Every rank draws the whole batch's examples (the draws follow one another) and keeps
        // its part; its in-batch negatives are its part's blocks.
        let mut examples: Vec<IctExample> = ids
            .iter()
            .filter_map(|&i| ict_example(data.train[i], cfg.remove_prob, &mut rng))
            .collect();
        let part = opts.dist.shard(examples.len());
        examples.truncate(part.end);
        let examples = examples.split_off(part.start);
        let mode = Mode::Train {
            seed: opts.dist.replica_seed(cfg.train.seed),
            step,
        };
        let (loss, tokens) = ict_loss(&retriever, &tok, &examples, cfg, mode, &dev)?;
        let grads = trainer.backward(&loss)?;
        let (grads, loss) = trainer.all_reduce(grads, &loss, examples.len())?;
        let update = trainer.update(grads)?;
        trainer.state.data = cursor;
        let loss = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        window_loss += loss;
        window_n += 1;
        window_tokens += tokens;
        let step = trainer.step();
        // The final recall goes on the last step's line, before the last checkpoint: a run
        // resumed after it finished has nothing left to log.
        let last = trainer.final_step();
        let eval_now = last || (cfg.eval_every > 0 && step % cfg.eval_every == 0);
        if trainer.log_due() || eval_now {
            let mut m = trainer.metric();
            last_loss = Some(window_loss / window_n as f64);
            m.loss = last_loss;
            m.lr = Some(update.lr);
            m.tokens_per_s = Some(window_tokens as f64 / window_start.elapsed().as_secs_f64());
            if eval_now {
                let r = data.recall(&retriever, &tok, cfg, &dev)?;
                m.recall_at_1 = Some(r.recall_at_1);
                m.recall_at_5 = Some(r.recall_at_5);
                recall_after = last.then_some(r);
            }
            trainer.log(&m)?;
            (window_loss, window_n, window_tokens) = (0.0, 0, 0);
            window_start = std::time::Instant::now();
        }
        if trainer.checkpoint_due()? {
            trainer.save(&run.checkpoint(), |d| {
                retriever.save(d)?;
                models::copy_tokenizer(&tok_dir, d)?;
                models::write_origin(&origin, d)
            })?;
        }
    }
    trainer.finish();
    let interrupted = trainer.interrupted();
    if recall_after.is_none() && !interrupted {
        // Resumed after it had finished: measured for the report, already in the metrics.
        recall_after = Some(data.recall(&retriever, &tok, cfg, &dev)?);
    }
    Ok(IctReport {
        steps: trainer.step(),
        loss: last_loss,
        recall_before,
        recall_after,
        seconds: trainer.time_s(),
        interrupted,
    })
}

/// The ICT loss of one batch (cross-entropy over in-batch contexts) and its wordpiece count.
pub fn ict_loss(
    retriever: &Retriever,
    tok: &BertTokenizer,
    examples: &[IctExample],
    cfg: &IctConfig,
    mode: Mode,
    dev: &Device,
) -> Result<(Tensor, usize)> {
    if examples.len() < 2 {
        return Err(Error::bad_input(
            OP,
            "batch",
            "needs at least two examples (the others are the negatives)",
        ));
    }
    let queries: Vec<&[u32]> = examples.iter().map(|e| e.query.as_slice()).collect();
    let titles = tok.wordpieces(
        &examples
            .iter()
            .map(|e| e.title.as_str())
            .collect::<Vec<_>>(),
    )?;
    let titles: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
    let bodies: Vec<&[u32]> = examples.iter().map(|e| e.context.as_slice()).collect();
    let q_in = query_inputs(tok, &queries, cfg.query_len, dev)?;
    let d_in = doc_inputs(tok, &titles, &bodies, cfg.doc_len, dev)?;
    let tokens = (q_in.input_ids().elem_count() + d_in.input_ids().elem_count()) as usize;
    let logits = retriever_logits(retriever, &q_in, &d_in, mode)?;
    let b = examples.len();
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let diag = Tensor::arange(0u32, b as u32, dev)?.unsqueeze(1)?;
    let loss = log_probs.gather(&diag, 1)?.mean_all()?.neg()?;
    Ok((loss, tokens))
}

/// `[b, b]` scores of every query against every context.
fn retriever_logits(
    retriever: &Retriever,
    q_in: &crate::model::BertInput,
    d_in: &crate::model::BertInput,
    mode: Mode,
) -> Result<Tensor> {
    let q = retriever.query_tower().embed(q_in, mode)?;
    // The document pass draws its own dropout, as Retriever::score does.
    let doc_mode = match mode {
        Mode::Train { seed, step } => Mode::Train {
            seed: seed ^ 0x646f_6373_0000_0000,
            step,
        },
        Mode::Eval => Mode::Eval,
    };
    let d = retriever.doc_tower().embed(d_in, doc_mode)?;
    Ok(q.matmul(&d.t()?)?)
}

/// Training blocks and the fixed held-out evaluation.
struct IctData<'a> {
    train: Vec<&'a Block>,
    /// (query, index of its context in `pool`)
    queries: Vec<(Vec<u32>, usize)>,
    /// (title, body) of every pool context.
    pool: Vec<(String, Vec<u32>)>,
}

impl<'a> IctData<'a> {
    fn new(blocks: &'a [Block], cfg: &IctConfig) -> Result<Self> {
        let usable: Vec<&Block> = blocks.iter().filter(|b| b.sentences.len() >= 2).collect();
        if usable.len() < cfg.heldout + 2 {
            return Err(Error::bad_input(
                OP,
                "corpus",
                format!(
                    "{} has {} blocks with two or more sentences; ICT needs more than the {} held out",
                    cfg.corpus.display(),
                    usable.len(),
                    cfg.heldout
                ),
            ));
        }
        if cfg.train.batch > usable.len() - cfg.heldout {
            return Err(Error::bad_input(
                OP,
                "batch",
                format!(
                    "{} examples per batch, but only {} training blocks",
                    cfg.train.batch,
                    usable.len() - cfg.heldout
                ),
            ));
        }
        let mut perm: Vec<usize> = (0..usable.len()).collect();
        shuffle(&mut perm, &mut step_rng(cfg.train.seed, STREAM_HELDOUT, 0));
        let (held, rest) = perm.split_at(cfg.heldout);
        let mut rng = step_rng(cfg.train.seed, STREAM_HELDOUT, 1);
        let mut queries = Vec::new();
        let mut pool = Vec::new();
        for &i in held {
            if let Some(ex) = ict_example(usable[i], 1.0, &mut rng) {
                queries.push((ex.query, pool.len()));
                pool.push((ex.title, ex.context));
            }
        }
        for &i in rest.iter().take(cfg.eval_pool.saturating_sub(pool.len())) {
            pool.push((usable[i].title.clone(), usable[i].tokens.clone()));
        }
        let mut train: Vec<&Block> = rest.iter().map(|&i| usable[i]).collect();
        // The data order permutes them anyway; a fixed base order keeps runs reproducible.
        train.sort_by(|a, b| (&a.doc_id, &a.tokens).cmp(&(&b.doc_id, &b.tokens)));
        Ok(IctData {
            train,
            queries,
            pool,
        })
    }

    /// Recall@1 and @5 of the held-out queries over the pool.
    fn recall(
        &self,
        retriever: &Retriever,
        tok: &BertTokenizer,
        cfg: &IctConfig,
        dev: &Device,
    ) -> Result<Recall> {
        if self.queries.is_empty() {
            return Ok(Recall {
                recall_at_1: 0.0,
                recall_at_5: 0.0,
                queries: 0,
                pool: self.pool.len(),
            });
        }
        const CHUNK: usize = 64;
        let titles: Vec<&str> = self.pool.iter().map(|p| p.0.as_str()).collect();
        let titles = tok.wordpieces(&titles)?;
        let mut rows = Vec::new();
        for (t, b) in titles.chunks(CHUNK).zip(self.pool.chunks(CHUNK)) {
            let t: Vec<&[u32]> = t.iter().map(Vec::as_slice).collect();
            let b: Vec<&[u32]> = b.iter().map(|p| p.1.as_slice()).collect();
            let input = doc_inputs(tok, &t, &b, cfg.doc_len, dev)?;
            rows.push(retriever.doc_tower().embed(&input, Mode::Eval)?);
        }
        let index = MipsIndex::new(&Tensor::cat(&rows, 0)?)?;
        let k = 5.min(self.pool.len());
        let (mut at1, mut at5) = (0usize, 0usize);
        for chunk in self.queries.chunks(CHUNK) {
            let q: Vec<&[u32]> = chunk.iter().map(|c| c.0.as_slice()).collect();
            let input = query_inputs(tok, &q, cfg.query_len, dev)?;
            let emb = retriever.query_tower().embed(&input, Mode::Eval)?;
            let (_, ids) = mips_top_k(&emb, &index, k, None)?;
            for (row, (_, gold)) in ids.to_vec2::<u32>()?.iter().zip(chunk) {
                at1 += usize::from(row.first() == Some(&(*gold as u32)));
                at5 += usize::from(row.contains(&(*gold as u32)));
            }
        }
        let n = self.queries.len() as f64;
        Ok(Recall {
            recall_at_1: at1 as f64 / n,
            recall_at_5: at5 as f64 / n,
            queries: self.queries.len(),
            pool: self.pool.len(),
        })
    }
}
