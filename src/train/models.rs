//! Where a training stage's models come from and how a checkpoint folder holds them.
//!
//! ```text
//! checkpoint/origin.json       the BERT every model started from (a folder or a from-scratch size)
//! checkpoint/config.json, model.safetensors, tokenizer files
//!                              the retriever alone (ICT: `Retriever::save`) or the retriever with
//!                              the knowledge-augmented encoder (pre-training on: `RealmModel::save`)
//! checkpoint/reader/           Reader::save (RealmReader names), from fine-tuning on
//! checkpoint/index/            the document index in use (StoredIndex), when the stage has one
//! checkpoint/trainer.json, trainer.safetensors   (see `state`)
//! ```
//!
//! A stage starts from a [`ModelInit`]: a plain BERT folder (e.g. all-MiniLM-L6-v2), a preset size
//! with a vocabulary (random weights), or the checkpoint of an earlier stage. Missing components
//! start as REALM does: the retriever's towers and the encoder from the original BERT (the
//! encoder is not initialised from ICT), the reader from the pre-trained encoder's BERT.

use crate::data::Block;
use crate::error::{Error, Result};
use crate::model::projection::{basis_rows, principal_basis};
use crate::model::{doc_inputs, Mode, TowerPooling};
use crate::model::{BertConfig, BertTokenizer, KnowledgeEncoder, Reader, ReaderConfig};
use crate::model::{RealmModel, RealmSettings};
use crate::model::{Retriever, RetrieverConfig, SharedTowers};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// A checkpoint's record of the BERT the chain started from ([`Origin`], JSON).
pub const ORIGIN: &str = "origin.json";
/// A checkpoint's reader folder (from fine-tuning on).
pub const READER: &str = "reader";
/// A checkpoint's index folder, when the stage has one.
pub const INDEX: &str = "index";

/// The BERT a chain of stages started from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A Hugging Face BERT folder (config.json, model.safetensors, a tokenizer).
    Bert {
        /// The folder.
        dir: PathBuf,
    },
    /// Random weights: a [`BertConfig`] (its vocab_size is the vocabulary's) and the vocabulary.
    Scratch {
        /// The model's size and layout.
        config: BertConfig,
        /// The vocabulary file (`vocab.txt`).
        vocab: PathBuf,
        /// Whether the tokenizer lower-cases text (uncased BERT).
        lowercase: bool,
    },
}

/// What a stage starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    /// A plain BERT folder or random weights: no earlier stage.
    Origin(Origin),
    /// The checkpoint folder of an earlier stage.
    Checkpoint {
        /// The checkpoint folder (it holds `origin.json`).
        dir: PathBuf,
    },
}

impl ModelInit {
    /// `--init DIR` (a checkpoint when it holds `origin.json`, else a BERT folder), or
    /// `--preset NAME --vocab FILE` for random weights.
    pub fn from_args(
        init: Option<&Path>,
        preset: Option<&str>,
        vocab: Option<&Path>,
    ) -> Result<Self> {
        const OP: &str = "model init";
        match (init, preset, vocab) {
            (Some(dir), None, None) => {
                if !dir.is_dir() {
                    return Err(Error::file(dir, "no such model folder"));
                }
                Ok(if dir.join(ORIGIN).exists() {
                    ModelInit::Checkpoint {
                        dir: dir.to_path_buf(),
                    }
                } else {
                    ModelInit::Origin(Origin::Bert {
                        dir: dir.to_path_buf(),
                    })
                })
            }
            (None, Some(preset), Some(vocab)) => {
                let tok = BertTokenizer::from_vocab(vocab, true)?;
                let mut config = BertConfig::preset(preset)?;
                config.vocab_size = tok.vocab_size();
                Ok(ModelInit::Origin(Origin::Scratch {
                    config,
                    vocab: vocab.to_path_buf(),
                    lowercase: true,
                }))
            }
            _ => Err(Error::bad_input(
                OP,
                "init",
                "give either --init DIR (a BERT folder or a checkpoint) or --preset NAME with --vocab FILE",
            )),
        }
    }

    /// The origin, read from the checkpoint's `origin.json` when starting from one.
    pub fn origin(&self) -> Result<Origin> {
        match self {
            ModelInit::Origin(o) => Ok(o.clone()),
            ModelInit::Checkpoint { dir } => read_origin(dir),
        }
    }

