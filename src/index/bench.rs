//! `realm bench index`: a synthetic index of format 3 with realistic block lengths (REALM's
//! greedy packing: full blocks of up to 288 wordpieces, a shorter last block per document,
//! sentences of 10 to 45 wordpieces), written by the streaming writer, then opened and searched:
//! size on disk, time to open, resident memory after opening and after searching, exact CPU
//! MIPS at a few query batch sizes, and random block reads.

use super::mapped::{token_bytes_for, BlockIndex, FORMAT_MAPPED};
use super::store::{Manifest, StoredIndex};
use super::writer::write_index;
use crate::data::Block;
use crate::error::{Error, Result};
use crate::ops::mips::{mips_top_k, MipsIndex};
use crate::rng::SplitMix64;
use candle_core::{Device, Tensor};
use half::f16;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The synthetic index.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub blocks: usize,
    pub dim: usize,
    /// Longest block body (REALM: 288).
    pub max_tokens: usize,
    /// Wordpiece ids are drawn below this (BERT's 30,522).
    pub vocab: usize,
    pub seed: u64,
}

/// Writes the synthetic index of `spec` into `dir` (atomically, streaming: memory does not
/// grow with the number of blocks). Rows are uniform in ±1/√d per value.
pub fn write_synthetic(dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    if spec.blocks == 0 || spec.dim == 0 || spec.max_tokens < 16 || spec.vocab < 2 {
        return Err(Error::bad_input(
            "bench index",
            "spec",
            format!("{spec:?}: needs blocks, a dimension, at least 16 tokens and a vocabulary"),
        ));
    }
    let manifest = Manifest {
        format_version: FORMAT_MAPPED,
        model_fingerprint: "synthetic".into(),
        model_path: "synthetic".into(),
        step: 0,
        num_blocks: spec.blocks,
        dim: spec.dim,
    };
    let mut rng = SplitMix64::new(spec.seed);
    let scale = 1.0 / (spec.dim as f64).sqrt();
    let (mut doc, mut left_in_doc) = (0usize, 0u64);
    let blocks = (0..spec.blocks).map(move |_| {
        if left_in_doc == 0 {
            doc += 1;
            // 1 to 4 blocks per article, 2.5 on average (Wikipedia: about 2.2).
            left_in_doc = 1 + rng.below(4);
        }
        left_in_doc -= 1;
        let len = if left_in_doc == 0 {
            16 + rng.below(spec.max_tokens as u64 - 15) as usize
        } else {
            spec.max_tokens - rng.below(spec.max_tokens as u64 / 10) as usize
        };
        let tokens: Vec<u32> = (0..len)
            .map(|_| 1 + rng.below(spec.vocab as u64 - 1) as u32)
            .collect();
        let mut sentences = Vec::new();
        let mut start = 0;
        while start < len {
            let end = (start + 10 + rng.below(36) as usize).min(len);
            sentences.push(start..end);
            start = end;
        }
        let row: Vec<f16> = (0..spec.dim)
            .map(|_| f16::from_f64((2.0 * rng.uniform() - 1.0) * scale))
            .collect();
        Ok((
            Block {
                doc_id: format!("{doc}"),
                title: format!("Synthetic article {doc}"),
                tokens,
                sentences,
            },
            row,
        ))
    });
    write_index(dir, manifest, token_bytes_for(spec.vocab), None, blocks)
}

/// The synthetic index of `spec` in format 2 (`blocks.jsonl`, as before format 3), for
/// comparison: written in format 3 beside `dir`, loaded whole and saved.
pub fn write_synthetic_format2(dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::file(dir, "must name a folder"))?;
    let mapped = dir.with_file_name(format!(".{}.format3", name.to_string_lossy()));
    write_synthetic(&mapped, spec)?;
    let stored = StoredIndex::from_mapped(&BlockIndex::open(&mapped)?)?;
    stored.save(dir)?;
    std::fs::remove_dir_all(&mapped).map_err(|e| Error::file(&mapped, e))
}

/// Which reader [`bench_index`] opens the folder with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchFormat {
    /// Format 3, mapped ([`BlockIndex::open`]).
    Mapped,
    /// Format 2, parsed into memory ([`StoredIndex::load`]).
    Parsed,
}

/// An opened index of either reader.
enum Opened {
    Mapped(BlockIndex),
    Parsed(StoredIndex),
}

impl Opened {
    fn block(&self, i: usize) -> Result<Block> {
        match self {
            Opened::Mapped(m) => m.block(i),
            Opened::Parsed(s) => Ok(s.blocks[i].clone()),
        }
    }
}

/// One search measurement.
#[derive(Clone, Debug, Serialize)]
pub struct SearchTiming {
    pub queries: usize,
    pub k: usize,
    /// The first search after opening (pages of the mapping come in).
    pub first_ms: f64,
    /// The median of the following runs.
    pub median_ms: f64,
    pub queries_per_s: f64,
}

