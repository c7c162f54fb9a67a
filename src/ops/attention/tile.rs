//! The register-blocked f32 matrix product every step of the CPU attention is made of:
//! `C[m × n] (+)= A[m × k] · B[k × n]`, with A read through arbitrary row/column strides (so a
//! stored tile can be used transposed without copying), B and C row-major, n a multiple of 16.
//!
//! The micro-kernel keeps an MR × 16 block of C in registers (MR ≤ 6: twelve 8-lane accumulators,
//! two B vectors and a broadcast fill 15 of AVX2's 16 registers) and streams k. The AVX2/FMA
//! kernel is chosen at run time; the portable one is plain Rust that the compiler vectorises for
//! the baseline target.

/// Columns of C per micro-kernel call.
pub(super) const NR: usize = 16;
/// Most rows of C per micro-kernel call.
const MR: usize = 6;

/// A micro-kernel: one `ROWS × NR` block of C.
pub(super) trait Tiles: Copy {
    /// Whether tasks run compiled for AVX2, so that Philox may draw in its registers.
    const AVX2: bool;

    /// `c[i·ldc + j] (+)= Σ_p a[i·rs + p·cs] · b[p·ldb + j]` for i < ROWS, j < NR, p < kd.
    ///
    /// # Safety
    /// Every address named above must be inside its buffer (checked by [`gemm`]).
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const ROWS: usize>(
        self,
        kd: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    );

    /// `a · b + c`, fused where the instruction set has it.
    #[inline(always)]
    fn madd(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    /// e^x ([`crate::ops::math::exp`]) with this instruction set's multiply-add.
    #[inline(always)]
    fn exp(self, x: f32) -> f32 {
        crate::ops::math::exp_with(x, |a, b, c| self.madd(a, b, c))
    }

    /// `dst[c·ldd + r] = src[r·lds + c]` for an 8 × 8 block.
    ///
    /// # Safety
    /// Every address named above must be inside its buffer (checked by [`transpose`]).
    unsafe fn transpose8(self, src: *const f32, lds: usize, dst: *mut f32, ldd: usize);
}

/// An operand read as `data[i·rs + p·cs]`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Strided<'a> {
    /// A row-major matrix with row stride `ld`.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Strided {
            data,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with row stride `ld`.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Strided {
            data,
            rs: 1,
            cs: ld,
        }
    }
}

/// `C[m × n] = A · B` (or `C += A · B` when `accumulate`), B and C row-major with strides `ldb`
/// and `ldc`; n must be a multiple of [`NR`]. Panics on out-of-range operands (a bug, not input).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<K: Tiles>(
    kernel: K,
    (m, n, kd): (usize, usize, usize),
    a: Strided<'_>,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(n % NR == 0, "gemm: n = {n} is not a multiple of {NR}");
    assert!(
        c.len() >= (m - 1) * ldc + n && ldc >= n,
        "gemm: C out of range"
    );
    if kd > 0 {
        assert!(
            a.data.len() > (m - 1) * a.rs + (kd - 1) * a.cs,
            "gemm: A out of range"
        );
        assert!(b.len() >= (kd - 1) * ldb + n, "gemm: B out of range");
    }
    let (ap, bp, cp) = (a.data.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    for j in (0..n).step_by(NR) {
        let mut i = 0;
        // SAFETY: rows i..i+ROWS < m, columns j..j+NR ≤ n and p < kd: inside the ranges asserted.
        unsafe {
            let (bj, cj) = (bp.add(j), cp.add(j));
            let args = |i: usize| (ap.add(i * a.rs), cj.add(i * ldc));
            while i + MR <= m {
                let (ai, ci) = args(i);
                kernel.block::<MR>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate);
                i += MR;
            }
            let (ai, ci) = args(i);
            match m - i {
                1 => kernel.block::<1>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate),
                2 => kernel.block::<2>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate),
                3 => kernel.block::<3>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate),
                4 => kernel.block::<4>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate),
                5 => kernel.block::<5>(kd, ai, a.rs, a.cs, bj, ldb, ci, ldc, accumulate),
                _ => {}
            }
        }
    }
}

/// `dst[c·ldd + r] = src[r·lds + c]` for r < rows, c < cols, by 8 × 8 blocks in registers.
/// Panics on out-of-range operands (a bug, not input).
#[inline(always)]
pub(super) fn transpose<K: Tiles>(
    kernel: K,
    (rows, cols): (usize, usize),
    src: &[f32],
    lds: usize,
    dst: &mut [f32],
    ldd: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * lds + cols,
        "transpose: source out of range"
    );
    assert!(
        dst.len() >= (cols - 1) * ldd + rows,
        "transpose: destination out of range"
    );
    let (full_r, full_c) = (rows / 8 * 8, cols / 8 * 8);
    for r in (0..full_r).step_by(8) {
        for c in (0..full_c).step_by(8) {
            // SAFETY: the block's rows r..r+8 ≤ rows and columns c..c+8 ≤ cols are in range.
            unsafe {
                kernel.transpose8(
                    src.as_ptr().add(r * lds + c),
                    lds,
                    dst.as_mut_ptr().add(c * ldd + r),
                    ldd,
                )
            };
        }
    }
    for r in 0..rows {
        let from = if r < full_r { full_c } else { 0 };
        for c in from..cols {
            dst[c * ldd + r] = src[r * lds + c];
        }
    }
}

/// Work generic over the micro-kernels, run by [`run`] compiled for the detected instruction set.
pub(super) trait Task {
    type Output;
    fn run<K: Tiles>(self, kernel: K) -> Self::Output;
}

/// The instruction set to compile tasks for, detected at run time.
#[derive(Clone, Copy)]
pub(super) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
}

