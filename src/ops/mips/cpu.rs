//! The CPU implementation: one pass over the index, split into tiles that rayon workers take from
//! a shared counter. A tile (240 documents) is converted from f16 to f32 once (F16C where the CPU
//! has it) and scored against every query with a register-blocked micro-kernel (AVX2 + FMA when
//! available, a portable loop otherwise):
//! - 3 or more queries: 6 documents × 16 queries per call, queries in the vector lanes (a GEMM
//!   micro-kernel with the documents broadcast), compared with 16 thresholds in registers;
//! - 1 or 2 queries: 8 documents per call, each a dot product along d, reduced together.
//!
//! Scores at or above a query's threshold go to that query's candidate buffer (rare once the
//! threshold has risen). When a buffer reaches 2k + 64 entries, the k-th best f32 score t sets the
//! threshold t − 2E (E bounds the f32 error, see the module documentation) and everything below it
//! is dropped; if near-ties keep the buffer too full, the candidates are rescored in f64 and cut to
//! the exact top k. Workers also share thresholds: each publishes the ⌈k/W⌉-th best score of its
//! buffer, and the smallest of the W published values, less 2E, holds for all (together the
//! workers hold k documents at or above it), which tracks the k-th best of all documents seen.
//! At the end each query's candidates from all workers are rescored in f64 and the exact top k
//! sorted: the results are exactly the f64 reference's.

use super::{f32_down, result_order, write_sorted, Hits, Queries};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Documents per tile: a multiple of both panel heights (6 and 8); 240 × 128 f32 = 120 KB, which
/// stays in L2 while every query block passes over it.
const TILE: usize = 240;
/// Queries per register block of the lanes kernel (two 8-lane vectors).
const LANES: usize = 16;
/// Documents per lanes-kernel call: 6 × 2 accumulators + 2 query vectors + 1 broadcast fit the 16
/// AVX2 registers.
const MR: usize = 6;
/// Documents per dot-kernel call (one accumulator each, reduced together).
const DOT_ROWS: usize = 8;
/// Up to this many queries the dot kernel is used: query lanes would be mostly padding.
const DOT_MAX_QUERIES: usize = 2;
/// Candidates rescored together: two sets of eight, whose dependent f64 sums share vector lanes
/// and whose two chains of fused multiply-adds overlap.
const SCORE_ROWS: usize = 16;

/// A candidate seen by the scan: its f32 score and id.
#[derive(Clone, Copy)]
struct Cand {
    s32: f32,
    id: u32,
}

/// A lanes-kernel result: the `[MR][LANES]` scores and, per document, a bit per query whose
/// threshold the score reaches. Written only when some bit is set.
struct LanesOut {
    scores: [f32; MR * LANES],
    hits: [u16; MR],
}

/// Scores `MR` documents (rows of `docs`, stride `dp`, `d` used) against `LANES` queries (`qt`:
/// `[d][LANES]`) and compares them with the queries' thresholds (`theta`, `LANES` values);
/// returns whether any reached its threshold.
type LanesFn = unsafe fn(&[f32], usize, usize, &[f32], &[f32], &mut LanesOut) -> bool;
/// Scores `DOT_ROWS` documents (stride `dp`, zero-padded) against one query (`dp` values) into
/// `out`; returns a bit per document that reaches `theta` (`out` is written only when one does).
type DotFn = unsafe fn(&[f32], usize, &[f32], f32, &mut [f32; DOT_ROWS]) -> u8;
/// Widens f16 to f32 (`dst` at least as long as `src`).
type WidenFn = unsafe fn(&[f16], &mut [f32]);
/// The exact scores (as [`super::score_f64`]: f64, in order of the dimension) of `SCORE_ROWS`
/// documents of the `[n, d]` index against one query given in f64.
type ScoreFn = unsafe fn(&[f16], usize, &[u32; SCORE_ROWS], &[f64], &mut [f64; SCORE_ROWS]);

