//! An index split into shards (several GPUs, or host and GPU): each shard is searched on its own
//! device, and the per-shard top-k lists are merged exactly on the host.
//!
//! The merge works on f64 scores (the shards' exact scores before rounding to f32), so that a
//! sharded search returns exactly what one search over the concatenated index would. It only needs
//! each shard's `[q, k]` scores and global ids: [`search_shard`] gives them for one shard, and
//! `dist::search` gathers them from the ranks of a distributed run before the same merge.

use super::{check_k, search, write_sorted, MipsIndex, Queries, OP};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Several indexes searched as one: shard i holds the documents with global ids
/// `offset_i .. offset_i + len_i`, in order.
#[derive(Clone, Debug)]
pub struct ShardedIndex {
    shards: Vec<MipsIndex>,
    offsets: Vec<usize>,
    n: usize,
}

/// One shard's (or a merge's) results on the host: `[q, k]` f64 scores and global ids, padded with
/// (−inf, u32::MAX) where a shard has fewer than k documents to give.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardHits {
    /// Results per query: the row length of `scores` and `ids`.
    pub k: usize,
    /// Row-major `[q, k]` inner products (a merge's best first per query).
    pub scores: Vec<f64>,
    /// Row-major `[q, k]` global document ids, matching `scores`.
    pub ids: Vec<u32>,
}

impl ShardedIndex {
    /// The shards in global id order; they must share the embedding dimension.
    pub fn new(shards: Vec<MipsIndex>) -> Result<Self> {
        let Some(first) = shards.first() else {
            return Err(Error::bad_input(OP, "shards", "no shards"));
        };
        let d = first.dim();
        let mut offsets = Vec::with_capacity(shards.len());
        let mut n = 0usize;
        for (i, s) in shards.iter().enumerate() {
            if s.dim() != d {
                return Err(Error::bad_input(
                    OP,
                    "shards",
                    format!("shard {i} has dimension {}, shard 0 has {d}", s.dim()),
                ));
            }
            offsets.push(n);
            n += s.len();
        }
        if n >= u32::MAX as usize {
            return Err(Error::bad_input(
                OP,
                "shards",
                format!(
                    "{n} documents in all; ids are u32, so at most {}",
                    u32::MAX - 1
                ),
            ));
        }
        Ok(ShardedIndex { shards, offsets, n })
    }

    /// Total number of documents.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: every shard has at least one document.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The shards, in global id order.
    pub fn shards(&self) -> &[MipsIndex] {
        &self.shards
    }

    /// [`super::mips_top_k`] over all shards, with global ids (and `exclude` in global ids);
    /// results on the device of `queries`.
    pub fn search(
        &self,
        queries: &Tensor,
        k: usize,
        exclude: Option<&[u32]>,
    ) -> Result<(Tensor, Tensor)> {
        check_global(self.n, k, exclude)?;
        let parts = self
            .shards
            .iter()
            .zip(&self.offsets)
            .map(|(shard, &offset)| search_shard(shard, offset, queries, k, exclude))
            .collect::<Result<Vec<_>>>()?;
        hits_tensors(&parts, queries, k)
    }
}

/// Checks a search's `k` and `exclude` (global ids) against an index of `n` documents in all.
pub fn check_global(n: usize, k: usize, exclude: Option<&[u32]>) -> Result<()> {
    if let Some(e) = exclude {
        if let Some((i, v)) = e
            .iter()
            .enumerate()
            .find(|(_, &v)| v != u32::MAX && v as usize >= n)
        {
            return Err(Error::bad_input(
                OP,
                "exclude",
                format!("exclude[{i}] = {v} is not a document of the index (n = {n}) nor u32::MAX"),
            ));
        }
    }
    check_k(n, exclude.unwrap_or(&[]), k)
}

/// The top min(k, len) of one shard whose documents have the global ids `offset ..`, for every
/// query (`exclude` in global ids), as f64 scores and global ids on the host.
pub fn search_shard(
    shard: &MipsIndex,
    offset: usize,
    queries: &Tensor,
    k: usize,
    exclude: Option<&[u32]>,
) -> Result<ShardHits> {
    let local: Option<Vec<u32>> = exclude.map(|e| {
        e.iter()
            .map(|&v| match (v as usize).checked_sub(offset) {
                Some(l) if l < shard.len() => l as u32,
                _ => u32::MAX,
            })
            .collect()
    });
    let qs = queries.to_device(shard.device())?;
    let prepared = Queries::new(&qs, shard, local.as_deref())?;
    let (scores, ids) = search(shard, &prepared, k.min(shard.len()))?;
    let mut ids = crate::device::read_vec1::<u32>(&ids)?;
    for id in ids.iter_mut().filter(|id| **id != u32::MAX) {
        *id += offset as u32;
    }
    Ok(ShardHits {
        k: k.min(shard.len()),
        scores: crate::device::read_vec1::<f64>(&scores)?,
        ids,
    })
}

/// The exact top k over the shards' results, as [`super::mips_top_k`] gives them (`[q, k]` f32
/// scores and u32 ids) on the device of `queries`.
pub fn hits_tensors(parts: &[ShardHits], queries: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let q = queries.dims2().map(|(q, _)| q).unwrap_or(0);
    let merged = merge_top_k(parts, q, k)?;
    let dev = queries.device();
    Ok((
        Tensor::from_vec(merged.scores, (q, k), &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(dev)?,
        Tensor::from_vec(merged.ids, (q, k), &Device::Cpu)?.to_device(dev)?,
    ))
}

/// The exact top k of each of `q` queries over several result lists with distinct global ids
/// (padding entries, id u32::MAX, are ignored): by f64 score descending, then id ascending.
pub fn merge_top_k(parts: &[ShardHits], q: usize, k: usize) -> Result<ShardHits> {
    for (i, p) in parts.iter().enumerate() {
        if p.scores.len() != q * p.k || p.ids.len() != q * p.k {
            return Err(Error::bad_input(
                "merge_top_k",
                "parts",
                format!(
                    "part {i}: {} scores and {} ids for {q} queries × k = {}",
                    p.scores.len(),
                    p.ids.len(),
                    p.k
                ),
            ));
        }
    }
    let mut out = ShardHits {
        k,
        scores: vec![f64::NEG_INFINITY; q * k],
        ids: vec![u32::MAX; q * k],
    };
    if k == 0 {
        return Ok(out);
    }
    out.scores
        .par_chunks_mut(k)
        .zip(out.ids.par_chunks_mut(k))
        .enumerate()
        .for_each(|(qi, (scores, ids))| {
            let cands: Vec<(f64, u32)> = parts
                .iter()
                .flat_map(|p| {
                    let r = qi * p.k..(qi + 1) * p.k;
                    p.scores[r.clone()]
                        .iter()
                        .copied()
                        .zip(p.ids[r].iter().copied())
                })
                .filter(|&(_, id)| id != u32::MAX)
                .collect();
            write_sorted(cands, scores, ids);
        });
    Ok(out)
}
