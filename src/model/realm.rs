//! REALM pre-training (Guu et al. 2020) as the released code computes it
//! (`language/realm/model.py`): for each masked token y_j of a query x,
//!
//!   log p(y_j | x) = logsumexp_z [ log softmax_z f(x, z) + log p(y_j | z, x) ]
//!
//! over the k candidates of x, the first of which is the null document ∅ (empty title and body;
//! `example_generator.py` prepends it to the k − 1 retrieved ones). The marginal is per masked
//! token (not per example, as the paper's equations read), and the loss is the mean of −log
//! p(y_j | x) over the batch's real masked tokens. f(x, z) is recomputed with the current towers,
//! so gradients reach both; the search that chose the candidates is not differentiated.
//!
//! Also: the retrieval utility diagnostic, and [`RealmModel`], the retriever and the
//! knowledge-augmented encoder in one checkpoint folder.

use super::bert::{BertInput, Mode};
use super::checkpoint;
use super::config::BertConfig;
use super::encoder::KnowledgeEncoder;
use super::heads::TensorFile;
use super::mask_slots::MaskSlots;
use super::retriever::{ConfigFile, Retriever, RetrieverConfig, SharedTowers};
use super::tokenizer::BertTokenizer;
use crate::device;
use crate::error::{Error, Result};
use crate::ops::marginal_log_likelihood;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::Path;

const OP: &str = "realm";

/// The column of the null document in every row of candidates (as in the released code).
pub const NULL_COLUMN: usize = 0;

/// Tokenizer files copied into a checkpoint folder when the source has them.
const TOKENIZER_FILES: [&str; 4] = [
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Checks `token_mask` [b, m] (any numeric dtype, 0 or 1) and returns it as u8 with its count.
fn mask_of(token_mask: &Tensor, b: usize, m: usize) -> Result<(Tensor, usize)> {
    if token_mask.dims() != [b, m] {
        return Err(Error::bad_input(
            OP,
            "token_mask",
            format!("shape {:?} must be [{b}, {m}]", token_mask.dims()),
        ));
    }
    let values = device::read_vec1::<f32>(&token_mask.to_dtype(DType::F32)?)?;
    if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(Error::bad_input(
            OP,
            "token_mask",
            format!("holds {v}; entries must be 0 or 1"),
        ));
    }
    let count = values.iter().filter(|&&v| v == 1.0).count();
    Ok((token_mask.ne(0.0)?.to_dtype(DType::U8)?, count))
}

/// (b, k, m) of `doc_scores` [b, k] and `cond_logprobs` [b, k, m], both f32.
fn shapes(doc_scores: &Tensor, cond_logprobs: &Tensor) -> Result<(usize, usize, usize)> {
    let (b, k) = doc_scores.dims2().map_err(|_| {
        Error::bad_input(
            OP,
            "doc_scores",
            format!("shape {:?} must be [b, k]", doc_scores.dims()),
        )
    })?;
    match *cond_logprobs.dims() {
        [bb, kk, m] if (bb, kk) == (b, k) && m > 0 => Ok((b, k, m)),
        ref other => Err(Error::bad_input(
            OP,
            "cond_logprobs",
            format!("shape {other:?} must be [{b}, {k}, m] to match doc_scores"),
        )),
    }
}

/// log p(y_j | x) per masked token, [b, m]: the marginal over the k candidates (`-inf` in
/// `doc_scores` marks an absent one) through [`crate::ops::marginal_log_likelihood`].
pub fn marginal_log_probs(doc_scores: &Tensor, cond_logprobs: &Tensor) -> Result<Tensor> {
    shapes(doc_scores, cond_logprobs)?;
    marginal_log_likelihood(&doc_scores.contiguous()?, &cond_logprobs.contiguous()?)
}

/// The pre-training loss: −Σ_j mask_j · log p(y_j | x) / Σ_j mask_j over the whole batch (0 when
/// nothing is masked, as the released code's `div_no_nan`). `doc_scores` [b, k] (the null
/// document one of the columns), `cond_logprobs` [b, k, m] = log p(y_j | z, x), `token_mask`
/// [b, m] (1 = a real masked token, 0 = padding of the mask list). Scalar f32, differentiable in
/// both inputs.
pub fn mlm_marginal(
    doc_scores: &Tensor,
    cond_logprobs: &Tensor,
    token_mask: &Tensor,
) -> Result<Tensor> {
    let marginal = marginal_log_probs(doc_scores, cond_logprobs)?;
    let (b, m) = marginal.dims2()?;
    let (mask, count) = mask_of(token_mask, b, m)?;
    masked_mean_loss(&marginal, &mask, count)
}

