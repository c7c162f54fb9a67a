//! `realm eval`: how well a checkpoint answers questions.
//!
//! - Retrieval recall@1/@5/@k: the fraction of questions with an answer string (SQuAD
//!   normalisation, whole words) in the body of one of the top 1/5/k blocks the query tower
//!   finds in the index ([`Searcher`]).
//! - Reader exact match (checkpoints with `reader/`): the best span over the top `reader_beam`
//!   blocks, span logit plus retrieval score, as ORQA/REALM decode and `realm ask` answers.
//! - Zero-shot cloze (checkpoints with the knowledge-augmented encoder), for questions that are
//!   cloze statements ("The language of X is"): n `[MASK]`s are appended, n = the wordpiece count
//!   of the first gold answer (LAMA-style: the length is given, the tokens are not), and each mask
//!   is predicted by the argmax over the vocabulary of the REALM marginal
//!   Σ_z p(z | x) p(y | z, x) over the null document and the top-k blocks, relevance recomputed by
//!   the current towers as in pre-training; and again with the null document alone (retrieval
//!   switched off, the same model). Exact match of the joined wordpieces against the answers.
//! - Retrieval utility: mean over cloze questions of log p(answer | top-1 block, x) −
//!   log p(answer | ∅, x), summed over the answer's masked tokens.

use crate::data::{contains_answer, exact_match, read_qa, QaExample};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use crate::index::{Hit, RetrieverModel, Searcher};
use crate::model::marginal_log_probs;
use crate::model::reader::span_text;
use crate::model::realm_inputs::{doc_inputs, joined_inputs, query_inputs};
use crate::model::TRAINER_JSON;
use crate::model::{BertConfig, Mode, Reader, RealmModel};
use crate::train::models::{has_encoder, INDEX, READER};
use crate::train::run::{Metric, RunDir, Stage};
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const OP: &str = "eval";

/// What to evaluate and how.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalConfig {
    /// A training checkpoint folder (see [`crate::train::models`]).
    pub checkpoint: PathBuf,
    /// Questions: NQ-open style `.jsonl` or SQuAD `.json`.
    pub questions: PathBuf,
    /// An index built by the checkpoint's document tower; default `checkpoint/index`.
    pub index: Option<PathBuf>,
    /// A corpus to index with the checkpoint's document tower when there is no index.
    pub corpus: Option<PathBuf>,
    /// Blocks retrieved per question for recall@k and the cloze marginal (the null document
    /// comes on top of these).
    pub top_k: usize,
    /// Blocks the reader reads per question.
    pub reader_beam: usize,
    /// Longest query (`[CLS] x [SEP]`, masks included), in wordpieces.
    pub query_len: usize,
    /// Body wordpieces per block: what a corpus is cut into, and how much of a block the
    /// encoder and the reader see beside the query.
    pub doc_len: usize,
    /// Evaluate only the first n questions.
    pub max_questions: Option<usize>,
    /// Questions per forward pass.
    pub batch: usize,
    /// Examples kept for display.
    pub examples: usize,
    /// No progress bars.
    pub quiet: bool,
}

impl EvalConfig {
    pub fn new(checkpoint: impl Into<PathBuf>, questions: impl Into<PathBuf>) -> Self {
        EvalConfig {
            checkpoint: checkpoint.into(),
            questions: questions.into(),
            index: None,
            corpus: None,
            top_k: 5,
            reader_beam: 5,
            query_len: 64,
            doc_len: 288,
            max_questions: None,
            batch: 8,
            examples: 5,
            quiet: true,
        }
    }
}

/// One evaluated question, for display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalExample {
    pub question: String,
    pub gold: String,
    /// The reader's answer (with a reader), else the cloze answer with retrieval.
    pub prediction: Option<String>,
    /// The cloze answer with the null document only.
    pub prediction_null_doc: Option<String>,
    /// Title of the top retrieved block.
    pub top_title: String,
}

/// What [`evaluate`] measured; a metric is None when the checkpoint lacks the part it needs
/// (or, for recall@5, when the index has fewer than 5 blocks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub checkpoint: String,
    /// Questions evaluated.
    pub questions: usize,
    /// Of those, cloze statements answered by the masked-LM head.
    pub cloze_questions: usize,
    /// Blocks in the index searched.
    pub blocks: usize,
    /// The k of `recall_at_k`.
    pub k: usize,
    pub recall_at_1: f64,
    pub recall_at_5: Option<f64>,
    pub recall_at_k: f64,
    pub em_reader: Option<f64>,
    pub em_cloze_retrieval: Option<f64>,
    pub em_cloze_null_doc: Option<f64>,
    pub retrieval_utility: Option<f64>,
    /// The checkpoint's training step (its trainer state), when recorded.
    pub step: Option<u64>,
    pub seconds: f64,
    pub examples: Vec<EvalExample>,
}

