//! An index split across the ranks of a run: rank r holds the contiguous part
//! [`Dist::shard`]`(n)` of the n documents. A search is every rank's exact top k of its part
//! (for all ranks' queries, which every rank passes alike), an all-gather of those candidates,
//! and the exact merge of `ops::mips` ([`crate::ops::mips::merge_top_k`] on f64 scores), so each rank gets what
//! one search over the whole index gives, bit for bit.
//!
//! Training searches with each rank's own queries ([`RankShard::search_own`]: the queries are
//! gathered first) and, with a frozen document tower, reads its candidates' stored embeddings
//! from the ranks that hold them ([`RankShard::rows_own`]). One rank searches and reads its
//! index directly, with no host round trip beyond the plain search's.

use super::Dist;
use crate::device::{read_vec1, upload};
use crate::error::{Error, Result};
use crate::ops::mips::{check_global, hits_tensors, mips_top_k, search_shard, MipsIndex};
use candle_core::{DType, Tensor};
use half::f16;

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
    /// This rank's part of `embeddings` (`[n, d]`, all documents): rows [`Dist::shard`]`(n)`,
    /// searched on `device`.
    pub fn from_all(
        dist: &Dist,
        embeddings: &Tensor,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let n = embeddings.dim(0)?;
        dist.check_divisible("documents", n)?;
        let part = dist.shard(n);
        let mine = embeddings
            .narrow(0, part.start, part.len())?
            .to_device(device)?;
        RankShard::new(dist, MipsIndex::new(&mine)?, n)
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

    /// The ranks that hold the index.
    pub fn dist(&self) -> &Dist {
        &self.dist
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

    /// The `k` best documents of the whole index for this rank's own `queries` (`[b, d]`, any
    /// float dtype; ranks may hold different numbers of them, none included): `[b, k]` f32
    /// scores and global ids on the index's device, what [`mips_top_k`] over the whole index
    /// gives for them, bit for bit. Every rank's queries are gathered (exact: the search rounds
    /// them to f16 anyway) and searched by every rank in its part. Every rank must call it.
    pub fn search_own(&self, queries: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
        if self.dist.size() == 1 {
            return mips_top_k(queries, &self.local, k, None);
        }
        check_global(self.n, k, None)?;
        let d = self.local.dim();
        let b = match queries.dims2() {
            Ok((b, qd)) if qd == d => b,
            _ => {
                return Err(Error::bad_input(
                    OP,
                    "queries",
                    format!("shape {:?} must be [q, {d}]", queries.dims()),
                ))
            }
        };
        let mine = read_vec1::<f32>(&queries.to_dtype(DType::F32)?)?;
        let parts = self
            .dist
            .all_gather_values("index search: queries", &mine)?;
        let first = parts[..self.dist.rank()]
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            / d;
        let all = parts.concat();
        let q = all.len() / d;
        let all = upload(all, (q, d), self.local.device())?;
        let (scores, ids) = self.search(&all, k, None)?;
        Ok((scores.narrow(0, first, b)?, ids.narrow(0, first, b)?))
    }

    /// The stored f16 embeddings `[ids.len(), d]` of documents `ids` (global; ranks may ask for
    /// different ones), on the index's device. Each rank sends the rows of its part that any
    /// rank asked for. Every rank must call it.
    pub fn rows_own(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&g| g as usize >= self.n) {
            return Err(Error::bad_input(
                OP,
                "ids",
                format!("document {bad} is not in the index (n = {})", self.n),
            ));
        }
        let dev = self.local.device();
        let select = |local: Vec<u32>| -> Result<Tensor> {
            let n = local.len();
            let local = upload(local, n, dev)?;
            Ok(self.local.embeddings()?.index_select(&local, 0)?)
        };
        if self.dist.size() == 1 {
            return select(ids.to_vec());
        }
        let d = self.local.dim();
        let asked = self.dist.all_gather_values("index rows: ids", ids)?;
        let owner = |g: u32| self.dist.owner_of(g as usize, self.n);
        // This rank's rows of everything asked, in the order asked.
        let mine: Vec<u32> = asked
            .iter()
            .flatten()
            .filter(|&&g| owner(g) == self.dist.rank())
            .map(|&g| g - self.offset as u32)
            .collect();
        let sent: Vec<u16> = match mine.is_empty() {
            true => Vec::new(),
            false => read_vec1::<f16>(&select(mine)?)?
                .into_iter()
                .map(f16::to_bits)
                .collect(),
        };
        let parts = self
            .dist
            .all_gather_values("index rows: embeddings", &sent)?;
        // Walk everything asked in order, each owner's rows in the order it sent them.
        let mut next = vec![0usize; parts.len()];
        let mut out = Vec::with_capacity(ids.len() * d);
        for (r, list) in asked.iter().enumerate() {
            for &g in list {
                let o = owner(g);
                let row = parts[o]
                    .get(next[o] * d..(next[o] + 1) * d)
                    .ok_or_else(|| {
                        Error::Dist(format!("index rows: rank {o} sent too few rows"))
                    })?;
                next[o] += 1;
                if r == self.dist.rank() {
                    out.extend(row.iter().map(|&h| f16::from_bits(h)));
                }
            }
        }
        upload(out, (ids.len(), d), dev)
    }

    /// Every rank's part gathered: the f16 embeddings `[n, d]` of the whole index, on the
    /// host (for saving it). Every rank must call it.
    pub fn gather_all(&self) -> Result<Tensor> {
        let mine = self.local.embeddings()?;
        if self.dist.size() == 1 {
            return Ok(mine.to_device(&candle_core::Device::Cpu)?);
        }
        let bits: Vec<u16> = read_vec1::<f16>(&mine)?
            .into_iter()
            .map(f16::to_bits)
            .collect();
        let parts = self.dist.all_gather_values("index gather", &bits)?;
        let all: Vec<f16> = parts.concat().into_iter().map(f16::from_bits).collect();
        let d = self.local.dim();
        if all.len() != self.n * d {
            return Err(Error::Dist(format!(
                "index gather: {} values for {} documents of dimension {d}",
                all.len(),
                self.n
            )));
        }
        Ok(Tensor::from_vec(
            all,
            (self.n, d),
            &candle_core::Device::Cpu,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::tests::run_ranks;
    use crate::rng::SplitMix64;
    use candle_core::Device;

    const N: usize = 37;
    const D: usize = 16;

    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        rng.normal_vec(n, 1.0)
            .into_iter()
            .map(|x| x as f32)
            .collect()
    }

    fn whole() -> Tensor {
        let v: Vec<f16> = values(1, N * D).into_iter().map(f16::from_f32).collect();
        Tensor::from_vec(v, (N, D), &Device::Cpu).unwrap()
    }

    /// Rank r's own queries: r of them (rank 0 has none), and the documents it reads.
    fn own(rank: usize) -> (Tensor, Vec<u32>) {
        let q = Tensor::from_vec(values(10 + rank as u64, rank * D), (rank, D), &Device::Cpu);
        let ids = (0..2 * rank as u32).map(|i| (i * 11 + rank as u32) % N as u32);
        (q.unwrap(), ids.collect())
    }

    #[test]
    fn three_ranks_search_and_read_as_one_index() {
        let got = run_ranks(3, |dist| {
            let shard = RankShard::from_all(&dist, &whole(), &Device::Cpu).unwrap();
            assert_eq!(shard.local().len(), dist.shard(N).len());
            let (q, ids) = own(dist.rank());
            let (scores, found) = shard.search_own(&q, 5).unwrap();
            let rows = shard.rows_own(&ids).unwrap();
            let all = shard.gather_all().unwrap();
            (
                scores.to_vec2::<f32>().unwrap(),
                found.to_vec2::<u32>().unwrap(),
                rows.to_vec2::<f16>().unwrap(),
                all.to_vec2::<f16>().unwrap(),
            )
        });
        let index = MipsIndex::new(&whole()).unwrap();
        for (rank, (scores, found, rows, all)) in got.into_iter().enumerate() {
            let (q, ids) = own(rank);
            let (s, i) = mips_top_k(&q, &index, 5, None).unwrap();
            assert_eq!(scores, s.to_vec2::<f32>().unwrap(), "rank {rank}: scores");
            assert_eq!(found, i.to_vec2::<u32>().unwrap(), "rank {rank}: ids");
            assert_eq!(found.len(), rank);
            let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
            let want = whole().index_select(&ids, 0).unwrap();
            assert_eq!(rows, want.to_vec2::<f16>().unwrap(), "rank {rank}: rows");
            assert_eq!(
                all,
                whole().to_vec2::<f16>().unwrap(),
                "rank {rank}: gathered"
            );
        }
    }

    #[test]
    fn bad_arguments_name_what_is_wrong() {
        let errors = run_ranks(2, |dist| {
            let shard = RankShard::from_all(&dist, &whole(), &Device::Cpu).unwrap();
            let wrong = Tensor::zeros((2, D + 1), DType::F32, &Device::Cpu).unwrap();
            let too_many =
                RankShard::from_all(&dist, &whole().narrow(0, 0, 1).unwrap(), &Device::Cpu);
            [
                shard.search_own(&wrong, 3).unwrap_err().to_string(),
                shard.rows_own(&[N as u32]).unwrap_err().to_string(),
                too_many.unwrap_err().to_string(),
            ]
        });
        for [shape, id, small] in errors {
            assert!(
                shape.contains("queries") && shape.contains("[q, 16]"),
                "{shape}"
            );
            assert!(id.contains("document 37"), "{id}");
            assert!(
                small.contains("documents") && small.contains("2 ranks"),
                "{small}"
            );
        }
    }
}