/// −mean of `marginal` [b, m] over the `count` entries `mask` (u8) keeps; padding entries (which
/// may be −inf) are replaced, not multiplied, so they never turn the loss into NaN.
fn masked_mean_loss(marginal: &Tensor, mask: &Tensor, count: usize) -> Result<Tensor> {
    let kept = mask.where_cond(marginal, &marginal.zeros_like()?)?;
    Ok(kept.sum_all()?.affine(-1.0 / count.max(1) as f64, 0.0)?)
}

/// The retrieval utility RU = log p(y | z, x) − log p(y | ∅, x), averaged over the batch's real
/// masked tokens, for three choices of z (host values, no gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetrievalUtility {
    /// z marginalised: log p(y | x) − log p(y | ∅, x), the released code's `retrieval_utility`
    /// metric (its model selection criterion).
    pub marginal: f64,
    /// z = the highest-scoring retrieved (non-null, present) document: the paper's RU for the
    /// document the retriever ranks first.
    pub top1: f64,
    /// The mean over the retrieved (non-null, present) documents of each one's RU.
    pub retrieved_mean: f64,
    /// Masked tokens averaged over.
    pub tokens: usize,
}

/// Where one batch's retrieval mass sits, as sums over the batch (a `[3]` f64 tensor on the device,
/// for a training loop to read with the loss at a log interval): Σ_x H(p(·|x)), the entropy in
/// nats of the retrieval distribution over the k candidates; Σ_x p(∅|x), the null document's
/// prior; and Σ_j p(∅|x, y_j) over the real masked tokens, its posterior given the answer
/// (p(∅|x) p(y_j|∅, x) / p(y_j|x)). Candidates with score −inf are absent.
pub fn retrieval_mass_sums(out: &MlmOutput, slots: &MaskSlots) -> Result<Tensor> {
    let scores = out.doc_scores.detach().to_dtype(DType::F64)?;
    let top = scores.max_keepdim(1)?;
    let shifted = scores.broadcast_sub(&top)?;
    let log_prior = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(1)?.log()?)?;
    let prior = log_prior.exp()?;
    // 0 · log 0 is 0, not the NaN of 0 · (−inf).
    let plogp = prior
        .gt(0.0)?
        .where_cond(&(&prior * &log_prior)?, &prior.zeros_like()?)?;
    let entropy = plogp.sum_all()?.neg()?;
    let null_log_prior = log_prior.narrow(1, NULL_COLUMN, 1)?;
    let null_prior = null_log_prior.exp()?.sum_all()?;
    let null_cond = out
        .cond_logprobs
        .detach()
        .narrow(1, NULL_COLUMN, 1)?
        .squeeze(1)?
        .to_dtype(DType::F64)?;
    let posterior = (null_cond.broadcast_add(&null_log_prior)?
        - out.marginal.detach().to_dtype(DType::F64)?)?
    .exp()?;
    let null_posterior = slots
        .mask()
        .where_cond(&posterior, &posterior.zeros_like()?)?
        .sum_all()?;
    Ok(Tensor::stack(&[entropy, null_prior, null_posterior], 0)?)
}

/// Σ over the real masked tokens of log p(y | x) − log p(y | ∅, x) (the numerator of
/// [`RetrievalUtility::marginal`], in f64 and in its order: the same value), as a 0-d f64 tensor
/// on the device, so that a training loop reads it with the loss at a log interval.
pub fn marginal_utility_sum(out: &MlmOutput, slots: &MaskSlots) -> Result<Tensor> {
    let null = out
        .cond_logprobs
        .detach()
        .narrow(1, NULL_COLUMN, 1)?
        .squeeze(1)?;
    let gain = (out.marginal.detach().to_dtype(DType::F64)? - null.to_dtype(DType::F64)?)?;
    Ok(slots
        .mask()
        .where_cond(&gain, &gain.zeros_like()?)?
        .sum_all()?)
}

