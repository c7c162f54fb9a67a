//! The CPU implementation of doc_softmax and the marginal: one row per rayon task, f32 arithmetic
//! in a per-thread scratch row (one exp per element, vectorised). It is both the fallback and the
//! reference the kernels are checked against.

use crate::error::{Error, Result};
use crate::ops::elem::Elem;
use crate::ops::math::{dot, exp, exp_shifted_in_place, has_nan, logsumexp_in_place};
use rayon::prelude::*;

/// Rows per rayon task: enough elements that scheduling costs nothing next to the work.
fn rows_per_task(row_len: usize) -> usize {
    (16 * 1024 / row_len.max(1)).max(1)
}

/// Widens `row` into `buf` (reused across rows of a thread).
fn widen<T: Elem>(row: &[T], buf: &mut Vec<f32>) {
    buf.clear();
    buf.extend(row.iter().map(|v| v.to_f32()));
}

fn nan_error(op: &'static str, arg: &'static str) -> Error {
    Error::bad_input(op, arg, "contains NaN")
}

/// softmax over rows of `k`; NaN anywhere is an error naming `logits`.
pub(super) fn softmax<T: Elem>(op: &'static str, x: &[T], k: usize) -> Result<Vec<T>> {
    let mut p = vec![T::from_f32(0.0); x.len()];
    p.par_chunks_mut(k)
        .zip(x.par_chunks(k))
        .with_min_len(rows_per_task(k))
        .try_for_each_init(Vec::new, |buf, (pr, xr)| {
            widen(xr, buf);
            if has_nan(buf) {
                return Err(nan_error(op, "logits"));
            }
            let (_, total) = exp_shifted_in_place(buf);
            let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
            for (pz, e) in pr.iter_mut().zip(buf.iter()) {
                *pz = T::from_f32(e * inv);
            }
            Ok(())
        })?;
    Ok(p)
}

/// dx = p ⊙ (g − Σ p g)
pub(super) fn softmax_bwd<T: Elem>(p: &[T], g: &[T], k: usize) -> Vec<T> {
    let mut dx = vec![T::from_f32(0.0); p.len()];
    dx.par_chunks_mut(k)
        .zip(p.par_chunks(k).zip(g.par_chunks(k)))
        .with_min_len(rows_per_task(k))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(pb, gb), (dr, (pr, gr))| {
                widen(pr, pb);
                widen(gr, gb);
                let dot = dot(pb, gb);
                for ((d, &pz), &gz) in dr.iter_mut().zip(pb.iter()).zip(gb.iter()) {
                    *d = T::from_f32(if pz == 0.0 { 0.0 } else { pz * (gz - dot) });
                }
            },
        );
    dx
}

/// log-softmax of a row in place (−inf where absent, and everywhere for a row with none), as
/// `(x − max) − log Σ`: `x − (max + log Σ)` would round at the scale of the logits (2.4e-4 at
/// 3000), which the plain f32 composition (log_softmax, then logsumexp) does not.
fn log_softmax_in_place(xs: &mut [f32], scratch: &mut Vec<f32>) {
    scratch.clear();
    scratch.extend_from_slice(xs);
    let (max, sum) = exp_shifted_in_place(scratch);
    let log_sum = sum.ln();
    for v in xs.iter_mut() {
        *v = if max == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            (*v - max) - log_sum
        };
    }
}

/// Per-row work buffers of one thread.
#[derive(Default)]
struct Scratch {
    log_prior: Vec<f32>,
    joint: Vec<f32>,
    tmp: Vec<f32>,
}

impl Scratch {
    /// Fills `log_prior` with log_softmax(x) and `joint[j*k + z]` with log_prior[z] + c[z, j]
    /// (transposed, so each target's row is contiguous). Errors on NaN in either input.
    fn load<T: Elem>(
        &mut self,
        op: &'static str,
        xr: &[T],
        cr: &[T],
        k: usize,
        m: usize,
    ) -> Result<()> {
        widen(xr, &mut self.log_prior);
        if has_nan(&self.log_prior) {
            return Err(nan_error(op, "doc_logits"));
        }
        log_softmax_in_place(&mut self.log_prior, &mut self.tmp);
        widen(cr, &mut self.tmp);
        if has_nan(&self.tmp) {
            return Err(nan_error(op, "cond_logprob"));
        }
        self.joint.clear();
        self.joint.resize(k * m, 0.0);
        for (z, (cz, lp)) in self.tmp.chunks_exact(m).zip(&self.log_prior).enumerate() {
            for (j, c) in cz.iter().enumerate() {
                self.joint[j * k + z] = lp + c;
            }
        }
        Ok(())
    }
}

/// out[r, j] = logsumexp_z(log_softmax(x[r])_z + c[r, z, j])
pub(super) fn mll<T: Elem>(
    op: &'static str,
    x: &[T],
    c: &[T],
    k: usize,
    m: usize,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f32(0.0); x.len() / k * m];
    out.par_chunks_mut(m)
        .zip(x.par_chunks(k).zip(c.par_chunks(k * m)))
        .with_min_len(rows_per_task(k * m))
        .try_for_each_init(Scratch::default, |s, (or, (xr, cr))| {
            s.load(op, xr, cr, k, m)?;
            for (o, joint) in or.iter_mut().zip(s.joint.chunks_exact_mut(k)) {
                *o = T::from_f32(logsumexp_in_place(joint));
            }
            Ok::<(), Error>(())
        })?;
    Ok(out)
}

/// Gradients packed as `[b, k, m + 1]`: d/dc in `[.., ..m]`, d/dx in `[.., m]` (see the kernel),
/// from og[r, j] = (out[r, j], incoming gradient g[r, j]).
pub(super) fn mll_bwd<T: Elem>(
    op: &'static str,
    x: &[T],
    c: &[T],
    og: &[T],
    k: usize,
    m: usize,
) -> Result<Vec<T>> {
    let mut grad = vec![T::from_f32(0.0); x.len() * (m + 1)];
    grad.par_chunks_mut(k * (m + 1))
        .zip(
            x.par_chunks(k)
                .zip(c.par_chunks(k * m).zip(og.par_chunks(2 * m))),
        )
        .with_min_len(rows_per_task(k * m))
        .try_for_each_init(Scratch::default, |s, (gr, (xr, (cr, ogr)))| {
            s.load(op, xr, cr, k, m)?;
            // tmp[z] accumulates d/dx[z] = Σ_j g_j (posterior[z, j] − prior[z]).
            s.tmp.clear();
            s.tmp.resize(k, 0.0);
            for (j, joint) in s.joint.chunks_exact_mut(k).enumerate() {
                let (oj, gj) = (ogr[2 * j].to_f32(), ogr[2 * j + 1].to_f32());
                if oj == f32::NEG_INFINITY {
                    joint.fill(0.0);
                    continue;
                }
                for ((post, lp), dx) in joint.iter_mut().zip(&s.log_prior).zip(s.tmp.iter_mut()) {
                    // joint = log posterior + out; exp(−inf) = 0 covers absent candidates.
                    *post = exp(*post - oj);
                    *dx += gj * (*post - exp(*lp));
                }
            }
            for z in 0..k {
                let gz = &mut gr[z * (m + 1)..(z + 1) * (m + 1)];
                for j in 0..m {
                    let gj = ogr[2 * j + 1].to_f32();
                    gz[j] = T::from_f32(gj * s.joint[j * k + z]);
                }
                gz[m] = T::from_f32(s.tmp[z]);
            }
            Ok::<(), Error>(())
        })?;
    Ok(grad)
}
