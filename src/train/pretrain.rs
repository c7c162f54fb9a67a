//! `realm pretrain`: REALM pre-training (Guu et al. 2020, §3). Each step: salient-span-masked
//! queries; their embeddings by the current query tower; exact MIPS over the (stale) index for the
//! k − 1 best blocks, the query's own source document excluded; the null document added; the
//! relevance of the k candidates recomputed with the current towers; the knowledge-augmented
//! encoder over `[CLS] x [SEP] body [SEP]`; the per-token marginal masked-LM loss
//! (`RealmModel::mlm_forward`); backward into the encoder and both towers; AdamW with warm-up and
//! linear decay, global-norm clipping. Every `refresh.every` steps a snapshot of the document
//! tower re-embeds the corpus in the background ([`Refresher`]) while training goes on.

use super::batch::{MaskedQuery, MlmTensors};
use super::examples::{cloze_examples, span_examples, DataOrder, SpanExample};
use super::limits;
use super::models::{self, ModelInit};
use super::run::{RunDir, Stage, StageConfig};
use super::state::{link_dir, step_rng, IndexVersion};
use super::trainer::{LoopConfig, RunOptions, Trainer};
use crate::data::{MaskConfig, RuleTagger};
use crate::device;
use crate::dist::search::RankShard;
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::index::build::{corpus_blocks, EmbedBlocks};
use crate::index::live::{
    load_snapshot, save_snapshot, Knowledge, LiveIndex, RefreshPolicy, Refresher,
};
use crate::index::{IndexSlot, StoredIndex};
use crate::model::RealmSettings;
use crate::model::{
    doc_inputs, marginal_utility_sum, query_inputs, relevance, retrieval_mass_sums, Mode,
    RealmModel,
};
use crate::model::{BertTokenizer, RetrieverConfig};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OP: &str = "pretrain";
const STREAM_ORDER: u64 = 0x9e7_0001;
const STREAM_MASK: u64 = 0x9e7_0002;

/// The checkpoint folder of a refresh that was running when it was written (its weights).
pub const REFRESH: &str = "refresh";

/// What `realm pretrain` trains and how (saved as the run's `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// A BERT folder, a from-scratch size, or an ICT (or earlier pre-training) checkpoint.
    pub init: ModelInit,
    /// The knowledge corpus: the blocks that are retrieved.
    pub corpus: PathBuf,
    /// The texts that are masked (None: the corpus itself, as REALM pre-trains on Wikipedia with
    /// Wikipedia as the knowledge).
    pub examples: Option<PathBuf>,
    /// Questions (NQ-open JSONL or SQuAD) whose cloze forms, the answer masked, are the masked
    /// texts instead of `examples`.
    #[serde(default)]
    pub cloze_questions: Option<PathBuf>,
    /// A prebuilt index of the corpus (`realm index`) by the starting document tower; None:
    /// built at the start.
    pub index: Option<PathBuf>,
    /// Used when the retriever starts from BERT rather than a checkpoint.
    pub retriever: RetrieverConfig,
    /// Steps, batch (masked texts per step), learning rate and the rest of the loop.
    pub train: LoopConfig,
    /// Candidates per query, the null document included (REALM: 8). 1: the null document alone
    /// (no retrieval: the baseline).
    pub top_k: usize,
    /// `[CLS] x [SEP]` in wordpieces; examples are cut to fit.
    pub query_len: usize,
    /// `[CLS] title [SEP] body [SEP]` in wordpieces.
    pub doc_len: usize,
    /// Body wordpieces per block.
    pub block_len: usize,
    /// Masked wordpieces per example at most (REALM: 10).
    pub max_masks: usize,
    /// When the index is rebuilt with the current document tower and swapped in.
    pub refresh: RefreshPolicy,
    /// Blocks per document-tower batch when (re)building the index.
    pub index_batch: usize,
    /// Exclude every block of an example's own source document from its retrieval.
    pub exclude_own_doc: bool,
    /// Train only the knowledge-augmented encoder: the retriever (and so the index) stays as it
    /// starts, e.g. a fine-tuned retriever whose recall should not be traded away.
    #[serde(default)]
    pub freeze_retriever: bool,
    /// The query tower's learning rate relative to `train.lr`, a finite number ≥ 0 (0: it does
    /// not learn). REALM trains both towers at the encoder's rate (1).
    #[serde(default = "unit_scale")]
    pub query_lr_scale: f64,
    /// The document tower's, likewise; 0 keeps it as it starts, so the index is exact: never
    /// refreshed, the candidates scored from its stored embeddings. With shared towers it must
    /// equal `query_lr_scale` (separate them with `retriever.shared_towers = false`).
    #[serde(default = "unit_scale")]
    pub doc_lr_scale: f64,
    /// Give the masked-LM head a copy head (a pointer over the retrieved block's wordpieces,
    /// `model::copy_head`) when the starting encoder has none.
    #[serde(default)]
    pub copy_head: bool,
    /// Mask random wordpieces (15% of each sentence, at most `max_masks`) instead of salient
    /// spans: REALM's random-token ablation.
    #[serde(default)]
    pub random_masks: bool,
    /// Skip (and count) malformed lines of the corpus and examples instead of stopping at the
    /// first.
    pub skip_bad_lines: bool,
}

