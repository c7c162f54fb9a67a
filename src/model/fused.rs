//! CPU kernels for the encoder's two elementwise steps, as candle custom ops with a backward:
//! exact GELU, and LayerNorm with f32 statistics (two-pass variance). candle's CPU GELU runs on one
//! thread and builds its backward from a dozen tensor ops; its fused LayerNorm has no backward.
//! Tensors on other devices take candle's own ops.

use crate::error::Result;
use crate::ops::elem::{cpu_data, with_float_elem, Elem};
use crate::ops::math;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task of the GELU kernels.
const CHUNK: usize = 1 << 14;
/// Rows per parallel task of the LayerNorm kernels (at least).
const ROWS: usize = 32;
/// The most tasks LayerNorm's backward splits its rows into (each keeps partial sums of dw, db).
const MAX_PARTIALS: usize = 256;

/// `x · Φ(x)` (HF's "gelu"), differentiable.
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        Ok(x.contiguous()?.apply_op1(Gelu)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

/// LayerNorm over the last dimension with f32 scale `w` and shift `b`; statistics in f32, the
/// result in `x`'s dtype. Differentiable in all three.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() {
        return Ok(x.contiguous()?.apply_op3(w, b, LayerNorm { eps })?);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let y = if x32.track_op() || w.track_op() || b.track_op() {
        candle_nn::ops::layer_norm_slow(&x32, w, b, eps as f32)?
    } else {
        candle_nn::ops::layer_norm(&x32.contiguous()?, w, b, eps as f32)?
    };
    Ok(y.to_dtype(x.dtype())?)
}

const SQRT_1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

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

/// Applies `f` to every element (widened to f32) in parallel, keeping the dtype.
fn map_elems<T: Elem>(x: &[T], f: impl Fn(f32) -> f32 + Sync) -> Vec<T> {
    let mut y = vec![T::from_f32(0.0); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (y, x) in y.iter_mut().zip(x) {
                *y = T::from_f32(f(x.to_f32()));
            }
        });
    y
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        with_float_elem!(s.dtype(), T => {
            let x = cpu_data::<T>("gelu", "x", s, l)?;
            Ok((T::into_cpu_storage(map_elems(x, |v| v * phi_cdf(v))), l.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluGrad)?))
    }
}

/// `dy · (Φ(x) + x φ(x))`.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        with_float_elem!(s1.dtype(), T => {
            let x = cpu_data::<T>("gelu backward", "x", s1, l1)?;
            let dy = cpu_data::<T>("gelu backward", "dy", s2, l2)?;
            let mut dx = vec![T::from_f32(0.0); x.len()];
            dx.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                .for_each(|(dx, (x, dy))| {
                    for ((dx, x), dy) in dx.iter_mut().zip(x).zip(dy) {
                        let v = x.to_f32();
                        let slope = phi_cdf(v) + v * INV_SQRT_2PI * math::exp(-0.5 * v * v);
                        *dx = T::from_f32(dy.to_f32() * slope);
                    }
                });
            Ok((T::into_cpu_storage(dx), l1.shape().clone()))
        })
    }
}

struct LayerNorm {
    eps: f64,
}

/// Subtracts the row's mean in place and returns 1 / std (two passes: no cancellation).
#[inline]
fn center(row: &mut [f32], eps: f64) -> f32 {
    let n = row.len() as f32;
    let mean = math::sum(row) / n;
    row.iter_mut().for_each(|v| *v -= mean);
    1.0 / (math::dot(row, row) / n + eps as f32).sqrt()
}

