//! The CPU attention: blocked flash attention in f32, multi-threaded with rayon, every product a
//! register-blocked micro-kernel (`tile.rs`; AVX2/FMA when the processor has it, the whole task
//! compiled for it).
//!
//! Tiles are stored key-major: `Sᵀ[j, i] = k_j · (scale q_i)` for a block of keys j (rows) and
//! of queries i (columns). Both products of a score tile then read K, V and their gradients as
//! plain row-major matrices (no transposes of K or V, which is where the time would go), the
//! softmax statistics of the queries are a row vector that updates as whole vectors, and the tile
//! is read transposed by the strided micro-kernel where a product needs P or dS query-major.
//!
//! - Forward: one task per (batch·head, block of BQ queries), looping over key blocks of BK with
//!   the online softmax (running max and sum per query, output rescaled when the max grows).
//! - Backward: one task per batch·head (or per group of key blocks when there are fewer heads than
//!   threads), key blocks outside and query blocks inside; dk and dv of a key block accumulate in
//!   L1-sized buffers, dq in one f32 buffer per task, summed in group order when a head is split,
//!   so the result is deterministic.
//! - Only keys and queries below the entry's length are visited; the rest of the outputs stay 0.

use super::prob_dropout::Mask;
use super::tile::{gemm, run, transpose, Isa, Strided, Task, Tiles, NR};
use super::Params;
use crate::ops::elem::{widened, Elem};
use crate::rng::PHILOX_LANES;
use rayon::prelude::*;

/// Queries per tile (columns of a score tile): a multiple of `NR` and of the micro-kernel's rows.
const BQ: usize = 48;
/// Keys per tile (rows of a score tile): a multiple of 4, the dropout draws per counter.
const BK: usize = 48;
// The dropout's runs of PHILOX_LANES columns tile the padded widths (multiples of NR).
const _: () = assert!(NR.is_multiple_of(PHILOX_LANES) && BQ.is_multiple_of(NR));

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Resizes `buf` to `len` copies of `value`.
fn reset(buf: &mut Vec<f32>, len: usize, value: f32) {
    buf.clear();
    buf.resize(len, value);
}

