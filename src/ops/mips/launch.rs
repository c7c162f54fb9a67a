//! mips_top_k's kernels (`kernels/mips_topk.cu`), described once for every backend: one scan
//! launch over (query batches × index slices) blocks, then one merge launch with a block per
//! query. How many slices is the caller's choice ([`KernelPlan`]).

use super::{Queries, OP};
use crate::error::{Error, Result};
use crate::kernels::abi::mips_topk::{
    mips_scan_tile, MipsMerge, MipsScan, Variant, MIPS_MAX_WARPS, MIPS_MERGE_THREADS,
    MIPS_WARP_QUERIES,
};
use crate::kernels::{Backend, Launch};
use half::f16;

/// How the kernels split one search.
#[derive(Clone, Copy, Debug)]
pub(super) struct KernelPlan {
    /// The scan kernel for the (padded) dimension.
    pub scan: Variant,
    /// Threads per scan block: a warp per 16 queries, at most 4 warps.
    pub threads: u32,
    /// Query batches (grid.x of the scan) and index slices (grid.y).
    pub batches: u32,
    pub slices: u32,
    pub slice_len: u32,
    /// Candidate list capacity per (query, slice): k + the next tile always fit after a compaction.
    pub cap: u32,
    /// The merge's sort size: the next power of two ≥ k.
    pub p2: u32,
}

impl KernelPlan {
    /// A plan for `q` queries of padded dimension `dp` over `n` documents. `slices` is the
    /// caller's wish (enough blocks to fill the device), reduced so that the candidate lists (16
    /// bytes an entry) take at most a quarter of `free_memory` (the device's free bytes; the rest
    /// is left to the merge's scratch, the results and the rest of the process).
    pub fn new(
        n: usize,
        dp: usize,
        q: usize,
        k: usize,
        slices: usize,
        free_memory: usize,
    ) -> Result<Self> {
        let list_budget = free_memory / 4;
        let (scan, tile) = match dp {
            0..=128 => (Variant::D128, mips_scan_tile(128) as usize),
            129..=256 => (Variant::D256, mips_scan_tile(256) as usize),
            _ => {
                return Err(Error::bad_input(
                    OP,
                    "index",
                    format!("dimension {dp}: the kernels handle at most 256 (the CPU path any)"),
                ))
            }
        };
        let per_warp = MIPS_WARP_QUERIES as usize;
        let warps = q.div_ceil(per_warp).clamp(1, MIPS_MAX_WARPS as usize);
        let cap = 2 * k + 2 * tile;
        let per_slice = q.max(1) * cap * 16;
        // grid.y is at most 65535.
        let slices = slices
            .min(list_budget / per_slice)
            .min(n.div_ceil(tile))
            .clamp(1, 65535);
        let slice_len = n.div_ceil(slices).next_multiple_of(tile);
        let too_big = |what: &str| {
            Error::bad_input(OP, "k", format!("k = {k}: the kernels' {what} exceeds u32"))
        };
        Ok(KernelPlan {
            scan,
            threads: 32 * warps as u32,
            batches: q.div_ceil(per_warp * warps) as u32,
            slices: n.div_ceil(slice_len) as u32,
            slice_len: u32::try_from(slice_len).map_err(|_| too_big("slice"))?,
            cap: u32::try_from(cap).map_err(|_| too_big("list capacity"))?,
            p2: u32::try_from(k.next_power_of_two()).map_err(|_| too_big("sort size"))?,
        })
    }

    /// Entries of each candidate array (`[q, slices, cap]`).
    pub fn list_len(&self, q: usize) -> usize {
        q * self.slices as usize * self.cap as usize
    }
}

/// The shared thresholds' starting value: −inf as the kernels' ordered int.
fn theta_start() -> i32 {
    let i = f32::NEG_INFINITY.to_bits() as i32;
    if i >= 0 {
        i
    } else {
        i ^ 0x7fff_ffff
    }
}

