//! The model an index is built and searched with: a retriever, its tokenizer, and the
//! fingerprint of its document tower, which an index records so that it is never searched with
//! other weights by mistake.

use crate::error::{Error, Result};
use crate::model::retriever::{Retriever, RetrieverConfig, TowerPooling};
use crate::model::BertTokenizer;
use candle_core::{DType, Device, Var};
use std::path::{Path, PathBuf};

/// Seed of the projection when a plain BERT folder is used as a retriever: fixed, so the index
/// and later searches draw the same one (and the fingerprint check proves it).
pub const PLAIN_BERT_PROJECTION_SEED: u64 = 0;

/// A retriever with its tokenizer, and the fingerprint of its document tower.
pub struct RetrieverModel {
    /// The query and document towers.
    pub retriever: Retriever,
    /// The model's tokenizer.
    pub tokenizer: BertTokenizer,
    /// [`weights_fingerprint`] of the document tower: what an index built by it records.
    pub fingerprint: String,
    /// The folder it was loaded from.
    pub path: PathBuf,
}

impl RetrieverModel {
    /// A REALM/retriever checkpoint folder (its `config.json` has `retriever_proj_size`), or a
    /// plain Hugging Face BERT folder, used as a sentence encoder (mean pooling, cosine; see
    /// [`Retriever::from_bert_dir`]).
    pub fn load(dir: &Path, dev: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::file(&config_path, format!("not a model folder: {e}")))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(&config_path, e))?;
        let retriever = if config.get("retriever_proj_size").is_some() {
            Retriever::load(dir, dev)?
        } else {
            // As a sentence encoder: mean pooling, and a projection that keeps its cosine
            // geometry in a fixed random orthonormal view (no corpus to fit one to here).
            let cfg = RetrieverConfig {
                pooling: TowerPooling::Mean,
                ..RetrieverConfig::default()
            };
            Retriever::from_bert_dir(dir, &cfg, PLAIN_BERT_PROJECTION_SEED, dev)?
        };
        let tokenizer = BertTokenizer::from_dir(dir)?;
        tokenizer.check_vocab(retriever.bert_config())?;
        let fingerprint = weights_fingerprint(retriever.doc_tower().vars())?;
        Ok(RetrieverModel {
            retriever,
            tokenizer,
            fingerprint,
            path: dir.to_path_buf(),
        })
    }
}

/// A content hash (64-bit FNV-1a, hex) of named parameters: names, shapes and f32 values. Two
/// towers with the same fingerprint compute the same embeddings.
pub fn weights_fingerprint(vars: &[(String, Var)]) -> Result<String> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    for (name, var) in vars {
        eat(name.as_bytes());
        for &d in var.dims() {
            eat(&(d as u64).to_le_bytes());
        }
        let values = var
            .as_tensor()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        eat(bytemuck::cast_slice(&values));
    }
    Ok(format!("{hash:016x}"))
}