/// [`RetrievalUtility`] of one batch: inputs as [`mlm_marginal`], the null document in column
/// [`NULL_COLUMN`]; candidates with score −inf are absent. Needs k ≥ 2.
pub fn retrieval_utility(
    doc_scores: &Tensor,
    cond_logprobs: &Tensor,
    token_mask: &Tensor,
) -> Result<RetrievalUtility> {
    let (b, k, m) = shapes(doc_scores, cond_logprobs)?;
    if k < 2 {
        return Err(Error::bad_input(
            OP,
            "doc_scores",
            "needs the null document and at least one retrieved document (k ≥ 2)",
        ));
    }
    let (mask, tokens) = mask_of(token_mask, b, m)?;
    let marginal = marginal_log_probs(&doc_scores.detach(), &cond_logprobs.detach())?;
    let marginal = device::read_vec2::<f32>(&marginal)?;
    let mask = device::read_vec2::<u8>(&mask)?;
    let scores = device::read_vec2::<f32>(&doc_scores.to_dtype(DType::F32)?)?;
    let cond = device::read_vec3::<f32>(&cond_logprobs.to_dtype(DType::F32)?)?;
    let (mut sum_marginal, mut sum_top1, mut sum_mean) = (0f64, 0f64, 0f64);
    for i in 0..b {
        let retrieved: Vec<usize> = (0..k)
            .filter(|&z| z != NULL_COLUMN && scores[i][z] > f32::NEG_INFINITY)
            .collect();
        let top = retrieved
            .iter()
            .copied()
            .max_by(|&x, &y| scores[i][x].total_cmp(&scores[i][y]).then(y.cmp(&x)));
        for j in (0..m).filter(|&j| mask[i][j] == 1) {
            let null = f64::from(cond[i][NULL_COLUMN][j]);
            sum_marginal += f64::from(marginal[i][j]) - null;
            if let Some(top) = top {
                sum_top1 += f64::from(cond[i][top][j]) - null;
                sum_mean += retrieved
                    .iter()
                    .map(|&z| f64::from(cond[i][z][j]) - null)
                    .sum::<f64>()
                    / retrieved.len() as f64;
            }
        }
    }
    let n = tokens.max(1) as f64;
    Ok(RetrievalUtility {
        marginal: sum_marginal / n,
        top1: sum_top1 / n,
        retrieved_mean: sum_mean / n,
        tokens,
    })
}

/// REALM's settings besides the two BERTs and the retriever (the released launcher's values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealmSettings {
    /// Candidates per query, the null document included (HF's `num_candidates`).
    #[serde(default = "default_candidates")]
    pub num_candidates: usize,
    /// Query tower inputs, `[CLS] x [SEP]`, in wordpieces.
    #[serde(default = "default_query_len")]
    pub query_seq_len: usize,
    /// Document tower inputs, `[CLS] title [SEP] body [SEP]`; the encoder's joined input is at
    /// most `query_seq_len + candidate_seq_len`.
    #[serde(default = "default_candidate_len")]
    pub candidate_seq_len: usize,
    /// Masked wordpieces per query at most.
    #[serde(default = "default_max_masks")]
    pub max_masks: usize,
}

fn default_candidates() -> usize {
    8
}
fn default_query_len() -> usize {
    96
}
fn default_candidate_len() -> usize {
    288
}
fn default_max_masks() -> usize {
    10
}

impl Default for RealmSettings {
    fn default() -> Self {
        RealmSettings {
            num_candidates: default_candidates(),
            query_seq_len: default_query_len(),
            candidate_seq_len: default_candidate_len(),
            max_masks: default_max_masks(),
        }
    }
}

impl RealmSettings {
    /// Rejects fewer than 2 candidates, a sequence length below 3 (room for `[CLS]`, a token and
    /// `[SEP]`) or no masks.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_input(OP, "settings", msg));
        if self.num_candidates < 2 {
            return bad(format!(
                "num_candidates = {} must be at least 2 (the null document and one retrieved)",
                self.num_candidates
            ));
        }
        if self.query_seq_len < 3 || self.candidate_seq_len < 3 || self.max_masks == 0 {
            return bad(format!(
                "query_seq_len = {}, candidate_seq_len = {} (≥ 3 each) and max_masks = {} (≥ 1)",
                self.query_seq_len, self.candidate_seq_len, self.max_masks
            ));
        }
        Ok(())
    }

    /// The longest joined encoder input.
    pub fn joined_seq_len(&self) -> usize {
        self.query_seq_len + self.candidate_seq_len
    }
}