/// A tower's learning-rate scale when the config does not give one.
fn unit_scale() -> f64 {
    1.0
}

impl PretrainConfig {
    /// Small-scale CPU defaults.
    pub fn new(init: ModelInit, corpus: PathBuf) -> Self {
        let retriever = models::default_retriever_config(&init);
        PretrainConfig {
            init,
            corpus,
            examples: None,
            cloze_questions: None,
            index: None,
            retriever,
            train: LoopConfig::new(300, 8, 1e-4),
            top_k: 8,
            query_len: 64,
            doc_len: 160,
            block_len: 288,
            max_masks: 10,
            refresh: RefreshPolicy::default(),
            index_batch: 64,
            exclude_own_doc: true,
            freeze_retriever: false,
            query_lr_scale: 1.0,
            doc_lr_scale: 1.0,
            copy_head: false,
            random_masks: false,
            skip_bad_lines: false,
        }
    }

    /// Whether the document tower keeps its starting weights (so the index stays exact).
    fn doc_tower_frozen(&self) -> bool {
        self.freeze_retriever || self.doc_lr_scale == 0.0
    }

    /// A parameter's learning rate relative to `train.lr`, by its checkpoint name.
    fn lr_scale(&self, name: &str) -> f64 {
        if name.starts_with("query_embedder.") {
            self.query_lr_scale
        } else if name.starts_with("embedder.") {
            self.doc_lr_scale
        } else {
            1.0
        }
    }

    fn settings(&self) -> RealmSettings {
        RealmSettings {
            // The checkpoint records at least 2 (its loader's minimum); top_k = 1 is a training
            // choice, the null-document baseline.
            num_candidates: self.top_k.max(2),
            query_seq_len: self.query_len,
            candidate_seq_len: self.doc_len,
            max_masks: self.max_masks,
        }
    }
}

impl StageConfig for PretrainConfig {
    fn validate(&self) -> Result<()> {
        self.init.validate(OP)?;
        limits::retriever(OP, &self.retriever)?;
        self.train.validate()?;
        if let (Some(examples), Some(questions)) = (&self.examples, &self.cloze_questions) {
            return Err(Error::bad_input(
                OP,
                "examples",
                format!(
                    "both texts to mask ({}) and cloze questions ({}): the cloze questions would replace the texts; give one",
                    examples.display(),
                    questions.display()
                ),
            ));
        }
        limits::within(OP, "top_k", self.top_k, 1, 1 << 16)?;
        limits::within(OP, "query_len", self.query_len, 3, limits::MAX_LEN)?;
        limits::within(OP, "doc_len", self.doc_len, 3, limits::MAX_LEN)?;
        limits::within(OP, "block_len", self.block_len, 1, limits::MAX_LEN)?;
        limits::within(OP, "max_masks", self.max_masks, 1, limits::MAX_LEN)?;
        limits::within(OP, "index_batch", self.index_batch, 1, 1 << 16)?;
        limits::within(OP, "refresh.threads", self.refresh.threads, 1, 1024)?;
        check_tower_rates(OP, self.query_lr_scale, self.doc_lr_scale, None)?;
        if self.freeze_retriever && (self.query_lr_scale, self.doc_lr_scale) != (1.0, 1.0) {
            return Err(Error::bad_input(
                OP,
                "query_lr_scale",
                format!(
                    "{} (doc_lr_scale {}) with freeze_retriever, which keeps both towers as they start: give one",
                    self.query_lr_scale, self.doc_lr_scale
                ),
            ));
        }
        Ok(())
    }
}