    /// An error unless a from-scratch start has a usable size (see [`super::limits`]).
    pub fn validate(&self, op: &'static str) -> Result<()> {
        match self {
            ModelInit::Origin(origin) => origin.validate(op),
            ModelInit::Checkpoint { .. } => Ok(()),
        }
    }

    /// The checkpoint folder, if starting from one.
    pub fn checkpoint(&self) -> Option<&Path> {
        match self {
            ModelInit::Checkpoint { dir } => Some(dir),
            ModelInit::Origin(_) => None,
        }
    }
}

impl Origin {
    /// An error unless a from-scratch origin has a usable size (see [`super::limits`]).
    pub fn validate(&self, op: &'static str) -> Result<()> {
        match self {
            Origin::Scratch { config, .. } => super::limits::scratch_bert(op, config),
            Origin::Bert { .. } => Ok(()),
        }
    }
}

/// The origin recorded in checkpoint `dir`'s `origin.json`; an error names the file when it is
/// missing, malformed or has an unusable size.
pub fn read_origin(dir: &Path) -> Result<Origin> {
    let path = dir.join(ORIGIN);
    let text = fs::read_to_string(&path)
        .map_err(|e| Error::file(&path, format!("not a realm training checkpoint: {e}")))?;
    let origin: Origin = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
    origin
        .validate("model init")
        .map_err(|e| Error::file(&path, e))?;
    Ok(origin)
}

/// How a stage starts: its run directory (started, or reopened to resume), where its models come
/// from (the run's own checkpoint when resuming), their origin, and the tokenizer, whose files
/// are copied into `RUN/tokenizer/` for every checkpoint to carry.
pub struct StageStart {
    /// The stage's run directory.
    pub run: super::run::RunDir,
    /// Where the models come from (the run's own checkpoint when resuming).
    pub init: ModelInit,
    /// The BERT the chain started from.
    pub origin: Origin,
    /// `RUN/tokenizer/`: the tokenizer files every checkpoint copies.
    pub tok_dir: PathBuf,
    /// The tokenizer read from `tok_dir`.
    pub tokenizer: BertTokenizer,
}

/// Starts (or, with `resume`, reopens) the run directory with `cfg`, and sets up the tokenizer; a
/// from-scratch vocabulary size that is not the vocabulary's is an error.
///
/// In a distributed run rank 0 starts the run directory and writes the tokenizer; the other
/// ranks wait for it (a barrier) and then read from the same folder.
pub fn start_stage<C: Serialize + serde::de::DeserializeOwned>(
    run_dir: &Path,
    cfg: &C,
    init: &ModelInit,
    resume: bool,
    dist: &crate::dist::Dist,
) -> Result<StageStart> {
    let run = if dist.is_root() {
        super::run::RunDir::start(run_dir, cfg, resume)?
    } else {
        dist.barrier("run directory started by rank 0")?;
        super::run::RunDir::attach(run_dir)
    };
    let init = if resume {
        ModelInit::Checkpoint {
            dir: run.checkpoint(),
        }
    } else {
        init.clone()
    };
    let origin = init.origin()?;
    let tok_dir = run.root().join("tokenizer");
    let tokenizer = if dist.is_root() {
        let tokenizer = stage_tokenizer(&init, &tok_dir)?;
        dist.barrier("run directory started by rank 0")?;
        tokenizer
    } else {
        BertTokenizer::from_dir(&tok_dir)?
    };
    if let Origin::Scratch { config, .. } = &origin {
        // Before any weights are drawn: a vocabulary size that is not the vocabulary's.
        tokenizer.check_vocab(config)?;
    }
    Ok(StageStart {
        run,
        init,
        origin,
        tok_dir,
        tokenizer,
    })
}

/// The tokenizer files a model folder may hold.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Writes the chain's tokenizer files into `dst` (from the checkpoint, the origin's folder, or
/// the vocabulary of a from-scratch origin) and returns the tokenizer read from there, so every
/// later checkpoint can carry the same files.
pub fn stage_tokenizer(init: &ModelInit, dst: &Path) -> Result<BertTokenizer> {
    fs::create_dir_all(dst).map_err(|e| Error::file(dst, e))?;
    let copy = |from: PathBuf, name: &str| -> Result<()> {
        let bytes = fs::read(&from).map_err(|e| Error::file(&from, e))?;
        crate::io::write_atomic(dst.join(name), |w| w.write_all(&bytes))
    };
    let dir = match init {
        ModelInit::Checkpoint { dir } | ModelInit::Origin(Origin::Bert { dir }) => Some(dir),
        ModelInit::Origin(Origin::Scratch { .. }) => None,
    };
    match (dir, init.origin()?) {
        (Some(dir), _) => {
            for name in TOKENIZER_FILES {
                if dir.join(name).exists() {
                    copy(dir.join(name), name)?;
                }
            }
        }
        (
            None,
            Origin::Scratch {
                vocab, lowercase, ..
            },
        ) => {
            copy(vocab, "vocab.txt")?;
            crate::io::write_json_atomic(
                dst.join("tokenizer_config.json"),
                &serde_json::json!({ "do_lower_case": lowercase }),
            )?;
        }
        (None, Origin::Bert { .. }) => unreachable!("a BERT origin always has a folder"),
    }
    BertTokenizer::from_dir(dst)
}

