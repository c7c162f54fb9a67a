//! REALM's neural retriever: a query tower and a document tower, each BERT → pooler output →
//! dense(hidden → proj_size) → LayerNorm (ORQA's ICT module; Hugging Face's `RealmEmbedder`, whose
//! `RealmScorerProjection` takes the pooler output), and relevance f(x, z) = ⟨Embed_input(x),
//! Embed_doc(z)⟩. The towers share their weights (REALM's `share_embedders`, HF's `RealmScorer`
//! without a `query_embedder`) or not.
//!
//! Checkpoint folder: `config.json` (the BERT fields plus `retriever_proj_size`, `shared_towers`,
//! `retriever_proj_dropout`; `model_type` "realm") and `model.safetensors` in `RealmScorer`'s
//! names: the document tower under `embedder.` (`embedder.realm.*` for BERT, `embedder.cls.dense.*`
//! and `embedder.cls.LayerNorm.*` for the projection), a separate query tower under
//! `query_embedder.`. A plain `RealmEmbedder` file (`realm.*`, `cls.dense.*`) loads as shared
//! towers. HF's unused `cls.predictions.*` of an embedder are ignored on load and not written.

use super::bert::{BertInput, BertModel, Mode};
use super::checkpoint::{self, RandomInit};
use super::config::BertConfig;
use super::heads::{copy_params, Dense, Norm, Source, TensorFile};
use super::pooling::{pool, Pooling};
use super::train_rng::{Site, TrainRng};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::Path;

const OP: &str = "retriever";

/// The retriever's own settings (the BERT ones are in [`BertConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrieverConfig {
    /// Width of the embeddings whose inner product is the relevance (128 in ORQA and REALM).
    #[serde(rename = "retriever_proj_size", default = "default_proj_size")]
    pub proj_size: usize,
    /// One tower for queries and documents (REALM's default) or two with their own weights.
    #[serde(default = "default_shared")]
    pub shared_towers: bool,
    /// Dropout on the projected embedding while training: 0.1 in the released ICT/REALM module
    /// (`ict_model.py`); HF's port has none.
    #[serde(rename = "retriever_proj_dropout", default = "default_proj_dropout")]
    pub proj_dropout: f32,
    /// What the projection reads: BERT's pooler output (REALM, ORQA and HF) or the mean of the
    /// hidden states, which a retriever trained from scratch learns far faster.
    #[serde(rename = "retriever_pooling", default)]
    pub pooling: TowerPooling,
}

/// The input of a tower's projection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TowerPooling {
    /// tanh(dense(hidden state of `[CLS]`)), as REALM.
    #[default]
    Pooler,
    /// Mean of the hidden states of the real tokens.
    Mean,
}

fn default_proj_size() -> usize {
    128
}
fn default_shared() -> bool {
    true
}
fn default_proj_dropout() -> f32 {
    0.1
}

impl Default for RetrieverConfig {
    fn default() -> Self {
        RetrieverConfig {
            proj_size: default_proj_size(),
            shared_towers: default_shared(),
            proj_dropout: default_proj_dropout(),
            pooling: TowerPooling::default(),
        }
    }
}

impl RetrieverConfig {
    /// Rejects a zero `proj_size` or a `proj_dropout` outside [0, 1), naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.proj_size == 0 {
            return Err(Error::bad_input(
                OP,
                "config",
                "retriever_proj_size must be positive",
            ));
        }
        if !(0.0..1.0).contains(&self.proj_dropout) {
            return Err(Error::bad_input(
                OP,
                "config",
                format!(
                    "retriever_proj_dropout = {} must be in [0, 1)",
                    self.proj_dropout
                ),
            ));
        }
        Ok(())
    }
}

/// `config.json` of a REALM checkpoint folder: HF's `RealmConfig` fields (those of BERT and the
/// retriever) plus whatever `T` adds, all at the top level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConfigFile<T> {
    #[serde(flatten)]
    pub bert: BertConfig,
    #[serde(flatten)]
    pub retriever: RetrieverConfig,
    #[serde(flatten)]
    pub rest: T,
}