/// What `config.json` holds besides the retriever's BERT and settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RealmExtra {
    #[serde(flatten)]
    settings: RealmSettings,
    /// The knowledge-augmented encoder's BERT (REALM starts it from a different BERT than the
    /// retriever's ICT towers).
    encoder_bert: BertConfig,
    #[serde(default)]
    architectures: Vec<String>,
}

/// One pre-training batch: b queries with k candidates each (grouped by query, the null document
/// first), and the m mask slots of each query.
pub struct MlmBatch<'a> {
    /// b rows `[CLS] x [SEP]` with the masked tokens replaced by `[MASK]`.
    pub queries: &'a BertInput,
    /// b·k rows `[CLS] title [SEP] body [SEP]`, row i·k + z = candidate z of query i.
    pub docs: &'a BertInput,
    /// b·k rows `[CLS] x [SEP] body [SEP]`, the same order.
    pub joined: &'a BertInput,
    /// The m mask slots of each query: positions in the query rows (the same in the joined
    /// rows), original token ids, 1 = a real mask.
    pub slots: &'a MaskSlots,
    /// [b, k] (any numeric dtype), 0 = absent candidate (a short retrieval), scored −inf; None =
    /// all present.
    pub candidate_mask: Option<&'a Tensor>,
    /// [b, k] f32 relevance computed outside, used as given instead of the towers' scores: the
    /// query embeddings against the index's stored block embeddings when the document tower is
    /// frozen (detached too when the whole retriever is). None: the towers score `queries`
    /// against `docs`.
    pub doc_scores: Option<&'a Tensor>,
}

/// What one pre-training forward pass computes.
pub struct MlmOutput {
    /// Scalar f32 loss (see [`mlm_marginal`]).
    pub loss: Tensor,
    /// [b, k] f(x, z) with the current towers (−inf for absent candidates).
    pub doc_scores: Tensor,
    /// [b, k, m] log p(y_j | z, x).
    pub cond_logprobs: Tensor,
    /// [b, m] log p(y_j | x).
    pub marginal: Tensor,
}

/// The retriever and the knowledge-augmented encoder with their tokenizer and settings: one
/// checkpoint folder.
///
/// Layout: `config.json` (the retriever's BERT fields and `retriever_proj_size` at the top level
/// as in HF's `RealmConfig`, plus `shared_towers`, `retriever_proj_dropout`, `num_candidates`,
/// `query_seq_len`, `candidate_seq_len`, `max_masks`, and `encoder_bert`, the encoder's BERT
/// config); `model.safetensors` with `embedder.*` and `query_embedder.*` (HF `RealmScorer` names)
/// and `encoder.*` (HF `RealmKnowledgeAugEncoder` names under `encoder.`); the tokenizer files.
/// [`Retriever::load`] reads the same folder.
pub struct RealmModel {
    settings: RealmSettings,
    retriever: Retriever,
    encoder: KnowledgeEncoder,
    tokenizer: BertTokenizer,
    /// The tokenizer files' contents, written into every saved folder.
    tokenizer_files: Vec<NamedFile>,
}