/// Writes `origin.json` into a checkpoint folder being assembled.
pub fn write_origin(origin: &Origin, dst: &Path) -> Result<()> {
    crate::io::write_json_atomic(dst.join(ORIGIN), origin)
}

/// Copies the tokenizer files of `src` (a folder [`stage_tokenizer`] filled) into `dst`.
pub fn copy_tokenizer(src: &Path, dst: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if from.exists() {
            let bytes = fs::read(&from).map_err(|e| Error::file(&from, e))?;
            crate::io::write_atomic(dst.join(name), |w| w.write_all(&bytes))?;
        }
    }
    Ok(())
}

/// Whether a checkpoint folder holds a knowledge-augmented encoder (a [`RealmModel`] folder).
pub fn has_encoder(dir: &Path) -> bool {
    fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("encoder_bert").is_some())
}

/// The retriever settings a stage starts with by default: mean pooling when the towers start
/// from a pretrained BERT folder (so that they start as that encoder used as a sentence
/// encoder: see [`retriever`]), REALM's pooler from scratch and for a checkpoint (which keeps its
/// own).
pub fn default_retriever_config(init: &ModelInit) -> RetrieverConfig {
    let mut cfg = RetrieverConfig::default();
    if matches!(init, ModelInit::Origin(Origin::Bert { .. })) {
        cfg.pooling = TowerPooling::Mean;
    }
    cfg
}

/// Corpus blocks a retriever started from a pretrained encoder fits its projection to, as the
/// document tower reads them.
pub struct ProjectionFit<'a> {
    /// The tokenizer of the run.
    pub tokenizer: &'a BertTokenizer,
    /// The corpus blocks, in corpus order.
    pub blocks: &'a [Block],
    /// Document-tower input length, `[CLS] title [SEP] body [SEP]`.
    pub doc_len: usize,
}

/// Blocks embedded to fit the projection, at most (evenly spaced over the corpus): a
/// 384-dimensional covariance is well estimated from a thousand, and embedding them costs about
/// a minute for all-MiniLM-L6-v2 on 2 CPU cores.
pub const PROJECTION_FIT_BLOCKS: usize = 1024;

/// The retriever: the checkpoint's (an ICT or REALM checkpoint), or both towers from the
/// origin's BERT, or from scratch, with a projection from `seed`. Towers from a BERT folder with
/// mean pooling start as the encoder's own retrieval (mean pooling, cosine): the projection keeps
/// the geometry of the top `proj_size − 1` principal directions of `fit`'s blocks when given, of
/// a random orthonormal view otherwise (`model::projection`).
pub fn retriever(
    init: &ModelInit,
    cfg: &RetrieverConfig,
    seed: u64,
    dev: &Device,
    fit: Option<&ProjectionFit>,
) -> Result<Retriever> {
    match init {
        ModelInit::Checkpoint { dir } => Retriever::load_towers(dir, dev, shared_towers(cfg)),
        ModelInit::Origin(Origin::Bert { dir }) => {
            let r = Retriever::from_bert_dir(dir, cfg, seed, dev)?;
            if let (TowerPooling::Mean, Some(fit)) = (cfg.pooling, fit) {
                fit_projection(&r, fit, dev)?;
            }
            Ok(r)
        }
        ModelInit::Origin(Origin::Scratch { config, .. }) => {
            Retriever::new_random(config, cfg, seed, dev)
        }
    }
}

/// How a checkpoint's shared towers load under `cfg`: kept, or untied into two copies when `cfg`
/// asks for separate towers (REALM's two embedders both start from the ICT module). A
/// checkpoint with separate towers keeps them either way.
fn shared_towers(cfg: &RetrieverConfig) -> SharedTowers {
    match cfg.shared_towers {
        true => SharedTowers::Keep,
        false => SharedTowers::Untie,
    }
}

