//! The on-disk document index: a folder with `embeddings.safetensors` (`[n, d]` f16), the block
//! records (`blocks.jsonl`) and `manifest.json` naming the model checkpoint and training step that
//! produced the embeddings. Every file is written atomically and the manifest last, so a folder
//! with a manifest is complete; loading validates shapes, finiteness and the manifest.

use crate::data::Block;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_json_atomic};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::Path;

const EMBEDDINGS: &str = "embeddings.safetensors";
const BLOCKS: &str = "blocks.jsonl";
const MANIFEST: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

/// What produced an index: checked against the model that searches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// An identifier of the document tower's weights (e.g. a content hash of the checkpoint).
    pub model_fingerprint: String,
    /// Where that checkpoint was, for people reading the manifest.
    pub model_path: String,
    /// The training step of those weights.
    pub step: u64,
    pub num_blocks: usize,
    pub dim: usize,
}

/// Block records as stored, one JSON object per line.
#[derive(Serialize, Deserialize)]
struct BlockRecord {
    doc_id: String,
    title: String,
    tokens: Vec<u32>,
    sentences: Vec<(usize, usize)>,
}

/// An index in memory: its manifest, blocks and `[n, d]` f16 embeddings on the CPU.
#[derive(Clone, Debug)]
pub struct StoredIndex {
    pub manifest: Manifest,
    pub blocks: Vec<Block>,
    pub embeddings: Tensor,
}

impl StoredIndex {
    /// Assembles an index, checking that blocks and embeddings agree and the values are finite.
    pub fn new(
        model_fingerprint: &str,
        model_path: &str,
        step: u64,
        blocks: Vec<Block>,
        embeddings: Tensor,
    ) -> Result<Self> {
        let (n, dim) = embeddings.dims2().map_err(|_| {
            Error::bad_input(
                "StoredIndex::new",
                "embeddings",
                format!("shape {:?} must be [n, d]", embeddings.dims()),
            )
        })?;
        if n != blocks.len() {
            return Err(Error::bad_input(
                "StoredIndex::new",
                "embeddings",
                format!("{n} rows for {} blocks", blocks.len()),
            ));
        }
        let embeddings = embeddings.to_device(&Device::Cpu)?.to_dtype(DType::F16)?;
        check_finite(&embeddings, "StoredIndex::new")?;
        Ok(StoredIndex {
            manifest: Manifest {
                format_version: FORMAT_VERSION,
                model_fingerprint: model_fingerprint.to_string(),
                model_path: model_path.to_string(),
                step,
                num_blocks: n,
                dim,
            },
            blocks,
            embeddings,
        })
    }

    /// Writes the folder: embeddings and blocks first, the manifest last.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let bytes = safetensors::serialize([("embeddings", &self.embeddings)], None)
            .map_err(|e| Error::file(dir.join(EMBEDDINGS), e))?;
        write_atomic(dir.join(EMBEDDINGS), |w| w.write_all(&bytes))?;
        write_atomic(dir.join(BLOCKS), |w| {
            for b in &self.blocks {
                let record = BlockRecord {
                    doc_id: b.doc_id.clone(),
                    title: b.title.clone(),
                    tokens: b.tokens.clone(),
                    sentences: b.sentences.iter().map(|r| (r.start, r.end)).collect(),
                };
                serde_json::to_writer(&mut *w, &record).map_err(std::io::Error::other)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        write_json_atomic(dir.join(MANIFEST), &self.manifest)
    }

    /// Loads and validates a folder. With `expected_fingerprint`, an index built by other weights
    /// is an error.
    pub fn load(dir: impl AsRef<Path>, expected_fingerprint: Option<&str>) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            Error::file(
                &manifest_path,
                format!("not an index folder (no readable manifest): {e}"),
            )
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| Error::file(&manifest_path, e))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::file(
                &manifest_path,
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    manifest.format_version
                ),
            ));
        }
        if let Some(expected) = expected_fingerprint {
            if expected != manifest.model_fingerprint {
                return Err(Error::file(
                    &manifest_path,
                    format!(
                        "index was built by model {} (step {}, {}), not by the model given ({expected}); rebuild it with `realm index`",
                        manifest.model_fingerprint, manifest.step, manifest.model_path
                    ),
                ));
            }
        }
        let emb_path = dir.join(EMBEDDINGS);
        let mut tensors = candle_core::safetensors::load(&emb_path, &Device::Cpu)
            .map_err(|e| Error::file(&emb_path, e))?;
        let embeddings = tensors
            .remove("embeddings")
            .ok_or_else(|| Error::file(&emb_path, "no `embeddings` tensor"))?;
        if embeddings.dtype() != DType::F16
            || embeddings.dims() != [manifest.num_blocks, manifest.dim]
        {
            return Err(Error::file(
                &emb_path,
                format!(
                    "embeddings are {:?} {:?}; the manifest says f16 [{}, {}]",
                    embeddings.dtype(),
                    embeddings.dims(),
                    manifest.num_blocks,
                    manifest.dim
                ),
            ));
        }
        check_finite(&embeddings, "StoredIndex::load").map_err(|e| Error::file(&emb_path, e))?;
        let blocks_path = dir.join(BLOCKS);
        let file = std::fs::File::open(&blocks_path).map_err(|e| Error::file(&blocks_path, e))?;
        let mut blocks = Vec::with_capacity(manifest.num_blocks);
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| Error::file(&blocks_path, e))?;
            let r: BlockRecord = serde_json::from_str(&line).map_err(|e| Error::Parse {
                path: blocks_path.clone(),
                line: i + 1,
                msg: e.to_string(),
            })?;
            blocks.push(Block {
                doc_id: r.doc_id,
                title: r.title,
                tokens: r.tokens,
                sentences: r.sentences.into_iter().map(|(a, b)| a..b).collect(),
            });
        }
        if blocks.len() != manifest.num_blocks {
            return Err(Error::file(
                &blocks_path,
                format!(
                    "{} blocks; the manifest says {}",
                    blocks.len(),
                    manifest.num_blocks
                ),
            ));
        }
        Ok(StoredIndex {
            manifest,
            blocks,
            embeddings,
        })
    }
}

fn check_finite(embeddings: &Tensor, op: &'static str) -> Result<()> {
    let values = embeddings
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let d = embeddings.dim(1)?;
        return Err(Error::bad_input(
            op,
            "embeddings",
            format!("row {} has a non-finite value", i / d),
        ));
    }
    Ok(())
}