/// What a run of the stage did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainReport {
    /// Steps done in all (resumed ones included).
    pub steps: u64,
    /// Mean loss of the first and the last logged window.
    pub first_loss: Option<f64>,
    /// Mean loss of the last logged window (None: nothing logged).
    pub last_loss: Option<f64>,
    /// Mean retrieval utility (marginal) of the last logged window.
    pub retrieval_utility: Option<f64>,
    /// Refreshes swapped in, and their mean wall time.
    pub refreshes: usize,
    /// Mean wall time of those refreshes, seconds (None: none was swapped in).
    pub mean_refresh_s: Option<f64>,
    /// The most steps the index in use lagged behind the weights, in this invocation.
    pub max_staleness: u64,
    /// Seconds in the stage, across resumes.
    pub seconds: f64,
    /// Whether the run stopped before its last step (a stop request or `stop_after`).
    pub interrupted: bool,
}

/// Everything the loop reads besides the model.
pub struct PretrainData {
    /// The corpus's blocks: what is retrieved.
    pub knowledge: Knowledge,
    /// The texts masked: examples, the corpus itself, or the questions' cloze forms.
    pub examples: Vec<SpanExample>,
    /// The document index (in `knowledge`) of each example's source, when excluded.
    pub exclude: Vec<Option<u32>>,
}

impl PretrainData {
    /// Cuts the corpus into blocks and reads the masked texts as `cfg` says; an error when top-k
    /// cannot be met or there is no text to pre-train on.
    pub fn load(cfg: &PretrainConfig, tok: &BertTokenizer) -> Result<Self> {
        let cut = corpus_blocks(&cfg.corpus, tok, cfg.block_len, cfg.skip_bad_lines)?;
        let knowledge = Knowledge::new(cut.blocks, tok)?;
        if cfg.top_k > 1 {
            knowledge.check_k(cfg.top_k - 1, cfg.exclude_own_doc)?;
        }
        let tagger =
            RuleTagger::new().with_gazetteer(knowledge.blocks.iter().map(|b| b.title.as_str()));
        let source = cfg.examples.as_deref().unwrap_or(&cfg.corpus);
        let (source, examples) = match &cfg.cloze_questions {
            Some(questions) => (
                questions.as_path(),
                cloze_examples(questions, tok, cfg.query_len - 2)?,
            ),
            None => (
                source,
                span_examples(source, tok, &tagger, cfg.query_len - 2, cfg.skip_bad_lines)?,
            ),
        };
        if examples.is_empty() {
            return Err(Error::file(source, "no text to pre-train on"));
        }
        let exclude = examples
            .iter()
            .map(|e| {
                cfg.exclude_own_doc
                    .then(|| knowledge.doc(&e.doc_id))
                    .flatten()
            })
            .collect();
        Ok(PretrainData {
            knowledge,
            examples,
            exclude,
        })
    }
}

/// An error naming the field unless both towers' learning-rate scales are finite and ≥ 0, and
/// equal when the towers are shared (`shared`: whether they are, when known).
pub fn check_tower_rates(
    op: &'static str,
    query_lr_scale: f64,
    doc_lr_scale: f64,
    shared: Option<bool>,
) -> Result<()> {
    for (arg, scale) in [
        ("query_lr_scale", query_lr_scale),
        ("doc_lr_scale", doc_lr_scale),
    ] {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::bad_input(
                op,
                arg,
                format!("{scale} must be a finite number ≥ 0"),
            ));
        }
    }
    if shared == Some(true) && query_lr_scale != doc_lr_scale {
        return Err(Error::bad_input(
            op,
            "doc_lr_scale",
            format!(
                "{doc_lr_scale} but query_lr_scale {query_lr_scale}: the towers are shared (one set of weights); give both the same, or separate towers (--separate-towers)"
            ),
        ));
    }
    Ok(())
}

