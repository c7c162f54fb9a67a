//! REALM's knowledge-augmented encoder: BERT over `[CLS] x [SEP] body [SEP]` and a masked-LM head
//! whose output projection is the word-embedding matrix (HF `RealmKnowledgeAugEncoder` /
//! `RealmOnlyMLMHead`: `cls.predictions.transform.{dense,LayerNorm}`, then logits = h Eᵀ +
//! `cls.predictions.bias`). Only the masked positions go through the head (the released code's
//! `mlm_positions`), so the vocabulary projection costs r·m rows, not r·l.
//!
//! Checkpoint folder: `config.json` and `model.safetensors` in `RealmKnowledgeAugEncoder`'s names
//! (`realm.*`, `cls.predictions.*`); the tied decoder weight is not stored.

use super::bert::{BertInput, BertModel, Mode};
use super::checkpoint::{self, Init, ParamSource, RandomInit};
use super::config::{Activation, BertConfig};
use super::copy_head::CopyHead;
use super::heads::{param, take, Dense, Norm, Source, TensorFile};
use super::mask_slots::MaskSlots;
use super::retriever::{ConfigFile, RetrieverConfig};
use crate::device;
use crate::error::{Error, Result};
use crate::ops::nn;
use candle_core::{DType, Device, Tensor, Var, D};
use std::path::Path;

const OP: &str = "encoder";
const WORDS: &str = "embeddings.word_embeddings.weight";

/// BERT with the tied masked-LM head.
pub struct KnowledgeEncoder {
    bert: BertModel,
    transform: Dense,
    norm: Norm,
    bias: Var,
    /// The optional pointer over the row's block (`copy_head`).
    copy: Option<CopyHead>,
    /// Every parameter by HF name: `realm.*`, then `cls.predictions.*`, then `cls.copy.*`.
    params: Vec<(String, Var)>,
}

/// Where a checkpoint keeps the encoder: the BERT prefix, from the word embeddings' names
/// (`realm.` for HF's RealmKnowledgeAugEncoder, `encoder.realm.` in a realm checkpoint, `bert.` or
/// nothing for a plain BERT), preferring `encoder.realm.` when a file holds several models.
fn bert_prefix(file: &TensorFile) -> Result<String> {
    if file.has(&format!("encoder.realm.{WORDS}")) {
        return Ok("encoder.realm.".into());
    }
    let mut found: Vec<String> = file
        .names()
        .filter_map(|n| n.strip_suffix(WORDS).map(str::to_string))
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::file(
            &file.path,
            format!("holds no BERT (no `*{WORDS}`)"),
        )),
        many => Err(Error::file(
            &file.path,
            format!("holds several BERTs (prefixes {many:?}) and no `encoder.realm.*`"),
        )),
    }
}

/// The head's module prefix for a BERT under `prefix`: `realm.` → ``, `encoder.realm.` →
/// `encoder.`, `bert.` → `` (HF's BertForPreTraining), `` → ``.
fn head_root(prefix: &str) -> &str {
    prefix
        .strip_suffix("realm.")
        .or_else(|| prefix.strip_suffix("bert."))
        .unwrap_or(prefix)
}

impl KnowledgeEncoder {
    /// Standard initialisation from `seed`.
    pub fn new_random(config: &BertConfig, seed: u64, dev: &Device) -> Result<Self> {
        let bert = BertModel::new_random(config, seed, dev)?;
        Self::with_random_head(bert, seed)
    }

    fn with_random_head(bert: BertModel, seed: u64) -> Result<Self> {
        // Its own stream, so that the head does not repeat BERT's first draws.
        let init = RandomInit::new(
            seed ^ 0x6d6c_6d00_0000_0000,
            bert.config().initializer_range,
            bert.device(),
        );
        Self::build(bert, &mut Source::Random(init), "")
    }

    /// BERT from a Hugging Face folder (`config.json`, `model.safetensors`; a plain BERT, a
    /// BertForPreTraining/BertForMaskedLM or a RealmKnowledgeAugEncoder), with its masked-LM head
    /// when the checkpoint has `cls.predictions.transform.*`, else a head drawn from `seed`.
    pub fn from_bert_dir(dir: impl AsRef<Path>, seed: u64, dev: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let file = TensorFile::read(dir.join("model.safetensors"))?;
        let prefix = bert_prefix(&file)?;
        let root = head_root(&prefix);
        if file.has(&format!("{root}cls.predictions.transform.dense.weight")) {
            Self::from_file(&config, &file, dev)
        } else {
            let bert = BertModel::from_safetensors(&config, &file.path, Some(&prefix), dev)?;
            Self::with_random_head(bert, seed)
        }
    }