impl Isa {
    /// The best this CPU has, unless `REALM_CPU_SIMD=portable` ([`crate::ops::cpu_simd`]).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::ops::cpu_simd() == crate::ops::CpuSimd::Auto {
            if let Some(k) = Avx2::detect() {
                return Isa::Avx2(k);
            }
        }
        Isa::Portable
    }
}

/// Runs `task` with `isa`'s micro-kernels, its body compiled for that instruction set (the task's
/// `run` is inlined into a function with the target features enabled).
pub(super) fn run<T: Task>(isa: Isa, task: T) -> T::Output {
    match isa {
        Isa::Portable => task.run(Portable),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` holds an `Avx2`, which exists only where the features were detected.
        Isa::Avx2(k) => unsafe { run_avx2(k, task) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<T: Task>(kernel: Avx2, task: T) -> T::Output {
    task.run(kernel)
}

/// Plain Rust, vectorised by the compiler for whatever the build targets.
#[derive(Clone, Copy)]
pub(super) struct Portable;

impl Tiles for Portable {
    const AVX2: bool = false;

    #[inline(always)]
    unsafe fn block<const ROWS: usize>(
        self,
        kd: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[0.0f32; NR]; ROWS];
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(std::slice::from_raw_parts(c.add(i * ldc), NR));
            }
        }
        for p in 0..kd {
            let bp = std::slice::from_raw_parts(b.add(p * ldb), NR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = *a.add(i * rs + p * cs);
                for (x, bx) in row.iter_mut().zip(bp) {
                    *x += ai * bx;
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            std::slice::from_raw_parts_mut(c.add(i * ldc), NR).copy_from_slice(row);
        }
    }

    #[inline(always)]
    unsafe fn transpose8(self, src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        for r in 0..8 {
            for c in 0..8 {
                *dst.add(c * ldd + r) = *src.add(r * lds + c);
            }
        }
    }
}

/// AVX2 + FMA; only constructed once both are detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx2 {
    _detected: (),
}

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then_some(Avx2 { _detected: () })
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles for Avx2 {
    const AVX2: bool = true;

    #[inline(always)]
    unsafe fn block<const ROWS: usize>(
        self,
        kd: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: an `Avx2` value exists only where the features were detected.
        avx2_block::<ROWS>(kd, a, rs, cs, b, ldb, c, ldc, accumulate)
    }

    #[inline(always)]
    fn madd(self, a: f32, b: f32, c: f32) -> f32 {
        // One instruction: tasks run compiled with FMA enabled.
        a.mul_add(b, c)
    }

    #[inline(always)]
    unsafe fn transpose8(self, src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        // SAFETY: as above.
        avx2_transpose8(src, lds, dst, ldd)
    }
}

/// The 8 × 8 transpose in three rounds of shuffles (pairs, quads, halves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for i in 0..4 {
        _mm256_storeu_ps(
            dst.add(i * ldd),
            _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]),
        );
        _mm256_storeu_ps(
            dst.add((i + 4) * ldd),
            _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]),
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2_block<const ROWS: usize>(
    kd: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm256_setzero_ps(); ROWS];
    let mut hi = [_mm256_setzero_ps(); ROWS];
    if accumulate {
        for i in 0..ROWS {
            lo[i] = _mm256_loadu_ps(c.add(i * ldc));
            hi[i] = _mm256_loadu_ps(c.add(i * ldc + 8));
        }
    }
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kd {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for i in 0..ROWS {
            let ai = _mm256_broadcast_ss(&*ap.add(i * rs));
            lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
            hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
        }
        ap = ap.add(cs);
        bp = bp.add(ldb);
    }
    for i in 0..ROWS {
        _mm256_storeu_ps(c.add(i * ldc), lo[i]);
        _mm256_storeu_ps(c.add(i * ldc + 8), hi[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, kd: usize, a: Strided<'_>, b: &[f32], ldb: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..kd)
                    .map(|p| a.data[i * a.rs + p * a.cs] * b[p * ldb + j])
                    .sum();
            }
        }
        c
    }

    fn check<K: Tiles>(kernel: K) {
        let mut rng = crate::rng::SplitMix64::new(3);
        for (m, n, kd) in [(1, 16, 1), (7, 32, 5), (13, 48, 64), (6, 16, 0)] {
            let a: Vec<f32> = (0..m * kd).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..kd * n).map(|_| rng.normal() as f32).collect();
            for a_op in [Strided::rows(&a, kd), Strided::transposed(&a, m)] {
                let want = reference(m, n, kd, a_op, &b, n);
                let mut c = vec![1.0f32; m * n];
                gemm(kernel, (m, n, kd), a_op, &b, n, &mut c, n, true);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - 1.0 - w).abs() < 1e-4, "m={m} n={n} k={kd}: {x} vs {w}");
                }
                gemm(kernel, (m, n, kd), a_op, &b, n, &mut c, n, false);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - w).abs() < 1e-4);
                }
            }
        }
    }

    fn check_transpose<K: Tiles>(kernel: K) {
        for (rows, cols) in [(1, 1), (8, 8), (13, 21), (48, 64), (3, 16)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; cols * (rows + 2)];
            transpose(kernel, (rows, cols), &src, cols, &mut dst, rows + 2);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * (rows + 2) + r],
                        src[r * cols + c],
                        "{rows}x{cols} ({r}, {c})"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_kernel_matches_the_definition() {
        check(Portable);
        check_transpose(Portable);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn check_avx2_transpose(k: Avx2) {
        check_transpose(k)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_the_definition() {
        if let Some(k) = Avx2::detect() {
            check(k);
            // SAFETY: AVX2 was detected.
            unsafe { check_avx2_transpose(k) };
        }
    }
}