/// The micro-kernels for this CPU.
#[derive(Clone, Copy)]
struct Kernels {
    lanes: LanesFn,
    dot: DotFn,
    widen: WidenFn,
    score: ScoreFn,
}

impl Kernels {
    /// The best this CPU has, unless `REALM_CPU_SIMD=portable` ([`crate::ops::cpu_simd`]).
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::cpu_simd() == crate::ops::CpuSimd::Auto
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Kernels {
                lanes: x86::lanes,
                dot: x86::dot,
                widen: x86::widen,
                score: x86::score,
            };
        }
        Kernels {
            lanes: lanes_portable,
            dot: dot_portable,
            widen: widen_portable,
            score: score_portable,
        }
    }
}

fn check_lanes_args(docs: &[f32], dp: usize, d: usize, qt: &[f32], theta: &[f32]) {
    assert!(
        d <= dp && docs.len() >= (MR - 1) * dp + d && qt.len() >= d * LANES && theta.len() >= LANES
    );
}

fn check_dot_args(docs: &[f32], dp: usize, q: &[f32]) {
    assert!(dp.is_multiple_of(8) && docs.len() >= DOT_ROWS * dp && q.len() >= dp);
}

fn lanes_portable(
    docs: &[f32],
    dp: usize,
    d: usize,
    qt: &[f32],
    theta: &[f32],
    out: &mut LanesOut,
) -> bool {
    check_lanes_args(docs, dp, d, qt, theta);
    let mut acc = [[0.0f32; LANES]; MR];
    for (i, qv) in qt.chunks_exact(LANES).take(d).enumerate() {
        for (r, a) in acc.iter_mut().enumerate() {
            let x = docs[r * dp + i];
            for (al, ql) in a.iter_mut().zip(qv) {
                *al += x * ql;
            }
        }
    }
    let mut any = false;
    for ((a, o), h) in acc
        .iter()
        .zip(out.scores.chunks_exact_mut(LANES))
        .zip(&mut out.hits)
    {
        *h = a
            .iter()
            .zip(theta)
            .enumerate()
            .fold(0, |m, (l, (s, t))| m | (u16::from(s >= t) << l));
        any |= *h != 0;
        o.copy_from_slice(a);
    }
    any
}

fn dot_portable(docs: &[f32], dp: usize, q: &[f32], theta: f32, out: &mut [f32; DOT_ROWS]) -> u8 {
    check_dot_args(docs, dp, q);
    let mut hits = 0;
    for (r, (o, row)) in out.iter_mut().zip(docs.chunks_exact(dp)).enumerate() {
        *o = crate::ops::math::dot(row, &q[..dp]);
        hits |= u8::from(*o >= theta) << r;
    }
    hits
}

fn widen_portable(src: &[f16], dst: &mut [f32]) {
    src.convert_to_f32_slice(&mut dst[..src.len()]);
}

fn check_score_args(index: &[f16], d: usize, ids: &[u32; SCORE_ROWS], q: &[f64]) {
    assert!(q.len() == d && ids.iter().all(|&id| (id as usize + 1) * d <= index.len()));
}

