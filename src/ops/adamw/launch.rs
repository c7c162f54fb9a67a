//! The multi-tensor AdamW kernels' launches (`kernels/adamw.cu`), described once for every
//! backend: the table of pointers uploaded, then the chunks' sums of squares, their total and
//! the clip factor (one block), and the update.

use super::{chunks, Region, Regions, Scalars, OP};
use crate::error::Result;
use crate::kernels::abi::adamw::{Adamw, Variant, ADAMW_THREADS};
use crate::kernels::{Abi, Backend, Launch};

/// Enough blocks to fill a GPU; more chunks loop.
const MAX_BLOCKS: usize = 8192;

/// The table `kernels/adamw.cu` reads every tensor through (its layout is documented there).
fn table<A: Abi>(r: &Regions) -> (Vec<u64>, usize) {
    let mut words = Vec::new();
    let pointer = |reg: Region, words: &mut Vec<u64>| A::pointer_words(reg.addr, reg.bytes, words);
    for reg in [r.stats, r.m, r.v] {
        pointer(reg, &mut words);
    }
    for t in &r.tensors {
        pointer(t.theta, &mut words);
        pointer(t.grad, &mut words);
        words.extend([t.offset as u64, t.n as u64]);
        words.extend([t.lr, t.shrink].map(|x| u64::from(x.to_bits())));
    }
    let mut n_chunks = 0;
    for (e, t) in r.tensors.iter().enumerate() {
        let c = chunks(t.n);
        words.extend((0..c as u64).map(|c| (e as u64) << 32 | c));
        n_chunks += c;
    }
    (words, n_chunks)
}

/// ‖g‖², the clip factor and the update of every tensor of `r`: one upload, three launches.
pub(super) fn step<B: Backend>(be: &B, r: &Regions, s: &Scalars) -> Result<()> {
    let (words, n_chunks) = table::<B::Abi>(r);
    let table = be.upload(&words, OP)?;
    let blocks = n_chunks.clamp(1, MAX_BLOCKS) as u32;
    for variant in [Variant::Sumsq, Variant::Norm, Variant::Update] {
        let shape = match variant {
            Variant::Norm => Launch::linear(1, ADAMW_THREADS),
            _ => Launch::linear(blocks, ADAMW_THREADS),
        };
        let mut b = be.binder();
        let params = Adamw {
            table: B::read_buf(&mut b, &table),
            tensors: r.tensors.len() as u32,
            chunks: n_chunks as u32,
            beta1: s.beta1,
            beta2: s.beta2,
            one_minus_beta1: s.one_minus_beta1,
            one_minus_beta2: s.one_minus_beta2,
            eps: s.eps,
            inv_bias1: s.inv_bias1,
            inv_bias2: s.inv_bias2,
            max_norm: s.max_norm,
        };
        be.launch(b, variant, shape, params)?;
    }
    Ok(())
}
