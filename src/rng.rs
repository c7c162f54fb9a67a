//! Small deterministic random number generators: SplitMix64 for test and benchmark data (the same
//! inputs on every machine for a seed), independent of any external crate's stream, and the
//! counter-based Philox4x32-10 that the kernels share (`kernels/include/realm/philox.cuh`).

/// SplitMix64 (Steele, Lea, Flood 2014): fast, and every seed gives a full-period stream.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (n > 0), by Lemire's multiply-shift (bias below 2^-64 · n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal, by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` normal values scaled by `scale`.
    pub fn normal_vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"):
/// a keyed bijection of 128-bit counters, so any element's random bits are computed from its
/// coordinates alone. Identical to Random123's `philox4x32_10` and to `philox4x32_10` in
/// `kernels/include/realm/philox.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Philox4x32 {
    key: [u32; 2],
}

impl Philox4x32 {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;

    /// The generator with this 64-bit key (two words, as the kernels take it).
    pub fn new(key: [u32; 2]) -> Self {
        Philox4x32 { key }
    }

    /// The generator keyed by a 64-bit seed (low word first).
    pub fn from_seed(seed: u64) -> Self {
        Self::new([seed as u32, (seed >> 32) as u32])
    }

    /// The key, as a kernel takes it.
    pub fn key(&self) -> [u32; 2] {
        self.key
    }

    /// The four 32-bit outputs for counter `ctr`.
    #[inline(always)]
    pub fn block(&self, ctr: [u32; 4]) -> [u32; 4] {
        let mut c = ctr;
        for r in 0..10 {
            let [k0, k1] = self.round_key(r);
            let p0 = u64::from(Self::M0) * u64::from(c[0]);
            let p1 = u64::from(Self::M1) * u64::from(c[2]);
            c = [
                (p1 >> 32) as u32 ^ c[1] ^ k0,
                p1 as u32,
                (p0 >> 32) as u32 ^ c[3] ^ k1,
                p0 as u32,
            ];
        }
        c
    }

    /// [`Philox4x32::block`] of [`PHILOX_LANES`] counters, held word by word (`ctr[word][lane]`
    /// in, the same layout out): in AVX2 registers when `avx2` allows it and the CPU has AVX2
    /// (the compiler does not vectorise the 32 × 32 → 64-bit products of a loop of `block` calls
    /// on its own), else one `block` per lane. The same bits either way.
    #[inline(always)]
    pub fn blocks(&self, ctr: [[u32; PHILOX_LANES]; 4], avx2: bool) -> [[u32; PHILOX_LANES]; 4] {
        #[cfg(target_arch = "x86_64")]
        if avx2 && is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, detected just above.
            return unsafe { self.blocks_avx2(ctr) };
        }
        let _ = avx2;
        let mut out = [[0u32; PHILOX_LANES]; 4];
        for lane in 0..PHILOX_LANES {
            let block = self.block(ctr.map(|word| word[lane]));
            for (word, x) in out.iter_mut().zip(block) {
                word[lane] = x;
            }
        }
        out
    }

    /// [`Philox4x32::blocks`] of [`PHILOX_LANES`] counters that differ from `base` in word 0
    /// only: lane i counts `base[0] + i · stride` (wrapping). Built with fixed-width loops, which
    /// stay inline in a kernel's innermost loop (`array::map` there was once left out of line).
    #[inline(always)]
    pub fn blocks_along(
        &self,
        base: [u32; 4],
        stride: u32,
        avx2: bool,
    ) -> [[u32; PHILOX_LANES]; 4] {
        let [first, w1, w2, w3] = base;
        let mut lanes = [first; PHILOX_LANES];
        for (i, w) in lanes.iter_mut().enumerate() {
            *w = first.wrapping_add((i as u32).wrapping_mul(stride));
        }
        let ctr = [
            lanes,
            [w1; PHILOX_LANES],
            [w2; PHILOX_LANES],
            [w3; PHILOX_LANES],
        ];
        self.blocks(ctr, avx2)
    }

    /// [`Philox4x32::blocks`] in AVX2 registers.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn blocks_avx2(&self, ctr: [[u32; PHILOX_LANES]; 4]) -> [[u32; PHILOX_LANES]; 4] {
        use std::arch::x86_64::*;
        // The high and low words of the eight products m · a (`mul_epu32` multiplies the even
        // 32-bit lanes; the odd ones are shifted down for a second multiply).
        #[inline(always)]
        fn mul_hi_lo(a: __m256i, m: __m256i) -> (__m256i, __m256i) {
            // SAFETY: only inlined into `blocks_avx2`, whose caller guarantees AVX2.
            unsafe {
                let even = _mm256_mul_epu32(a, m);
                let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), m);
                (
                    _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd),
                    _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd)),
                )
            }
        }
        let load = |w: &[u32; 8]| _mm256_loadu_si256(w.as_ptr().cast());
        let [mut c0, mut c1, mut c2, mut c3] =
            [load(&ctr[0]), load(&ctr[1]), load(&ctr[2]), load(&ctr[3])];
        let m0 = _mm256_set1_epi64x(i64::from(Self::M0));
        let m1 = _mm256_set1_epi64x(i64::from(Self::M1));
        for r in 0..10 {
            let [k0, k1] = self.round_key(r);
            let (k0, k1) = (_mm256_set1_epi32(k0 as i32), _mm256_set1_epi32(k1 as i32));
            let (hi0, lo0) = mul_hi_lo(c0, m0);
            let (hi1, lo1) = mul_hi_lo(c2, m1);
            (c0, c1, c2, c3) = (
                _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0),
                lo1,
                _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1),
                lo0,
            );
        }
        let mut out = [[0u32; PHILOX_LANES]; 4];
        for (o, c) in out.iter_mut().zip([c0, c1, c2, c3]) {
            _mm256_storeu_si256(o.as_mut_ptr().cast(), c);
        }
        out
    }

    /// The key of round `r` (0-based): the key bumped by the Weyl constants r times.
    #[inline(always)]
    fn round_key(&self, r: u32) -> [u32; 2] {
        [
            self.key[0].wrapping_add(Self::W0.wrapping_mul(r)),
            self.key[1].wrapping_add(Self::W1.wrapping_mul(r)),
        ]
    }
}