fn score_portable(
    index: &[f16],
    d: usize,
    ids: &[u32; SCORE_ROWS],
    q: &[f64],
    out: &mut [f64; SCORE_ROWS],
) {
    check_score_args(index, d, ids, q);
    for (o, &id) in out.iter_mut().zip(ids) {
        let row = &index[id as usize * d..(id as usize + 1) * d];
        *o = row
            .iter()
            .zip(q)
            .fold(0.0f64, |s, (x, &qv)| s + x.to_f64() * qv)
            + 0.0;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{
        check_dot_args, check_lanes_args, check_score_args, LanesOut, DOT_ROWS, LANES, MR,
        SCORE_ROWS,
    };
    use half::f16;
    use std::arch::x86_64::*;

    /// The lanes kernel with AVX2 + FMA. Safety: the CPU has both.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lanes(
        docs: &[f32],
        dp: usize,
        d: usize,
        qt: &[f32],
        theta: &[f32],
        out: &mut LanesOut,
    ) -> bool {
        check_lanes_args(docs, dp, d, qt, theta);
        let (x, q) = (docs.as_ptr(), qt.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for i in 0..d {
            // In bounds: i < d, checked above.
            let qa = _mm256_loadu_ps(q.add(i * LANES));
            let qb = _mm256_loadu_ps(q.add(i * LANES + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*x.add(r * dp + i));
                a[0] = _mm256_fmadd_ps(b, qa, a[0]);
                a[1] = _mm256_fmadd_ps(b, qb, a[1]);
            }
        }
        let ta = _mm256_loadu_ps(theta.as_ptr());
        let tb = _mm256_loadu_ps(theta.as_ptr().add(8));
        let mut hits = [0u16; MR];
        for (h, a) in hits.iter_mut().zip(&acc) {
            let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a[0], ta));
            let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a[1], tb));
            *h = (lo | hi << 8) as u16;
        }
        if hits == [0; MR] {
            return false;
        }
        out.hits = hits;
        let o = out.scores.as_mut_ptr();
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(r * LANES), a[0]);
            _mm256_storeu_ps(o.add(r * LANES + 8), a[1]);
        }
        true
    }

    /// The dot kernel with AVX2 + FMA. Safety: the CPU has both.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(
        docs: &[f32],
        dp: usize,
        q: &[f32],
        theta: f32,
        out: &mut [f32; DOT_ROWS],
    ) -> u8 {
        check_dot_args(docs, dp, q);
        let (x, qp) = (docs.as_ptr(), q.as_ptr());
        let mut acc = [_mm256_setzero_ps(); DOT_ROWS];
        for c in (0..dp).step_by(8) {
            let qv = _mm256_loadu_ps(qp.add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(r * dp + c)), qv, *a);
            }
        }
        // A transposing reduction: lane r of `s` is row r's sum.
        let h01 = _mm256_hadd_ps(acc[0], acc[1]);
        let h23 = _mm256_hadd_ps(acc[2], acc[3]);
        let h45 = _mm256_hadd_ps(acc[4], acc[5]);
        let h67 = _mm256_hadd_ps(acc[6], acc[7]);
        let h0123 = _mm256_hadd_ps(h01, h23);
        let h4567 = _mm256_hadd_ps(h45, h67);
        let s = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(h0123, h4567),
            _mm256_permute2f128_ps::<0x31>(h0123, h4567),
        );
        let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(s, _mm256_set1_ps(theta)));
        if hits != 0 {
            _mm256_storeu_ps(out.as_mut_ptr(), s);
        }
        hits as u8
    }

    /// The exact scores of 16 documents, as two sets of 8: each set's rows widened 8 dimensions
    /// at a time and transposed (8 × 8 in registers), so that each dimension is one vector of the
    /// 8 documents' values; the sums then advance one dimension at a time, in order, in f64. A
    /// fused multiply-add is exact here: the product of two f16 values is exact in f64. Safety:
    /// AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn score(
        index: &[f16],
        d: usize,
        ids: &[u32; SCORE_ROWS],
        q: &[f64],
        out: &mut [f64; SCORE_ROWS],
    ) {
        check_score_args(index, d, ids, q);
        let rows = ids.map(|id| index.as_ptr().add(id as usize * d));
        // [set][low 4 documents, high 4]
        let mut acc = [[_mm256_setzero_pd(); 2]; 2];
        let body = d / 8 * 8;
        for c in (0..body).step_by(8) {
            for (set, acc) in acc.iter_mut().enumerate() {
                let mut r = [_mm256_setzero_ps(); 8];
                for (j, r) in r.iter_mut().enumerate() {
                    *r = _mm256_cvtph_ps(_mm_loadu_si128(rows[8 * set + j].add(c).cast()));
                }
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
                // Column i: dimension c + i of the 8 documents.
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, col) in cols.iter().enumerate() {
                    let qv = _mm256_set1_pd(*q.get_unchecked(c + i));
                    let (lo, hi) = (
                        _mm256_castps256_ps128(*col),
                        _mm256_extractf128_ps::<1>(*col),
                    );
                    acc[0] = _mm256_fmadd_pd(_mm256_cvtps_pd(lo), qv, acc[0]);
                    acc[1] = _mm256_fmadd_pd(_mm256_cvtps_pd(hi), qv, acc[1]);
                }
            }
        }
        for (set, acc) in acc.iter().enumerate() {
            _mm256_storeu_pd(out.as_mut_ptr().add(8 * set), acc[0]);
            _mm256_storeu_pd(out.as_mut_ptr().add(8 * set + 4), acc[1]);
        }
        // The last d mod 8 dimensions, in order, then −0 made +0.
        for (o, p) in out.iter_mut().zip(rows) {
            for (i, &qv) in q.iter().enumerate().skip(body) {
                *o += (*p.add(i)).to_f64() * qv;
            }
            *o += 0.0;
        }
    }

    /// f16 → f32 with F16C, 8 at a time. Safety: the CPU has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        assert!(dst.len() >= src.len());
        let body = src.len() / 8 * 8;
        for c in (0..body).step_by(8) {
            let h = _mm_loadu_si128(src.as_ptr().add(c).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(c), _mm256_cvtph_ps(h));
        }
        for (d, s) in dst[body..].iter_mut().zip(&src[body..]) {
            *d = s.to_f32();
        }
    }
}

