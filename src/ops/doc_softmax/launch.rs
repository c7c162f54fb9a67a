//! doc_softmax's kernels (`kernels/doc_softmax.cu`), each launch described once for every
//! backend: a warp per row for short rows, a block per row for long ones; one launch per
//! forward or backward.

use super::WARP_MAX_K;
use crate::error::Result;
use crate::kernels::abi::doc_softmax::{
    DocSoftmaxBwd, DocSoftmaxFwd, MllBwd, MllFwd, Variant, DOC_SOFTMAX_THREADS,
};
use crate::kernels::{Backend, Element, Launch};

/// The variant and shape for `rows` row groups of `k` candidates.
fn geometry(rows: usize, k: usize) -> (Variant, Launch) {
    if k <= WARP_MAX_K {
        let rows_per_block = (DOC_SOFTMAX_THREADS / 32) as usize;
        let blocks = rows.div_ceil(rows_per_block) as u32;
        (Variant::Warp, Launch::linear(blocks, DOC_SOFTMAX_THREADS))
    } else {
        (
            Variant::Block,
            Launch::linear(rows as u32, DOC_SOFTMAX_THREADS),
        )
    }
}

/// p = softmax(x) over rows of `k`.
pub(super) fn softmax<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    rows: usize,
    k: usize,
) -> Result<B::Buf<T>> {
    let mut p = be.alloc::<T>(rows * k, super::OP_SOFTMAX)?;
    let (variant, shape) = geometry(rows, k);
    let mut b = be.binder();
    let params = DocSoftmaxFwd {
        x: B::read(&mut b, x),
        p: B::write(&mut b, &mut p),
        rows: rows as u32,
        k: k as u32,
    };
    be.launch(b, variant, shape, params)?;
    Ok(p)
}

/// dx = p ⊙ (g − Σ p g).
pub(super) fn softmax_bwd<B: Backend, T: Element>(
    be: &B,
    p: &B::View<'_, T>,
    g: &B::View<'_, T>,
    rows: usize,
    k: usize,
) -> Result<B::Buf<T>> {
    let mut dx = be.alloc::<T>(rows * k, super::OP_SOFTMAX)?;
    let (variant, shape) = geometry(rows, k);
    let mut b = be.binder();
    let params = DocSoftmaxBwd {
        p: B::read(&mut b, p),
        g: B::read(&mut b, g),
        dx: B::write(&mut b, &mut dx),
        rows: rows as u32,
        k: k as u32,
    };
    be.launch(b, variant, shape, params)?;
    Ok(dx)
}

/// The marginal `[b, m]` of logits `[b, k]` and conditionals `[b, k, m]`.
pub(super) fn mll<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    c: &B::View<'_, T>,
    (batch, k, m): (usize, usize, usize),
) -> Result<B::Buf<T>> {
    let mut out = be.alloc::<T>(batch * m, super::OP_MLL)?;
    let (variant, shape) = geometry(batch * m, k);
    let mut b = be.binder();
    let params = MllFwd {
        x: B::read(&mut b, x),
        c: B::read(&mut b, c),
        out: B::write(&mut b, &mut out),
        b: batch as u32,
        k: k as u32,
        m: m as u32,
    };
    be.launch(b, variant, shape, params)?;
    Ok(out)
}

/// Both gradients of the marginal, `[b, k, m + 1]`, from the logits, the conditionals and
/// `og` = (forward output, incoming gradient) interleaved `[b, m, 2]`.
pub(super) fn mll_bwd<B: Backend, T: Element>(
    be: &B,
    x: &B::View<'_, T>,
    c: &B::View<'_, T>,
    og: &B::View<'_, T>,
    (batch, k, m): (usize, usize, usize),
) -> Result<B::Buf<T>> {
    let mut grad = be.alloc::<T>(batch * k * (m + 1), super::OP_MLL)?;
    let (variant, shape) = geometry(batch, k);
    let mut b = be.binder();
    let params = MllBwd {
        x: B::read(&mut b, x),
        c: B::read(&mut b, c),
        og: B::read(&mut b, og),
        grad: B::write(&mut b, &mut grad),
        b: batch as u32,
        k: k as u32,
        m: m as u32,
    };
    be.launch(b, variant, shape, params)?;
    Ok(grad)
}