impl<T: Serialize + for<'de> Deserialize<'de>> ConfigFile<T> {
    /// Reads and validates `path`; `shared_towers` is `None` when the file does not say (HF's
    /// configs), and the checkpoint's tensors decide.
    pub fn read(path: &Path) -> Result<(Self, Option<bool>)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(path, e))?;
        let said = value.get("shared_towers").and_then(|v| v.as_bool());
        let file: Self = serde_json::from_value(value).map_err(|e| Error::file(path, e))?;
        file.bert.validate().map_err(|e| Error::file(path, e))?;
        file.retriever
            .validate()
            .map_err(|e| Error::file(path, e))?;
        Ok((file, said))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut file = self.clone_for_write();
        file.bert.model_type = "realm".into();
        crate::io::write_json_atomic(path, &file)
    }

    fn clone_for_write(&self) -> ConfigFile<&T> {
        ConfigFile {
            bert: self.bert.clone(),
            retriever: self.retriever.clone(),
            rest: &self.rest,
        }
    }
}

/// One tower: BERT, then the projection of its pooler output.
pub struct Tower {
    bert: BertModel,
    dense: Dense,
    norm: Norm,
    proj_dropout: f32,
    pooling: TowerPooling,
    /// Every parameter, named as in HF's `RealmEmbedder` (`realm.*`, `cls.dense.*`,
    /// `cls.LayerNorm.*`).
    params: Vec<(String, Var)>,
}

impl Tower {
    /// Puts the projection (from `src`, read under `prefix`, e.g. `"embedder."`) on `bert`.
    fn build(
        bert: BertModel,
        cfg: &RetrieverConfig,
        src: &mut Source,
        prefix: &str,
    ) -> Result<Self> {
        cfg.validate()?;
        let (h, eps) = (bert.config().hidden_size, bert.config().layer_norm_eps);
        let mut params: Vec<(String, Var)> = bert
            .vars()
            .iter()
            .map(|(n, v)| (format!("realm.{n}"), v.clone()))
            .collect();
        let dense = src.module(&format!("{prefix}cls.dense."), |s| {
            Dense::build(s, "cls.dense.", h, cfg.proj_size, &mut params)
        })?;
        let norm = src.module(&format!("{prefix}cls.LayerNorm."), |s| {
            Norm::build(s, "cls.LayerNorm.", cfg.proj_size, eps, &mut params)
        })?;
        Ok(Tower {
            bert,
            dense,
            norm,
            proj_dropout: cfg.proj_dropout,
            pooling: cfg.pooling,
            params,
        })
    }

    fn random(
        bert_cfg: &BertConfig,
        cfg: &RetrieverConfig,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let bert = BertModel::new_random(bert_cfg, seed, dev)?;
        Self::with_random_projection(bert, cfg, seed)
    }

    fn with_random_projection(bert: BertModel, cfg: &RetrieverConfig, seed: u64) -> Result<Self> {
        // Its own stream, so that the projection does not repeat BERT's first draws.
        let init = RandomInit::new(
            seed ^ 0x7072_6f6a_6563_7400,
            bert.config().initializer_range,
            bert.device(),
        );
        let tower = Self::build(bert, cfg, &mut Source::Random(init), "")?;
        // A drawn projection starts with LayerNorm scale d^(-1/4) rather than one: the inner
        // product of two unit-variance d-vectors spreads over ±√d·… (±100 at d = 128), which
        // saturates the in-batch softmax of a fresh retriever (ICT losses of 9–14 against
        // ln 32 = 3.5 that did not fall in 150 steps); at d^(-1/4) the scores start with unit
        // variance and the scale is learnt. Loaded checkpoints keep their own.
        let scale = (tower.proj_size() as f64).powf(-0.25);
        let weight = tower.norm.weight.as_tensor();
        tower.norm.weight.set(&weight.affine(scale, 0.0)?)?;
        Ok(tower)
    }

    /// Sets the projection to keep the geometry of the pooled vectors (see
    /// [`super::projection`]): `basis` holds r ≤ proj_size − 1 orthonormal rows of the hidden
    /// space (row-major); the relevance of two inputs becomes √proj_size times the cosine of their
    /// pooled vectors' components in that span.
    pub fn set_geometry_projection(&self, basis: &[f64]) -> Result<()> {
        let (h, p) = (self.bert.config().hidden_size, self.proj_size());
        let w = super::projection::sum_zero_projection(basis, h, p)?;
        let dev = self.bert.device();
        self.dense.weight.set(&Tensor::from_vec(w, (p, h), dev)?)?;
        self.dense.bias.set(&Tensor::zeros(p, DType::F32, dev)?)?;
        // LayerNorm scale p^(-1/4): relevance = p·s²·cos = √p·cos, ±11.3 at p = 128, the spread
        // a fresh in-batch softmax trains well from (see `with_random_projection`).
        let scale = (p as f64).powf(-0.25);
        self.norm.weight.set(&Tensor::full(scale as f32, p, dev)?)?;
        self.norm.bias.set(&Tensor::zeros(p, DType::F32, dev)?)?;
        Ok(())
    }

