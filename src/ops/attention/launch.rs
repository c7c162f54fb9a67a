//! attention's kernels (`kernels/attention_{fwd,bwd}.cu`), each launch described once for every
//! backend: one launch for the forward; three for the backward (delta, then dk/dv, then dq).
//! Blocks tile (batch·head, rows); the row tiles, warps and shared memory are the kernels' own
//! constants.

use super::{Params, HEAD_DIMS, OP};
use crate::error::Result;
use crate::kernels::abi::attention_bwd::{
    self as bwd, dkdv_smem_bytes, AttentionBwdDkdv, AttentionBwdDot, AttentionBwdDq, BWD_KEYS,
    BWD_WARPS, DOT_THREADS, DQ_ROWS,
};
use crate::kernels::abi::attention_fwd::{self as fwd, AttentionFwd, FWD_ROWS, FWD_WARPS};
use crate::kernels::{Backend, Element, Launch};

/// The kernel variant of a head dimension (one of [`HEAD_DIMS`], validated by [`Params`]).
fn variant<V: Copy>(dh: usize, variants: [V; 3]) -> V {
    variants[HEAD_DIMS.iter().position(|&d| d == dh).unwrap_or(0)]
}

/// Blocks of (batch·head, tile of `rows` rows), `warps` warps each.
fn tiled(p: &Params, rows: u32, warps: u32) -> Launch {
    let grid = [(p.b * p.h) as u32, p.l.div_ceil(rows as usize) as u32, 1];
    Launch::grid(grid, 32 * warps)
}

/// The family `$ty` with the given tensor fields and the shape and dropout scalars of `$p`.
macro_rules! with_scalars {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }, $p:expr) => {{
        let (seed, offset, threshold, keep_scale) = $p.dropout_words();
        $ty {
            $($field: $value,)*
            heads: $p.h as u32,
            l: $p.l as u32,
            scale: $p.scale,
            seed_lo: seed[0],
            seed_hi: seed[1],
            offset_lo: offset[0],
            offset_hi: offset[1],
            threshold,
            keep_scale,
        }
    }};
}

/// `(out [b, h, l, dh], lse [b, h, l] f32)`.
pub(super) fn forward<B: Backend, T: Element>(
    be: &B,
    p: &Params,
    [q, k, v]: [&B::View<'_, T>; 3],
    lens: &B::View<'_, u32>,
) -> Result<(B::Buf<T>, B::Buf<f32>)> {
    let rows = p.b * p.h * p.l;
    let mut out = be.alloc::<T>(rows * p.dh, OP)?;
    let mut lse = be.alloc::<f32>(rows, OP)?;
    let mut b = be.binder();
    let params = with_scalars!(
        AttentionFwd {
            q: B::read(&mut b, q),
            k: B::read(&mut b, k),
            v: B::read(&mut b, v),
            lens: B::read(&mut b, lens),
            out: B::write(&mut b, &mut out),
            lse: B::write(&mut b, &mut lse),
        },
        p
    );
    let dh = variant(
        p.dh,
        [fwd::Variant::D32, fwd::Variant::D64, fwd::Variant::D128],
    );
    be.launch(b, dh, tiled(p, FWD_ROWS, FWD_WARPS), params)?;
    Ok((out, lse))
}

/// The gradients `[3, b, h, l, dh]` (dq, dk, dv) from `[q, k, v, out, grad]` and the
/// forward's lse.
pub(super) fn backward<B: Backend, T: Element>(
    be: &B,
    p: &Params,
    [q, k, v, out, grad]: [&B::View<'_, T>; 5],
    lse: &B::View<'_, f32>,
    lens: &B::View<'_, u32>,
) -> Result<B::Buf<T>> {
    let rows = p.b * p.h * p.l;
    let mut delta = be.alloc::<f32>(rows, OP)?;
    let mut b = be.binder();
    let dot = AttentionBwdDot {
        out: B::read(&mut b, out),
        grad: B::read(&mut b, grad),
        lens: B::read(&mut b, lens),
        delta: B::write(&mut b, &mut delta),
        heads: p.h as u32,
        l: p.l as u32,
        dh: p.dh as u32,
        rows: rows as u32,
    };
    let rows_per_block = (DOT_THREADS / 32) as usize;
    let shape = Launch::linear(rows.div_ceil(rows_per_block) as u32, DOT_THREADS);
    be.launch(b, (), shape, dot)?;

    let dh = variant(
        p.dh,
        [bwd::Variant::D32, bwd::Variant::D64, bwd::Variant::D128],
    );
    let mut grads = be.alloc::<T>(3 * rows * p.dh, OP)?;
    let mut b = be.binder();
    let [_, dk_out, dv_out] = B::write_parts::<T, 3>(&mut b, &mut grads);
    let dkdv = with_scalars!(
        AttentionBwdDkdv {
            q: B::read(&mut b, q),
            k: B::read(&mut b, k),
            v: B::read(&mut b, v),
            grad: B::read(&mut b, grad),
            lens: B::read(&mut b, lens),
            lse: B::read(&mut b, lse),
            delta: B::read_buf(&mut b, &delta),
            dk: dk_out,
            dv: dv_out,
        },
        p
    );
    let smem = dkdv_smem_bytes(p.dh as u32);
    let shape = tiled(p, BWD_KEYS, BWD_WARPS).with_dyn_smem(smem);
    be.launch(b, dh, shape, dkdv)?;

    let mut b = be.binder();
    let [dq_out, _, _] = B::write_parts::<T, 3>(&mut b, &mut grads);
    let dq = with_scalars!(
        AttentionBwdDq {
            q: B::read(&mut b, q),
            k: B::read(&mut b, k),
            v: B::read(&mut b, v),
            grad: B::read(&mut b, grad),
            lens: B::read(&mut b, lens),
            lse: B::read(&mut b, lse),
            delta: B::read_buf(&mut b, &delta),
            dq: dq_out,
        },
        p
    );
    be.launch(b, dh, tiled(p, DQ_ROWS, BWD_WARPS), dq)?;
    Ok(grads)
}
