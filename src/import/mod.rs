//! `realm import hf-realm`: a transformers `RealmForOpenQA` folder (with its `RealmRetriever`
//! files) as a realm run directory, without Python.
//!
//! ```text
//! SRC/config.json            RealmConfig          -> OUT/checkpoint/config.json, reader/config.json
//! SRC/model.safetensors or pytorch_model.bin:
//!     embedder.realm.*, embedder.cls.{dense,LayerNorm}.*
//!                            the query tower      -> OUT/checkpoint/model.safetensors (shared towers)
//!     embedder.cls.predictions.*  unused by RealmEmbedder's forward: dropped
//!     reader.*               RealmReader          -> OUT/checkpoint/reader/model.safetensors
//!     block_emb [n, d]       the block embeddings -> OUT/checkpoint/index/embeddings.f16
//! SRC/block_records.npy      n byte strings       -> OUT/checkpoint/index/ tokens, one block each
//! SRC/tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json -> OUT/checkpoint/
//! ```
//!
//! Block `i` of the index is record `i` and row `i` of `block_emb` (its `doc_id` is `i`, its title
//! empty): each record is decoded as UTF-8 and tokenised whole by the folder's tokenizer, as
//! `RealmRetriever` does before pairing it with the question. The result is read by `realm eval
//! --checkpoint OUT/checkpoint` and `realm ask --run OUT` (docs/import.md).

pub mod npy;
pub mod weights;

use crate::error::{Error, Result};
use crate::index::manifest::Manifest;
use crate::index::writer::write_index;
use crate::index::RetrieverModel;
use crate::model::{BertTokenizer, Reader};
use crate::progress::{Progress, Unit};
use crate::train::models::{INDEX, READER};
use candle_core::Tensor;
use half::f16;
use npy::ByteRecords;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;
use weights::HfWeights;

/// The folder of a realm checkpoint inside the output run directory.
pub const CHECKPOINT: &str = "checkpoint";

/// The tokenizer files copied when present.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Records tokenised (and rows converted) at a time.
const CHUNK: usize = 1024;

/// What [`import_hf_realm`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// The checkpoint folder (`OUT/checkpoint`): `realm eval --checkpoint` reads it.
    pub checkpoint: PathBuf,
    /// The weights file read.
    pub weights: PathBuf,
    /// Evidence blocks imported into the index.
    pub blocks: usize,
    /// Width of the block embeddings (the retriever's projection size).
    pub dim: usize,
    /// Wordpieces over all blocks.
    pub wordpieces: u64,
    /// Blocks read per question in transformers' `RealmForOpenQA.eval()` (`reader_beam_size`),
    /// the `--beam`/`--reader-beam` that reproduces it.
    pub reader_beam_size: Option<u64>,
    /// Wall time of the import, seconds.
    pub seconds: f64,
}