    /// Loads a checkpoint folder written by [`KnowledgeEncoder::save`] or HF's
    /// `RealmKnowledgeAugEncoder`; the head must be there.
    pub fn load(dir: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let file = TensorFile::read(dir.join("model.safetensors"))?;
        Self::from_file(&config, &file, dev)
    }

    /// The encoder of an already-read checkpoint, BERT and head both required.
    pub(crate) fn from_file(config: &BertConfig, file: &TensorFile, dev: &Device) -> Result<Self> {
        let prefix = bert_prefix(file)?;
        let bert = BertModel::from_safetensors(config, &file.path, Some(&prefix), dev)?;
        Self::build(
            bert,
            &mut Source::File(file, dev.clone()),
            head_root(&prefix),
        )
    }

    /// Puts the head (from `src`, under `{root}cls.predictions.`) on `bert`. A stored decoder
    /// weight or bias (some exports repeat the tied tensors) must equal what it is tied to.
    fn build(bert: BertModel, src: &mut Source, root: &str) -> Result<Self> {
        let (h, vocab) = (bert.config().hidden_size, bert.config().vocab_size);
        let eps = bert.config().layer_norm_eps;
        let mut params: Vec<(String, Var)> = bert
            .vars()
            .iter()
            .map(|(n, v)| (format!("realm.{n}"), v.clone()))
            .collect();
        let words = word_embeddings(&bert)?;
        let module = format!("{root}cls.predictions.");
        let (file_path, stored) = match &*src {
            Source::File(file, _) => (
                Some(file.path.clone()),
                ["decoder.weight", "decoder.bias"].map(|l| file.has(&format!("{module}{l}"))),
            ),
            Source::Random(_) => (None, [false; 2]),
        };
        let (transform, norm, bias) = src.module(&module, |s: &mut dyn ParamSource| {
            let name = "cls.predictions.";
            let mut p =
                |leaf: &str, shape: &[usize], init| take(s, name, leaf, shape, init, &mut params);
            let transform = Dense {
                weight: p("transform.dense.weight", &[h, h], Init::Normal)?,
                bias: p("transform.dense.bias", &[h], Init::Zeros)?,
            };
            let norm = Norm {
                weight: p("transform.LayerNorm.weight", &[h], Init::Ones)?,
                bias: p("transform.LayerNorm.bias", &[h], Init::Zeros)?,
                eps,
            };
            let bias = p("bias", &[vocab], Init::Zeros)?;
            // Read but not kept: they must repeat the tensors they are tied to.
            let tied: [(bool, &str, &[usize], &Tensor); 2] = [
                (stored[0], "decoder.weight", &[vocab, h], words.as_tensor()),
                (stored[1], "decoder.bias", &[vocab], bias.as_tensor()),
            ];
            for (present, leaf, shape, to) in tied {
                if !present {
                    continue;
                }
                let t = s.param(leaf, shape, Init::Zeros)?;
                let differs = (t - to)?.abs()?.max_all()?.to_scalar::<f32>()? != 0.0;
                if differs {
                    return Err(Error::file(
                        file_path.clone().unwrap_or_default(),
                        format!(
                            "`{module}{leaf}` differs from the tensor it is tied to; untied \
                             masked-LM decoders are not supported"
                        ),
                    ));
                }
            }
            Ok((transform, norm, bias))
        })?;
        let stored_copy = matches!(&*src, Source::File(file, _) if CopyHead::in_file(file, root));
        let copy = if stored_copy {
            Some(CopyHead::build(src, root, h, &mut params)?)
        } else {
            None
        };
        // `take` recorded the parameters in HF's order; the tied decoder is the word embeddings.
        Ok(KnowledgeEncoder {
            bert,
            transform,
            norm,
            bias,
            copy,
            params,
        })
    }

    /// Whether the masked-LM head has the copy head (`copy_head`).
    pub fn has_copy_head(&self) -> bool {
        self.copy.is_some()
    }

