//! `realm index` at any corpus size: the corpus is read, cut, embedded and written one chunk of
//! documents at a time, straight into format 3 ([`super::writer`]), so memory does not grow with
//! the corpus. The work happens in `.OUT.build` beside the output; every `checkpoint_every`
//! blocks the files are flushed and their lengths recorded with the encoder's state
//! (`checkpoint.json`), and a build killed at any moment goes on from its last checkpoint with
//! `resume`, giving the same bytes as a build never interrupted: chunks are cut by the same rule
//! from the same documents, so every embedding batch is the same. `shard (i, n)` builds the
//! chunks `c` with `c % n == i`; [`merge`] joins the shards.

use super::build::{embed_blocks_reporting, EmbedBlocks, PendingDocs, TEXT_PER_CHUNK};
use super::mapped::{token_bytes_for, BlockIndex, BuildInfo, Encoder};
use super::model::RetrieverModel;
use super::store::{stored_model_path, Manifest};
use super::writer::{write_index, FolderWriter};
use crate::data::{Block, CorpusReader};
use crate::error::{Error, Result};
use crate::io::{install_dir, write_json_atomic};
use crate::progress::{Progress, Unit};
use candle_core::{DType, Device};
use half::f16;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const CHECKPOINT: &str = "checkpoint.json";

/// How [`build_index`] reads, embeds and saves.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Body wordpieces per block (REALM: 288).
    pub max_block_tokens: usize,
    pub skip_bad_lines: bool,
    /// Blocks per forward pass and longest input (`progress` is not used: the build reports
    /// its own).
    pub embed: EmbedBlocks,
    /// The training step of the model's weights, recorded in the manifest.
    pub step: u64,
    /// Documents per chunk (also cut at 1 MiB of text).
    pub docs_per_chunk: usize,
    /// Blocks between checkpoints (at the end of the chunk that reaches them).
    pub checkpoint_every: usize,
    /// Go on from the last checkpoint of an interrupted build of the same options.
    pub resume: bool,
    /// `(i, n)`: build only the chunks `c` with `c % n == i`.
    pub shard: Option<(usize, usize)>,
    /// Report progress (MB of corpus, blocks, ETA) on stderr with this label.
    pub progress: Option<String>,
}

/// How a build went, for the user.
#[derive(Clone, Debug)]
pub struct StreamStats {
    pub documents: usize,
    pub skipped: usize,
    pub blocks: usize,
    /// Chunks found done at a checkpoint (resumed).
    pub resumed_chunks: usize,
    pub seconds: f64,
}

/// A build's state at a checkpoint.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    build: BuildInfo,
    model_fingerprint: String,
    /// Chunks of the corpus done (this shard's built, the others' passed over).
    chunks: usize,
    encoder: Encoder,
    /// Each file's length at the checkpoint.
    lengths: Vec<u64>,
}

/// The folder a build of `out` works in: `.OUT.build` beside it.
pub fn work_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::file(out, "must name a folder"))?;
    Ok(out.with_file_name(format!(".{}.build", name.to_string_lossy())))
}

