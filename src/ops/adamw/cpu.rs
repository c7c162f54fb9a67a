//! The native CPU update: the kernels' chunks on rayon, the norm's partial sums per chunk added
//! in chunk order (the result does not depend on the thread count), the update in f32 as in
//! `kernels/adamw.cu`.

use super::{Regions, Scalars, CHUNK};
use rayon::prelude::*;

/// One parameter's memory as slices.
pub(super) struct HostTensor<'a> {
    theta: &'a mut [f32],
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    lr: f32,
    shrink: f32,
}

/// The update's memory as slices.
pub(super) struct HostRegions<'a> {
    stats: &'a mut [f64],
    tensors: Vec<HostTensor<'a>>,
}

impl HostRegions<'_> {
    /// # Safety
    /// Every region of `r` must be a live host buffer of its dtype (stats f64, the rest f32)
    /// that nothing else reads or writes while the result lives (the gradients: nothing writes),
    /// and the parameters' moment ranges must lie in `m` and `v` in increasing order without
    /// overlapping.
    pub(super) unsafe fn new(r: &Regions) -> Self {
        let f32s =
            |addr: u64, bytes: usize| std::slice::from_raw_parts_mut(addr as *mut f32, bytes / 4);
        let stats = std::slice::from_raw_parts_mut(r.stats.addr as *mut f64, r.stats.bytes / 8);
        let (mut m, mut v) = (f32s(r.m.addr, r.m.bytes), f32s(r.v.addr, r.v.bytes));
        let mut at = 0;
        let mut tensors = Vec::with_capacity(r.tensors.len());
        for t in &r.tensors {
            let skip = t.offset - at;
            let (mt, mrest) = std::mem::take(&mut m)[skip..].split_at_mut(t.n);
            let (vt, vrest) = std::mem::take(&mut v)[skip..].split_at_mut(t.n);
            (m, v, at) = (mrest, vrest, t.offset + t.n);
            tensors.push(HostTensor {
                theta: f32s(t.theta.addr, t.theta.bytes),
                grad: std::slice::from_raw_parts(t.grad.addr as *const f32, t.grad.bytes / 4),
                m: mt,
                v: vt,
                lr: t.lr,
                shrink: t.shrink,
            });
        }
        HostRegions { stats, tensors }
    }
}

/// ‖g‖², the clip factor and the update, as the kernels compute them.
pub(super) fn step(r: &mut HostRegions<'_>, s: &Scalars) {
    let sums: Vec<f64> = r
        .tensors
        .iter()
        .flat_map(|t| t.grad.chunks(CHUNK))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|g| f64::from(g.iter().map(|x| x * x).sum::<f32>()))
        .collect();
    let sq: f64 = sums.iter().sum();
    let norm = sq.sqrt();
    let factor = if s.max_norm > 0.0 && s.max_norm.is_finite() && norm > s.max_norm {
        s.max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    r.stats[0] = sq;
    r.stats[1] = factor;
    r.stats[2..2 + sums.len()].copy_from_slice(&sums);
    if !sq.is_finite() {
        return;
    }
    let gs = factor as f32;
    let mut jobs = Vec::new();
    for t in &mut r.tensors {
        let (lr, shrink) = (t.lr, t.shrink);
        let parts = t
            .theta
            .chunks_mut(CHUNK)
            .zip(t.grad.chunks(CHUNK))
            .zip(t.m.chunks_mut(CHUNK))
            .zip(t.v.chunks_mut(CHUNK));
        jobs.extend(parts.map(|(((th, g), m), v)| (th, g, m, v, lr, shrink)));
    }
    jobs.into_par_iter()
        .for_each(|(th, gr, mm, vv, lr, shrink)| {
            for i in 0..th.len() {
                let g = gr[i] * gs;
                let m = s.beta1 * mm[i] + s.one_minus_beta1 * g;
                let v = s.beta2 * vv[i] + s.one_minus_beta2 * g * g;
                mm[i] = m;
                vv[i] = v;
                let step = (m * s.inv_bias1) / ((v * s.inv_bias2).sqrt() + s.eps);
                th[i] = th[i] * shrink - lr * step;
            }
        });
}