/// What `realm bench index` reports.
#[derive(Clone, Debug, Serialize)]
pub struct IndexBench {
    pub blocks: usize,
    pub dim: usize,
    pub tokens: u64,
    pub token_bytes: usize,
    pub bytes_on_disk: u64,
    pub open_ms: f64,
    pub rss_after_open_mb: f64,
    pub search: Vec<SearchTiming>,
    pub rss_after_search_mb: f64,
    /// Mean time to read one random block (tokens, sentences, title).
    pub block_read_us: f64,
    /// After the block reads: mapped pages read around each block count too.
    pub rss_after_reads_mb: f64,
}

/// Opens the index at `dir` with `format`'s reader and measures it: `batches` query counts,
/// `runs` searches each after the first, `k` results per query.
pub fn bench_index(
    dir: &Path,
    format: BenchFormat,
    batches: &[usize],
    runs: usize,
    k: usize,
) -> Result<IndexBench> {
    let start = Instant::now();
    let (index, mips) = match format {
        BenchFormat::Mapped => {
            let index = BlockIndex::open(dir)?;
            let mips = index.mips()?;
            (Opened::Mapped(index), mips)
        }
        BenchFormat::Parsed => {
            let index = StoredIndex::load(dir, None)?;
            let mips = MipsIndex::new(&index.embeddings)?;
            (Opened::Parsed(index), mips)
        }
    };
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let rss_after_open_mb = resident_mb();
    let bytes_on_disk = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let (n, d) = (mips.len(), mips.dim());
    let mut search = Vec::new();
    for &q in batches {
        let queries = Tensor::randn(0f32, 1.0, (q, d), &Device::Cpu)?;
        let mut times = Vec::with_capacity(runs + 1);
        for _ in 0..=runs {
            let t = Instant::now();
            mips_top_k(&queries, &mips, k, None)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let first_ms = times.remove(0);
        times.sort_by(f64::total_cmp);
        let median_ms = times.get(times.len() / 2).copied().unwrap_or(first_ms);
        search.push(SearchTiming {
            queries: q,
            k,
            first_ms,
            median_ms,
            queries_per_s: q as f64 / (median_ms / 1e3),
        });
    }
    let rss_after_search_mb = resident_mb();
    let mut rng = SplitMix64::new(7);
    let reads = 10_000;
    let t = Instant::now();
    for _ in 0..reads {
        index.block(rng.below(n as u64) as usize)?;
    }
    let block_read_us = t.elapsed().as_secs_f64() * 1e6 / reads as f64;
    let (tokens, token_bytes) = match &index {
        Opened::Mapped(m) => (m.layout.num_tokens, m.layout.token_bytes),
        Opened::Parsed(s) => (s.blocks.iter().map(|b| b.tokens.len() as u64).sum(), 4),
    };
    Ok(IndexBench {
        blocks: n,
        dim: d,
        tokens,
        token_bytes,
        bytes_on_disk,
        open_ms,
        rss_after_open_mb,
        search,
        rss_after_search_mb,
        block_read_us,
        rss_after_reads_mb: resident_mb(),
    })
}

/// Writes `spec`'s synthetic index of `format` into `dir` unless `dir` already holds one of the
/// same size and format (reused: writing 13M blocks takes minutes). Returns the seconds spent
/// writing, `None` when reused. `dir` must be new or an index this program wrote.
pub fn ensure_synthetic(
    dir: &Path,
    format: BenchFormat,
    spec: &SyntheticSpec,
) -> Result<Option<f64>> {
    let reuse = match format {
        BenchFormat::Mapped => BlockIndex::open(dir)
            .is_ok_and(|i| i.len() == spec.blocks && i.manifest.dim == spec.dim),
        BenchFormat::Parsed => std::fs::read_to_string(dir.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Manifest>(&t).ok())
            .is_some_and(|m| {
                m.format_version == 2 && m.num_blocks == spec.blocks && m.dim == spec.dim
            }),
    };
    if reuse {
        return Ok(None);
    }
    StoredIndex::check_replaceable(dir, "--dir")?;
    let start = Instant::now();
    match format {
        BenchFormat::Mapped => write_synthetic(dir, spec)?,
        BenchFormat::Parsed => write_synthetic_format2(dir, spec)?,
    }
    Ok(Some(start.elapsed().as_secs_f64()))
}

impl std::fmt::Display for IndexBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blocks x {} ({} tokens of {} bytes): {:.2} GB on disk, opened in {:.1} ms, \
             {:.0} MB resident after opening, {:.0} MB after searching; a random block read in \
             {:.1} us ({:.0} MB resident after 10,000)",
            self.blocks,
            self.dim,
            self.tokens,
            self.token_bytes,
            self.bytes_on_disk as f64 / 1e9,
            self.open_ms,
            self.rss_after_open_mb,
            self.rss_after_search_mb,
            self.block_read_us,
            self.rss_after_reads_mb
        )?;
        for s in &self.search {
            write!(
                f,
                "\n  Q={:<4} k={}: first {:.0} ms, median {:.0} ms ({:.1} queries/s)",
                s.queries, s.k, s.first_ms, s.median_ms, s.queries_per_s
            )?;
        }
        Ok(())
    }
}

/// This process's resident memory (VmRSS) in MB, 0 where /proc is not there.
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
