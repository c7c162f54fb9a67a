//! The on-disk document index: a folder with `embeddings.safetensors` (`[n, d]` f16), the block
//! records (`blocks.jsonl`) and `manifest.json` naming the model checkpoint and training step that
//! produced the embeddings, and binding the two files by size and CRC-32.
//!
//! The folder is written whole and atomically ([`crate::io::write_dir_atomic`]: built beside the
//! target, flushed, swapped in), so a kill at any moment leaves the previous index or the new
//! one; loading repairs a swap that a kill interrupted and refuses a folder whose files are not
//! the ones its manifest was written with, naming the file. Loading also validates everything
//! that is later used as an index or a size: counts, shapes, finiteness, and each block's
//! sentence ranges (with the line of `blocks.jsonl`).
//!
//! Format 1 (before checksums) is still read, with every check but the checksums; its relative
//! model path is tried against the index folder, then against the working directory, as it was
//! written.

pub use super::manifest::Manifest;
use super::manifest::{
    check_file_digest, read_stored_manifest, Digesting, FileDigest, FORMAT_UNCHECKED,
    FORMAT_VERSION,
};
use super::mapped::{format_version, BlockIndex, FORMAT_MAPPED};
use crate::data::Block;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_dir_atomic, write_json_atomic};
use crate::lines::Lines;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

const EMBEDDINGS: &str = "embeddings.safetensors";
const BLOCKS: &str = "blocks.jsonl";
const MANIFEST: &str = "manifest.json";

/// `manifest.json` as stored: the manifest and the digests of the other files (format 2).
#[derive(Serialize, Deserialize)]
struct StoredManifest {
    #[serde(flatten)]
    manifest: Manifest,
    #[serde(default)]
    files: BTreeMap<String, FileDigest>,
}

/// Block records as stored, one JSON object per line.
#[derive(Serialize, Deserialize)]
struct BlockRecord {
    doc_id: String,
    title: String,
    tokens: Vec<u32>,
    sentences: Vec<(usize, usize)>,
}

impl BlockRecord {
    /// The block, if its sentences are non-empty ranges that cover its tokens in order.
    fn into_block(self) -> std::result::Result<Block, String> {
        if self.tokens.is_empty() {
            return Err("a block without tokens".into());
        }
        let mut next = 0;
        for &(start, end) in &self.sentences {
            if start != next || end <= start || end > self.tokens.len() {
                return Err(format!(
                    "sentence range {start}..{end} does not continue at token {next} within the \
                     block's {} tokens",
                    self.tokens.len()
                ));
            }
            next = end;
        }
        if next != self.tokens.len() {
            return Err(format!(
                "the sentences cover {next} of the block's {} tokens",
                self.tokens.len()
            ));
        }
        Ok(Block {
            doc_id: self.doc_id,
            title: self.title,
            tokens: self.tokens,
            sentences: self.sentences.into_iter().map(|(a, b)| a..b).collect(),
        })
    }
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

