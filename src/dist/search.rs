//! An index split across the ranks of a run: rank r holds the contiguous part
//! [`Dist::shard`]`(n)` of the n documents. A search is every rank's exact top k of its part
//! (for all ranks' queries, which every rank passes alike), an all-gather of those candidates,
//! and the exact merge of `ops::mips` ([`merge_top_k`](crate::ops::mips::merge_top_k) on f64
//! scores), so each rank gets what one search over the whole index gives, bit for bit.

use super::Dist;
use crate::error::{Error, Result};
use crate::ops::mips::{check_global, hits_tensors, search_shard, MipsIndex};
use candle_core::Tensor;

const OP: &str = "distributed index";

/// This rank's part of an index of `n` documents.
#[derive(Clone, Debug)]
pub struct RankShard {
    dist: Dist,
    local: MipsIndex,
    offset: usize,
    n: usize,
}

impl RankShard {
    /// This rank's part of `embeddings` (`[n, d]`, all documents): rows [`Dist::shard`]`(n)`.
    pub fn from_all(dist: &Dist, embeddings: &Tensor) -> Result<Self> {
        let n = embeddings.dim(0)?;
        let part = dist.shard(n);
        let local = MipsIndex::new(&embeddings.narrow(0, part.start, part.len())?)?;
        RankShard::new(dist, local, n)
    }

    /// A rank's part `local` of an index of `n` documents (it must hold [`Dist::shard`]`(n)`).
    pub fn new(dist: &Dist, local: MipsIndex, n: usize) -> Result<Self> {
        dist.check_divisible("documents", n)?;
        let part = dist.shard(n);
        if local.len() != part.len() {
            return Err(Error::bad_input(
                OP,
                "local",
                format!(
                    "rank {} of {} holds documents {}..{} of {n} ({} of them), but its index has {}",
                    dist.rank(),
                    dist.size(),
                    part.start,
                    part.end,
                    part.len(),
                    local.len()
                ),
            ));
        }
        Ok(RankShard {
            dist: dist.clone(),
            local,
            offset: part.start,
            n,
        })
    }

    /// Documents in all ranks' parts.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: every rank holds at least one document.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// This rank's shard of the index (local ids).
    pub fn local(&self) -> &MipsIndex {
        &self.local
    }

    /// [`crate::ops::mips::mips_top_k`] over the whole index (`exclude` in global ids): every rank
    /// calls it with the same queries and gets the same `[q, k]` scores and global ids.
    pub fn search(
        &self,
        queries: &Tensor,
        k: usize,
        exclude: Option<&[u32]>,
    ) -> Result<(Tensor, Tensor)> {
        check_global(self.n, k, exclude)?;
        let local = search_shard(&self.local, self.offset, queries, k, exclude)?;
        let parts = self.dist.all_gather_hits("index search", &local)?;
        hits_tensors(&parts, queries, k)
    }
}