/// The exact top `k` of `queries` (q ≥ 1) over `index` (`[n, dp]` f16, rows padded to the
/// queries' `dp`): `[q, k]` f64 scores and u32 ids, padded with (−inf, u32::MAX).
pub(super) fn search<B: Backend>(
    be: &B,
    index: &B::View<'_, f16>,
    n: usize,
    queries: &Queries,
    k: usize,
    plan: &KernelPlan,
) -> Result<(B::Buf<f64>, B::Buf<u32>)> {
    let q = queries.q;
    let qh = be.upload(&queries.rows_f16(), "mips_top_k queries")?;
    let margin = be.upload(&queries.margin, "mips_top_k error bounds")?;
    let exclude = be.upload(&queries.exclude, "mips_top_k exclusions")?;
    let mut theta = be.upload(&vec![theta_start(); q], "mips_top_k thresholds")?;
    let len = plan.list_len(q);
    let mut cand_ids = be.alloc::<u32>(len, "mips_top_k candidate ids")?;
    let mut cand_s32 = be.alloc::<f32>(len, "mips_top_k candidate scores")?;
    let mut cand_s64 = be.alloc::<f64>(len, "mips_top_k candidate exact scores")?;
    let mut cand_count = be.alloc::<u32>(q * plan.slices as usize, "mips_top_k list lengths")?;
    let (n32, d32, q32, k32) = (n as u32, queries.dp as u32, q as u32, k as u32);

    let mut b = be.binder();
    let scan = MipsScan {
        index: B::read(&mut b, index),
        n: n32,
        d: d32,
        queries: B::read_buf(&mut b, &qh),
        nq: q32,
        margin: B::read_buf(&mut b, &margin),
        exclude: B::read_buf(&mut b, &exclude),
        k: k32,
        slice_len: plan.slice_len,
        cap: plan.cap,
        cand_ids: B::write(&mut b, &mut cand_ids),
        cand_s32: B::write(&mut b, &mut cand_s32),
        cand_s64: B::write(&mut b, &mut cand_s64),
        cand_count: B::write(&mut b, &mut cand_count),
        theta_g: B::write(&mut b, &mut theta),
    };
    let shape = Launch::grid([plan.batches, plan.slices, 1], plan.threads);
    be.launch(b, plan.scan, shape, scan)?;

    let p2 = plan.p2 as usize;
    let mut sort_s = be.alloc::<f64>(q * p2, "mips_top_k sort scratch")?;
    let mut sort_id = be.alloc::<u32>(q * p2, "mips_top_k sort scratch")?;
    let mut out_s = be.alloc::<f64>(q * k, "mips_top_k scores")?;
    let mut out_id = be.alloc::<u32>(q * k, "mips_top_k ids")?;
    let mut b = be.binder();
    let merge = MipsMerge {
        index: B::read(&mut b, index),
        n: n32,
        d: d32,
        queries: B::read_buf(&mut b, &qh),
        exclude: B::read_buf(&mut b, &exclude),
        k: k32,
        slices: plan.slices,
        cap: plan.cap,
        cand_ids: B::read_buf(&mut b, &cand_ids),
        cand_s32: B::read_buf(&mut b, &cand_s32),
        cand_s64: B::write(&mut b, &mut cand_s64),
        cand_count: B::read_buf(&mut b, &cand_count),
        theta_g: B::read_buf(&mut b, &theta),
        p2: plan.p2,
        sort_s: B::write(&mut b, &mut sort_s),
        sort_id: B::write(&mut b, &mut sort_id),
        out_s: B::write(&mut b, &mut out_s),
        out_id: B::write(&mut b, &mut out_id),
    };
    be.launch(b, (), Launch::linear(q32, MIPS_MERGE_THREADS), merge)?;
    Ok((out_s, out_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_lists_fit_in_a_quarter_of_the_free_memory() {
        let (n, dp, q, k, wish) = (13_000_000, 128, 256, 64, 264);
        let roomy = KernelPlan::new(n, dp, q, k, wish, 100 << 30).unwrap();
        assert_eq!(roomy.slices as usize, wish);
        for free in [128usize << 20, 32 << 20, 8 << 20] {
            let plan = KernelPlan::new(n, dp, q, k, wish, free).unwrap();
            let bytes = plan.list_len(q) * 16;
            assert!(bytes <= free / 4, "{bytes} bytes of lists with {free} free");
            assert!(plan.slices < roomy.slices && plan.slices >= 1);
        }
        // Too little memory for even one list per query: one slice, the least there is.
        assert_eq!(KernelPlan::new(n, dp, q, k, wish, 0).unwrap().slices, 1);
    }
}
