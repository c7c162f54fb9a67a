//! A retriever projection that keeps a sentence encoder's geometry: the tower computes
//! LayerNorm(W·x + b) of the pooled vector x, and its relevance is an inner product. With b = 0,
//! LayerNorm scale s and shift 0, and every row sum of Wᵀ zero (each column of W orthogonal to
//! the all-ones vector, so W·x has mean zero and LayerNorm only rescales it to norm s·√p), the
//! relevance is p·s² · cos(U·x_q, U·x_d), where W = B·U: U holds r ≤ p − 1 orthonormal rows in
//! the encoder's space and B embeds them isometrically into the sum-zero subspace of ℝᵖ. When
//! the corpus vectors lie in the span of U (a corpus of at most r blocks fitted by
//! [`principal_basis`]), each query ranks the blocks exactly as the encoder's cosine does.
//!
//! Two choices of U: [`principal_basis`] (the top-r right singular vectors of corpus embeddings,
//! uncentred so that the cosine to the stored vectors is kept) and [`orthonormal_basis`] (random,
//! for when no corpus is at hand).

use crate::error::{Error, Result};
use crate::rng::SplitMix64 as Rng;

const OP: &str = "projection";

/// The rows of U a projection to `proj_size` keeps of a `hidden`-wide encoder: one dimension goes
/// to LayerNorm's centring.
pub fn basis_rows(proj_size: usize, hidden: usize) -> usize {
    proj_size.saturating_sub(1).min(hidden)
}

/// `r` random orthonormal rows of ℝʰ (Gram–Schmidt on Gaussian draws from `seed`), row-major.
pub fn orthonormal_basis(r: usize, h: usize, seed: u64) -> Result<Vec<f64>> {
    if r > h {
        return Err(Error::bad_input(
            OP,
            "rows",
            format!("{r} orthonormal rows do not fit in {h} dimensions"),
        ));
    }
    let mut rng = Rng::new(seed);
    let mut rows: Vec<f64> = Vec::with_capacity(r * h);
    while rows.len() < r * h {
        let mut v: Vec<f64> = (0..h).map(|_| rng.normal()).collect();
        // Twice: one pass of Gram–Schmidt loses orthogonality in floating point.
        for _ in 0..2 {
            for u in rows.chunks(h) {
                let dot: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-6 {
            rows.extend(v.iter().map(|x| x / norm));
        }
    }
    Ok(rows)
}

/// The top `r` right singular vectors (row-major `[r, h]`) of the `[n, h]` matrix `x` (uncentred):
/// the eigenvectors of xᵀx of largest eigenvalue, by cyclic Jacobi rotations in f64. Rows beyond
/// the rank of `x` are orthonormal completions.
pub fn principal_basis(x: &[f32], n: usize, h: usize, r: usize) -> Result<Vec<f64>> {
    if x.len() != n * h || n == 0 {
        return Err(Error::bad_input(
            OP,
            "embeddings",
            format!("{} values for {n} rows of {h}", x.len()),
        ));
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::bad_input(OP, "embeddings", "not finite"));
    }
    if r > h {
        return Err(Error::bad_input(
            OP,
            "rows",
            format!("{r} principal directions of {h} dimensions"),
        ));
    }
    let mut a = vec![0f64; h * h];
    for row in x.chunks(h) {
        for i in 0..h {
            let xi = f64::from(row[i]);
            for j in i..h {
                a[i * h + j] += xi * f64::from(row[j]);
            }
        }
    }
    for i in 0..h {
        for j in 0..i {
            a[i * h + j] = a[j * h + i];
        }
    }
    let (values, vectors) = jacobi_eigen(a, h);
    let mut order: Vec<usize> = (0..h).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]).then(i.cmp(&j)));
    let mut rows = Vec::with_capacity(r * h);
    for &k in order.iter().take(r) {
        // Column k of the eigenvector matrix; its sign made deterministic (largest entry > 0).
        let col: Vec<f64> = (0..h).map(|i| vectors[i * h + k]).collect();
        let big = col
            .iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(1.0);
        rows.extend(col.iter().map(|v| if big < 0.0 { -v } else { *v }));
    }
    Ok(rows)
}