/// Runs (or resumes) pre-training in `run_dir`; the checkpoint holds the `RealmModel`, the index
/// in use and the trainer state.
pub fn run_pretrain(
    cfg: &PretrainConfig,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<PretrainReport> {
    super::run::removed_on_failure(run_dir, &opts.dist, || train(cfg, run_dir, opts))
}

fn train(cfg: &PretrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<PretrainReport> {
    cfg.validate()?;
    let dist = &opts.dist;
    if dist.size() > 1
        && !cfg.doc_tower_frozen()
        && cfg.refresh.every > 0
        && cfg.refresh.swap_after.is_none()
    {
        // "Swap when ready" would swap at a different step on each rank: the replicas would part.
        return Err(Error::bad_input(
            OP,
            "refresh.swap_after",
            format!(
                "{} ranks refresh the index together: give --refresh-swap-after N so that every rank swaps at the same step",
                dist.size()
            ),
        ));
    }
    let _exec = opts.device.enter()?;
    let dev = opts.device.device.clone();
    let models::StageStart {
        run,
        init,
        origin,
        tok_dir,
        tokenizer,
    } = models::start_stage(run_dir, cfg, &cfg.init, opts.resume, &opts.dist)?;
    let tok = Arc::new(tokenizer);
    let data = PretrainData::load(cfg, &tok)?;
    let fit = models::ProjectionFit {
        tokenizer: &tok,
        blocks: &data.knowledge.blocks[..],
        doc_len: cfg.doc_len,
    };
    let mut model = models::realm_model(
        &init,
        &cfg.retriever,
        &cfg.settings(),
        cfg.train.seed,
        &dev,
        &tok_dir,
        Some(&fit),
    )?;
    model.set_compute_dtype(cfg.train.compute_dtype(opts.device.default_dtype())?)?;
    limits::fits_positions(
        OP,
        model.retriever().bert_config(),
        &[
            ("query_len", cfg.query_len),
            ("doc_len", cfg.doc_len),
            ("query_len + doc_len", cfg.query_len + cfg.doc_len),
        ],
    )?;

    if cfg.copy_head {
        model.add_copy_head(cfg.train.seed)?;
    }
    check_tower_rates(
        OP,
        cfg.query_lr_scale,
        cfg.doc_lr_scale,
        Some(model.retriever().config().shared_towers),
    )?;
    // A part at rate 0 is left out of the optimizer (no moments).
    let vars = if cfg.freeze_retriever {
        model.encoder_vars()
    } else {
        let mut vars = model.vars();
        vars.retain(|(name, _)| cfg.lr_scale(name) > 0.0);
        vars
    };
    // With the retriever learning, pre-training on cloze forms is REALM pre-training on another
    // text; with it frozen, a stage that teaches the masked-LM alone to read them.
    let stage = match (&cfg.cloze_questions, cfg.freeze_retriever) {
        (Some(_), true) => Stage::Cloze,
        _ => Stage::Pretrain,
    };
    let mut trainer = Trainer::new(&run, stage, vars, &cfg.train, opts)?;
    trainer.set_lr_scales(|name| cfg.lr_scale(name))?;
    let embed = EmbedBlocks {
        batch: cfg.index_batch.max(1),
        max_len: cfg.doc_len,
        progress: (!opts.quiet).then(|| "index".to_string()),
    };
    let (live, version) = starting_index(
        cfg,
        &run,
        &trainer,
        &model,
        &tok,
        &data.knowledge,
        &embed,
        &dev,
        dist,
    )?;
    let slot = IndexSlot::new(live, version);
    trainer.state.index = Some(IndexVersion {
        step: version,
        fingerprint: slot.get().index.fingerprint.clone(),
    });
    let mut refresher = Refresher::new(
        if cfg.doc_tower_frozen() {
            // Nothing to refresh: the document tower does not change.
            RefreshPolicy {
                every: 0,
                ..cfg.refresh
            }
        } else {
            cfg.refresh
        },
        tok.clone(),
        &data.knowledge,
        EmbedBlocks {
            progress: None,
            ..embed
        },
        &opts.device,
        dist,
    )?;
    let mask_cfg = MaskConfig {
        max_masks: cfg.max_masks,
        mask_id: tok
            .token_id("[MASK]")
            .ok_or_else(|| Error::bad_input(OP, "tokenizer", "the vocabulary has no [MASK]"))?,
        ..MaskConfig::default()
    };
    if opts.resume && !trainer.done() {
        // The refresh that was running at the checkpoint, then one due at its step: as the
        // uninterrupted run has them.
        if let Some(step) = trainer.state.refresh_running {
            let dir = run.checkpoint().join(REFRESH);
            let snapshot = load_snapshot(&dir, model.retriever().doc_tower())?;
            refresher.restart(step, snapshot)?;
        }
        refresher.maybe_start(trainer.step(), model.retriever().doc_tower())?;
    }
    let mut order = DataOrder::new(
        data.examples.len(),
        cfg.train.batch,
        cfg.train.seed,
        STREAM_ORDER,
    )?;
    let mut saved_index: Option<u64> = opts.resume.then_some(version);
    // The gradient norms logged: query tower, document tower (the same two when the towers are
    // shared), encoder.
    let tower_vars: Vec<Vec<Var>> = {
        let vars = |named: &[(String, Var)]| named.iter().map(|(_, v)| v.clone()).collect();
        let r = model.retriever();
        vec![
            vars(r.query_tower().vars()),
            vars(r.doc_tower().vars()),
            vars(&model.encoder_vars()),
        ]
    };
    // A frozen document tower's candidates are scored from the index's embeddings (exact: the
    // tower that built them is the one that would embed them) and the null document's,
    // embedded once here: no document-tower pass over the candidates each step.
    let null_doc = if cfg.doc_tower_frozen() {
        let input = doc_inputs(&tok, &[&[][..]], &[&[][..]], cfg.doc_len, &dev)?;
        let tower = model.retriever().doc_tower();
        Some(tower.embed(&input, Mode::Eval)?.to_dtype(DType::F32)?)
    } else {
        None
    };
    // The starting checkpoint's fine-tuned reader still fits a frozen retriever: keep it, so
    // that this checkpoint evaluates and answers like the one it started from.
    let kept_reader = init
        .checkpoint()
        .map(|d| d.join(models::READER))
        .filter(|d| cfg.freeze_retriever && d.is_dir());
    let mut report = PretrainReport {
        steps: 0,
        first_loss: None,
        last_loss: None,
        retrieval_utility: None,
        refreshes: 0,
        mean_refresh_s: None,
        max_staleness: 0,
        seconds: 0.0,
        interrupted: false,
    };
    let mut refresh_total = 0.0;
    let mut window = Window::default();
    while !trainer.done() {
        let step = trainer.step();
        let swapped = refresher.poll(step, &slot)?;
        if let Some(s) = swapped {
            report.refreshes += 1;
            refresh_total += s.seconds;
        }
        let (ids, cursor) = order.batch(step);
        // The whole batch is masked on every rank (its draws follow one another), then each
        // rank keeps its part: the same examples as one process with the same batch.
        let mut rng = step_rng(cfg.train.seed, STREAM_MASK, step);
        let mut queries: Vec<MaskedQuery> = ids
            .iter()
            .map(|&i| {
                let e = &data.examples[i];
                match cfg.random_masks {
                    true => e.mask_random(mask_cfg, &mut rng),
                    false => e.mask(mask_cfg, &mut rng),
                }
                .into()
            })
            .collect();
        let part = dist.shard(ids.len());
        queries.truncate(part.end);
        let queries = queries.split_off(part.start);
        let exclude: Vec<Option<u32>> = ids[part].iter().map(|&i| data.exclude[i]).collect();
        let index = slot.get();
        // A frozen document tower's index is never stale.
        let staleness = match cfg.doc_tower_frozen() {
            true => 0,
            false => step.saturating_sub(index.step),
        };
        let (retrieved, query_emb) = retrieve(
            &model,
            &tok,
            &queries,
            &exclude,
            &index.index.mips,
            &data.knowledge,
            cfg,
            &dev,
        )?;
        let tensors = MlmTensors::new(
            &tok,
            &queries,
            &retrieved,
            cfg.top_k,
            &data.knowledge,
            cfg.query_len,
            cfg.doc_len,
            &dev,
        )?;
        let mut batch = tensors.batch();
        let mode = Mode::Train {
            seed: dist.replica_seed(cfg.train.seed),
            step,
        };
        let scores = match (&null_doc, &query_emb) {
            // A frozen retriever (or both towers at rate 0): the search's query embeddings, no
            // gradient to the towers.
            (Some(null), Some(q)) if cfg.freeze_retriever || cfg.query_lr_scale == 0.0 => {
                Some(frozen_scores(q, null, &retrieved, cfg.top_k, &index.index.mips)?.detach())
            }
            // A learning query tower: its training pass, the gradient reaching it.
            (Some(null), Some(_)) => {
                let q = model.retriever().query_tower().embed(batch.queries, mode)?;
                Some(frozen_scores(
                    &q,
                    null,
                    &retrieved,
                    cfg.top_k,
                    &index.index.mips,
                )?)
            }
            // The null document alone: its probability is 1 whatever its score.
            (Some(_), None) => Some(Tensor::zeros((queries.len(), 1), DType::F32, &dev)?),
            (None, _) => None,
        };
        batch.doc_scores = scores.as_ref();
        let out = model.mlm_forward(&batch, mode)?;
        let grads = trainer.backward(&out.loss)?;
        let (grads, loss) = trainer.all_reduce(grads, &out.loss, tensors.slots.count())?;
        // A pass over every gradient: only for the step that logs.
        if let (Some(g), true) = (&grads, trainer.log_due_after_update()) {
            window.grad_norms.push(g.group_norms(&tower_vars, &dev)?);
        }
        let update = trainer.update(grads)?;
        trainer.state.data = cursor;

        window.losses.push(loss.detach().to_dtype(DType::F64)?);
        if tensors.k >= 2 {
            let sum = marginal_utility_sum(&out, &tensors.slots)?;
            window.utilities.push((sum, tensors.slots.count()));
            let mass = retrieval_mass_sums(&out, &tensors.slots)?;
            window
                .masses
                .push((mass, queries.len(), tensors.slots.count()));
        }
        window.tokens += tensors.tokens;
        report.max_staleness = report.max_staleness.max(staleness);
        if trainer.log_due() {
            let mut m = trainer.metric();
            let means = window.means()?;
            report.first_loss.get_or_insert(means.loss);
            report.last_loss = Some(means.loss);
            m.loss = Some(means.loss);
            m.lr = Some(update.lr);
            if let Some(ru) = means.utility {
                m.retrieval_utility = Some(ru);
                report.retrieval_utility = Some(ru);
            }
            if let Some([entropy, null_prior, null_posterior]) = means.mass {
                m.retrieval_entropy = Some(entropy);
                m.null_prior = Some(null_prior);
                m.null_posterior = Some(null_posterior);
            }
            if let Some([query, doc, encoder]) = means.grad_norms {
                m.grad_norm_query = Some(query);
                m.grad_norm_doc = Some(doc);
                m.grad_norm_encoder = Some(encoder);
            }
            m.staleness = Some(staleness);
            m.refresh_s = swapped.map(|s| s.seconds);
            m.tokens_per_s = Some(window.tokens as f64 / window.started.elapsed().as_secs_f64());
            trainer.log(&m)?;
            window = Window::default();
        } else if let Some(s) = swapped {
            let mut m = trainer.metric();
            m.staleness = Some(staleness);
            m.refresh_s = Some(s.seconds);
            trainer.log(&m)?;
        }
        if trainer.checkpoint_due()? {
            // The last checkpoint holds the newest index: a running refresh is finished first.
            // Any other checkpoint leaves training as it is (a refresh still running is
            // recorded with its weights, and a resumed run starts it again), so checkpoints
            // taken by time or on a signal do not change the run.
            if trainer.final_step() {
                if let Some(s) = refresher.finish(&slot)? {
                    report.refreshes += 1;
                    refresh_total += s.seconds;
                }
            }
            let running = refresher.running();
            trainer.state.refresh_running = running.map(|(step, _)| step);
            let current = slot.get();
            trainer.state.index = Some(IndexVersion {
                step: current.step,
                fingerprint: current.index.fingerprint.clone(),
            });
            let previous = run.checkpoint().join(models::INDEX);
            let reuse = saved_index == Some(current.step) && previous.exists();
            // The ranks' parts are gathered for the writer unless it links the saved index.
            let fresh = match dist.any("index checkpoint", !reuse)? {
                true => current.index.stored(
                    current.step,
                    "checkpoint",
                    &data.knowledge,
                    run.is_writer(),
                )?,
                false => None,
            };
            trainer.save(&run.checkpoint(), |d| {
                model.save(d)?;
                models::write_origin(&origin, d)?;
                if let Some(reader) = &kept_reader {
                    link_dir(reader, &d.join(models::READER))?;
                }
                if let Some((_, tower)) = running {
                    save_snapshot(tower, &d.join(REFRESH))?;
                }
                match fresh {
                    Some(stored) => stored.save(d.join(models::INDEX)),
                    None => link_dir(&previous, &d.join(models::INDEX)),
                }
            })?;
            saved_index = Some(current.step);
        }
        // After the checkpoint, so that a run resumed from it starts the same refresh; none
        // after the last step (it would outlive the run).
        if !trainer.done() {
            refresher.maybe_start(trainer.step(), model.retriever().doc_tower())?;
        }
    }
    trainer.finish();
    report.steps = trainer.step();
    report.interrupted = trainer.interrupted();
    report.seconds = trainer.time_s();
    report.mean_refresh_s = (report.refreshes > 0).then(|| refresh_total / report.refreshes as f64);
    Ok(report)
}

/// What the steps since the last log line measured, kept on the device until the log line reads
/// it all at once.
struct Window {
    losses: Vec<Tensor>,
    /// [`marginal_utility_sum`] of each step with k ≥ 2, with its masked-token count.
    utilities: Vec<(Tensor, usize)>,
    /// [`retrieval_mass_sums`] of each step with k ≥ 2, with its example and masked-token counts.
    masses: Vec<(Tensor, usize, usize)>,
    /// The gradient norms of the query tower, the document tower and the encoder at the step
    /// that logs (when it updated).
    grad_norms: Vec<Tensor>,
    tokens: usize,
    started: std::time::Instant,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            losses: Vec::new(),
            utilities: Vec::new(),
            masses: Vec::new(),
            grad_norms: Vec::new(),
            tokens: 0,
            started: std::time::Instant::now(),
        }
    }
}