/// Counters per [`Philox4x32::blocks`] call: eight 32-bit lanes fill an AVX2 register.
pub const PHILOX_LANES: usize = 8;

#[cfg(test)]
mod tests {
    use super::Philox4x32;

    /// Random123's known-answer vectors (`kat_vectors`, philox4x32 10): counter, key, output.
    #[test]
    fn philox_matches_random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0; 4],
                [0; 2],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(Philox4x32::new(key).block(ctr), want, "counter {ctr:08x?}");
        }
        assert_eq!(
            Philox4x32::from_seed(0x299f_31d0_a409_3822).block(cases[2].0),
            cases[2].2
        );
    }

    #[test]
    fn blocks_along_count_word_0_by_the_stride() {
        use super::PHILOX_LANES;
        let philox = Philox4x32::new([7, 9]);
        let base = [u32::MAX - 3, 5, 6, 8];
        for avx2 in [false, true] {
            let lanes = philox.blocks_along(base, 1 << 16, avx2);
            for lane in 0..PHILOX_LANES {
                let first = base[0].wrapping_add((lane as u32) << 16);
                let want = philox.block([first, 5, 6, 8]);
                assert_eq!(lanes.map(|w| w[lane]), want, "lane {lane}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_blocks_are_one_block_per_lane() {
        use super::PHILOX_LANES;
        if !is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let philox = Philox4x32::new([0xa409_3822, 0x299f_31d0]);
        let counters: [[u32; 4]; PHILOX_LANES] = std::array::from_fn(|lane| {
            let l = lane as u32;
            [
                u32::MAX - l,
                0x85a3_08d3 ^ l,
                l.wrapping_mul(0x9e37_79b9),
                7 + l,
            ]
        });
        let words = std::array::from_fn(|w| counters.map(|c| c[w]));
        // SAFETY: the CPU has AVX2, detected just above.
        let lanes = unsafe { philox.blocks_avx2(words) };
        for (lane, ctr) in counters.iter().enumerate() {
            assert_eq!(lanes.map(|w| w[lane]), philox.block(*ctr), "lane {lane}");
        }
        // The dispatching call gives the same on either path.
        assert_eq!(philox.blocks(words, true), lanes);
        assert_eq!(philox.blocks(words, false), lanes);
    }
}