/// Whether a question reads as a cloze statement to be continued ("The language of X is")
/// rather than a question: no final `?` and no interrogative first word.
pub fn is_cloze(question: &str) -> bool {
    const ASKING: [&str; 24] = [
        "who", "whom", "whose", "what", "when", "where", "which", "why", "how", "is", "are", "was",
        "were", "do", "does", "did", "can", "could", "will", "would", "should", "has", "have",
        "name",
    ];
    let q = question.trim();
    let first = q
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_lowercase()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string();
    !q.is_empty() && !q.ends_with('?') && !ASKING.contains(&first.as_str())
}

/// The models of a checkpoint and the index searched.
struct Loaded {
    searcher: Searcher,
    realm: Option<RealmModel>,
    reader: Option<Reader>,
}

fn check(cfg: &EvalConfig) -> Result<()> {
    if !cfg.checkpoint.is_dir() {
        return Err(Error::file(&cfg.checkpoint, "no such checkpoint folder"));
    }
    let bad = |arg: &'static str, msg: String| Err(Error::bad_input(OP, arg, msg));
    if cfg.top_k == 0 {
        return bad("top_k", "must be at least 1".into());
    }
    if cfg.reader_beam == 0 {
        return bad("reader_beam", "must be at least 1".into());
    }
    if cfg.batch == 0 {
        return bad("batch", "must be at least 1".into());
    }
    if cfg.query_len < 4 || cfg.doc_len == 0 {
        return bad(
            "query_len",
            format!(
                "query_len = {} (≥ 4) and doc_len = {} (≥ 1)",
                cfg.query_len, cfg.doc_len
            ),
        );
    }
    Ok(())
}

/// The searcher: `cfg.index` (built by the checkpoint's document tower, fingerprint checked),
/// else the checkpoint's own `index/` (the one it trained with, possibly built by an earlier
/// snapshot of the tower), else a fresh index of `cfg.corpus`.
fn open_searcher(cfg: &EvalConfig, device: &ComputeDevice) -> Result<Searcher> {
    let dev = &device.device;
    let own = cfg.checkpoint.join(INDEX);
    let is_own = |dir: &Path| match (dir.canonicalize(), own.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let mut searcher = if let Some(dir) = cfg.index.as_deref().filter(|d| !is_own(d)) {
        Searcher::open(dir, Some(&cfg.checkpoint), dev)?
    } else if own.is_dir() {
        Searcher::open_checkpoint(&cfg.checkpoint, dev)?
    } else if let Some(corpus) = &cfg.corpus {
        let model = RetrieverModel::load(&cfg.checkpoint, dev)?;
        let opts = IndexCorpus {
            max_block_tokens: cfg.doc_len,
            skip_bad_lines: false,
            embed: EmbedBlocks {
                batch: 32,
                max_len: crate::index::build::doc_input_len(
                    model.retriever.bert_config().max_position_embeddings,
                    cfg.doc_len,
                ),
                progress: (!cfg.quiet).then(|| "indexing".to_string()),
            },
            step: checkpoint_step(&cfg.checkpoint).unwrap_or(0),
        };
        let (index, _) = index_corpus(&model, corpus, &opts, dev)?;
        Searcher::new(model, index, dev)?
    } else {
        return Err(Error::bad_input(
            OP,
            "index",
            format!(
                "{} has no index/: pass an index (--index DIR) or a corpus to index \
                 (--corpus FILE)",
                cfg.checkpoint.display()
            ),
        ));
    };
    searcher.query_max_len = cfg.query_len;
    Ok(searcher)
}

fn load(cfg: &EvalConfig, device: &ComputeDevice) -> Result<Loaded> {
    let searcher = open_searcher(cfg, device)?;
    let dev = &device.device;
    let realm = if has_encoder(&cfg.checkpoint) {
        Some(RealmModel::load(&cfg.checkpoint, dev)?)
    } else {
        None
    };
    let reader_dir = cfg.checkpoint.join(READER);
    let reader = if reader_dir.is_dir() {
        Some(Reader::load(&reader_dir, dev)?)
    } else {
        None
    };
    let blocks = searcher.len();
    let too_many = |arg: &'static str, k: usize| {
        Err(Error::bad_input(
            OP,
            arg,
            format!("{k} blocks per question, but the index has only {blocks}"),
        ))
    };
    if cfg.top_k > blocks {
        return too_many("top_k", cfg.top_k);
    }
    if reader.is_some() && cfg.reader_beam > blocks {
        return too_many("reader_beam", cfg.reader_beam);
    }
    Ok(Loaded {
        searcher,
        realm,
        reader,
    })
}