/// A window's means over its steps (see [`Window`]).
struct WindowMeans {
    loss: f64,
    utility: Option<f64>,
    /// Entropy of the retrieval distribution per example, the null document's prior per
    /// example and its posterior per masked token.
    mass: Option<[f64; 3]>,
    /// Gradient norms at the logged step: query tower, document tower, encoder.
    grad_norms: Option<[f64; 3]>,
}

impl Window {
    /// The means of the window's steps, summed in f64 step by step: one read from the device.
    fn means(&self) -> Result<WindowMeans> {
        let all: Vec<Tensor> = self
            .losses
            .iter()
            .chain(self.utilities.iter().map(|(t, _)| t))
            .map(|t| t.reshape(1))
            .chain(self.masses.iter().map(|(t, _, _)| Ok(t.clone())))
            .chain(self.grad_norms.iter().map(|t| Ok(t.clone())))
            .collect::<candle_core::Result<_>>()?;
        let values = device::read_vec1::<f64>(&Tensor::cat(&all, 0)?)?;
        let (losses, rest) = values.split_at(self.losses.len());
        let (utilities, rest) = rest.split_at(self.utilities.len());
        let (masses, norms) = rest.split_at(3 * self.masses.len());
        let mean = |sum: f64, n: usize| sum / n.max(1) as f64;
        let mut loss = 0f64;
        for l in losses {
            loss += l;
        }
        let mut ru = 0f64;
        for (sum, (_, tokens)) in utilities.iter().zip(&self.utilities) {
            ru += mean(*sum, *tokens);
        }
        let mut mass = [0f64; 3];
        for (sums, (_, examples, tokens)) in masses.chunks(3).zip(&self.masses) {
            mass[0] += mean(sums[0], *examples);
            mass[1] += mean(sums[1], *examples);
            mass[2] += mean(sums[2], *tokens);
        }
        let mut grad = [0f64; 3];
        for n in norms.chunks(3) {
            for (g, v) in grad.iter_mut().zip(n) {
                *g += v;
            }
        }
        let steps = |n: usize| (n > 0).then_some(n);
        Ok(WindowMeans {
            loss: mean(loss, losses.len()),
            utility: steps(utilities.len()).map(|n| ru / n as f64),
            mass: steps(self.masses.len()).map(|n| mass.map(|m| m / n as f64)),
            grad_norms: steps(self.grad_norms.len()).map(|n| grad.map(|g| g / n as f64)),
        })
    }
}