/// Calls `f(j, i, multipliers)` for every row j (key j0 + j) of a tile with `nk` keys and every
/// run of PHILOX_LANES columns from i (queries q0 + i ..) below `nqp`, the padded width: columns
/// past the tile's queries get draws too, and their values are never read. `j0` is a multiple of
/// 4, so each counter's four draws cover four keys.
#[inline(always)]
fn for_each_multiplier<K: Tiles>(
    mask: &Mask,
    bh: usize,
    (q0, nqp): (usize, usize),
    (j0, nk): (usize, usize),
    mut f: impl FnMut(usize, usize, &[f32; PHILOX_LANES]),
) {
    for j in (0..nk).step_by(4) {
        let group = ((j0 + j) / 4) as u32;
        for i in (0..nqp).step_by(PHILOX_LANES) {
            let m = mask.multiplier_lanes(bh as u32, (q0 + i) as u32, group, K::AVX2);
            for (r, m) in m.iter().enumerate().take(nk - j) {
                f(j + r, i, m);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

/// Per-thread work buffers of the forward.
#[derive(Default)]
struct FwdScratch {
    /// scale · q of the block `[nq, dh]`, and transposed `[dh, BQ]` (zero past nq).
    qs: Vec<f32>,
    qt: Vec<f32>,
    /// The score / probability tile `[BK, BQ]`.
    st: Vec<f32>,
    /// Output accumulator `[BQ, dh]`.
    acc: Vec<f32>,
    /// Per query: running max and sum, the block's max, the rescale factor, the block's sum.
    max: Vec<f32>,
    sum: Vec<f32>,
    new_max: Vec<f32>,
    alpha: Vec<f32>,
    col_sum: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
}

/// Queries `q0 .. q0 + nq` of head `bh` (all below the entry's length).
struct FwdTask<'a, T> {
    p: &'a Params,
    bh: usize,
    q0: usize,
    /// This head's q, k, v (`[l, dh]` each).
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    /// The task's output rows and their log-sum-exp.
    out: &'a mut [T],
    lse: &'a mut [f32],
    s: &'a mut FwdScratch,
}

/// `(out [b, h, l, dh], lse [b, h, l])`.
pub(super) fn forward<T: Elem>(p: &Params, q: &[T], k: &[T], v: &[T]) -> (Vec<T>, Vec<f32>) {
    let head = p.l * p.dh;
    let mut out = vec![T::from_f32(0.0); p.b * p.h * head];
    let mut lse = vec![f32::NEG_INFINITY; p.b * p.h * p.l];
    let mut blocks = Vec::new();
    for (bh, (o, ls)) in out.chunks_mut(head).zip(lse.chunks_mut(p.l)).enumerate() {
        let len = p.len_of(bh);
        let rows = o[..len * p.dh]
            .chunks_mut(BQ * p.dh)
            .zip(ls[..len].chunks_mut(BQ));
        blocks.extend(rows.enumerate().map(|(i, (o, ls))| (bh, i * BQ, o, ls)));
    }
    let isa = Isa::detect();
    blocks
        .into_par_iter()
        .for_each_init(FwdScratch::default, |s, (bh, q0, out, lse)| {
            let range = bh * head..(bh + 1) * head;
            let (q, k, v) = (&q[range.clone()], &k[range.clone()], &v[range]);
            run(
                isa,
                FwdTask {
                    p,
                    bh,
                    q0,
                    q,
                    k,
                    v,
                    out,
                    lse,
                    s,
                },
            );
        });
    (out, lse)
}

impl<T: Elem> Task for FwdTask<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<K: Tiles>(self, kernel: K) {
        let FwdTask {
            p,
            bh,
            q0,
            q,
            k,
            v,
            out,
            lse,
            s,
        } = self;
        let dh = p.dh;
        let nq = lse.len();
        let nqp = round_up(nq, NR);
        let len = p.len_of(bh);

        s.qs.clear();
        s.qs.extend(
            q[q0 * dh..(q0 + nq) * dh]
                .iter()
                .map(|x| x.to_f32() * p.scale),
        );
        reset(&mut s.qt, dh * BQ, 0.0);
        transpose(kernel, (nq, dh), &s.qs, dh, &mut s.qt, BQ);
        s.st.resize(BK * BQ, 0.0);
        reset(&mut s.acc, BQ * dh, 0.0);
        reset(&mut s.max, BQ, f32::NEG_INFINITY);
        reset(&mut s.sum, BQ, 0.0);
        for buf in [&mut s.new_max, &mut s.alpha, &mut s.col_sum] {
            buf.resize(BQ, 0.0);
        }

        for j0 in (0..len).step_by(BK) {
            let nk = BK.min(len - j0);
            let kj = widened(&k[j0 * dh..(j0 + nk) * dh], &mut s.kbuf);
            let vj = widened(&v[j0 * dh..(j0 + nk) * dh], &mut s.vbuf);
            let st = &mut s.st[..nk * BQ];
            gemm(
                kernel,
                (nk, nqp, dh),
                Strided::rows(kj, dh),
                &s.qt,
                BQ,
                st,
                BQ,
                false,
            );

            let new_max = &mut s.new_max[..nqp];
            new_max.copy_from_slice(&s.max[..nqp]);
            for row in st.chunks_exact(BQ) {
                for (m, x) in new_max.iter_mut().zip(&row[..nqp]) {
                    *m = m.max(*x);
                }
            }
            let stats = s.alpha[..nqp]
                .iter_mut()
                .zip(&mut s.max[..nqp])
                .zip(&*new_max);
            for ((a, m), nm) in stats {
                *a = kernel.exp(*m - nm);
                *m = *nm;
            }
            let col_sum = &mut s.col_sum[..nqp];
            col_sum.fill(0.0);
            for row in st.chunks_exact_mut(BQ) {
                for ((x, m), c) in row[..nqp].iter_mut().zip(&*new_max).zip(col_sum.iter_mut()) {
                    *x = kernel.exp(*x - m);
                    *c += *x;
                }
            }
            for ((sum, a), c) in s.sum[..nqp].iter_mut().zip(&s.alpha[..nqp]).zip(&*col_sum) {
                *sum = *sum * a + c;
            }
            if let Some(mask) = &p.mask {
                for_each_multiplier::<K>(mask, bh, (q0, nqp), (j0, nk), |j, i, m| {
                    for (x, m) in st[j * BQ + i..][..PHILOX_LANES].iter_mut().zip(m) {
                        *x *= m;
                    }
                });
            }
            for (row, a) in s.acc.chunks_exact_mut(dh).zip(&s.alpha[..nq]) {
                for x in row {
                    *x *= a;
                }
            }
            let p_t = Strided::transposed(st, BQ);
            gemm(kernel, (nq, dh, nk), p_t, vj, dh, &mut s.acc, dh, true);
        }

        let rows = out.chunks_exact_mut(dh).zip(s.acc.chunks_exact(dh));
        for (((o, acc), lse), (&sum, &max)) in rows.zip(lse).zip(s.sum.iter().zip(&s.max)) {
            for (o, a) in o.iter_mut().zip(acc) {
                *o = T::from_f32(a / sum);
            }
            *lse = max + sum.ln();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

/// What every key block of a head reads: the head's queries and incoming gradient in both
/// layouts, and the per-query statistics, all in f32 (`lp` = the length rounded up to `NR`).
#[derive(Default)]
struct BwdHead {
    /// scale · q `[len, dh]` and its transpose `[dh, lp]` (zero past len).
    qs: Vec<f32>,
    qt: Vec<f32>,
    /// The incoming gradient `[len, dh]` and its transpose `[dh, lp]`.
    dout: Vec<f32>,
    dot: Vec<f32>,
    /// D_i = Σ_d dout[i, d] · out[i, d] (0 past len) and the log-sum-exp (+∞ past len, so that
    /// the padding's probabilities are 0).
    delta: Vec<f32>,
    lse: Vec<f32>,
    /// The output and its transpose `[dh, lp]` (for delta).
    obuf: Vec<f32>,
    ot: Vec<f32>,
}

/// Per-task buffers of a group of key blocks.
#[derive(Default)]
struct BwdScratch {
    /// Pᵀ and dPᵀ → dSᵀ tiles `[BK, BQ]`.
    pt: Vec<f32>,
    dst: Vec<f32>,
    /// dk and dv of the current key block `[BK, dh]`.
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// The group's dq (unscaled) `[len, dh]`.
    dq: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
}

/// One head's tensors, each `[l, dh]`.
struct HeadIn<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    out: &'a [T],
    grad: &'a [T],
}

/// Parallel tasks the backward aims for (enough for the cores of a large CPU).
const BWD_TASKS: usize = 64;

/// The gradients `[3, b, h, l, dh]` (dq, dk, dv) from `[q, k, v, out, grad]` and the forward's
/// log-sum-exp.
pub(super) fn backward<T: Elem>(p: &Params, inputs: [&[T]; 5], lse: &[f32]) -> Vec<T> {
    let head = p.l * p.dh;
    let n = p.b * p.h * head;
    let mut grads = vec![T::from_f32(0.0); 3 * n];
    let (dq, rest) = grads.split_at_mut(n);
    let (dk, dv) = rest.split_at_mut(n);
    // Split a head's key blocks into groups only when there are too few heads for the parallel
    // tasks wanted; each group then has its own dq, summed afterwards in group order. The split
    // depends on the shape alone, not on the thread count, so neither does the result.
    let key_blocks = p.l.div_ceil(BK);
    let groups = BWD_TASKS.div_ceil(p.b * p.h).clamp(1, key_blocks);
    let blocks_per_group = key_blocks.div_ceil(groups);
    let isa = Isa::detect();
    let [q, k, v, o, g] = inputs;
    dq.par_chunks_mut(head)
        .zip(dk.par_chunks_mut(head))
        .zip(dv.par_chunks_mut(head))
        .enumerate()
        .for_each_init(
            || (BwdHead::default(), BwdScratch::default()),
            |(hd, s), (bh, ((dq, dk), dv))| {
                let len = p.len_of(bh);
                if len == 0 {
                    return;
                }
                let range = bh * head..(bh + 1) * head;
                let x = HeadIn {
                    q: &q[range.clone()],
                    k: &k[range.clone()],
                    v: &v[range.clone()],
                    out: &o[range.clone()],
                    grad: &g[range],
                };
                let lse = &lse[bh * p.l..][..len];
                run(isa, Prepare { p, x: &x, lse, hd });
                let (dk, dv) = (&mut dk[..len * p.dh], &mut dv[..len * p.dh]);
                if groups == 1 {
                    run(
                        isa,
                        Group {
                            p,
                            bh,
                            j0: 0,
                            x: &x,
                            hd,
                            dk,
                            dv,
                            s,
                        },
                    );
                    finish_dq(p, &s.dq, dq);
                    return;
                }
                let rows = blocks_per_group * BK * p.dh;
                let groups: Vec<_> = dk.chunks_mut(rows).zip(dv.chunks_mut(rows)).collect();
                let hd = &*hd;
                let partial: Vec<Vec<f32>> = groups
                    .into_par_iter()
                    .enumerate()
                    .map(|(grp, (dk, dv))| {
                        let mut s = BwdScratch::default();
                        let j0 = grp * blocks_per_group * BK;
                        run(
                            isa,
                            Group {
                                p,
                                bh,
                                j0,
                                x: &x,
                                hd,
                                dk,
                                dv,
                                s: &mut s,
                            },
                        );
                        s.dq
                    })
                    .collect();
                let mut sum = partial[0].clone();
                for part in &partial[1..] {
                    for (a, b) in sum.iter_mut().zip(part) {
                        *a += b;
                    }
                }
                finish_dq(p, &sum, dq);
            },
        );
    grads
}

/// dq = scale · Σ_j dS_ij k_j, into the head's first `len` rows.
fn finish_dq<T: Elem>(p: &Params, acc: &[f32], dq: &mut [T]) {
    for (d, a) in dq.iter_mut().zip(acc) {
        *d = T::from_f32(a * p.scale);
    }
}

/// Fills a head's [`BwdHead`] from its tensors and the log-sum-exp of its `len` valid rows.
struct Prepare<'a, T> {
    p: &'a Params,
    x: &'a HeadIn<'a, T>,
    lse: &'a [f32],
    hd: &'a mut BwdHead,
}

impl<T: Elem> Task for Prepare<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<K: Tiles>(self, kernel: K) {
        let Prepare { p, x, lse, hd } = self;
        let (dh, len) = (p.dh, lse.len());
        let lp = round_up(len, NR);
        hd.qs.clear();
        hd.qs
            .extend(x.q[..len * dh].iter().map(|v| v.to_f32() * p.scale));
        hd.dout.clear();
        hd.dout
            .extend(x.grad[..len * dh].iter().map(|v| v.to_f32()));
        reset(&mut hd.qt, dh * lp, 0.0);
        transpose(kernel, (len, dh), &hd.qs, dh, &mut hd.qt, lp);
        reset(&mut hd.dot, dh * lp, 0.0);
        transpose(kernel, (len, dh), &hd.dout, dh, &mut hd.dot, lp);
        // delta by the same multiply-adds in the same order as the micro-kernel forms dP (over
        // d, from 0): where dP_ij and D_i are mathematically equal (one key, or equal rows),
        // dP − D is then exactly 0, as in the composition.
        let out = widened(&x.out[..len * dh], &mut hd.obuf);
        reset(&mut hd.ot, dh * lp, 0.0);
        transpose(kernel, (len, dh), out, dh, &mut hd.ot, lp);
        reset(&mut hd.delta, lp, 0.0);
        for (g, o) in hd.dot.chunks_exact(lp).zip(hd.ot.chunks_exact(lp)) {
            for ((d, g), o) in hd.delta.iter_mut().zip(g).zip(o) {
                *d = kernel.madd(*g, *o, *d);
            }
        }
        hd.lse.clear();
        hd.lse.extend_from_slice(lse);
        hd.lse.resize(lp, f32::INFINITY);
    }
}

/// The key blocks from key `j0` whose dk and dv rows are `dk`, `dv` (whole key blocks, or up to
/// the length): their dk, dv, and their share of dq into `s.dq`.
struct Group<'a, T> {
    p: &'a Params,
    bh: usize,
    j0: usize,
    x: &'a HeadIn<'a, T>,
    hd: &'a BwdHead,
    dk: &'a mut [T],
    dv: &'a mut [T],
    s: &'a mut BwdScratch,
}

impl<T: Elem> Task for Group<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<K: Tiles>(self, kernel: K) {
        let Group {
            p,
            bh,
            j0,
            x,
            hd,
            dk: dk_out,
            dv: dv_out,
            s,
        } = self;
        let dh = p.dh;
        let len = hd.qs.len() / dh;
        let lp = hd.lse.len();
        reset(&mut s.dq, len * dh, 0.0);
        s.pt.resize(BK * BQ, 0.0);
        s.dst.resize(BK * BQ, 0.0);
        let keys = dk_out.len() / dh;
        for kb in (0..keys).step_by(BK) {
            let (j, nk) = (j0 + kb, BK.min(keys - kb));
            let kj = widened(&x.k[j * dh..(j + nk) * dh], &mut s.kbuf);
            let vj = widened(&x.v[j * dh..(j + nk) * dh], &mut s.vbuf);
            reset(&mut s.dk, nk * dh, 0.0);
            reset(&mut s.dv, nk * dh, 0.0);
            for i0 in (0..len).step_by(BQ) {
                let nq = BQ.min(len - i0);
                let nqp = round_up(nq, NR);
                let pt = &mut s.pt[..nk * BQ];
                let dst = &mut s.dst[..nk * BQ];
                let (qt, dot) = (&hd.qt[i0..], &hd.dot[i0..]);
                gemm(
                    kernel,
                    (nk, nqp, dh),
                    Strided::rows(kj, dh),
                    qt,
                    lp,
                    pt,
                    BQ,
                    false,
                );
                gemm(
                    kernel,
                    (nk, nqp, dh),
                    Strided::rows(vj, dh),
                    dot,
                    lp,
                    dst,
                    BQ,
                    false,
                );
                let (lse, delta) = (&hd.lse[i0..i0 + nqp], &hd.delta[i0..i0 + nqp]);
                match &p.mask {
                    // dS = P ∘ (dP − D), P = exp(S − lse).
                    None => {
                        for (prow, drow) in pt.chunks_exact_mut(BQ).zip(dst.chunks_exact_mut(BQ)) {
                            let row = prow.iter_mut().zip(drow.iter_mut());
                            for (((pv, dv), l), d) in row.zip(lse).zip(delta) {
                                *pv = kernel.exp(*pv - l);
                                *dv = *pv * (*dv - d);
                            }
                        }
                    }
                    // The product gave the gradient of the dropped probabilities: dP = that ∘ M,
                    // and dv takes the dropped P ∘ M.
                    Some(mask) => {
                        for prow in pt.chunks_exact_mut(BQ) {
                            for (pv, l) in prow.iter_mut().zip(lse) {
                                *pv = kernel.exp(*pv - l);
                            }
                        }
                        for_each_multiplier::<K>(mask, bh, (i0, nqp), (j, nk), |jj, i, m| {
                            let at = jj * BQ + i..jj * BQ + i + PHILOX_LANES;
                            let row = dst[at.clone()].iter_mut().zip(&mut pt[at]);
                            for (((ds, pv), m), d) in row.zip(m).zip(&delta[i..]) {
                                *ds = *pv * (*ds * m - d);
                                *pv *= m;
                            }
                        });
                    }
                }
                let (qs, dout) = (&hd.qs[i0 * dh..], &hd.dout[i0 * dh..]);
                gemm(
                    kernel,
                    (nk, dh, nq),
                    Strided::rows(pt, BQ),
                    dout,
                    dh,
                    &mut s.dv,
                    dh,
                    true,
                );
                gemm(
                    kernel,
                    (nk, dh, nq),
                    Strided::rows(dst, BQ),
                    qs,
                    dh,
                    &mut s.dk,
                    dh,
                    true,
                );
                let dq = &mut s.dq[i0 * dh..(i0 + nq) * dh];
                let ds = Strided::transposed(dst, BQ);
                gemm(kernel, (nq, dh, nk), ds, kj, dh, dq, dh, true);
            }
            for (o, a) in dk_out[kb * dh..(kb + nk) * dh].iter_mut().zip(&s.dk) {
                *o = T::from_f32(*a);
            }
            for (o, a) in dv_out[kb * dh..(kb + nk) * dh].iter_mut().zip(&s.dv) {
                *o = T::from_f32(*a);
            }
        }
    }
}