/// Eigenvalues and eigenvectors (columns of a row-major `[h, h]` matrix) of the symmetric `a`.
fn jacobi_eigen(mut a: Vec<f64>, h: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; h * h];
    for i in 0..h {
        v[i * h + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..60 {
        let off: f64 = (0..h)
            .flat_map(|i| (0..h).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * h + j] * a[i * h + j])
            .sum();
        if off <= total * 1e-30 {
            break;
        }
        for p in 0..h {
            for q in p + 1..h {
                let apq = a[p * h + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * h + q] - a[p * h + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..h {
                    let (akp, akq) = (a[k * h + p], a[k * h + q]);
                    a[k * h + p] = c * akp - s * akq;
                    a[k * h + q] = s * akp + c * akq;
                }
                for k in 0..h {
                    let (apk, aqk) = (a[p * h + k], a[q * h + k]);
                    a[p * h + k] = c * apk - s * aqk;
                    a[q * h + k] = s * apk + c * aqk;
                }
                for k in 0..h {
                    let (vkp, vkq) = (v[k * h + p], v[k * h + q]);
                    v[k * h + p] = c * vkp - s * vkq;
                    v[k * h + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..h).map(|i| a[i * h + i]).collect(), v)
}

/// W = B·U as the `[p, h]` f32 weight of the projection: `basis` holds r orthonormal rows of ℝʰ
/// (r ≤ p − 1), B the first r columns of an orthonormal basis of {y ∈ ℝᵖ : Σ y = 0} (Helmert's).
pub fn sum_zero_projection(basis: &[f64], h: usize, p: usize) -> Result<Vec<f32>> {
    let r = basis.len() / h.max(1);
    if basis.len() != r * h || r + 1 > p {
        return Err(Error::bad_input(
            OP,
            "basis",
            format!(
                "{} values are not r ≤ {} rows of {h}",
                basis.len(),
                p.saturating_sub(1)
            ),
        ));
    }
    let mut w = vec![0f64; p * h];
    // Helmert column c (0-based): 1/√((c+1)(c+2)) on rows 0..=c, −(c+1)/√((c+1)(c+2)) on row c+1.
    for (c, u) in basis.chunks(h).enumerate() {
        let k = (c + 1) as f64;
        let norm = (k * (k + 1.0)).sqrt();
        for row in 0..=c + 1 {
            let b = if row <= c { 1.0 / norm } else { -k / norm };
            w[row * h..(row + 1) * h]
                .iter_mut()
                .zip(u)
                .for_each(|(x, ui)| *x += b * ui);
        }
    }
    Ok(w.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn orthonormal_rows_are_orthonormal() {
        let rows = orthonormal_basis(5, 8, 3).unwrap();
        for i in 0..5 {
            for j in 0..5 {
                let d = dot(&rows[i * 8..(i + 1) * 8], &rows[j * 8..(j + 1) * 8]);
                assert!(
                    (d - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "{i} {j} {d}"
                );
            }
        }
        assert!(orthonormal_basis(9, 8, 0).is_err());
    }

    #[test]
    fn principal_basis_finds_the_dominant_directions() {
        // X = G·S·Rᵀ with G's columns orthonormal, so XᵀX = R·S²·Rᵀ exactly: the directions are
        // R's columns 2 (scale 10) and 0 (scale 3), whatever the draw; R mixes axes 0 and 2.
        let (n, h) = (40, 4);
        let g = orthonormal_basis(h, n, 1).unwrap();
        let scale = [3.0, 0.1, 10.0, 0.1];
        let (c, s) = (0.4f64.cos(), 0.4f64.sin());
        let r = [
            [c, 0.0, -s, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [s, 0.0, c, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut x = Vec::new();
        for k in 0..n {
            x.extend((0..h).map(|i| {
                (0..h)
                    .map(|j| g[j * n + k] * scale[j] * r[i][j])
                    .sum::<f64>() as f32
            }));
        }
        let rows = principal_basis(&x, n, h, 2).unwrap();
        let column = |j: usize| -> Vec<f64> { r.iter().map(|row| row[j]).collect() };
        assert!(dot(&rows[..h], &column(2)).abs() > 1.0 - 1e-6, "{rows:?}");
        assert!(dot(&rows[h..], &column(0)).abs() > 1.0 - 1e-6, "{rows:?}");
        assert!(principal_basis(&[f32::NAN; 4], 1, 4, 1).is_err());
    }

    #[test]
    fn sum_zero_projection_keeps_inner_products_and_has_zero_mean() {
        let (h, p) = (6, 4);
        let basis = orthonormal_basis(3, h, 7).unwrap();
        let w = sum_zero_projection(&basis, h, p).unwrap();
        let x = [0.3, -1.0, 2.0, 0.5, 0.0, 1.5];
        let y = [1.0, 0.2, -0.4, 0.9, -2.0, 0.1];
        let project = |v: &[f64]| -> Vec<f64> {
            (0..p)
                .map(|i| (0..h).map(|j| f64::from(w[i * h + j]) * v[j]).sum())
                .collect()
        };
        let (px, py) = (project(&x), project(&y));
        assert!(px.iter().sum::<f64>().abs() < 1e-6, "{px:?}");
        let ux: Vec<f64> = basis.chunks(h).map(|u| dot(u, &x)).collect();
        let uy: Vec<f64> = basis.chunks(h).map(|u| dot(u, &y)).collect();
        assert!((dot(&px, &py) - dot(&ux, &uy)).abs() < 1e-5);
        assert!(sum_zero_projection(&basis, h, 3).is_err());
    }
}