/// Longest `[CLS] x [SEP] body [SEP]` row for the encoder and the reader.
fn joined_max_len(cfg: &EvalConfig, bert: &BertConfig) -> usize {
    bert.max_position_embeddings
        .min(cfg.query_len + cfg.doc_len)
}

/// The training step recorded in the checkpoint's trainer state.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(TRAINER_JSON)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("step")?
        .as_u64()
}

/// Running sums of the metrics.
#[derive(Default)]
struct Tally {
    at_1: usize,
    at_5: usize,
    at_k: usize,
    reader: usize,
    cloze: usize,
    cloze_retrieval: usize,
    cloze_null: usize,
    utility: f64,
}

/// The answers of one cloze question.
struct Cloze {
    retrieval: String,
    null_doc: String,
    /// Σ over the answer's tokens of log p(y | top-1 block, x) − log p(y | ∅, x).
    utility: f64,
}

/// Evaluates a checkpoint on a question set (see the module docs for the metrics).
pub fn evaluate(cfg: &EvalConfig, device: &ComputeDevice) -> Result<EvalReport> {
    let start = Instant::now();
    check(cfg)?;
    let _exec = device.enter()?;
    let mut questions = read_qa(&cfg.questions)?;
    if let Some(n) = cfg.max_questions {
        questions.truncate(n);
    }
    if questions.is_empty() {
        return Err(Error::file(&cfg.questions, "holds no questions"));
    }
    let models = load(cfg, device)?;
    let searcher = &models.searcher;
    let blocks = searcher.len();
    let tok = &searcher.model.tokenizer;
    let wanted = cfg
        .top_k
        .max(if blocks >= 5 { 5 } else { 1 })
        .max(if models.reader.is_some() {
            cfg.reader_beam
        } else {
            1
        });
    let mut texts: HashMap<u32, String> = HashMap::new();
    let mut tally = Tally::default();
    let mut examples = Vec::new();
    let bar = crate::train::run::progress(questions.len() as u64, "eval", cfg.quiet);
    for batch in questions.chunks(cfg.batch) {
        let asked: Vec<&str> = batch.iter().map(|q| q.question.as_str()).collect();
        let hits = searcher.search(&asked, wanted)?;
        let cloze = match &models.realm {
            Some(realm) => cloze_answers(realm, searcher, batch, &hits, cfg)?,
            None => (0..batch.len()).map(|_| None).collect(),
        };
        for ((qa, hits), cloze) in batch.iter().zip(&hits).zip(cloze) {
            let golds: Vec<String> = qa.answers.iter().map(|a| a.text.clone()).collect();
            let mut found = Vec::with_capacity(hits.len());
            for hit in hits {
                let text = match texts.get(&hit.block) {
                    Some(t) => t,
                    None => {
                        let t = span_text(tok, &searcher.block(hit)?.tokens)?;
                        texts.entry(hit.block).or_insert(t)
                    }
                };
                found.push(contains_answer(text, &golds));
            }
            let within = |n: usize| found.iter().take(n).any(|&f| f);
            tally.at_1 += usize::from(within(1));
            tally.at_5 += usize::from(within(5));
            tally.at_k += usize::from(within(cfg.top_k));
            let read = match &models.reader {
                Some(reader) => Some(read_answer(
                    reader,
                    searcher,
                    &qa.question,
                    &hits[..cfg.reader_beam],
                    cfg,
                )?),
                None => None,
            };
            if let Some(answer) = &read {
                tally.reader += usize::from(exact_match(answer, &qa.answers));
            }
            if let Some(c) = &cloze {
                tally.cloze += 1;
                tally.cloze_retrieval += usize::from(exact_match(&c.retrieval, &qa.answers));
                tally.cloze_null += usize::from(exact_match(&c.null_doc, &qa.answers));
                tally.utility += c.utility;
            }
            if examples.len() < cfg.examples {
                examples.push(EvalExample {
                    question: qa.question.clone(),
                    gold: golds.join(" | "),
                    prediction: read.or_else(|| cloze.as_ref().map(|c| c.retrieval.clone())),
                    prediction_null_doc: cloze.as_ref().map(|c| c.null_doc.clone()),
                    top_title: hits[0].title.clone(),
                });
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let n = questions.len() as f64;
    let frac = |count: usize, of: f64| count as f64 / of;
    let cloze_n = tally.cloze as f64;
    let with_cloze = models.realm.is_some() && tally.cloze > 0;
    Ok(EvalReport {
        checkpoint: cfg.checkpoint.display().to_string(),
        questions: questions.len(),
        cloze_questions: tally.cloze,
        blocks,
        k: cfg.top_k,
        recall_at_1: frac(tally.at_1, n),
        recall_at_5: (blocks >= 5).then(|| frac(tally.at_5, n)),
        recall_at_k: frac(tally.at_k, n),
        em_reader: models.reader.as_ref().map(|_| frac(tally.reader, n)),
        em_cloze_retrieval: with_cloze.then(|| frac(tally.cloze_retrieval, cloze_n)),
        em_cloze_null_doc: with_cloze.then(|| frac(tally.cloze_null, cloze_n)),
        retrieval_utility: with_cloze.then(|| tally.utility / cloze_n),
        step: checkpoint_step(&cfg.checkpoint),
        seconds: start.elapsed().as_secs_f64(),
        examples,
    })
}

/// The reader's answer over `hits`: the best span, reader logit plus retrieval score.
fn read_answer(
    reader: &Reader,
    searcher: &Searcher,
    question: &str,
    hits: &[Hit],
    cfg: &EvalConfig,
) -> Result<String> {
    let tok = &searcher.model.tokenizer;
    let device = reader.device();
    let max_len = joined_max_len(cfg, reader.bert().config());
    let q = tok.wordpieces(&[question])?.remove(0);
    let q = &q[..q
        .len()
        .min(cfg.query_len - 2)
        .min(max_len.saturating_sub(4))];
    let blocks = hits
        .iter()
        .map(|h| searcher.block(h))
        .collect::<Result<Vec<_>>>()?;
    let bodies: Vec<Option<&[u32]>> = blocks.iter().map(|b| Some(b.tokens.as_slice())).collect();
    let (input, offsets) = joined_inputs(tok, &[q], &bodies, max_len, device)?;
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    let relevance = Tensor::new(scores.as_slice(), device)?;
    let best = reader
        .span_logits(&input, &offsets, Mode::Eval)?
        .plus_relevance(&relevance)?
        .best()?;
    span_text(tok, best.wordpieces(&blocks[best.row].tokens)?)
}

/// Cloze answers for the batch's cloze questions (None for the others): masks appended, the
/// null document and the top-k hits as candidates.
fn cloze_answers(
    realm: &RealmModel,
    searcher: &Searcher,
    batch: &[QaExample],
    hits: &[Vec<Hit>],
    cfg: &EvalConfig,
) -> Result<Vec<Option<Cloze>>> {
    let tok = realm.tokenizer();
    let mask_id = tok
        .token_id("[MASK]")
        .ok_or_else(|| Error::bad_input(OP, "tokenizer", "the vocabulary has no [MASK]"))?;
    let mut out: Vec<Option<Cloze>> = (0..batch.len()).map(|_| None).collect();
    // (row in batch, masked query wordpieces, first mask position, answer wordpieces)
    let mut rows = Vec::new();
    for (i, qa) in batch.iter().enumerate() {
        if !is_cloze(&qa.question) {
            continue;
        }
        let answer = tok.wordpieces(&[qa.answers[0].text.as_str()])?.remove(0);
        if answer.is_empty() || answer.len() + 2 >= cfg.query_len {
            continue;
        }
        let mut q = tok.wordpieces(&[qa.question.as_str()])?.remove(0);
        // Keep the end of the statement (next to the masks) when it is too long.
        let room = cfg.query_len - 2 - answer.len();
        if q.len() > room {
            q.drain(..q.len() - room);
        }
        let first = 1 + q.len();
        q.extend(std::iter::repeat_n(mask_id, answer.len()));
        rows.push((i, q, first, answer));
    }
    if rows.is_empty() {
        return Ok(out);
    }
    let dev = realm_device(realm);
    let (b, k) = (rows.len(), cfg.top_k + 1);
    let m = rows.iter().map(|r| r.3.len()).max().unwrap_or(1);
    let queries: Vec<&[u32]> = rows.iter().map(|r| r.1.as_slice()).collect();
    // Candidates: the null document, then the top-k blocks.
    let mut titles: Vec<Vec<u32>> = Vec::with_capacity(b * k);
    let mut blocks = Vec::with_capacity(b * k);
    for (i, ..) in &rows {
        titles.push(Vec::new());
        blocks.push(None);
        for hit in &hits[*i][..cfg.top_k] {
            let block = searcher.block(hit)?;
            titles.push(tok.wordpieces(&[block.title.as_str()])?.remove(0));
            blocks.push(Some(block));
        }
    }
    let bodies: Vec<Option<&[u32]>> = blocks
        .iter()
        .map(|b| b.as_ref().map(|b| b.tokens.as_slice()))
        .collect();
    let title_refs: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
    let body_refs: Vec<&[u32]> = bodies.iter().map(|b| b.unwrap_or(&[])).collect();
    let query_input = query_inputs(tok, &queries, cfg.query_len, dev)?;
    let doc_input = doc_inputs(
        tok,
        &title_refs,
        &body_refs,
        crate::index::build::doc_input_len(
            realm.retriever().bert_config().max_position_embeddings,
            cfg.doc_len,
        ),
        dev,
    )?;
    let scores = realm
        .retriever()
        .score(&query_input, &doc_input, Mode::Eval)?;
    let max_len = joined_max_len(cfg, realm.encoder().config());
    let (joined, _) = joined_inputs(tok, &queries, &bodies, max_len, dev)?;
    // Mask positions per candidate row; a short answer's spare slots repeat its first mask.
    let mut positions = Vec::with_capacity(b * k * m);
    for (_, _, first, answer) in &rows {
        let slots: Vec<u32> = (0..m)
            .map(|j| (first + j.min(answer.len() - 1)) as u32)
            .collect();
        for _ in 0..k {
            positions.extend_from_slice(&slots);
        }
    }
    let positions = Tensor::from_vec(positions, (b * k, m), dev)?;
    let log_probs = realm
        .encoder()
        .masked_log_softmax(&joined, &positions, Mode::Eval)?;
    let vocab = log_probs.dim(2)?;
    let per_doc = log_probs.reshape((b, k, m * vocab))?;
    let marginal = marginal_log_probs(&scores, &per_doc)?.reshape((b, m, vocab))?;
    let with_retrieval = marginal.argmax(D::Minus1)?.to_vec2::<u32>()?;
    let null = per_doc.narrow(1, 0, 1)?.reshape((b, m, vocab))?;
    let null_only = null.argmax(D::Minus1)?.to_vec2::<u32>()?;
    let top1 = per_doc.narrow(1, 1, 1)?.reshape((b, m, vocab))?;
    for (r, (i, _, _, answer)) in rows.iter().enumerate() {
        let n = answer.len();
        let targets = Tensor::new(answer.as_slice(), dev)?.unsqueeze(1)?;
        let gold = |t: &Tensor| -> Result<f64> {
            let picked = t.get(r)?.narrow(0, 0, n)?.gather(&targets, 1)?;
            Ok(f64::from(picked.sum_all()?.to_scalar::<f32>()?))
        };
        out[*i] = Some(Cloze {
            retrieval: span_text(tok, &with_retrieval[r][..n])?,
            null_doc: span_text(tok, &null_only[r][..n])?,
            utility: gold(&top1)? - gold(&null)?,
        });
    }
    Ok(out)
}

fn realm_device(realm: &RealmModel) -> &Device {
    realm.encoder().bert().device()
}

/// Appends the report's metrics line (`stage: "eval"`) to `run`'s `metrics.jsonl`; `em` is the
/// reader's exact match when there is a reader, else the cloze exact match with retrieval.
pub fn log_metrics(run: &Path, report: &EvalReport) -> Result<()> {
    let dir = RunDir::open(run)?;
    let mut metric = Metric::at(Stage::Eval, report.step.unwrap_or(0), report.seconds);
    metric.em = report.em_reader.or(report.em_cloze_retrieval);
    metric.recall_at_1 = Some(report.recall_at_1);
    metric.recall_at_5 = report.recall_at_5;
    metric.retrieval_utility = report.retrieval_utility;
    dir.metrics(Stage::Eval, None)?.log(&metric)
}