/// Builds the index of `corpus` with `model`'s document tower into `out` (format 3, swapped in
/// whole at the end).
pub fn build_index(
    model: &RetrieverModel,
    corpus: &Path,
    out: &Path,
    opts: &StreamOptions,
    device: &Device,
) -> Result<StreamStats> {
    const OP: &str = "index build";
    if opts.max_block_tokens == 0 || opts.docs_per_chunk == 0 || opts.checkpoint_every == 0 {
        return Err(Error::bad_input(
            OP,
            "options",
            "block tokens, documents per chunk and blocks per checkpoint must be at least 1",
        ));
    }
    if let Some((i, n)) = opts.shard {
        if n == 0 || i >= n {
            return Err(Error::bad_input(
                OP,
                "shard",
                format!("{i}/{n}: the shard must be below the number of shards"),
            ));
        }
    }
    let corpus_bytes = std::fs::metadata(corpus)
        .map_err(|e| Error::file(corpus, e))?
        .len();
    let build = BuildInfo {
        corpus: corpus.display().to_string(),
        corpus_bytes,
        block_tokens: opts.max_block_tokens,
        skip_bad_lines: opts.skip_bad_lines,
        docs_per_chunk: opts.docs_per_chunk,
        batch: opts.embed.batch,
        max_len: opts.embed.max_len,
        shard: opts.shard,
    };
    let start = std::time::Instant::now();
    let work = work_dir(out)?;
    let token_bytes = token_bytes_for(model.tokenizer.vocab_size());
    let dim = model.retriever.config().proj_size;
    let checkpoint_path = work.join(CHECKPOINT);
    let (mut writer, mut enc, done) = if opts.resume && checkpoint_path.is_file() {
        let text = std::fs::read_to_string(&checkpoint_path)
            .map_err(|e| Error::file(&checkpoint_path, e))?;
        let ckpt: Checkpoint =
            serde_json::from_str(&text).map_err(|e| Error::file(&checkpoint_path, e))?;
        if ckpt.build != build || ckpt.model_fingerprint != model.fingerprint {
            return Err(Error::file(
                &checkpoint_path,
                format!(
                    "this build was started with other options or another model ({:?}, model \
                     {}); resume it with those, or start again without --resume",
                    ckpt.build, ckpt.model_fingerprint
                ),
            ));
        }
        remove_temporaries(&work)?;
        let writer = FolderWriter::resume(&work, ckpt.encoder.layout.token_bytes, &ckpt.lengths)?;
        (writer, ckpt.encoder, ckpt.chunks)
    } else {
        if work.exists() {
            // Our own work folder, from a build that is not being resumed.
            std::fs::remove_dir_all(&work).map_err(|e| Error::file(&work, e))?;
        }
        std::fs::create_dir_all(&work).map_err(|e| Error::file(&work, e))?;
        let mut writer = FolderWriter::create(&work, token_bytes)?;
        let enc = Encoder::new(dim, token_bytes, &mut writer)?;
        (writer, enc, 0)
    };

    let progress = Progress::optional(opts.progress.as_deref(), Unit::Bytes, Some(corpus_bytes));
    let mut reader = CorpusReader::open(corpus, opts.skip_bad_lines)?;
    let mut pending = PendingDocs::default();
    let (mut chunk, mut documents) = (0usize, 0usize);
    let mut last_checkpoint = enc.num_blocks;
    let embed = EmbedBlocks {
        progress: None,
        ..opts.embed.clone()
    };
    // Progress is in bytes of the corpus: a chunk's bytes count as its blocks are embedded.
    let mut chunk_start = 0u64;
    let mut finish_chunk = |pending: &mut PendingDocs,
                            chunk: usize,
                            chunk_end: u64,
                            enc: &mut Encoder,
                            writer: &mut FolderWriter|
     -> Result<()> {
        let from = std::mem::replace(&mut chunk_start, chunk_end);
        let mine = opts.shard.is_none_or(|(i, n)| chunk % n == i);
        if chunk < done || !mine {
            pending.docs.clear();
            pending.bytes = 0;
            return Ok(());
        }
        let mut blocks: Vec<Block> = Vec::new();
        pending.tokenize(&model.tokenizer, &mut blocks, opts.max_block_tokens, |_| {})?;
        if !blocks.is_empty() {
            let (total, mut done) = (blocks.len() as u64, 0u64);
            let rows = embed_blocks_reporting(
                model.retriever.doc_tower(),
                &model.tokenizer,
                &blocks,
                &embed,
                device,
                &mut |n| {
                    done += n as u64;
                    progress.set(from + (chunk_end - from) * done / total);
                },
            )?
            .to_dtype(DType::F16)?
            .to_vec2::<f16>()?;
            for (b, row) in blocks.iter().zip(&rows) {
                enc.push(writer, b, row)?;
            }
        }
        if enc.num_blocks - last_checkpoint >= opts.checkpoint_every {
            writer.sync()?;
            write_json_atomic(
                work.join(CHECKPOINT),
                &Checkpoint {
                    build: build.clone(),
                    model_fingerprint: model.fingerprint.clone(),
                    chunks: chunk + 1,
                    encoder: enc.clone(),
                    lengths: writer.lengths(),
                },
            )?;
            last_checkpoint = enc.num_blocks;
        }
        Ok(())
    };
    while let Some(doc) = reader.next() {
        pending.push(doc?);
        documents += 1;
        if pending.docs.len() >= opts.docs_per_chunk || pending.bytes >= TEXT_PER_CHUNK {
            finish_chunk(
                &mut pending,
                chunk,
                reader.bytes_read(),
                &mut enc,
                &mut writer,
            )?;
            chunk += 1;
            progress.set(reader.bytes_read());
        }
    }
    if !pending.docs.is_empty() {
        finish_chunk(
            &mut pending,
            chunk,
            reader.bytes_read(),
            &mut enc,
            &mut writer,
        )?;
    }
    progress.set(reader.bytes_read());
    progress.finish();
    if enc.num_blocks == 0 {
        return Err(Error::file(
            corpus,
            "no document with text (in this shard): nothing to index",
        ));
    }
    let manifest = Manifest {
        format_version: super::mapped::FORMAT_MAPPED,
        model_fingerprint: model.fingerprint.clone(),
        model_path: stored_model_path(out, &model.path.display().to_string()),
        step: opts.step,
        num_blocks: enc.num_blocks,
        dim,
    };
    let blocks = enc.num_blocks;
    writer.finish(manifest, enc.layout(), Some(build))?;
    std::fs::remove_file(&checkpoint_path)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| Error::file(&checkpoint_path, e))?;
    install_dir(&work, out)?;
    Ok(StreamStats {
        documents,
        skipped: reader.skipped(),
        blocks,
        resumed_chunks: done,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Removes what a kill in the middle of an atomic write in the work folder left
/// (`.checkpoint.json.tmp-PID`, `.manifest.json.tmp-PID`).
fn remove_temporaries(work: &Path) -> Result<()> {
    for entry in std::fs::read_dir(work).map_err(|e| Error::file(work, e))? {
        let path = entry.map_err(|e| Error::file(work, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with('.') && n.contains(".tmp-")) {
            std::fs::remove_file(&path).map_err(|e| Error::file(&path, e))?;
        }
    }
    Ok(())
}

/// Joins the shards `0/n .. n-1/n` of one build (given in any order) into `out`, shard after
/// shard. They must be complete and agree: the same corpus, options and model, every shard once.
/// Returns the number of blocks.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<usize> {
    const OP: &str = "index merge";
    let mut opened = Vec::with_capacity(shards.len());
    for dir in shards {
        let index = BlockIndex::open(dir)?;
        let Some(build) = index.build.clone() else {
            return Err(Error::file(dir, "is not a shard of `realm index --shard`"));
        };
        let Some((i, n)) = build.shard else {
            return Err(Error::file(dir, "is a whole index, not a shard"));
        };
        opened.push((i, n, build, index, dir));
    }
    opened.sort_by_key(|s| s.0);
    let Some((_, n, first_build, first, first_dir)) = opened.first() else {
        return Err(Error::bad_input(OP, "shards", "no shards given"));
    };
    let n = *n;
    let same = |b: &BuildInfo| BuildInfo {
        shard: None,
        ..b.clone()
    };
    for (pos, (i, ni, build, index, dir)) in opened.iter().enumerate() {
        let problem = if *ni != n || *i != pos {
            Some(format!(
                "is shard {i}/{ni}; the shards given are not exactly 0/{n} .. {}/{n}",
                n - 1
            ))
        } else if same(build) != same(first_build) {
            Some(format!(
                "was built from other options than {}: {build:?}",
                first_dir.display()
            ))
        } else if index.manifest.model_fingerprint != first.manifest.model_fingerprint
            || index.manifest.dim != first.manifest.dim
            || index.manifest.step != first.manifest.step
            || index.layout.token_bytes != first.layout.token_bytes
        {
            Some(format!(
                "was built by another model than {} (fingerprint, dimension, step or vocabulary)",
                first_dir.display()
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(Error::file(dir, p));
        }
        index.verify()?;
    }
    if opened.len() != n {
        return Err(Error::bad_input(
            OP,
            "shards",
            format!("{} shards given of {n}", opened.len()),
        ));
    }
    let mut manifest = first.manifest.clone();
    manifest.model_path = stored_model_path(
        out,
        &first.manifest.model_dir(first_dir).display().to_string(),
    );
    let token_bytes = first.layout.token_bytes;
    let build = same(first_build);
    let blocks = opened.iter().flat_map(|(.., index, _)| {
        let d = index.manifest.dim;
        (0..index.len()).map(move |i| {
            Ok((
                index.block(i)?,
                index.embeddings()[i * d..(i + 1) * d].to_vec(),
            ))
        })
    });
    write_index(out, manifest, token_bytes, Some(build), blocks)?;
    Ok(opened.iter().map(|s| s.3.len()).sum())
}