    /// Adds a copy head drawn from `seed` (no-op when there is one).
    pub fn add_copy_head(&mut self, seed: u64) -> Result<()> {
        if self.copy.is_some() {
            return Ok(());
        }
        let config = self.bert.config();
        let init = RandomInit::new(
            seed ^ 0x636f_7079_0000_0000,
            config.initializer_range,
            self.bert.device(),
        );
        let hidden = config.hidden_size;
        self.copy = Some(CopyHead::build(
            &mut Source::Random(init),
            "",
            hidden,
            &mut self.params,
        )?);
        Ok(())
    }

    /// Writes `config.json` and `model.safetensors` (RealmKnowledgeAugEncoder names) into `dir`,
    /// each atomically; loading them back gives bit-identical parameters.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        checkpoint::save(&dir.join("model.safetensors"), &self.params)?;
        ConfigFile {
            bert: self.bert.config().clone(),
            retriever: RetrieverConfig::default(),
            rest: serde_json::json!({ "architectures": ["RealmKnowledgeAugEncoder"] }),
        }
        .write(&dir.join("config.json"))
    }

    /// The BERT under the masked-LM head.
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// The BERT's size and layout.
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }

    /// Every parameter by HF name (f32 master weights): `realm.*` and `cls.predictions.*`.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.params
    }

    /// BERT's compute dtype; the head computes in f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.bert.set_compute_dtype(dtype)
    }

    /// log p(target | row) at the masked positions: `positions` and `targets` [r, m] u32 (r =
    /// the rows of `input`; each position inside its row's length, each target inside the
    /// vocabulary) give [r, m] f32, differentiable in every parameter when `mode` is `Train`.
    /// Padding slots of a short mask list may point anywhere valid (e.g. position 0); weight
    /// them out of the loss.
    pub fn masked_log_probs(
        &self,
        input: &BertInput,
        positions: &Tensor,
        targets: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let (r, m) = self.check_masks(input, positions, Some(targets))?;
        self.target_log_probs(input, positions, targets, (r, m), mode)
    }

    /// [`KnowledgeEncoder::masked_log_probs`] at `slots`, checked by what they know on the host:
    /// no read from the device (the training step's path).
    pub fn masked_log_probs_at(
        &self,
        input: &BertInput,
        slots: &MaskSlots,
        mode: Mode,
    ) -> Result<Tensor> {
        let (r, m) = slots.dims();
        let lens = input.lens().host();
        if lens.len() != r {
            return Err(Error::bad_input(
                OP,
                "positions",
                format!("{r} rows of slots for {} input rows", lens.len()),
            ));
        }
        if let Some((i, (&p, &len))) = slots
            .max_positions()
            .iter()
            .zip(lens)
            .enumerate()
            .find(|(_, (&p, &len))| p >= len)
        {
            return Err(Error::bad_input(
                OP,
                "positions",
                format!("position {p} in row {i} is past its length {len}"),
            ));
        }
        let vocab = self.bert.config().vocab_size;
        if slots.max_target() as usize >= vocab {
            return Err(Error::bad_input(
                OP,
                "targets",
                format!(
                    "token id {} is outside the vocabulary of {vocab}",
                    slots.max_target()
                ),
            ));
        }
        self.target_log_probs(input, slots.positions(), slots.targets(), (r, m), mode)
    }

    /// log softmax at the target only: logit_target − logsumexp(logits), [r, m].
    fn target_log_probs(
        &self,
        input: &BertInput,
        positions: &Tensor,
        targets: &Tensor,
        (r, m): (usize, usize),
        mode: Mode,
    ) -> Result<Tensor> {
        let logits = self.mask_logits(input, positions, r, mode)?;
        let gold = logits.gather(&targets.flatten_all()?.unsqueeze(1)?, 1)?;
        Ok((gold - log_sum_exp(&logits)?)?.reshape((r, m))?)
    }

    /// The whole masked-LM distribution at the masked positions: log softmax over the
    /// vocabulary, [r, m, vocab] f32, for `positions` [r, m] u32 as in
    /// [`KnowledgeEncoder::masked_log_probs`] (which gathers one entry of it). For predicting a
    /// masked token (argmax), where no target is known.
    pub fn masked_log_softmax(
        &self,
        input: &BertInput,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let (r, m) = self.check_masks(input, positions, None)?;
        let logits = self.mask_logits(input, positions, r, mode)?;
        let vocab = logits.dim(1)?;
        Ok(logits
            .broadcast_sub(&log_sum_exp(&logits)?)?
            .reshape((r, m, vocab))?)
    }

    /// The head's logits [r·m, vocab] f32 at `positions` [r, m] (already checked), the copy
    /// head's bias added when there is one.
    fn mask_logits(
        &self,
        input: &BertInput,
        positions: &Tensor,
        r: usize,
        mode: Mode,
    ) -> Result<Tensor> {
        let train = matches!(mode, Mode::Train { .. });
        let hidden = self.bert.forward(input, mode)?.last_hidden_state;
        let (_, l, h) = hidden.dims3()?;
        // Row-major offsets of the masked tokens in the [r·l, h] hidden states.
        let offsets = (0..r as u32).map(|i| i * l as u32).collect();
        let rows = device::upload(offsets, (r, 1), positions.device())?;
        let flat = positions.broadcast_add(&rows)?.flatten_all()?;
        let picked = hidden
            .reshape((r * l, h))?
            .index_select(&flat, 0)?
            .to_dtype(DType::F32)?;
        let x = self.transform.forward(&picked, train)?;
        let x = match self.bert.config().hidden_act {
            Activation::Gelu => nn::gelu(&x, nn::GeluForm::Erf)?,
            Activation::GeluNew => nn::gelu(&x, nn::GeluForm::Tanh)?,
            Activation::Relu => x.relu()?,
        };
        let x = self.norm.forward(&x, train)?;
        let words = param(&word_embeddings(&self.bert)?, train);
        let bias = param(&self.bias, train);
        let logits = crate::ops::linear(&x, &words, &bias, crate::ops::Heads::Keep)?;
        match &self.copy {
            None => Ok(logits),
            Some(copy) => {
                let vocab = logits.dim(1)?;
                let hidden = hidden.to_dtype(DType::F32)?;
                Ok((logits + copy.logit_bias(input, &hidden, &picked, vocab, train)?)?)
            }
        }
    }

    /// Shapes, dtypes and ranges of the mask arguments (`targets` when given); returns (r, m).
    fn check_masks(
        &self,
        input: &BertInput,
        positions: &Tensor,
        targets: Option<&Tensor>,
    ) -> Result<(usize, usize)> {
        let r = input.input_ids().dim(0)?;
        let lens = input.lens().host();
        let mut m = 0;
        for (arg, t) in [("positions", Some(positions)), ("targets", targets)] {
            let Some(t) = t else { continue };
            match *t.dims() {
                [rr, mm] if rr == r && mm > 0 && t.dtype() == DType::U32 => m = mm,
                ref dims => {
                    return Err(Error::bad_input(
                        OP,
                        arg,
                        format!("{:?} {dims:?} must be u32 [{r}, m] with m ≥ 1", t.dtype()),
                    ))
                }
            }
        }
        for (i, row) in device::read_vec2::<u32>(positions)?.iter().enumerate() {
            if let Some(&p) = row
                .iter()
                .find(|&&p| p >= lens.get(i).copied().unwrap_or(0))
            {
                return Err(Error::bad_input(
                    OP,
                    "positions",
                    format!("position {p} in row {i} is past its length {}", lens[i]),
                ));
            }
        }
        let Some(targets) = targets else {
            return Ok((r, m));
        };
        if positions.dims() != targets.dims() {
            return Err(Error::bad_input(
                OP,
                "targets",
                format!(
                    "shape {:?} differs from positions' {:?}",
                    targets.dims(),
                    positions.dims()
                ),
            ));
        }
        let vocab = self.bert.config().vocab_size;
        let max = device::read_scalar::<u32>(&targets.flatten_all()?.max(0)?)?;
        if max as usize >= vocab {
            return Err(Error::bad_input(
                OP,
                "targets",
                format!("token id {max} is outside the vocabulary of {vocab}"),
            ));
        }
        Ok((r, m))
    }
}

/// logsumexp over the last dimension of [n, v] logits, [n, 1], the max shifted out first.
fn log_sum_exp(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    Ok((logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?)
}

/// BERT's word-embedding matrix, which the head's decoder is tied to.
fn word_embeddings(bert: &BertModel) -> Result<Var> {
    bert.vars()
        .iter()
        .find(|(n, _)| n == WORDS)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| Error::bad_input(OP, "bert", "has no word embeddings"))
}
