//! Scalar math written so that loops over slices vectorise (no libm calls, no branches).

/// e^x in f32, branch-free, within 2 ulp of the true value for x ≤ 88 (the domain of the softmax
/// and log-sum-exp arguments here, which are ≤ 0); exactly 0 for x < -87 (so -inf gives 0) and NaN
/// for NaN. Cephes' expf: x = n ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r, and 2^n
/// put into the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    exp_with(x, |a, b, c| a * b + c)
}

/// [`exp`] with its multiply-adds `a · b + c` done by `madd`: a fused multiply-add where the code
/// is compiled for a target that has one (`f32::mul_add` is a libm call elsewhere).
#[inline(always)]
pub(crate) fn exp_with(x: f32, madd: impl Fn(f32, f32, f32) -> f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = madd(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd(n, -LN2_LO, madd(n, -LN2_HI, xc));
    let mut p = 1.987_569_1e-4f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = madd(p, r, c);
    }
    let y = madd(p, r * r, r) + 1.0;
    // n sits in t's low mantissa bits (|n| ≤ 127 keeps t in ROUND's binade): integer arithmetic
    // on the bits makes 2^n, which vectorises where a float-to-int cast would not.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// Whether the native CPU kernels may use AVX2 and FMA: this CPU has them and
/// [`crate::ops::CPU_SIMD_ENV`] allows.
#[inline]
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::ops::cpu_simd() == crate::ops::CpuSimd::Auto
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        return true;
    }
    false
}

/// Runs `f` compiled for AVX2 + FMA when [`avx2_fma`], else as it is. The element-wise loops `f`
/// inlines then run eight lanes wide instead of four; the arithmetic is the same (Rust fuses no
/// `a * b + c` into an FMA on its own), so the result is the same bit for bit on either path.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA (`avx2_fma`).
        return unsafe { with_avx2(f) };
    }
    f()
}

/// Sum with eight independent accumulators (vectorises; also more accurate than a running sum).
#[inline]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Inner product with eight independent accumulators.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Maximum, ignoring NaN (callers check for NaN separately where it matters).
#[inline]
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Whether any value is NaN (no early exit, so it vectorises).
#[inline]
pub(crate) fn has_nan(values: &[f32]) -> bool {
    values.iter().fold(false, |a, v| a | v.is_nan())
}

/// Replaces each value by e^(value − max) and returns (max, their sum); (−inf, 0) and all zeros
/// for a row with no finite value.
#[inline]
pub(crate) fn exp_shifted_in_place(values: &mut [f32]) -> (f32, f32) {
    let m = max(values);
    if m == f32::NEG_INFINITY {
        values.fill(0.0);
        return (m, 0.0);
    }
    for v in values.iter_mut() {
        *v = exp(*v - m);
    }
    (m, sum(values))
}

/// log Σ e^value, destroying `values` (they become e^(value − max)); −inf for no finite value.
#[inline]
pub(crate) fn logsumexp_in_place(values: &mut [f32]) -> f32 {
    let (m, s) = exp_shifted_in_place(values);
    if m == f32::NEG_INFINITY {
        m
    } else {
        m + s.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_exp(exp: impl Fn(f32) -> f32) {
        let mut x = -90.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            if x >= -87.0 {
                let ulp = (want as f32).to_bits().abs_diff((got as f32).to_bits());
                assert!(ulp <= 2, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            }
            x += 0.0137;
        }
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_two_ulp_and_exact_at_the_edges() {
        check_exp(exp);
        check_exp(|x| exp_with(x, f32::mul_add));
    }

    #[test]
    fn reductions_handle_tails_and_empty_rows() {
        let v: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(sum(&v), 171.0);
        assert_eq!(max(&v), 18.0);
        assert!(!has_nan(&v));
        let mut w = vec![f32::NEG_INFINITY; 3];
        assert_eq!(logsumexp_in_place(&mut w), f32::NEG_INFINITY);
        assert_eq!(w, vec![0.0; 3]);
    }
}