/// Sets the towers' projection to the principal directions of the pooled vectors of (up to
/// [`PROJECTION_FIT_BLOCKS`] of) `fit`'s blocks.
fn fit_projection(r: &Retriever, fit: &ProjectionFit, dev: &Device) -> Result<()> {
    if fit.blocks.is_empty() {
        return Ok(());
    }
    let n = fit.blocks.len().min(PROJECTION_FIT_BLOCKS);
    let picked: Vec<&Block> = (0..n)
        .map(|i| &fit.blocks[i * fit.blocks.len() / n])
        .collect();
    let tower = r.doc_tower();
    let h = r.bert_config().hidden_size;
    let mut x: Vec<f32> = Vec::with_capacity(n * h);
    for chunk in picked.chunks(32) {
        let titles = fit
            .tokenizer
            .wordpieces(&chunk.iter().map(|b| b.title.as_str()).collect::<Vec<_>>())?;
        let titles: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
        let bodies: Vec<&[u32]> = chunk.iter().map(|b| b.tokens.as_slice()).collect();
        let input = doc_inputs(fit.tokenizer, &titles, &bodies, fit.doc_len, dev)?;
        let pooled = tower.pooled(&input, Mode::Eval)?;
        x.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
    }
    let rows = basis_rows(r.config().proj_size, h);
    r.set_geometry_projection(&principal_basis(&x, n, h, rows)?)
}

/// Retriever and knowledge-augmented encoder: the checkpoint's when it has an encoder; else the
/// retriever as [`retriever`] gives it (fitted to `fit`) and the encoder from the origin's BERT (REALM starts the
/// encoder from BERT, not from the ICT towers). `tokenizer_dir` holds the tokenizer files.
pub fn realm_model(
    init: &ModelInit,
    retriever_cfg: &RetrieverConfig,
    settings: &RealmSettings,
    seed: u64,
    dev: &Device,
    tokenizer_dir: &Path,
    fit: Option<&ProjectionFit>,
) -> Result<RealmModel> {
    if let Some(dir) = init.checkpoint().filter(|d| has_encoder(d)) {
        return RealmModel::load_towers(dir, dev, shared_towers(retriever_cfg));
    }
    let r = retriever(init, retriever_cfg, seed, dev, fit)?;
    // Its own seed, so that a from-scratch encoder is not a copy of the towers' BERT.
    let encoder_seed = seed ^ 0x656e_636f_6465_7201;
    let e = match init.origin()? {
        Origin::Bert { dir } => KnowledgeEncoder::from_bert_dir(dir, encoder_seed, dev)?,
        Origin::Scratch { config, .. } => KnowledgeEncoder::new_random(&config, encoder_seed, dev)?,
    };
    RealmModel::from_parts(r, e, tokenizer_dir, settings)
}

/// The reader: the checkpoint's `reader/`; else BERT from the checkpoint's pre-trained encoder
/// (REALM's fine-tuning start), else from the origin's BERT; the span scorer drawn from `seed`.
/// `scratch` is a folder the encoder's BERT may be written to on the way.
pub fn reader(
    init: &ModelInit,
    cfg: &ReaderConfig,
    seed: u64,
    dev: &Device,
    scratch: &Path,
) -> Result<Reader> {
    if let Some(dir) = init.checkpoint() {
        if dir.join(READER).exists() {
            return Reader::load(dir.join(READER), dev);
        }
        if has_encoder(dir) {
            let model = RealmModel::load(dir, dev)?;
            model.encoder().save(scratch)?;
            let reader = Reader::from_bert_dir(scratch, cfg, seed, dev);
            let _ = fs::remove_dir_all(scratch);
            return reader;
        }
    }
    match init.origin()? {
        Origin::Bert { dir } => Reader::from_bert_dir(dir, cfg, seed, dev),
        Origin::Scratch { config, .. } => Reader::new_random(&config, cfg, seed, dev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_arguments_are_checked() {
        let none = ModelInit::from_args(None, None, None)
            .unwrap_err()
            .to_string();
        assert!(none.contains("--init"), "{none}");
        let missing = ModelInit::from_args(Some(Path::new("/no/such/model")), None, None);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("no such model folder"));
        let both = ModelInit::from_args(Some(Path::new(".")), Some("tiny"), None);
        assert!(both.is_err());
    }
}