/// The k − 1 best blocks of each masked query by the current query tower over `index`, and the
/// query embeddings (none when top_k = 1). Every rank must call it with its own queries.
#[allow(clippy::too_many_arguments)]
pub fn retrieve(
    model: &RealmModel,
    tok: &BertTokenizer,
    queries: &[MaskedQuery],
    exclude: &[Option<u32>],
    index: &RankShard,
    knowledge: &Knowledge,
    cfg: &PretrainConfig,
    dev: &Device,
) -> Result<(Vec<Vec<u32>>, Option<Tensor>)> {
    if cfg.top_k <= 1 {
        return Ok((vec![Vec::new(); queries.len()], None));
    }
    let ids: Vec<&[u32]> = queries.iter().map(|q| q.input_ids.as_slice()).collect();
    let input = query_inputs(tok, &ids, cfg.query_len, dev)?;
    let emb = model.retriever().query_tower().embed(&input, Mode::Eval)?;
    let found = knowledge.search(&emb, index, cfg.top_k - 1, exclude)?;
    Ok((found, Some(emb)))
}

/// A frozen document tower's relevance [b, k] of each query's candidates (the null document,
/// then its retrieved blocks; an absent block, masked later, is scored as block 0): the query
/// embeddings against the null document's and the index's stored ones, as fine-tuning scores
/// its beam. Every rank must call it (the embeddings come from the ranks that hold them).
fn frozen_scores(
    queries: &Tensor,
    null_doc: &Tensor,
    retrieved: &[Vec<u32>],
    k: usize,
    index: &RankShard,
) -> Result<Tensor> {
    let (b, d) = (retrieved.len(), null_doc.dim(1)?);
    let ids: Vec<u32> = retrieved
        .iter()
        .flat_map(|r| (0..k - 1).map(|z| r.get(z).copied().unwrap_or(0)))
        .collect();
    let blocks = index
        .rows_own(&ids)?
        .to_dtype(DType::F32)?
        .reshape((b, k - 1, d))?;
    let null = null_doc.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
    let docs = Tensor::cat(&[&null, &blocks], 1)?;
    relevance(&queries.to_dtype(DType::F32)?, &docs)
}

