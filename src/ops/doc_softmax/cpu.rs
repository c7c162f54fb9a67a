//! The CPU implementation of doc_softmax and the marginal: one row per rayon task, f32 arithmetic.
//! It is both the fallback and the reference the kernels are checked against.

use crate::error::{Error, Result};
use crate::ops::elem::Elem;
use rayon::prelude::*;

pub(super) fn check_no_nan<T: Elem>(op: &'static str, arg: &'static str, data: &[T]) -> Result<()> {
    if data.par_iter().any(|v| v.to_f32().is_nan()) {
        return Err(Error::bad_input(op, arg, "contains NaN"));
    }
    Ok(())
}

/// `(max, log-sum-exp)` of a row, with -inf for a row that has no finite entry.
fn logsumexp(row: impl Iterator<Item = f32> + Clone) -> f32 {
    let max = row.clone().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    let sum: f32 = row.map(|v| exp_shifted(v, max)).sum();
    max + sum.ln()
}

fn exp_shifted(v: f32, shift: f32) -> f32 {
    if v == f32::NEG_INFINITY {
        0.0
    } else {
        (v - shift).exp()
    }
}

pub(super) fn softmax<T: Elem>(x: &[T], k: usize) -> Vec<T> {
    let mut p = vec![T::from_f32(0.0); x.len()];
    p.par_chunks_mut(k)
        .zip(x.par_chunks(k))
        .for_each(|(pr, xr)| {
            let lse = logsumexp(xr.iter().map(|v| v.to_f32()));
            for (pz, xz) in pr.iter_mut().zip(xr) {
                *pz = T::from_f32(exp_shifted(xz.to_f32(), lse));
            }
        });
    p
}

pub(super) fn softmax_bwd<T: Elem>(p: &[T], g: &[T], k: usize) -> Vec<T> {
    let mut dx = vec![T::from_f32(0.0); p.len()];
    dx.par_chunks_mut(k)
        .zip(p.par_chunks(k).zip(g.par_chunks(k)))
        .for_each(|(dr, (pr, gr))| {
            let dot: f32 = pr.iter().zip(gr).map(|(a, b)| a.to_f32() * b.to_f32()).sum();
            for ((d, pz), gz) in dr.iter_mut().zip(pr).zip(gr) {
                let pz = pz.to_f32();
                *d = T::from_f32(if pz == 0.0 { 0.0 } else { pz * (gz.to_f32() - dot) });
            }
        });
    dx
}

pub(super) fn mll<T: Elem>(x: &[T], c: &[T], k: usize, m: usize) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); x.len() / k * m];
    out.par_chunks_mut(m)
        .zip(x.par_chunks(k).zip(c.par_chunks(k * m)))
        .for_each(|(or, (xr, cr))| {
            let prior = logsumexp(xr.iter().map(|v| v.to_f32()));
            for (j, o) in or.iter_mut().enumerate() {
                let joint = logsumexp(
                    xr.iter()
                        .enumerate()
                        .map(|(z, v)| v.to_f32() + cr[z * m + j].to_f32()),
                );
                let absent = prior == f32::NEG_INFINITY || joint == f32::NEG_INFINITY;
                *o = T::from_f32(if absent {
                    f32::NEG_INFINITY
                } else {
                    joint - prior
                });
            }
        });
    out
}

/// Gradients packed as `[b, k, m + 1]`: d/dc in `[.., ..m]`, d/dx in `[.., m]` (see the kernel).
pub(super) fn mll_bwd<T: Elem>(x: &[T], c: &[T], og: &[T], k: usize, m: usize) -> Vec<T> {
    let mut grad = vec![T::from_f32(0.0); x.len() * (m + 1)];
    grad.par_chunks_mut(k * (m + 1))
        .zip(x.par_chunks(k).zip(c.par_chunks(k * m).zip(og.par_chunks(2 * m))))
        .for_each(|(gr, (xr, (cr, ogr)))| {
            let lse_prior = logsumexp(xr.iter().map(|v| v.to_f32()));
            for z in 0..k {
                let xz = xr[z].to_f32();
                let present = xz != f32::NEG_INFINITY && lse_prior != f32::NEG_INFINITY;
                let log_prior = if present { xz - lse_prior } else { f32::NEG_INFINITY };
                let prior = if present { log_prior.exp() } else { 0.0 };
                let mut dx = 0.0f32;
                for j in 0..m {
                    let (oj, gj) = (ogr[2 * j].to_f32(), ogr[2 * j + 1].to_f32());
                    let czj = cr[z * m + j].to_f32();
                    let post = if oj != f32::NEG_INFINITY && present && czj != f32::NEG_INFINITY {
                        (log_prior + czj - oj).exp()
                    } else {
                        0.0
                    };
                    let dc = if oj == f32::NEG_INFINITY { 0.0 } else { gj * post };
                    gr[z * (m + 1) + j] = T::from_f32(dc);
                    if oj != f32::NEG_INFINITY {
                        dx += gj * (post - prior);
                    }
                }
                gr[z * (m + 1) + m] = T::from_f32(dx);
            }
        });
    grad
}

