//! LayerNorm's and GELU's kernels (`kernels/layer_norm.cu`, `kernels/gelu.cu`), each launch
//! described once for every backend.

use super::{GeluForm, OP_GELU, OP_LAYER_NORM};
use crate::error::Result;
use crate::kernels::abi::gelu::{self, GeluBwd, GeluFwd, GELU_THREADS};
use crate::kernels::abi::layer_norm::{
    self, LayerNormBwd, LayerNormBwdReduce, LayerNormFwd, LAYER_NORM_THREADS,
};
use crate::kernels::{Backend, Element, Launch};

/// Rows up to this width get a warp each in the forward; wider ones a block.
const WARP_MAX_HIDDEN: usize = 1024;
/// The most partial sums of dw and db the backward makes (blocks of its first launch).
const MAX_PARTS: usize = 512;
/// The most blocks of a GELU launch (a grid-stride loop covers the rest).
const GELU_MAX_BLOCKS: usize = 8192;

/// The rows each block of LayerNorm's backward sums: a function of the shape alone, so the
/// result is the same on every run.
fn rows_per_part(rows: usize) -> usize {
    rows.div_ceil(MAX_PARTS).max(1)
}

/// y = LayerNorm(x) · w + b over `rows` rows of `h`.
pub(super) fn layer_norm<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    w: &B::View<'_, f32>,
    b: &B::View<'_, f32>,
    rows: usize,
    h: usize,
    eps: f32,
) -> Result<B::Buf<T>> {
    let mut y = be.alloc::<T>(rows * h, OP_LAYER_NORM)?;
    let (variant, shape) = if h <= WARP_MAX_HIDDEN {
        let rows_per_block = (LAYER_NORM_THREADS / 32) as usize;
        let blocks = rows.div_ceil(rows_per_block) as u32;
        (
            layer_norm::Variant::Warp,
            Launch::linear(blocks, LAYER_NORM_THREADS),
        )
    } else {
        (
            layer_norm::Variant::Block,
            Launch::linear(rows as u32, LAYER_NORM_THREADS),
        )
    };
    let mut bind = be.binder();
    let params = LayerNormFwd {
        x: B::read(&mut bind, x),
        w: B::read(&mut bind, w),
        b: B::read(&mut bind, b),
        y: B::write(&mut bind, &mut y),
        rows: rows as u32,
        h: h as u32,
        eps,
    };
    be.launch(bind, variant, shape, params)?;
    Ok(y)
}

/// LayerNorm's gradients `[rows + 2, h]` f32 (dx, dw, db): per-block partial sums of dw and db
/// over fixed row ranges, then one launch adding them in block order.
pub(super) fn layer_norm_bwd<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    w: &B::View<'_, f32>,
    dy: &B::View<'_, T>,
    rows: usize,
    h: usize,
    eps: f32,
) -> Result<B::Buf<f32>> {
    let per_part = rows_per_part(rows);
    let parts = rows.div_ceil(per_part);
    let mut out = be.alloc::<f32>((rows + 2) * h, OP_LAYER_NORM)?;
    let mut partials = be.alloc::<f32>(parts * 2 * h, OP_LAYER_NORM)?;
    let mut bind = be.binder();
    let params = LayerNormBwd {
        x: B::read(&mut bind, x),
        w: B::read(&mut bind, w),
        dy: B::read(&mut bind, dy),
        out: B::write(&mut bind, &mut out),
        partials: B::write(&mut bind, &mut partials),
        rows: rows as u32,
        h: h as u32,
        rows_per_part: per_part as u32,
        eps,
    };
    let shape = Launch::linear(parts as u32, LAYER_NORM_THREADS).with_dyn_smem((2 * h * 4) as u32);
    be.launch(bind, (), shape, params)?;

    let mut bind = be.binder();
    let params = LayerNormBwdReduce {
        partials: B::read_buf(&mut bind, &partials),
        out: B::write(&mut bind, &mut out),
        parts: parts as u32,
        rows: rows as u32,
        h: h as u32,
    };
    let blocks = (2 * h).div_ceil(LAYER_NORM_THREADS as usize) as u32;
    be.launch(bind, (), Launch::linear(blocks, LAYER_NORM_THREADS), params)?;
    Ok(out)
}

fn gelu_variant(form: GeluForm) -> gelu::Variant {
    match form {
        GeluForm::Erf => gelu::Variant::Erf,
        GeluForm::Tanh => gelu::Variant::Tanh,
    }
}

fn gelu_shape(n: usize) -> Launch {
    let blocks = n.div_ceil(GELU_THREADS as usize).clamp(1, GELU_MAX_BLOCKS);
    Launch::linear(blocks as u32, GELU_THREADS)
}

/// GELU of `n` elements.
pub(super) fn gelu<B: Backend, T: Element>(
    be: &B,
    form: GeluForm,
    x: &B::View<'_, T>,
    n: usize,
) -> Result<B::Buf<T>> {
    let mut y = be.alloc::<T>(n, OP_GELU)?;
    let mut bind = be.binder();
    let params = GeluFwd {
        x: B::read(&mut bind, x),
        y: B::write(&mut bind, &mut y),
        n: n as u64,
    };
    be.launch(bind, gelu_variant(form), gelu_shape(n), params)?;
    Ok(y)
}

/// dx = dy · GELU'(x) over `n` elements.
pub(super) fn gelu_bwd<B: Backend, T: Element>(
    be: &B,
    form: GeluForm,
    (x, dy): (&B::View<'_, T>, &B::View<'_, T>),
    n: usize,
) -> Result<B::Buf<T>> {
    let mut dx = be.alloc::<T>(n, OP_GELU)?;
    let mut bind = be.binder();
    let params = GeluBwd {
        x: B::read(&mut bind, x),
        dy: B::read(&mut bind, dy),
        dx: B::write(&mut bind, &mut dx),
        n: n as u64,
    };
    be.launch(bind, gelu_variant(form), gelu_shape(n), params)?;
    Ok(dx)
}
