//! The CPU implementation of LayerNorm and GELU: the fallback and the reference the kernels are
//! checked against. Every result is the same whatever the thread count: the elementwise and
//! row-wise work has no cross-task state, and LayerNorm's sums over rows (dw, db) are partial
//! sums over fixed ranges of rows, added in range order.

use super::GeluForm;
use crate::ops::elem::Elem;
use crate::ops::math;
use rayon::prelude::*;

/// Elements per parallel task of the GELU loops.
const CHUNK: usize = 1 << 14;
/// Rows per parallel task of the LayerNorm loops (at least).
const ROWS: usize = 32;
/// The most tasks LayerNorm's backward splits its rows into (each keeps partial sums of dw, db).
const MAX_PARTIALS: usize = 256;

const SQRT_1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;
/// √(2/π).
const SQRT_2_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh form.
const CUBIC: f32 = 0.044_715;

/// erf(x): Eigen's (and XLA's) rational approximation x·P(x²)/Q(x²) on [−4, 4], where f32 erf
/// is ±1 outside. Branch-free, so the loops over it vectorise, unlike libm's `erff`.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_2e-3,
        -1.426_473_9e-2,
    ] {
        q = q * x2 + c;
    }
    x * p / q
}

/// Φ(x), the standard normal CDF.
#[inline(always)]
fn phi_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * SQRT_1_2))
}

/// The tanh form's σ(2u) = (1 + tanh u) / 2 as (σ, e^(−2u)), without the cancellation of
/// 1 + tanh u for negative x.
#[inline(always)]
fn tanh_form_sigmoid(x: f32) -> (f32, f32) {
    let u = SQRT_2_PI * (x + CUBIC * x * x * x);
    let e = math::exp(-2.0 * u);
    (1.0 / (1.0 + e), e)
}

/// GELU of one value.
#[inline(always)]
fn gelu_value(form: GeluForm, x: f32) -> f32 {
    match form {
        GeluForm::Erf => x * phi_cdf(x),
        GeluForm::Tanh => x * tanh_form_sigmoid(x).0,
    }
}

/// d/dx GELU at one value.
#[inline(always)]
fn gelu_slope(form: GeluForm, x: f32) -> f32 {
    match form {
        GeluForm::Erf => phi_cdf(x) + x * INV_SQRT_2PI * math::exp(-0.5 * x * x),
        GeluForm::Tanh => {
            let (s, e) = tanh_form_sigmoid(x);
            let du = SQRT_2_PI * (1.0 + 3.0 * CUBIC * x * x);
            // σ(1 − σ) = σ (e σ) keeps its precision where σ is near 1.
            s + 2.0 * x * du * (s * (e * s))
        }
    }
}