    /// `[b, hidden]` f32: what the projection reads (the pooler output, or the mean of the real
    /// tokens' hidden states), in `mode`.
    pub fn pooled(&self, input: &BertInput, mode: Mode) -> Result<Tensor> {
        let out = self.bert.forward(input, mode)?;
        Ok(match self.pooling {
            TowerPooling::Pooler => out.pooler_output.to_dtype(DType::F32)?,
            TowerPooling::Mean => {
                pool(&out.last_hidden_state, input.lens().tensor(), Pooling::Mean)?
            }
        })
    }

    /// `[b, proj_size]` f32 embeddings of one batch, differentiable in the tower's parameters when
    /// `mode` is `Train` (which also applies dropout: BERT's and the projection's).
    pub fn embed(&self, input: &BertInput, mode: Mode) -> Result<Tensor> {
        let train = matches!(mode, Mode::Train { .. });
        let pooled = self.pooled(input, mode)?;
        let projected = self
            .norm
            .forward(&self.dense.forward(&pooled, train)?, train)?;
        match mode {
            // The projection's mask stream is the one just past BERT's last layer, so it never
            // coincides with a mask BERT drew in the same pass.
            Mode::Train { seed, step } => TrainRng { seed, step }.hidden(
                &projected,
                self.proj_dropout,
                Site::FeedForwardOutput(self.bert.config().num_hidden_layers),
            ),
            Mode::Eval => Ok(projected),
        }
    }

    /// Every parameter by HF `RealmEmbedder` name (f32 master weights).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The tower's BERT encoder.
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        self.bert.device()
    }

    /// Width of the embeddings the tower outputs.
    pub fn proj_size(&self) -> usize {
        self.norm.weight.dims()[0]
    }

    /// Computes BERT in `dtype` (f32, f16, bf16) from now on; the projection stays f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.bert.set_compute_dtype(dtype)
    }

    /// A deep copy of the weights, on the same device, that further training of `self` leaves
    /// untouched.
    pub fn snapshot(&self) -> Result<Tower> {
        self.snapshot_on(self.bert.device())
    }

    /// A deep copy of the weights on `device` (the same GPU through another stream, for a
    /// background index refresh), that further training of `self` leaves untouched.
    pub fn snapshot_on(&self, device: &Device) -> Result<Tower> {
        let cfg = RetrieverConfig {
            proj_size: self.proj_size(),
            shared_towers: true,
            proj_dropout: self.proj_dropout,
            pooling: self.pooling,
        };
        let mut copy = Tower::random(self.bert.config(), &cfg, 0, device)?;
        copy_params(&copy.params, &self.params)?;
        copy.bert.set_compute_dtype(self.bert.compute_dtype())?;
        Ok(copy)
    }
}

/// Relevance f(x, z) = ⟨query, doc⟩: `queries` [b, d] and `docs` [b·k, d] (grouped by query) or
/// [b, k, d] give [b, k].
pub fn relevance(queries: &Tensor, docs: &Tensor) -> Result<Tensor> {
    let (b, d) = queries.dims2().map_err(|_| {
        Error::bad_input(
            OP,
            "queries",
            format!("shape {:?} must be [b, d]", queries.dims()),
        )
    })?;
    let docs = match *docs.dims() {
        [n, dd] if dd == d && n > 0 && n % b == 0 => docs.reshape((b, n / b, d))?,
        [bb, k, dd] if bb == b && dd == d && k > 0 => docs.clone(),
        ref other => {
            return Err(Error::bad_input(
                OP,
                "docs",
                format!("shape {other:?} must be [{b}·k, {d}] or [{b}, k, {d}]"),
            ))
        }
    };
    Ok(queries
        .unsqueeze(1)?
        .contiguous()?
        .matmul(&docs.transpose(1, 2)?.contiguous()?)?
        .squeeze(1)?)
}

