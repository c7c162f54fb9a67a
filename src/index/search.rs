//! Searching an index with the query tower of the model that built it: [`Searcher`], behind
//! `realm search` (and `realm ask`). The model is loaded by [`RetrieverModel::load`], which also
//! accepts a plain BERT folder (both towers from it, projection drawn from a fixed seed), so an
//! index can be built and searched before any REALM training.

use super::mapped::{format_version, BlockIndex, FORMAT_MAPPED};
use super::model::RetrieverModel;
use super::store::StoredIndex;
use crate::data::Block;
use crate::error::{Error, Result};
use crate::model::realm_inputs::query_inputs;
use crate::model::Mode;
use crate::ops::mips::{mips_top_k, MipsIndex};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Blocks per query unless told otherwise (`realm search -k`, `realm ask --beam`; all of a
/// smaller index).
pub const DEFAULT_K: usize = 5;

/// The one rule for how many blocks a query reads (`search -k`, `ask --beam`): `n` when it is
/// between 1 and the blocks in the index (`None` otherwise); without `n`, [`DEFAULT_K`] or all
/// blocks of a smaller index.
pub fn blocks_per_query(n: Option<usize>, index_blocks: usize) -> Option<usize> {
    match n {
        None => Some(DEFAULT_K.min(index_blocks)),
        Some(n) => (1..=index_blocks).contains(&n).then_some(n),
    }
}

/// One search result.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// Row of the block in the index.
    pub block: u32,
    /// The block's source document id.
    pub doc_id: String,
    pub title: String,
    /// Inner product of query and block embeddings.
    pub score: f32,
}

/// An index opened for searching (format 3 in place, older formats converted in memory), with the
/// model that built it.
pub struct Searcher {
    pub model: RetrieverModel,
    pub index: BlockIndex,
    mips: MipsIndex,
    /// Longest query tower input (`[CLS] x [SEP]`).
    pub query_max_len: usize,
}

impl Searcher {
    /// Loads the index folder and its model: `model_dir`, or the folder its manifest names
    /// (relative to the index folder). An index inside a training checkpoint (`CKPT/index`, as
    /// training writes it) is searched with that checkpoint, as [`Self::open_checkpoint`] does.
    /// Otherwise the model's document tower must be the one that built the index.
    pub fn open(index_dir: &Path, model_dir: Option<&Path>, dev: &Device) -> Result<Self> {
        let index = OpenedIndex::open(index_dir)?;
        let holder = holding_checkpoint(index_dir);
        let (model_dir, named_by_manifest) = match (model_dir, &holder) {
            (Some(dir), _) => (dir.to_path_buf(), false),
            (None, Some(ckpt)) => (ckpt.clone(), false),
            (None, None) => (index.manifest().model_dir(index_dir), true),
        };
        let model = RetrieverModel::load(&model_dir, dev).map_err(|e| {
            if named_by_manifest {
                Error::file(
                    index_dir.join("manifest.json"),
                    format!(
                        "the model that built this index ({}, found at {}) cannot be loaded: \
                         {e}; pass --model DIR",
                        index.manifest().model_path,
                        model_dir.display()
                    ),
                )
            } else {
                e
            }
        })?;
        let index = index.check_vocab(index_dir, model.tokenizer.vocab_size())?;
        if holder.is_some_and(|h| same_folder(&h, &model_dir)) {
            return Self::checkpoint_index(model, index, index_dir, dev);
        }
        Self::with_index(model, index, dev)
    }

    /// An index with a model already in memory; their fingerprints must agree.
    pub fn new(model: RetrieverModel, index: StoredIndex, dev: &Device) -> Result<Self> {
        index.check_vocab(Path::new(""), model.tokenizer.vocab_size())?;
        Self::with_index(
            model,
            BlockIndex::from_blocks(&index.manifest, &index.blocks, &index.embeddings)?,
            dev,
        )
    }

    fn with_index(model: RetrieverModel, index: BlockIndex, dev: &Device) -> Result<Self> {
        if model.fingerprint != index.manifest.model_fingerprint {
            return Err(Error::bad_input(
                "search",
                "index",
                format!(
                    "the index was built by model {} ({}, step {}), not by {} ({}); rebuild it \
                     with `realm index`",
                    index.manifest.model_fingerprint,
                    index.manifest.model_path,
                    index.manifest.step,
                    model.fingerprint,
                    model.path.display()
                ),
            ));
        }
        Self::assemble(model, index, dev)
    }

