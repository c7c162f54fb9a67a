//! The native CPU dropout: the kernel's mask from the same Philox words, rayon over groups of
//! four elements (each element's result depends on its index alone, whatever the thread split).

use super::DropoutMask;
use crate::ops::elem::Elem;
use crate::rng::Philox4x32;
use rayon::prelude::*;

/// `x` masked and scaled as `kernels/dropout.cu` does.
pub(super) fn apply<T: Elem>(x: &[T], mask: &DropoutMask) -> Vec<T> {
    let philox = Philox4x32::from_seed(mask.seed);
    let (threshold, scale) = (mask.threshold(), mask.scale::<T>());
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(4)
        .zip(x.par_chunks(4))
        .enumerate()
        .for_each(|(g, (out, x))| {
            let draws = philox.block(mask.counter(g as u32));
            for ((o, &v), d) in out.iter_mut().zip(x).zip(draws) {
                *o = T::from_f32(v.to_f32() * if d < threshold { 0.0 } else { scale });
            }
        });
    out
}
