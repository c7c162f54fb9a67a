//! The native CPU dropout: the kernel's mask from the same Philox words, rayon over chunks of
//! whole groups of four elements (each element's result depends on its index alone, whatever the
//! thread split).

use super::DropoutMask;
use crate::ops::elem::Elem;
use crate::ops::math;
use crate::rng::{Philox4x32, PHILOX_LANES};
use rayon::prelude::*;

/// Elements per parallel task (a multiple of SPAN).
const CHUNK: usize = 1 << 14;
/// Elements masked by one Philox call of PHILOX_LANES blocks.
const SPAN: usize = 4 * PHILOX_LANES;

/// `x` masked and scaled as `kernels/dropout.cu` does.
pub(super) fn apply<T: Elem>(x: &[T], mask: &DropoutMask) -> Vec<T> {
    let philox = Philox4x32::from_seed(mask.seed);
    let (threshold, scale) = (mask.threshold(), mask.scale::<T>());
    let avx2 = math::avx2_fma();
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(task, (out, x))| {
            let first = (task * CHUNK / 4) as u32;
            math::vectorised(
                #[inline(always)]
                || {
                    let full = out.len() / SPAN * SPAN;
                    let (out, tail) = out.split_at_mut(full);
                    let (x, x_tail) = x.split_at(full);
                    let mut g = first;
                    for (out, x) in out.chunks_exact_mut(SPAN).zip(x.chunks_exact(SPAN)) {
                        let m = multipliers(&philox, avx2, mask, threshold, scale, g);
                        for i in 0..SPAN {
                            out[i] = T::from_f32(x[i].to_f32() * m[i]);
                        }
                        g += PHILOX_LANES as u32;
                    }
                    // The tensor's last elements: draws for groups past its end are not used.
                    if !tail.is_empty() {
                        let m = multipliers(&philox, avx2, mask, threshold, scale, g);
                        for ((o, v), m) in tail.iter_mut().zip(x_tail).zip(m) {
                            *o = T::from_f32(v.to_f32() * m);
                        }
                    }
                },
            )
        });
    out
}

/// The multipliers (0 or `scale`) of the SPAN elements from group `g` on, from one Philox call
/// of PHILOX_LANES blocks: element 4·lane + word draws word `word` of its lane's block.
#[inline(always)]
fn multipliers(
    philox: &Philox4x32,
    avx2: bool,
    mask: &DropoutMask,
    threshold: u32,
    scale: f32,
    g: u32,
) -> [f32; SPAN] {
    // The lanes' counters differ in the group word only.
    let draws = philox.blocks_along(mask.counter(g), 1, avx2);
    let mut m = [0f32; SPAN];
    for (e, m) in m.iter_mut().enumerate() {
        *m = if draws[e % 4][e / 4] < threshold {
            0.0
        } else {
            scale
        };
    }
    m
}