    /// Writes the folder atomically as a whole: embeddings and blocks, then the manifest with
    /// their sizes and checksums, in a temporary folder that then replaces `dir`. A model path
    /// that names a model folder is stored relative to `dir`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let bytes = safetensors::serialize([("embeddings", &self.embeddings)], None)
            .map_err(|e| Error::file(dir.join(EMBEDDINGS), e))?;
        write_dir_atomic(dir, |tmp| {
            let embeddings = write_digested(&tmp.join(EMBEDDINGS), |w| w.write_all(&bytes))?;
            let blocks = write_digested(&tmp.join(BLOCKS), |w| {
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
            let files = BTreeMap::from([
                (EMBEDDINGS.to_string(), embeddings),
                (BLOCKS.to_string(), blocks),
            ]);
            let mut manifest = self.manifest.clone();
            manifest.format_version = FORMAT_VERSION;
            manifest.model_path = stored_model_path(dir, &manifest.model_path);
            write_json_atomic(tmp.join(MANIFEST), &StoredManifest { manifest, files })
        })
    }

    /// Checks that [`Self::save`] may replace what is at `dir`: nothing, an empty folder, or an
    /// index folder (a previous index, possibly with an interrupted swap beside it). Anything
    /// else is the user's and an error naming `flag`, the argument that gave the path.
    pub fn check_replaceable(dir: &Path, flag: &str) -> Result<()> {
        let aside = dir
            .file_name()
            .map(|n| dir.with_file_name(format!(".{}.old", n.to_string_lossy())));
        let is_index = |d: &Path| d.join(MANIFEST).is_file();
        let ok = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) if dir.is_file() => {
                return Err(Error::file(
                    dir,
                    format!("{flag}: is a file, not a folder ({e})"),
                ))
            }
            Err(e) => return Err(Error::file(dir, format!("{flag}: {e}"))),
            Ok(mut entries) => {
                entries.next().is_none() || is_index(dir) || aside.as_deref().is_some_and(is_index)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::file(
                dir,
                format!(
                    "{flag}: exists and is not an index folder (no {MANIFEST}); it is not \
                     replaced: choose another folder"
                ),
            ))
        }
    }

    /// The whole index in memory, as training uses it.
    pub fn from_mapped(index: &BlockIndex) -> Result<Self> {
        let blocks = (0..index.len())
            .map(|i| index.block(i))
            .collect::<Result<Vec<_>>>()?;
        let embeddings = candle_core::Tensor::from_slice(
            index.embeddings(),
            (index.len(), index.manifest.dim),
            &candle_core::Device::Cpu,
        )?;
        let mut stored = Self::new(
            &index.manifest.model_fingerprint,
            &index.manifest.model_path,
            index.manifest.step,
            blocks,
            embeddings,
        )?;
        stored.manifest.format_version = index.manifest.format_version;
        Ok(stored)
    }

    /// Loads and validates a folder (after repairing a swap that a kill interrupted). With
    /// `expected_fingerprint`, an index built by other weights is an error.
    pub fn load(dir: impl AsRef<Path>, expected_fingerprint: Option<&str>) -> Result<Self> {
        let dir = dir.as_ref();
        crate::io::recover_dir(dir, MANIFEST)?;
        if format_version(dir)? == FORMAT_MAPPED {
            // Format 3 in memory: everything read, so everything checked.
            let mapped = BlockIndex::open(dir)?;
            mapped.verify()?;
            let index = Self::from_mapped(&mapped)?;
            check_fingerprint(dir, &index.manifest, expected_fingerprint)?;
            return Ok(index);
        }
        let (manifest, files) = read_manifest(dir)?;
        check_fingerprint(dir, &manifest, expected_fingerprint)?;
        // The files first: a file that is not the one the manifest was written with is named as
        // such, before anything in it is read as data.
        for (name, want) in &files {
            check_file_digest(&dir.join(name), want)?;
        }
        let emb_path = dir.join(EMBEDDINGS);
        let embeddings = load_embeddings(&emb_path, &manifest)?;
        let blocks_path = dir.join(BLOCKS);
        let mut lines = Lines::open(&blocks_path)?;
        let mut blocks = Vec::new();
        while let Some((line, text)) = lines.next() {
            let text = text.map_err(|e| lines.error(line, &e))?;
            let parse_err = |msg: String| Error::Parse {
                path: blocks_path.clone(),
                line,
                msg,
            };
            if blocks.len() == manifest.num_blocks {
                return Err(parse_err(format!(
                    "more blocks than the manifest's {}",
                    manifest.num_blocks
                )));
            }
            let record: BlockRecord =
                serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            blocks.push(record.into_block().map_err(parse_err)?);
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

    /// An error naming the first block (by its line of `dir/blocks.jsonl`) with a wordpiece id
    /// outside a vocabulary of `vocab_size`.
    pub fn check_vocab(&self, dir: &Path, vocab_size: usize) -> Result<()> {
        for (i, b) in self.blocks.iter().enumerate() {
            if let Some(&id) = b.tokens.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(Error::Parse {
                    path: dir.join(BLOCKS),
                    line: i + 1,
                    msg: format!(
                        "wordpiece id {id} is outside the model's vocabulary of {vocab_size}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// An error when the manifest's model fingerprint is not `expected`.
fn check_fingerprint(dir: &Path, manifest: &Manifest, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(expected) if expected != manifest.model_fingerprint => Err(Error::file(
            dir.join(MANIFEST),
            format!(
                "index was built by model {} (step {}, {}), not by the model given ({expected}); rebuild it with `realm index`",
                manifest.model_fingerprint, manifest.step, manifest.model_path
            ),
        )),
        _ => Ok(()),
    }
}

/// The manifest of an index folder and the digests of its files (none in format 1).
fn read_manifest(dir: &Path) -> Result<(Manifest, BTreeMap<String, FileDigest>)> {
    let path = dir.join(MANIFEST);
    let stored: StoredManifest = read_stored_manifest(&path)?;
    let m = &stored.manifest;
    match m.format_version {
        FORMAT_VERSION => {
            if let Some(odd) = stored
                .files
                .keys()
                .find(|f| ![EMBEDDINGS, BLOCKS].contains(&f.as_str()))
            {
                return Err(Error::file(
                    &path,
                    format!("lists a file {odd:?} that an index does not have"),
                ));
            }
            if let Some(missing) = [EMBEDDINGS, BLOCKS]
                .into_iter()
                .find(|f| !stored.files.contains_key(*f))
            {
                return Err(Error::file(
                    &path,
                    format!("has no checksum of {missing}; rebuild the index with `realm index`"),
                ));
            }
        }
        FORMAT_UNCHECKED => {}
        other => {
            return Err(Error::file(
                &path,
                format!(
                    "format version {other} (this build reads {FORMAT_UNCHECKED} and \
                     {FORMAT_VERSION})"
                ),
            ))
        }
    }
    if m.num_blocks == 0 || m.dim == 0 {
        return Err(Error::file(
            &path,
            format!(
                "an index of {} blocks of dimension {}: nothing to search",
                m.num_blocks, m.dim
            ),
        ));
    }
    Ok((stored.manifest, stored.files))
}

/// Writes `path` atomically with what `write` produces, and returns its size and checksum.
fn write_digested(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<FileDigest> {
    let mut digest = FileDigest { bytes: 0, crc32: 0 };
    write_atomic(path, |w| {
        let mut w = Digesting::new(w);
        write(&mut w)?;
        digest = w.digest();
        Ok(())
    })?;
    Ok(digest)
}

/// The `[num_blocks, dim]` f16 embeddings, all finite.
fn load_embeddings(path: &Path, manifest: &Manifest) -> Result<Tensor> {
    let mut tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::file(path, e))?;
    let embeddings = tensors
        .remove("embeddings")
        .ok_or_else(|| Error::file(path, "no `embeddings` tensor"))?;
    if embeddings.dtype() != DType::F16 || embeddings.dims() != [manifest.num_blocks, manifest.dim]
    {
        return Err(Error::file(
            path,
            format!(
                "embeddings are {:?} {:?}; the manifest says f16 [{}, {}]",
                embeddings.dtype(),
                embeddings.dims(),
                manifest.num_blocks,
                manifest.dim
            ),
        ));
    }
    check_finite(&embeddings, "StoredIndex::load").map_err(|e| Error::file(path, e))?;
    Ok(embeddings)
}

/// `model_path` as the manifest of an index at `index_dir` stores it: relative to the index
/// folder when it names a model folder (so the index and its model can move together and be
/// used from any working directory), else unchanged.
pub(super) fn stored_model_path(index_dir: &Path, model_path: &str) -> String {
    let model = Path::new(model_path);
    let parent = match index_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !model.join("config.json").is_file() {
        return model_path.to_string();
    }
    let (Ok(model), Ok(parent), Some(name)) = (
        model.canonicalize(),
        parent.canonicalize(),
        index_dir.file_name(),
    ) else {
        return model_path.to_string();
    };
    let from = parent.join(name);
    let common = from
        .components()
        .zip(model.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push(Component::ParentDir);
    }
    for c in model.components().skip(common) {
        rel.push(c);
    }
    rel.to_string_lossy().into_owned()
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