    /// A training checkpoint folder and the index it holds (`index/`): the index in use when the
    /// checkpoint was written, built by an earlier snapshot of the document tower (REALM searches
    /// a stale index; fine-tuning keeps the document embeddings fixed), so its fingerprint is
    /// not the current tower's and is not compared.
    pub fn open_checkpoint(dir: &Path, dev: &Device) -> Result<Self> {
        let model = RetrieverModel::load(dir, dev)?;
        let index_dir = dir.join("index");
        let index =
            OpenedIndex::open(&index_dir)?.check_vocab(&index_dir, model.tokenizer.vocab_size())?;
        Self::checkpoint_index(model, index, &index_dir, dev)
    }

    fn checkpoint_index(
        model: RetrieverModel,
        index: BlockIndex,
        index_dir: &Path,
        dev: &Device,
    ) -> Result<Self> {
        let want = model.retriever.config().proj_size;
        if index.manifest.dim != want {
            return Err(Error::file(
                index_dir,
                format!(
                    "embeddings are {}-d; the checkpoint's retriever projects to {want}",
                    index.manifest.dim
                ),
            ));
        }
        Self::assemble(model, index, dev)
    }

    fn assemble(model: RetrieverModel, index: BlockIndex, dev: &Device) -> Result<Self> {
        // On the CPU the mapped rows are searched in place; a GPU gets a copy.
        let mips = match dev {
            Device::Cpu => index.mips()?,
            _ => MipsIndex::new(&index.mips()?.embeddings()?.to_device(dev)?)?,
        };
        let query_max_len = model
            .retriever
            .bert_config()
            .max_position_embeddings
            .min(64);
        Ok(Searcher {
            model,
            index,
            mips,
            query_max_len,
        })
    }

    /// Number of blocks in the index.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Always false: an index has at least one block.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The `k` best blocks for each query, best first.
    pub fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = queries.iter().position(|q| q.trim().is_empty()) {
            return Err(Error::bad_input(
                "search",
                "query",
                format!("query {i} is empty"),
            ));
        }
        if k == 0 || k > self.mips.len() {
            return Err(Error::bad_input(
                "search",
                "k",
                format!("k = {k}; the index has {} blocks", self.mips.len()),
            ));
        }
        let tok = &self.model.tokenizer;
        let pieces = tok.wordpieces_prefix(queries, self.query_max_len)?;
        let refs: Vec<&[u32]> = pieces.iter().map(Vec::as_slice).collect();
        let input = query_inputs(tok, &refs, self.query_max_len, self.mips.device())?;
        let q = self
            .model
            .retriever
            .query_tower()
            .embed(&input, Mode::Eval)?;
        let (scores, ids) = mips_top_k(&q, &self.mips, k, None)?;
        let scores = scores.to_vec2::<f32>()?;
        let ids = ids.to_vec2::<u32>()?;
        scores
            .iter()
            .zip(&ids)
            .map(|(s, i)| {
                s.iter()
                    .zip(i)
                    .map(|(&score, &block)| {
                        let (doc_id, title) = self.index.doc(block as usize)?;
                        Ok(Hit {
                            block,
                            doc_id: doc_id.to_string(),
                            title: title.to_string(),
                            score,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The block of a hit, read from the index.
    pub fn block(&self, hit: &Hit) -> Result<Block> {
        self.index.block(hit.block as usize)
    }
}

/// An index folder as read for searching: format 3 mapped, or an older format parsed (so that
/// its vocabulary errors can name the line of `blocks.jsonl`).
enum OpenedIndex {
    Mapped(BlockIndex),
    Parsed(StoredIndex),
}

impl OpenedIndex {
    fn open(dir: &Path) -> Result<Self> {
        crate::io::recover_dir(dir, "manifest.json")?;
        Ok(if format_version(dir)? == FORMAT_MAPPED {
            OpenedIndex::Mapped(BlockIndex::open(dir)?)
        } else {
            OpenedIndex::Parsed(StoredIndex::load(dir, None)?)
        })
    }

    fn manifest(&self) -> &super::Manifest {
        match self {
            OpenedIndex::Mapped(m) => &m.manifest,
            OpenedIndex::Parsed(s) => &s.manifest,
        }
    }

    /// The index for searching, once its wordpiece ids are known to fit `vocab_size`.
    fn check_vocab(self, dir: &Path, vocab_size: usize) -> Result<BlockIndex> {
        match self {
            OpenedIndex::Mapped(m) => {
                m.check_vocab(vocab_size)?;
                Ok(m)
            }
            OpenedIndex::Parsed(s) => {
                s.check_vocab(dir, vocab_size)?;
                BlockIndex::from_blocks(&s.manifest, &s.blocks, &s.embeddings)
            }
        }
    }
}

/// The training checkpoint an index folder lives in (`CKPT/index` with `CKPT/trainer.json`).
fn holding_checkpoint(index_dir: &Path) -> Option<PathBuf> {
    let parent = index_dir.parent()?;
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    parent
        .join(crate::model::TRAINER_JSON)
        .is_file()
        .then(|| parent.to_path_buf())
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
