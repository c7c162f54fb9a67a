//! Dropout on the attention probabilities with a counter-based mask: the keep/drop decision of
//! element (batch, head, row, column) is a pure function of (seed, offset, batch·heads + head,
//! row, column), so the CPU, the emulator and the GPU draw the same mask and the backward
//! regenerates it instead of storing it.
//!
//! Philox4x32-10 keyed by `seed`, counter
//! `[row << 16 | column / 4, batch·heads + head, offset low word, offset high word]`; output word
//! `column % 4` is the element's draw, and the element is dropped when the draw is below
//! `round(p · 2³²)`. Kept elements are scaled by 1 / (1 − p). The packing needs l ≤ 65536
//! ([`super::MAX_LEN`]); every (offset, batch, head, row, column) gets its own counter and word,
//! so a new `offset` per call (e.g. the training step) gives a fresh mask.

use crate::error::{Error, Result};
use crate::rng::{Philox4x32, PHILOX_LANES};

/// Dropout on the attention probabilities, applied after the softmax (as BERT trains).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element, in [0, 1).
    pub p: f32,
    /// Key of the Philox stream the masks are drawn from.
    pub seed: u64,
    /// Distinguishes calls with the same seed (e.g. the step count).
    pub offset: u64,
}

/// A validated dropout with a non-zero probability: its generator, threshold and scale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mask {
    philox: Philox4x32,
    offset: [u32; 2],
    /// A draw below this drops the element.
    pub threshold: u32,
    /// What kept elements are multiplied by: 1 / (1 − p).
    pub scale: f32,
}

impl Mask {
    /// `None` for p = 0 (nothing to draw); an error for p outside [0, 1).
    pub fn new(op: &'static str, d: Dropout) -> Result<Option<Self>> {
        if !(0.0..1.0).contains(&d.p) {
            return Err(Error::bad_input(
                op,
                "dropout",
                format!("p = {} must be in [0, 1)", d.p),
            ));
        }
        if d.p == 0.0 {
            return Ok(None);
        }
        // p < 1 keeps this below 2^32 (p ≤ 1 − 2^-24 in f32).
        let threshold = (f64::from(d.p) * 4_294_967_296.0).round() as u32;
        Ok(Some(Mask {
            philox: Philox4x32::from_seed(d.seed),
            offset: [d.offset as u32, (d.offset >> 32) as u32],
            threshold,
            scale: (1.0 / (1.0 - f64::from(d.p))) as f32,
        }))
    }

    /// `[seed low, seed high, offset low, offset high]`, as the kernels take them.
    #[cfg_attr(not(any(feature = "emulate", feature = "cuda")), allow(dead_code))]
    pub fn kernel_words(&self) -> [u32; 4] {
        let [k0, k1] = self.philox.key();
        [k0, k1, self.offset[0], self.offset[1]]
    }

    /// The multipliers (0 or `scale`) of columns `4·group .. 4·group + 4` of `row` in head `bh`.
    #[inline]
    pub fn multipliers(&self, bh: u32, row: u32, group: u32) -> [f32; 4] {
        let draws = self.philox.block(self.counter(bh, row, group));
        draws.map(|d| self.multiplier(d))
    }

    /// [`Mask::multipliers`] of rows `row0 .. row0 + PHILOX_LANES` at once, `[column][row]`: the
    /// Philox blocks in AVX2 registers when `avx2` allows ([`Philox4x32::blocks`]).
    #[inline(always)]
    pub fn multiplier_lanes(
        &self,
        bh: u32,
        row0: u32,
        group: u32,
        avx2: bool,
    ) -> [[f32; PHILOX_LANES]; 4] {
        // The rows differ in word 0's row field (bits 16 and up).
        let draws = self
            .philox
            .blocks_along(self.counter(bh, row0, group), 1 << 16, avx2);
        let mut out = [[0f32; PHILOX_LANES]; 4];
        for (o, d) in out.iter_mut().zip(&draws) {
            for lane in 0..PHILOX_LANES {
                o[lane] = self.multiplier(d[lane]);
            }
        }
        out
    }

    /// The counter of columns `4·group .. 4·group + 4` of `row` in head `bh`.
    #[inline(always)]
    fn counter(&self, bh: u32, row: u32, group: u32) -> [u32; 4] {
        [(row << 16) | group, bh, self.offset[0], self.offset[1]]
    }

    #[inline(always)]
    fn multiplier(&self, draw: u32) -> f32 {
        if draw < self.threshold {
            0.0
        } else {
            self.scale
        }
    }
}

/// The multiplier (0 or 1 / (1 − p)) of every attention probability, `[b, h, l, l]` row-major:
/// exactly what the fused op applies. For references and tests; l ≤ [`super::MAX_LEN`].
pub fn dropout_multipliers(b: usize, h: usize, l: usize, dropout: Dropout) -> Result<Vec<f32>> {
    const OP: &str = "dropout_multipliers";
    if l > super::MAX_LEN || b * h > u32::MAX as usize {
        return Err(Error::bad_input(
            OP,
            "shape",
            format!("b·h = {} and l = {l} exceed the counter layout", b * h),
        ));
    }
    let Some(mask) = Mask::new(OP, dropout)? else {
        return Ok(vec![1.0; b * h * l * l]);
    };
    let mut out = Vec::with_capacity(b * h * l * l);
    for bh in 0..b * h {
        for row in 0..l {
            for group in 0..l.div_ceil(4) {
                let m = mask.multipliers(bh as u32, row as u32, group as u32);
                let cols = (l - 4 * group).min(4);
                out.extend_from_slice(&m[..cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_depends_on_every_coordinate() {
        let d = Dropout {
            p: 0.25,
            seed: 7,
            offset: 3,
        };
        let m = dropout_multipliers(2, 3, 64, d).unwrap();
        let kept = m.iter().filter(|&&x| x != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
        assert!(m.iter().all(|&x| x == 0.0 || (x - 4.0 / 3.0).abs() < 1e-6));
        // Another offset, seed, head or row gives another mask.
        let other = dropout_multipliers(2, 3, 64, Dropout { offset: 4, ..d }).unwrap();
        assert_ne!(m, other);
        let other = dropout_multipliers(2, 3, 64, Dropout { seed: 8, ..d }).unwrap();
        assert_ne!(m, other);
        let per_head = 64 * 64;
        assert_ne!(m[..per_head], m[per_head..2 * per_head]);
        assert_ne!(m[..64], m[64..128]);
    }

    #[test]
    fn zero_p_keeps_everything_and_bad_p_is_an_error() {
        let d = Dropout {
            p: 0.0,
            seed: 1,
            offset: 0,
        };
        assert!(dropout_multipliers(1, 1, 5, d)
            .unwrap()
            .iter()
            .all(|&x| x == 1.0));
        for p in [1.0, -0.1, f32::NAN] {
            assert!(dropout_multipliers(1, 1, 5, Dropout { p, ..d }).is_err());
        }
    }
}