/// Imports the transformers folder `src` into the new run directory `out` (absent or empty;
/// written whole, atomically). `progress` shows the blocks as they are written.
pub fn import_hf_realm(src: &Path, out: &Path, progress: bool) -> Result<ImportReport> {
    let start = Instant::now();
    let config_path = src.join("config.json");
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| Error::file(&config_path, e))?;
    let config: serde_json::Value =
        serde_json::from_str(&config_text).map_err(|e| Error::file(&config_path, e))?;
    if config.get("model_type").and_then(|v| v.as_str()) != Some("realm") {
        return Err(Error::file(
            &config_path,
            "is not a REALM config (model_type \"realm\"): expected transformers' \
             RealmForOpenQA folder",
        ));
    }
    check_out(out)?;
    let mut weights = HfWeights::open(src)?;
    let (embedder, reader) = split_names(&weights)?;
    let [n, dim] = weights.dims("block_emb")?[..] else {
        return Err(Error::file(
            weights.path(),
            "block_emb is not [blocks, dim]",
        ));
    };
    let records_path = src.join("block_records.npy");
    let records = ByteRecords::open(&records_path)?;
    if records.len() != n {
        return Err(Error::file(
            &records_path,
            format!(
                "{} records, but block_emb in {} has {n} rows",
                records.len(),
                weights.path().display()
            ),
        ));
    }
    if n == 0 {
        return Err(Error::file(&records_path, "holds no records"));
    }
    let checkpoint = out.join(CHECKPOINT);
    let mut wordpieces = 0;
    crate::io::write_dir_atomic(out, |tmp| {
        let ckpt = tmp.join(CHECKPOINT);
        let reader_dir = ckpt.join(READER);
        std::fs::create_dir_all(&reader_dir).map_err(|e| Error::file(&reader_dir, e))?;
        for dir in [&ckpt, &reader_dir] {
            let path = dir.join("config.json");
            crate::io::write_atomic(&path, |w| w.write_all(config_text.as_bytes()))?;
        }
        for name in TOKENIZER_FILES {
            let from = src.join(name);
            if from.is_file() {
                std::fs::copy(&from, ckpt.join(name)).map_err(|e| Error::file(&from, e))?;
            }
        }
        save_tensors(&mut weights, &embedder, &ckpt.join("model.safetensors"))?;
        save_tensors(&mut weights, &reader, &reader_dir.join("model.safetensors"))?;
        // Loading them back checks every name and shape against the config.
        let device = candle_core::Device::Cpu;
        let model = RetrieverModel::load(&ckpt, &device)?;
        Reader::load(&reader_dir, &device)?;
        let want = model.retriever.config().proj_size;
        if want != dim {
            return Err(Error::file(
                weights.path(),
                format!("block_emb rows are {dim}-d, the query tower projects to {want}"),
            ));
        }
        let manifest = Manifest {
            format_version: 0,
            // The released embeddings were made by REALM's document tower, which the folder
            // does not hold; the index is searched with this checkpoint's query tower.
            model_fingerprint: model.fingerprint.clone(),
            model_path: "..".into(),
            step: 0,
            num_blocks: n,
            dim,
        };
        let token_bytes = if model.tokenizer.vocab_size() <= 1 << 16 {
            2
        } else {
            4
        };
        let bar = Progress::optional(
            progress.then_some("importing"),
            Unit::Items("blocks"),
            Some(n as u64),
        );
        let blocks = Blocks {
            records,
            rows: weights.rows("block_emb")?,
            tokenizer: &model.tokenizer,
            next: 0,
            n,
            dim,
            pending: VecDeque::new(),
            wordpieces: &mut wordpieces,
            bar: &bar,
        };
        write_index(&ckpt.join(INDEX), manifest, token_bytes, None, blocks)?;
        bar.finish();
        Ok(())
    })?;
    Ok(ImportReport {
        checkpoint,
        weights: weights.path().to_path_buf(),
        blocks: n,
        dim,
        wordpieces,
        reader_beam_size: config.get("reader_beam_size").and_then(|v| v.as_u64()),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `out` must be absent or an empty folder: the import never replaces anything.
fn check_out(out: &Path) -> Result<()> {
    crate::io::check_new_output_dir(out, "--out")?;
    if out.is_dir() {
        let mut entries = std::fs::read_dir(out).map_err(|e| Error::file(out, e))?;
        if entries.next().is_some() {
            return Err(Error::file(
                out,
                "--out: is not empty; give a new folder (nothing is replaced)",
            ));
        }
    }
    Ok(())
}

/// The tensors of each part, as (name in the file, name written): the query tower keeps
/// `embedder.` (our shared-tower layout), the reader loses `reader.`. Anything else but
/// `block_emb` and the embedder's unused masked-LM head is an error naming it.
type Renames = Vec<(String, String)>;

fn split_names(weights: &HfWeights) -> Result<(Renames, Renames)> {
    let (mut embedder, mut reader, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for name in weights.names()? {
        if name == "block_emb" || name.starts_with("embedder.cls.predictions.") {
            continue;
        } else if name.starts_with("embedder.") {
            embedder.push((name.clone(), name));
        } else if let Some(rest) = name.strip_prefix("reader.") {
            reader.push((name.clone(), rest.to_string()));
        } else {
            unknown.push(name);
        }
    }
    if !unknown.is_empty() || embedder.is_empty() || reader.is_empty() {
        return Err(Error::file(
            weights.path(),
            format!(
                "is not a RealmForOpenQA state dict (embedder.*, reader.*, block_emb): {} \
                 embedder and {} reader tensors; unexpected: {unknown:?}",
                embedder.len(),
                reader.len()
            ),
        ));
    }
    Ok((embedder, reader))
}

/// Writes the tensors `names` of `weights` to `path` (f32 safetensors, PyTorch-marked).
fn save_tensors(weights: &mut HfWeights, names: &Renames, path: &Path) -> Result<()> {
    let tensors = names
        .iter()
        .map(|(from, to)| Ok((to.clone(), weights.tensor(from)?)))
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::file(path, e))?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes))
}

/// The index's blocks in order: record `i` tokenised, with row `i` of `block_emb` in f16.
struct Blocks<'a> {
    records: ByteRecords,
    rows: weights::Rows<'a>,
    tokenizer: &'a BertTokenizer,
    next: usize,
    n: usize,
    dim: usize,
    pending: VecDeque<(crate::data::Block, Vec<f16>)>,
    wordpieces: &'a mut u64,
    bar: &'a Progress,
}

impl Blocks<'_> {
    /// The next [`CHUNK`] records and rows.
    fn fill(&mut self) -> Result<()> {
        let count = CHUNK.min(self.n - self.next);
        let rows = self.rows.next_rows(count)?;
        let mut texts = Vec::with_capacity(count);
        let mut buf = Vec::new();
        for i in self.next..self.next + count {
            self.records.read(i, &mut buf)?;
            let text = String::from_utf8(std::mem::take(&mut buf)).map_err(|_| {
                Error::file(self.records.path(), format!("record {i} is not UTF-8"))
            })?;
            texts.push(text);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let pieces = self.tokenizer.wordpieces(&refs)?;
        for (k, (tokens, row)) in pieces.into_iter().zip(rows.chunks(self.dim)).enumerate() {
            let i = self.next + k;
            if tokens.is_empty() || tokens.len() > usize::from(u16::MAX) {
                return Err(Error::file(
                    self.records.path(),
                    format!(
                        "record {i} is {} wordpieces (an index block holds 1 to {})",
                        tokens.len(),
                        u16::MAX
                    ),
                ));
            }
            *self.wordpieces += tokens.len() as u64;
            let block = crate::data::Block {
                doc_id: i.to_string(),
                title: String::new(),
                sentences: std::iter::once(0..tokens.len()).collect(),
                tokens,
            };
            self.pending
                .push_back((block, row.iter().map(|&v| f16::from_f32(v)).collect()));
        }
        self.next += count;
        self.bar.inc(count as u64);
        Ok(())
    }
}

impl Iterator for Blocks<'_> {
    type Item = Result<(crate::data::Block, Vec<f16>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_empty() && self.next < self.n {
            if let Err(e) = self.fill() {
                self.next = self.n;
                return Some(Err(e));
            }
        }
        self.pending.pop_front().map(Ok)
    }
}