/// A file's name in the folder and its contents.
type NamedFile = (&'static str, Vec<u8>);

fn read_tokenizer_files(dir: &Path) -> Result<(BertTokenizer, Vec<NamedFile>)> {
    let tokenizer = BertTokenizer::from_dir(dir)?;
    let files = TOKENIZER_FILES
        .iter()
        .filter(|name| dir.join(name).exists())
        .map(|&name| {
            let path = dir.join(name);
            Ok((
                name,
                std::fs::read(&path).map_err(|e| Error::file(&path, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tokenizer, files))
}

impl RealmModel {
    /// From parts: the tokenizer (and its files) from `tokenizer_dir`, whose vocabulary must match
    /// both BERTs.
    pub fn from_parts(
        retriever: Retriever,
        encoder: KnowledgeEncoder,
        tokenizer_dir: impl AsRef<Path>,
        settings: &RealmSettings,
    ) -> Result<Self> {
        settings.validate()?;
        let (tokenizer, tokenizer_files) = read_tokenizer_files(tokenizer_dir.as_ref())?;
        tokenizer.check_vocab(retriever.bert_config())?;
        tokenizer.check_vocab(encoder.config())?;
        Ok(RealmModel {
            settings: settings.clone(),
            retriever,
            encoder,
            tokenizer,
            tokenizer_files,
        })
    }

    /// Retriever towers and encoder all from one Hugging Face BERT folder (with its tokenizer),
    /// the retriever's projection and any missing masked-LM head drawn from `seed`.
    pub fn from_bert_dir(
        dir: impl AsRef<Path>,
        retriever: &RetrieverConfig,
        settings: &RealmSettings,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let r = Retriever::from_bert_dir(dir, retriever, seed, dev)?;
        let e = KnowledgeEncoder::from_bert_dir(dir, seed, dev)?;
        Self::from_parts(r, e, dir, settings)
    }

    /// Loads a folder written by [`RealmModel::save`].
    pub fn load(dir: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        Self::load_towers(dir, dev, SharedTowers::Keep)
    }

    /// [`RealmModel::load`], shared retriever towers loaded as `shared` says.
    pub fn load_towers(dir: impl AsRef<Path>, dev: &Device, shared: SharedTowers) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let (config, said) = ConfigFile::<RealmExtra>::read(&config_path)?;
        config
            .rest
            .encoder_bert
            .validate()
            .map_err(|e| Error::file(&config_path, e))?;
        let file = TensorFile::read(dir.join("model.safetensors"))?;
        let retriever =
            Retriever::from_file(&config.bert, &config.retriever, said, &file, dev, shared)?;
        let encoder = KnowledgeEncoder::from_file(&config.rest.encoder_bert, &file, dev)?;
        Self::from_parts(retriever, encoder, dir, &config.rest.settings)
    }

    /// Writes the folder (created if needed), every file atomically; loading it back gives
    /// bit-identical parameters.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        checkpoint::save(&dir.join("model.safetensors"), &self.vars())?;
        for (name, bytes) in &self.tokenizer_files {
            crate::io::write_atomic(dir.join(name), |w| w.write_all(bytes))?;
        }
        ConfigFile {
            bert: self.retriever.bert_config().clone(),
            retriever: self.retriever.config().clone(),
            rest: RealmExtra {
                settings: self.settings.clone(),
                encoder_bert: self.encoder.config().clone(),
                architectures: vec!["RealmScorer".into(), "RealmKnowledgeAugEncoder".into()],
            },
        }
        .write(&dir.join("config.json"))
    }

    /// The candidate count and sequence lengths.
    pub fn settings(&self) -> &RealmSettings {
        &self.settings
    }

    /// The query and document towers.
    pub fn retriever(&self) -> &Retriever {
        &self.retriever
    }

    /// The knowledge-augmented encoder.
    pub fn encoder(&self) -> &KnowledgeEncoder {
        &self.encoder
    }

    /// The tokenizer shared by the towers and the encoder.
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }

    /// BERT's compute dtype in the towers and the encoder.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.retriever.set_compute_dtype(dtype)?;
        self.encoder.set_compute_dtype(dtype)
    }

    /// Every parameter by checkpoint name: `embedder.*`, `query_embedder.*` (separate towers),
    /// `encoder.*`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.retriever.vars();
        vars.extend(self.encoder_vars());
        vars
    }

    /// Gives the encoder's masked-LM head a copy head (drawn from `seed`) if it has none.
    pub fn add_copy_head(&mut self, seed: u64) -> Result<()> {
        self.encoder.add_copy_head(seed)
    }

    /// The knowledge-augmented encoder's parameters by checkpoint name (`encoder.*`).
    pub fn encoder_vars(&self) -> Vec<(String, Var)> {
        self.encoder
            .vars()
            .iter()
            .map(|(n, v)| (format!("encoder.{n}"), v.clone()))
            .collect()
    }

    /// The pre-training forward pass: relevance of every candidate with the current towers,
    /// log p(y_j | z, x) from the encoder at the mask positions, their marginal and the loss.
    /// In `Train` mode everything is differentiable and each of the three BERT passes draws its
    /// own dropout (seeds derived from `mode`'s).
    pub fn mlm_forward(&self, batch: &MlmBatch, mode: Mode) -> Result<MlmOutput> {
        let b = batch.queries.input_ids().dim(0)?;
        let rows = batch.joined.input_ids().dim(0)?;
        if rows == 0 || rows % b != 0 || batch.docs.input_ids().dim(0)? != rows {
            return Err(Error::bad_input(
                OP,
                "joined",
                format!(
                    "{rows} joined rows and {} document rows for {b} queries; need b·k of each",
                    batch.docs.input_ids().dim(0)?
                ),
            ));
        }
        let k = rows / b;
        let mut scores = match batch.doc_scores {
            Some(s) if s.dims() == [b, k] => s.clone(),
            Some(s) => {
                return Err(Error::bad_input(
                    OP,
                    "doc_scores",
                    format!("shape {:?} must be [{b}, {k}]", s.dims()),
                ))
            }
            None => self.retriever.score(batch.queries, batch.docs, mode)?,
        };
        if let Some(present) = batch.candidate_mask {
            if present.dims() != [b, k] {
                return Err(Error::bad_input(
                    OP,
                    "candidate_mask",
                    format!("shape {:?} must be [{b}, {k}]", present.dims()),
                ));
            }
            let absent = Tensor::full(f32::NEG_INFINITY, (b, k), scores.device())?;
            scores = present.ne(0.0)?.where_cond(&scores, &absent)?;
        }
        let m = match batch.slots.dims() {
            (bb, m) if bb == b => m,
            (bb, m) => {
                return Err(Error::bad_input(
                    OP,
                    "positions",
                    format!("shape [{bb}, {m}] must be [{b}, m]"),
                ))
            }
        };
        let encoder_mode = match mode {
            Mode::Train { seed, step } => Mode::Train {
                seed: seed ^ 0x656e_636f_6465_7200,
                step,
            },
            Mode::Eval => Mode::Eval,
        };
        // Every candidate row of a query has its masks at the same positions.
        let cond = self
            .encoder
            .masked_log_probs_at(batch.joined, &batch.slots.repeat_rows(k)?, encoder_mode)?
            .reshape((b, k, m))?;
        let marginal = marginal_log_probs(&scores, &cond)?;
        let loss = masked_mean_loss(&marginal, batch.slots.mask(), batch.slots.count())?;
        Ok(MlmOutput {
            loss,
            doc_scores: scores,
            cond_logprobs: cond,
            marginal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two queries, k = 3 (the null document first), two mask slots; the second query's third
    /// candidate is absent and the first query's second slot is padding.
    #[test]
    fn retrieval_mass_sums_are_entropy_null_prior_and_null_posterior() {
        let dev = Device::Cpu;
        let ln = |p: f32| p.ln();
        let doc_scores = Tensor::new(
            &[[2f32.ln(), 0.0, 0.0], [0.0, 0.0, f32::NEG_INFINITY]],
            &dev,
        )
        .unwrap();
        let cond_logprobs = Tensor::new(
            &[
                [[ln(0.1), ln(0.3)], [ln(0.5), ln(0.3)], [ln(0.5), ln(0.3)]],
                [[ln(0.2), ln(0.4)], [ln(0.2), ln(0.1)], [ln(0.9), ln(0.9)]],
            ],
            &dev,
        )
        .unwrap();
        let marginal = marginal_log_probs(&doc_scores, &cond_logprobs).unwrap();
        let out = MlmOutput {
            loss: Tensor::new(0f32, &dev).unwrap(),
            doc_scores,
            cond_logprobs,
            marginal,
        };
        let slots =
            MaskSlots::new(vec![1, 2, 1, 2], vec![5; 4], vec![1, 0, 1, 1], 2, &dev).unwrap();
        let got = retrieval_mass_sums(&out, &slots)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // Priors (1/2, 1/4, 1/4) and (1/2, 1/2, 0); null posteriors 0.05/0.3, 0.1/0.2, 0.2/0.25.
        let want = [2.5 * std::f64::consts::LN_2, 1.0, 1.0 / 6.0 + 0.5 + 0.8];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