/// The query and document towers.
pub struct Retriever {
    config: RetrieverConfig,
    doc: Tower,
    /// `None`: the document tower embeds queries too.
    query: Option<Tower>,
}

/// Where a checkpoint keeps the towers: (document tower prefix, query tower prefix if separate).
fn tower_prefixes(file: &TensorFile) -> Result<(&'static str, Option<&'static str>)> {
    const WORDS: &str = "realm.embeddings.word_embeddings.weight";
    if file.has(&format!("embedder.{WORDS}")) {
        let query = file
            .has(&format!("query_embedder.{WORDS}"))
            .then_some("query_embedder.");
        Ok(("embedder.", query))
    } else if file.has(WORDS) && file.has("cls.dense.weight") {
        Ok(("", None))
    } else {
        Err(Error::file(
            &file.path,
            "holds no retriever: expected `embedder.realm.*` (HF RealmScorer, or a realm \
             checkpoint) or `realm.*` with `cls.dense.*` (HF RealmEmbedder)",
        ))
    }
}

/// What loading a checkpoint whose query and document towers are one shared tower gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedTowers {
    /// One shared tower, as saved.
    Keep,
    /// Two towers with their own weights, each a copy of the shared one: REALM's query and
    /// document embedders both start from the one ICT module, then train apart.
    Untie,
}

impl Retriever {
    /// Standard initialisation from `seed`; separate towers start identical, as REALM's two
    /// embedders both start from the same ICT module.
    pub fn new_random(
        bert_cfg: &BertConfig,
        cfg: &RetrieverConfig,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let doc = Tower::random(bert_cfg, cfg, seed, dev)?;
        let query = (!cfg.shared_towers)
            .then(|| Tower::random(bert_cfg, cfg, seed, dev))
            .transpose()?;
        Ok(Retriever {
            config: cfg.clone(),
            doc,
            query,
        })
    }

    /// Both towers' BERT from a plain Hugging Face BERT folder (`config.json`,
    /// `model.safetensors`), the projection from `seed` (the same for both towers). With mean
    /// pooling the towers start as the encoder used as a sentence encoder (mean pooling, cosine
    /// similarity): the projection keeps the geometry of a random orthonormal `proj_size − 1`
    /// dimensional view of the pooled vectors ([`Retriever::set_geometry_projection`] fits a
    /// better one to a corpus); with REALM's pooler it is drawn at random.
    pub fn from_bert_dir(
        dir: impl AsRef<Path>,
        cfg: &RetrieverConfig,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let doc = Tower::with_random_projection(BertModel::load(dir, dev)?, cfg, seed)?;
        let query = (!cfg.shared_towers)
            .then(|| Tower::with_random_projection(BertModel::load(dir, dev)?, cfg, seed))
            .transpose()?;
        let retriever = Retriever {
            config: cfg.clone(),
            doc,
            query,
        };
        if cfg.pooling == TowerPooling::Mean {
            let h = retriever.bert_config().hidden_size;
            let r = super::projection::basis_rows(cfg.proj_size, h);
            retriever
                .set_geometry_projection(&super::projection::orthonormal_basis(r, h, seed)?)?;
        }
        Ok(retriever)
    }

    /// Sets both towers' projection to keep the geometry of the pooled vectors' components in the
    /// span of `basis` (see [`Tower::set_geometry_projection`]).
    pub fn set_geometry_projection(&self, basis: &[f64]) -> Result<()> {
        self.doc.set_geometry_projection(basis)?;
        if let Some(q) = &self.query {
            q.set_geometry_projection(basis)?;
        }
        Ok(())
    }

    /// Loads a checkpoint folder: ours, or HF's `RealmScorer`/`RealmEmbedder` (`config.json`
    /// with `retriever_proj_size`, `model.safetensors`). Whether the towers are shared comes from
    /// the tensors; a `shared_towers` in `config.json` that disagrees is an error.
    pub fn load(dir: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        Self::load_towers(dir, dev, SharedTowers::Keep)
    }

    /// [`Retriever::load`], a checkpoint whose towers are shared loaded as `shared` says.
    pub fn load_towers(dir: impl AsRef<Path>, dev: &Device, shared: SharedTowers) -> Result<Self> {
        let dir = dir.as_ref();
        let (config, said) = ConfigFile::<serde_json::Value>::read(&dir.join("config.json"))?;
        let file = TensorFile::read(dir.join("model.safetensors"))?;
        Self::from_file(&config.bert, &config.retriever, said, &file, dev, shared)
    }

