//! The dropout kernel's launch (`kernels/dropout.cu`), described once for every backend: one
//! thread per group of four elements, grid-stride beyond `MAX_BLOCKS` blocks.

use super::{DropoutMask, OP};
use crate::error::Result;
use crate::kernels::abi::dropout::{Dropout, DROPOUT_THREADS};
use crate::kernels::{Backend, Element, Launch};

/// Enough blocks to fill a GPU; more groups loop.
const MAX_BLOCKS: usize = 4096;

/// `x` (`n` elements) with `mask` applied, the kept elements multiplied by `scale`.
pub(super) fn apply<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    n: usize,
    mask: &DropoutMask,
    scale: f32,
) -> Result<B::Buf<T>> {
    let mut out = be.alloc::<T>(n, OP)?;
    let blocks = n
        .div_ceil(4)
        .div_ceil(DROPOUT_THREADS as usize)
        .clamp(1, MAX_BLOCKS);
    let mut b = be.binder();
    let params = Dropout {
        x: B::read(&mut b, x),
        out: B::write(&mut b, &mut out),
        n: n as u32,
        key0: mask.seed as u32,
        key1: (mask.seed >> 32) as u32,
        stream: mask.stream,
        step0: mask.step as u32,
        step1: (mask.step >> 32) as u32,
        threshold: mask.threshold(),
        scale,
    };
    be.launch(
        b,
        (),
        Launch::linear(blocks as u32, DROPOUT_THREADS),
        params,
    )?;
    Ok(out)
}