/// Asks the CPU to bring the cache lines of `bytes` bytes at `p` into cache; a hint that never
/// faults, whatever the address.
#[inline(always)]
fn prefetch(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes).step_by(64) {
        // SAFETY: prefetching has no architectural effect and cannot fault.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// What every worker shares: the index, the prepared queries and the kernels.
struct Ctx<'a> {
    index: &'a [f16],
    n: usize,
    d: usize,
    dp: usize,
    queries: &'a Queries,
    k: usize,
    /// Candidate buffer size that triggers a compaction.
    cap: usize,
    /// Lanes form: the queries as `[block][d][LANES]`, zero-padded; empty for the dot form.
    qt: Vec<f32>,
    blocks: usize,
    kernels: Kernels,
    /// The queries' values in f64, `[q, d]`, for exact rescoring.
    queries_f64: Vec<f64>,
    /// Number of workers, and per (query, worker) the ⌈k/W⌉-th best f32 score that worker has held
    /// (as [`score_key`]; 0 = nothing yet).
    workers: usize,
    shared: Vec<AtomicU32>,
}

impl<'a> Ctx<'a> {
    fn new(
        index: &'a [f16],
        n: usize,
        d: usize,
        queries: &'a Queries,
        k: usize,
        workers: usize,
    ) -> Self {
        let q = queries.q;
        let blocks = if q <= DOT_MAX_QUERIES {
            0
        } else {
            q.div_ceil(LANES)
        };
        let mut qt = vec![0.0f32; blocks * d * LANES];
        if blocks > 0 {
            for qi in 0..q {
                let (b, l) = (qi / LANES, qi % LANES);
                for (i, &v) in queries.row(qi).iter().enumerate() {
                    qt[(b * d + i) * LANES + l] = v;
                }
            }
        }
        Ctx {
            index,
            n,
            d,
            dp: queries.dp,
            queries,
            k,
            cap: 2 * k + 64,
            qt,
            blocks,
            kernels: Kernels::detect(),
            queries_f64: (0..q)
                .flat_map(|qi| queries.row(qi).iter().map(|&v| v as f64))
                .collect(),
            workers,
            shared: (0..q * workers).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The threshold all workers' published scores give query `qi`, if all have published.
    fn shared_theta(&self, qi: usize) -> Option<f32> {
        let published = &self.shared[qi * self.workers..(qi + 1) * self.workers];
        let least = published.iter().map(|a| a.load(Ordering::Relaxed)).min()?;
        (least != 0)
            .then(|| f32_down(from_score_key(least) as f64 - 2.0 * self.queries.margin[qi] as f64))
    }

    /// The exact scores of documents `ids` for query `qi`, eight at a time (rows fetched ahead:
    /// candidates are scattered over the index).
    fn scores(&self, qi: usize, ids: &[u32]) -> Vec<f64> {
        const AHEAD: usize = 4;
        let d = self.d;
        let q = &self.queries_f64[qi * d..(qi + 1) * d];
        let mut out = Vec::with_capacity(ids.len() + SCORE_ROWS);
        let mut sums = [0.0f64; SCORE_ROWS];
        for (g, group) in ids.chunks(SCORE_ROWS).enumerate() {
            for &id in ids.iter().skip((g + AHEAD) * SCORE_ROWS).take(SCORE_ROWS) {
                prefetch(self.index[id as usize * d..].as_ptr().cast(), 2 * d);
            }
            // A short last group repeats its last id; the extra sums are dropped.
            let mut rows = [group[group.len() - 1]; SCORE_ROWS];
            rows[..group.len()].copy_from_slice(group);
            // SAFETY: `Kernels::detect` chose kernels this CPU runs; they check the ids.
            unsafe { (self.kernels.score)(self.index, d, &rows, q, &mut sums) };
            out.extend_from_slice(&sums[..group.len()]);
        }
        out
    }
}

/// An f32 score as an integer with the same order (nonzero for every finite score).
fn score_key(s: f32) -> u32 {
    let b = s.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

fn from_score_key(key: u32) -> f32 {
    f32::from_bits(if key >> 31 == 1 {
        key & !(1 << 31)
    } else {
        !key
    })
}

/// Keeps the candidates that can still reach the k-th best (k ≤ `c.len()`): t, the k-th best f32
/// score, bounds the final k-th best f64 score from below by t − E, and a candidate below t − 2E
/// in f32 is below t − E in f64. Returns the threshold t − 2E (rounded down).
fn margin_filter(c: &mut Vec<Cand>, k: usize, margin: f64) -> f32 {
    c.select_nth_unstable_by_key(k - 1, |x| !score_key(x.s32));
    let theta = f32_down(c[k - 1].s32 as f64 - 2.0 * margin);
    c.retain(|x| x.s32 >= theta);
    theta
}

/// One rayon worker's state: its tile buffer and, per query, a threshold and candidates.
struct Worker<'a> {
    ctx: &'a Ctx<'a>,
    /// This worker's number, 0..W.
    w: usize,
    tile: Vec<f32>,
    /// Per query (padded to whole lane blocks with +inf, which no score reaches).
    theta: Vec<f32>,
    cands: Vec<Vec<Cand>>,
    out: LanesOut,
    /// Lanes form: the next tile's f16 bytes not yet prefetched, and how many 64-byte lines to
    /// prefetch per kernel call so that the whole tile arrives while this one is computed.
    ahead: std::ops::Range<usize>,
    lines_per_call: usize,
}

impl<'a> Worker<'a> {
    fn new(ctx: &'a Ctx<'a>, w: usize) -> Self {
        let q = ctx.queries.q;
        let mut theta = vec![f32::INFINITY; q.max(ctx.blocks * LANES)];
        theta[..q].fill(f32::NEG_INFINITY);
        Worker {
            ctx,
            w,
            tile: vec![0.0; TILE * ctx.dp],
            theta,
            cands: vec![Vec::new(); q],
            out: LanesOut {
                scores: [0.0; MR * LANES],
                hits: [0; MR],
            },
            ahead: 0..0,
            lines_per_call: 0,
        }
    }

    fn run(&mut self, next: &AtomicUsize) {
        let ctx = self.ctx;
        let claim = || Some(next.fetch_add(1, Ordering::Relaxed) * TILE).filter(|&s| s < ctx.n);
        let mut current = claim();
        while let Some(start) = current {
            let end = (start + TILE).min(ctx.n);
            // Claim the next tile now, so that it can stream in from memory during this one.
            current = claim();
            self.load(start, end);
            if ctx.blocks == 0 {
                // Memory-bound: the hardware prefetcher streams the index better unaided
                // (software prefetches measured 12% slower at one query).
                self.scan_dot(start, end);
            } else {
                // Compute-bound: the next tile is prefetched a slice per kernel call.
                self.ahead =
                    current.map_or(0..0, |s| 2 * s * ctx.d..2 * (s + TILE).min(ctx.n) * ctx.d);
                let calls = (end - start).div_ceil(MR) * ctx.blocks;
                self.lines_per_call = self.ahead.len().div_ceil(64).div_ceil(calls);
                self.scan_lanes(start, end);
            }
            for qi in 0..ctx.queries.q {
                if let Some(t) = ctx.shared_theta(qi) {
                    self.theta[qi] = self.theta[qi].max(t);
                }
            }
        }
    }

    /// Prefetches the next slice of the next tile.
    #[inline]
    fn prefetch_ahead(&mut self) {
        let bytes = (64 * self.lines_per_call).min(self.ahead.len());
        if bytes > 0 {
            let base: *const u8 = self.ctx.index.as_ptr().cast();
            prefetch(base.wrapping_add(self.ahead.start), bytes);
            self.ahead.start += bytes;
        }
    }

    /// Converts documents `[start, end)` to f32 rows of stride dp; padding stays zero.
    fn load(&mut self, start: usize, end: usize) {
        let Ctx { d, dp, .. } = *self.ctx;
        let rows = end - start;
        let src = &self.ctx.index[start * d..end * d];
        let widen = self.ctx.kernels.widen;
        // SAFETY: `Kernels::detect` chose kernels this CPU runs.
        if d == dp {
            unsafe { widen(src, &mut self.tile) };
        } else {
            for (s, t) in src.chunks_exact(d).zip(self.tile.chunks_exact_mut(dp)) {
                unsafe { widen(s, t) };
            }
        }
        self.tile[rows * dp..].fill(0.0);
    }

    fn scan_lanes(&mut self, start: usize, end: usize) {
        let ctx = self.ctx;
        let (d, dp) = (ctx.d, ctx.dp);
        let panels = (end - start).div_ceil(MR);
        for b in 0..ctx.blocks {
            let qt = &ctx.qt[b * d * LANES..(b + 1) * d * LANES];
            for p in 0..panels {
                self.prefetch_ahead();
                // SAFETY: `Kernels::detect` chose kernels this CPU runs; they check their slices.
                let hit = unsafe {
                    (ctx.kernels.lanes)(
                        &self.tile[p * MR * dp..],
                        dp,
                        d,
                        qt,
                        &self.theta[b * LANES..(b + 1) * LANES],
                        &mut self.out,
                    )
                };
                if !hit {
                    continue;
                }
                let doc0 = start + p * MR;
                for r in 0..MR.min(end - doc0) {
                    let mut bits = self.out.hits[r];
                    while bits != 0 {
                        let l = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        let (qi, s) = (b * LANES + l, self.out.scores[r * LANES + l]);
                        // Padding lanes never hit (+inf thresholds); a compaction may have
                        // raised the threshold since the kernel compared.
                        if s >= self.theta[qi] {
                            self.offer(qi, s, doc0 + r);
                        }
                    }
                }
            }
        }
    }

    fn scan_dot(&mut self, start: usize, end: usize) {
        let ctx = self.ctx;
        let dp = ctx.dp;
        let panels = (end - start).div_ceil(DOT_ROWS);
        let mut out = [0.0f32; DOT_ROWS];
        for p in 0..panels {
            for qi in 0..ctx.queries.q {
                let row = &ctx.queries.rows[qi * dp..(qi + 1) * dp];
                // SAFETY: as in `scan_lanes`.
                let hits = unsafe {
                    (ctx.kernels.dot)(
                        &self.tile[p * DOT_ROWS * dp..],
                        dp,
                        row,
                        self.theta[qi],
                        &mut out,
                    )
                };
                let doc0 = start + p * DOT_ROWS;
                let mut bits = hits;
                while bits != 0 {
                    let r = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if doc0 + r < end && out[r] >= self.theta[qi] {
                        self.offer(qi, out[r], doc0 + r);
                    }
                }
            }
        }
    }

    /// Adds a document that reached query `qi`'s threshold, unless it is the excluded one.
    fn offer(&mut self, qi: usize, s32: f32, id: usize) {
        let id = id as u32;
        if id == self.ctx.queries.exclude[qi] {
            return;
        }
        let c = &mut self.cands[qi];
        c.push(Cand { s32, id });
        if c.len() >= self.ctx.cap {
            self.compact(qi);
        }
    }

    /// Shrinks a full buffer and raises the query's threshold.
    fn compact(&mut self, qi: usize) {
        let ctx = self.ctx;
        let k = ctx.k;
        let margin = ctx.queries.margin[qi] as f64;
        let c = &mut self.cands[qi];
        let mut theta = margin_filter(c, k, margin).max(self.theta[qi]);
        if c.len() > (ctx.cap + k) / 2 {
            // Near-ties that f32 cannot separate (duplicate documents): keep the exact top k. A
            // document below (k-th best f64 score − E) in f32 is below that k-th best in f64.
            let ids: Vec<u32> = c.iter().map(|x| x.id).collect();
            let mut exact: Vec<((f64, u32), f32)> = ctx
                .scores(qi, &ids)
                .into_iter()
                .zip(c.iter())
                .map(|(s, x)| ((s, x.id), x.s32))
                .collect();
            exact.select_nth_unstable_by(k - 1, |a, b| result_order(&a.0, &b.0));
            theta = theta.max(f32_down(exact[k - 1].0 .0 - margin));
            c.clear();
            c.extend(exact[..k].iter().map(|&((_, id), s32)| Cand { s32, id }));
        }
        // c[..k] holds this worker's best k: publish its ⌈k/W⌉-th best.
        let share = k.div_ceil(ctx.workers);
        c[..k].select_nth_unstable_by_key(share - 1, |x| !score_key(x.s32));
        ctx.shared[qi * ctx.workers + self.w]
            .fetch_max(score_key(c[share - 1].s32), Ordering::Relaxed);
        if let Some(t) = ctx.shared_theta(qi) {
            theta = theta.max(t);
        }
        self.theta[qi] = theta;
    }
}

/// The exact top k of each query over `index` (`[n, d]` f16): see the module documentation.
pub(super) fn search(index: &[f16], n: usize, d: usize, queries: &Queries, k: usize) -> Hits {
    let q = queries.q;
    let mut hits = Hits {
        k,
        scores: vec![f64::NEG_INFINITY; q * k],
        ids: vec![u32::MAX; q * k],
    };
    if q == 0 {
        return hits;
    }
    let count = rayon::current_num_threads().min(n.div_ceil(TILE));
    let ctx = Ctx::new(index, n, d, queries, k, count);
    let next = AtomicUsize::new(0);
    let workers: Vec<Worker> = (0..count)
        .into_par_iter()
        .map(|w| {
            let mut worker = Worker::new(&ctx, w);
            worker.run(&next);
            worker
        })
        .collect();
    hits.scores
        .par_chunks_mut(k)
        .zip(hits.ids.par_chunks_mut(k))
        .enumerate()
        .for_each(|(qi, (scores, ids))| {
            let mut all: Vec<Cand> = workers
                .iter()
                .flat_map(|w| w.cands[qi].iter().copied())
                .collect();
            let kq = k.min(queries.available(qi, n));
            if all.len() > kq && kq > 0 {
                margin_filter(&mut all, kq, queries.margin[qi] as f64);
            }
            let cand_ids: Vec<u32> = all.iter().map(|c| c.id).collect();
            let exact = ctx
                .scores(qi, &cand_ids)
                .into_iter()
                .zip(cand_ids)
                .collect();
            write_sorted(exact, scores, ids);
        });
    hits
}