    /// The towers of an already-read checkpoint (see [`Retriever::load_towers`]).
    pub(crate) fn from_file(
        bert_cfg: &BertConfig,
        cfg: &RetrieverConfig,
        said_shared: Option<bool>,
        file: &TensorFile,
        dev: &Device,
        shared: SharedTowers,
    ) -> Result<Self> {
        let (doc_prefix, query_prefix) = tower_prefixes(file)?;
        if let Some(said) = said_shared {
            if said != query_prefix.is_none() {
                return Err(Error::file(
                    &file.path,
                    format!(
                        "config.json says shared_towers = {said} but the checkpoint has {} \
                         query tower",
                        if query_prefix.is_some() {
                            "a separate"
                        } else {
                            "no separate"
                        }
                    ),
                ));
            }
        }
        // Untied, the query tower is read from the shared tower's tensors.
        let query_prefix = match (query_prefix, shared) {
            (None, SharedTowers::Untie) => Some(doc_prefix),
            (q, _) => q,
        };
        let mut cfg = cfg.clone();
        cfg.shared_towers = query_prefix.is_none();
        let tower = |prefix: &str| -> Result<Tower> {
            let bert = BertModel::from_safetensors(
                bert_cfg,
                &file.path,
                Some(&format!("{prefix}realm.")),
                dev,
            )?;
            Tower::build(bert, &cfg, &mut Source::File(file, dev.clone()), prefix)
        };
        let doc = tower(doc_prefix)?;
        let query = query_prefix.map(tower).transpose()?;
        Ok(Retriever {
            config: cfg,
            doc,
            query,
        })
    }

    /// Writes `config.json` and `model.safetensors` into `dir`, each atomically; loading them
    /// back gives bit-identical parameters.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        checkpoint::save(&dir.join("model.safetensors"), &self.vars())?;
        ConfigFile {
            bert: self.bert_config().clone(),
            retriever: self.config.clone(),
            rest: serde_json::json!({ "architectures": ["RealmScorer"] }),
        }
        .write(&dir.join("config.json"))
    }

    /// The retriever's own settings.
    pub fn config(&self) -> &RetrieverConfig {
        &self.config
    }

    /// The BERT configuration of the towers (the document tower's; both have the same).
    pub fn bert_config(&self) -> &BertConfig {
        self.doc.bert.config()
    }

    /// The tower that embeds queries: the document tower when the towers are shared.
    pub fn query_tower(&self) -> &Tower {
        self.query.as_ref().unwrap_or(&self.doc)
    }

    /// The tower that embeds documents (blocks).
    pub fn doc_tower(&self) -> &Tower {
        &self.doc
    }

    /// Relevance scores [b, k] of `docs` (b·k rows, grouped by query) for `queries` (b rows),
    /// both towers run in `mode`. In training the document pass draws its dropout from a seed
    /// derived from `mode`'s, so that a shared tower does not drop the same units in both.
    pub fn score(&self, queries: &BertInput, docs: &BertInput, mode: Mode) -> Result<Tensor> {
        let q = self.query_tower().embed(queries, mode)?;
        let doc_mode = match mode {
            Mode::Train { seed, step } => Mode::Train {
                seed: seed ^ 0x646f_6373_0000_0000,
                step,
            },
            Mode::Eval => Mode::Eval,
        };
        let d = self.doc.embed(docs, doc_mode)?;
        relevance(&q, &d)
    }

    /// Every parameter by checkpoint name: `embedder.*` (document tower), and `query_embedder.*`
    /// when the towers are separate.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let named = |prefix: &str, t: &Tower| {
            t.vars()
                .iter()
                .map(|(n, v)| (format!("{prefix}{n}"), v.clone()))
                .collect::<Vec<_>>()
        };
        let mut vars = named("embedder.", &self.doc);
        if let Some(q) = &self.query {
            vars.extend(named("query_embedder.", q));
        }
        vars
    }

    /// BERT's compute dtype in both towers.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.doc.set_compute_dtype(dtype)?;
        if let Some(q) = &mut self.query {
            q.set_compute_dtype(dtype)?;
        }
        Ok(())
    }
}