/// The f32 scale or shift vector argument of the LayerNorm ops.
fn param<'a>(
    arg: &'static str,
    s: &'a CpuStorage,
    l: &Layout,
    h: usize,
) -> candle_core::Result<&'a [f32]> {
    let v = cpu_data::<f32>("layer_norm", arg, s, l)?;
    if v.len() != h {
        candle_core::bail!("layer_norm: {arg} has {} elements, not {h}", v.len());
    }
    Ok(v)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = l1.dims().last().copied().unwrap_or(1);
        let (w, b) = (param("w", s2, l2, h)?, param("b", s3, l3, h)?);
        with_float_elem!(s1.dtype(), T => {
            let x = cpu_data::<T>("layer_norm", "x", s1, l1)?;
            let mut y = vec![T::from_f32(0.0); x.len()];
            y.par_chunks_mut(h * ROWS)
                .zip(x.par_chunks(h * ROWS))
                .for_each(|(y, x)| {
                    let mut row = vec![0f32; h];
                    for (y, x) in y.chunks_mut(h).zip(x.chunks(h)) {
                        row.iter_mut().zip(x).for_each(|(r, v)| *r = v.to_f32());
                        let rstd = center(&mut row, self.eps);
                        for (((y, v), w), b) in y.iter_mut().zip(&row).zip(w).zip(b) {
                            *y = T::from_f32(v * rstd * w + b);
                        }
                    }
                });
            Ok((T::into_cpu_storage(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let rows = x.elem_count() / h;
        // One op computes all three: rows of dx, then the dw row and the db row, in f32.
        let g = x.apply_op3_no_bwd(
            w,
            &dy.to_dtype(x.dtype())?.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let dx = g
            .narrow(0, 0, rows)?
            .reshape(x.shape())?
            .to_dtype(x.dtype())?;
        let dw = g.narrow(0, rows, 1)?.reshape(h)?;
        let db = g.narrow(0, rows + 1, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Given x, w and dy: `[rows + 2, h]` f32 holding dx (rows), dw and db. With x̂ the normalised
/// row, r = 1 / std and g = dy · w: dx = r (g − mean(g) − x̂ mean(g x̂)), dw = Σ dy x̂, db = Σ dy.
struct LayerNormGrad {
    eps: f64,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = l2.shape().elem_count();
        let w = param("w", s2, l2, h)?;
        with_float_elem!(s1.dtype(), T => {
            let x = cpu_data::<T>("layer_norm backward", "x", s1, l1)?;
            let dy = cpu_data::<T>("layer_norm backward", "dy", s3, l3)?;
            let rows = x.len() / h;
            let mut out = vec![0f32; (rows + 2) * h];
            let (dx, _) = out.split_at_mut(rows * h);
            // dw and db are sums over rows: each task's partial sums are added in task order, and
            // the tasks depend on the shape alone, so the result does not depend on the thread
            // count or on rayon's scheduling (a rayon `reduce` would).
            let task = h * ROWS.max(rows.div_ceil(MAX_PARTIALS));
            let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
                .par_chunks_mut(task)
                .zip(x.par_chunks(task).zip(dy.par_chunks(task)))
                .map(|(dx, (x, dy))| {
                    let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
                    let (mut xh, mut g) = (vec![0f32; h], vec![0f32; h]);
                    for ((dx, x), dy) in dx.chunks_mut(h).zip(x.chunks(h)).zip(dy.chunks(h)) {
                        xh.iter_mut().zip(x).for_each(|(r, v)| *r = v.to_f32());
                        let rstd = center(&mut xh, self.eps);
                        let (mut m1, mut m2) = (0f32, 0f32);
                        for j in 0..h {
                            let d = dy[j].to_f32();
                            xh[j] *= rstd;
                            g[j] = d * w[j];
                            m1 += g[j];
                            m2 += g[j] * xh[j];
                            dw[j] += d * xh[j];
                            db[j] += d;
                        }
                        let (m1, m2) = (m1 / h as f32, m2 / h as f32);
                        for j in 0..h {
                            dx[j] = rstd * (g[j] - m1 - xh[j] * m2);
                        }
                    }
                    (dw, db)
                })
                .collect();
            let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
            for (pw, pb) in &partials {
                dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
            }
            out[rows * h..(rows + 1) * h].copy_from_slice(&dw);
            out[(rows + 1) * h..].copy_from_slice(&db);
            Ok((CpuStorage::F32(out), Shape::from((rows + 2, h))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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

    /// The fused ops and candle's compositions agree, values and gradients, in f32.
    #[test]
    fn fused_ops_match_the_compositions() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::SplitMix64::new(4);
        let mut randn = |n: usize, shift: f64| -> Vec<f32> {
            rng.normal_vec(n, 2.0)
                .into_iter()
                .map(|v| (v + shift) as f32)
                .collect()
        };
        let (rows, h) = (37, 48);
        let x = Var::from_vec(randn(rows * h, 3.0), (rows, h), &dev).unwrap();
        let w = Var::from_vec(randn(h, 1.0), h, &dev).unwrap();
        let b = Var::from_vec(randn(h, 0.0), h, &dev).unwrap();
        let r = Tensor::from_vec(randn(rows * h, 0.0), (rows, h), &dev).unwrap();
        let fused = |x: &Tensor| {
            gelu_erf(&layer_norm(x, w.as_tensor(), b.as_tensor(), 1e-5).unwrap()).unwrap()
        };
        let composed = |x: &Tensor| {
            candle_nn::ops::layer_norm_slow(x, w.as_tensor(), b.as_tensor(), 1e-5)
                .unwrap()
                .gelu_erf()
                .unwrap()
        };
        let mut results = Vec::new();
        for f in [&fused as &dyn Fn(&Tensor) -> Tensor, &composed] {
            let y = f(x.as_tensor());
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![y];
            for v in [&x, &w, &b] {
                all.push(grads.get(v.as_tensor()).unwrap().clone());
            }
            results.push(all);
        }
        for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let scale = b.abs().unwrap().max_all().unwrap();
            let rel = diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap();
            assert!(rel < 1e-5, "output {i}: relative error {rel}");
        }
    }
}