/// The index training starts with (this rank's part of it), and the step of the weights that
/// built it: the checkpoint's when resuming; else a prebuilt one (which must come from the
/// starting document tower and the same blocks), else built now, each rank embedding its part.
/// A fresh start also saves it as the run's `index/`. Every rank must call it.
#[allow(clippy::too_many_arguments)]
fn starting_index(
    cfg: &PretrainConfig,
    run: &RunDir,
    trainer: &Trainer,
    model: &RealmModel,
    tok: &BertTokenizer,
    knowledge: &Knowledge,
    embed: &EmbedBlocks,
    dev: &Device,
    dist: &Dist,
) -> Result<(LiveIndex, u64)> {
    let from_stored = |stored: StoredIndex, dir: &Path| -> Result<(LiveIndex, u64)> {
        check_blocks(&stored, knowledge, dir)?;
        let step = stored.manifest.step;
        Ok((
            LiveIndex {
                mips: RankShard::from_all(dist, &stored.embeddings, dev)?,
                fingerprint: stored.manifest.model_fingerprint,
            },
            step,
        ))
    };
    if trainer.step() > 0 {
        let dir = run.checkpoint().join(models::INDEX);
        let stored = StoredIndex::load(&dir, None)?;
        if let Some(v) = &trainer.state.index {
            if v.fingerprint != stored.manifest.model_fingerprint || v.step != stored.manifest.step
            {
                return Err(Error::file(
                    &dir,
                    format!(
                        "index of step {} does not match the trainer state (index of step {})",
                        stored.manifest.step, v.step
                    ),
                ));
            }
        }
        return from_stored(stored, &dir);
    }
    let fingerprint = crate::index::weights_fingerprint(model.retriever().doc_tower().vars())?;
    // A frozen retriever retrieves as its checkpoint did: from the checkpoint's own index, which
    // fine-tuning keeps fixed while it trains the query tower (so no fingerprint to match).
    let own = cfg
        .init
        .checkpoint()
        .map(|d| d.join(models::INDEX))
        .filter(|d| cfg.freeze_retriever && d.join("manifest.json").exists());
    let (live, step) = match (&cfg.index, own) {
        (Some(dir), _) => from_stored(StoredIndex::load(dir, Some(&fingerprint))?, dir)?,
        (None, Some(dir)) => from_stored(StoredIndex::load(&dir, None)?, &dir)?,
        (None, None) => (
            LiveIndex::build(
                model.retriever().doc_tower(),
                tok,
                &knowledge.blocks,
                embed,
                dev,
                dist,
            )?,
            0,
        ),
    };
    if let Some(stored) = live.stored(step, &cfg.init_label(), knowledge, run.is_writer())? {
        stored.save(run.index())?;
    }
    Ok((live, step))
}

impl PretrainConfig {
    fn init_label(&self) -> String {
        match &self.init {
            ModelInit::Checkpoint { dir } => dir.display().to_string(),
            ModelInit::Origin(o) => format!("{o:?}"),
        }
    }
}

/// An error unless a stored index holds exactly the corpus's blocks.
fn check_blocks(stored: &StoredIndex, knowledge: &Knowledge, dir: &Path) -> Result<()> {
    let same = stored.blocks.len() == knowledge.len()
        && stored
            .blocks
            .iter()
            .zip(knowledge.blocks.iter())
            .all(|(a, b)| a.doc_id == b.doc_id && a.tokens == b.tokens);
    if !same {
        return Err(Error::file(
            dir,
            format!(
                "the index holds {} blocks that are not the {} blocks of the corpus (another corpus, tokenizer or block length); rebuild it with `realm index`",
                stored.blocks.len(),
                knowledge.len()
            ),
        ));
    }
    Ok(())
}