/// `f(x, dy)` of every element (both widened to f32) in parallel, in the elements' dtype.
fn map_elems<T: Elem>(x: &[T], dy: &[T], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<T> {
    let mut y = vec![T::from_f32(0.0); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(y, (x, dy))| {
            math::vectorised(
                #[inline(always)]
                || {
                    for ((y, x), dy) in y.iter_mut().zip(x).zip(dy) {
                        *y = T::from_f32(f(x.to_f32(), dy.to_f32()));
                    }
                },
            )
        });
    y
}

// Each form gets its own loop (the `match` outside it), so that each vectorises without a
// branch inside.

/// GELU of every element.
pub(super) fn gelu<T: Elem>(form: GeluForm, x: &[T]) -> Vec<T> {
    match form {
        GeluForm::Erf => map_elems(
            x,
            x,
            #[inline(always)]
            |v, _| gelu_value(GeluForm::Erf, v),
        ),
        GeluForm::Tanh => map_elems(
            x,
            x,
            #[inline(always)]
            |v, _| gelu_value(GeluForm::Tanh, v),
        ),
    }
}

/// dx = dy · GELU'(x).
pub(super) fn gelu_bwd<T: Elem>(form: GeluForm, x: &[T], dy: &[T]) -> Vec<T> {
    match form {
        GeluForm::Erf => map_elems(
            x,
            dy,
            #[inline(always)]
            |v, d| d * gelu_slope(GeluForm::Erf, v),
        ),
        GeluForm::Tanh => map_elems(
            x,
            dy,
            #[inline(always)]
            |v, d| d * gelu_slope(GeluForm::Tanh, v),
        ),
    }
}

/// Subtracts the row's mean in place and returns 1 / std (two passes: no cancellation). As in
/// the kernel, the row is first shifted by its first value (exact for values near it, by
/// Sterbenz's lemma), so that the mean of a row far from 0 does not round at the scale of |x|.
#[inline(always)]
fn center(row: &mut [f32], eps: f32) -> f32 {
    let n = row.len() as f32;
    let shift = row[0];
    row.iter_mut().for_each(|v| *v -= shift);
    let mean = math::sum(row) / n;
    row.iter_mut().for_each(|v| *v -= mean);
    1.0 / (math::dot(row, row) / n + eps).sqrt()
}

/// LayerNorm of rows of `w.len()` elements.
pub(super) fn layer_norm<T: Elem>(x: &[T], w: &[f32], b: &[f32], eps: f32) -> Vec<T> {
    let h = w.len();
    let mut y = vec![T::from_f32(0.0); x.len()];
    y.par_chunks_mut(h * ROWS)
        .zip(x.par_chunks(h * ROWS))
        .for_each(|(y, x)| {
            let mut row = vec![0f32; h];
            math::vectorised(
                #[inline(always)]
                || {
                    for (y, x) in y.chunks_mut(h).zip(x.chunks(h)) {
                        row.iter_mut().zip(x).for_each(|(r, v)| *r = v.to_f32());
                        let rstd = center(&mut row, eps);
                        for (((y, v), w), b) in y.iter_mut().zip(&row).zip(w).zip(b) {
                            *y = T::from_f32(v * rstd * w + b);
                        }
                    }
                },
            )
        });
    y
}

/// LayerNorm's gradients as `[rows + 2, h]` f32: dx (rows), dw and db. With x̂ the normalised row,
/// r = 1 / std and g = dy · w: dx = r (g − mean(g) − x̂ mean(g x̂)), dw = Σ dy x̂, db = Σ dy.
pub(super) fn layer_norm_bwd<T: Elem>(x: &[T], w: &[f32], dy: &[T], eps: f32) -> Vec<f32> {
    let h = w.len();
    let rows = x.len() / h;
    let mut out = vec![0f32; (rows + 2) * h];
    let (dx, _) = out.split_at_mut(rows * h);
    // dw and db are sums over rows: each task's partial sums are added in task order, and the
    // tasks depend on the shape alone, so the result does not depend on the thread count or on
    // rayon's scheduling (a rayon `reduce` would).
    let task = h * ROWS.max(rows.div_ceil(MAX_PARTIALS));
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(dy.par_chunks(task)))
        .map(|(dx, (x, dy))| {
            let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
            let (mut xh, mut g) = (vec![0f32; h], vec![0f32; h]);
            math::vectorised(
                #[inline(always)]
                || {
                    let rows = dx.chunks_mut(h).zip(x.chunks(h)).zip(dy.chunks(h));
                    for ((dx, x), dy) in rows {
                        xh.iter_mut().zip(x).for_each(|(r, v)| *r = v.to_f32());
                        let rstd = center(&mut xh, eps);
                        let per_elem = xh.iter_mut().zip(g.iter_mut()).zip(dy).zip(w);
                        for ((((xh, g), dy), w), (dw, db)) in
                            per_elem.zip(dw.iter_mut().zip(&mut db))
                        {
                            let d = dy.to_f32();
                            *xh *= rstd;
                            *g = d * w;
                            *dw += d * *xh;
                            *db += d;
                        }
                        let m1 = math::sum(&g) / h as f32;
                        let m2 = math::dot(&g, &xh) / h as f32;
                        for ((dx, g), xh) in dx.iter_mut().zip(&g).zip(&xh) {
                            *dx = rstd * (g - m1 - xh * m2);
                        }
                    }
                },
            );
            (dw, db)
        })
        .collect();
    let (dw, db) = out[rows * h..].split_at_mut(h);
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut err = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = candle_core::cpu::erf::erf_f64(f64::from(x));
            err = err.max((f64::from(erf(x)) - want).abs());
        }
        assert!(err < 1e-6, "erf: absolute error {err:e}");
    }

    /// The slopes against central differences of the f64 functions.
    #[test]
    fn slopes_match_the_derivatives() {
        let f64_gelu = |form: GeluForm, x: f64| match form {
            GeluForm::Erf => 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt())),
            GeluForm::Tanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
        };
        for form in [GeluForm::Erf, GeluForm::Tanh] {
            let mut err = 0f64;
            for i in -2000..=2000 {
                let x = f64::from(i as f32 * 5e-3);
                let d = 1e-5;
                let want = (f64_gelu(form, x + d) - f64_gelu(form, x - d)) / (2.0 * d);
                err = err.max((f64::from(gelu_slope(form, x as f32)) - want).abs());
                let value = f64::from(gelu_value(form, x as f32)) - f64_gelu(form, x);
                err = err.max(value.abs() / x.abs().max(1.0));
            }
            assert!(err < 2e-6, "{form:?}: error {err:e}");
        }
    }
}
