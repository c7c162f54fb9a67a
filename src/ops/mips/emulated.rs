//! mips_top_k's CUDA kernels run by the emulator (feature `emulate`): the scan over up to four
//! slices of the index (so that the cross-slice thresholds and the merge are exercised at small
//! shapes), then the merge. Outputs and candidate buffers are poisoned before the launches.

use super::{theta_start, Hits, KernelPlan, Queries};
use crate::emulator::{launch, EmuLaunch, EmuPtr, LaunchShape};
use crate::error::Result;
use half::f16;
use std::borrow::Cow;

/// Slices the emulator asks for: enough for several per query at test shapes.
const SLICES: usize = 4;

type ScanFn = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, f16>,
    u32,
    u32,
    EmuPtr<'_, f16>,
    u32,
    EmuPtr<'_, f32>,
    EmuPtr<'_, u32>,
    u32,
    u32,
    u32,
    EmuPtr<'_, u32>,
    EmuPtr<'_, f32>,
    EmuPtr<'_, f64>,
    EmuPtr<'_, u32>,
    EmuPtr<'_, i32>,
) -> i32;

extern "C" {
    fn realm_emu_launch_mips_scan_d128(
        cfg: *const EmuLaunch,
        index: EmuPtr<'_, f16>,
        n: u32,
        d: u32,
        queries: EmuPtr<'_, f16>,
        nq: u32,
        margin: EmuPtr<'_, f32>,
        exclude: EmuPtr<'_, u32>,
        k: u32,
        slice_len: u32,
        cap: u32,
        cand_ids: EmuPtr<'_, u32>,
        cand_s32: EmuPtr<'_, f32>,
        cand_s64: EmuPtr<'_, f64>,
        cand_count: EmuPtr<'_, u32>,
        theta: EmuPtr<'_, i32>,
    ) -> i32;
    fn realm_emu_launch_mips_scan_d256(
        cfg: *const EmuLaunch,
        index: EmuPtr<'_, f16>,
        n: u32,
        d: u32,
        queries: EmuPtr<'_, f16>,
        nq: u32,
        margin: EmuPtr<'_, f32>,
        exclude: EmuPtr<'_, u32>,
        k: u32,
        slice_len: u32,
        cap: u32,
        cand_ids: EmuPtr<'_, u32>,
        cand_s32: EmuPtr<'_, f32>,
        cand_s64: EmuPtr<'_, f64>,
        cand_count: EmuPtr<'_, u32>,
        theta: EmuPtr<'_, i32>,
    ) -> i32;
    fn realm_emu_launch_mips_merge(
        cfg: *const EmuLaunch,
        index: EmuPtr<'_, f16>,
        n: u32,
        d: u32,
        queries: EmuPtr<'_, f16>,
        exclude: EmuPtr<'_, u32>,
        k: u32,
        slices: u32,
        cap: u32,
        cand_ids: EmuPtr<'_, u32>,
        cand_s32: EmuPtr<'_, f32>,
        cand_s64: EmuPtr<'_, f64>,
        cand_count: EmuPtr<'_, u32>,
        theta: EmuPtr<'_, i32>,
        p2: u32,
        sort_s: EmuPtr<'_, f64>,
        sort_id: EmuPtr<'_, u32>,
        out_s: EmuPtr<'_, f64>,
        out_id: EmuPtr<'_, u32>,
    ) -> i32;
}

/// The search of `mod.rs` on the emulated kernels; `x` is the `[n, d]` index.
pub(super) fn search(x: &[f16], n: usize, d: usize, queries: &Queries, k: usize) -> Result<Hits> {
    let q = queries.q;
    let mut hits = Hits {
        k,
        scores: vec![f64::NAN; q * k],
        ids: vec![0xdead_beef; q * k],
    };
    if q == 0 {
        return Ok(hits);
    }
    let dp = queries.dp;
    let plan = KernelPlan::new(n, dp, q, k, SLICES, usize::MAX)?;
    // The kernels read rows of dp values (16-byte aligned chunks).
    let index: Cow<[f16]> = if dp == d {
        Cow::Borrowed(x)
    } else {
        let mut padded = vec![f16::ZERO; n * dp];
        for (dst, src) in padded.chunks_exact_mut(dp).zip(x.chunks_exact(d)) {
            dst[..d].copy_from_slice(src);
        }
        Cow::Owned(padded)
    };
    let qh = queries.rows_f16();
    let len = plan.list_len(q);
    let mut cand_ids = vec![0xdead_beef_u32; len];
    let mut cand_s32 = vec![f32::NAN; len];
    let mut cand_s64 = vec![f64::NAN; len];
    let mut cand_count = vec![0xdead_beef_u32; q * plan.slices as usize];
    let mut theta = vec![theta_start(); q];
    let p2 = plan.p2 as usize;
    let mut sort_s = vec![f64::NAN; q * p2];
    let mut sort_id = vec![0xdead_beef_u32; q * p2];

    let scan: ScanFn = if plan.scan == "mips_scan_d128" {
        realm_emu_launch_mips_scan_d128
    } else {
        realm_emu_launch_mips_scan_d256
    };
    let shape = LaunchShape {
        grid: [plan.batches, plan.slices, 1],
        block: [plan.threads, 1, 1],
        dyn_smem: 0,
    };
    // SAFETY: the launchers only touch the buffers through the bounds-checked pointers.
    launch(shape, |cfg| unsafe {
        scan(
            cfg,
            EmuPtr::new(&index),
            n as u32,
            dp as u32,
            EmuPtr::new(&qh),
            q as u32,
            EmuPtr::new(&queries.margin),
            EmuPtr::new(&queries.exclude),
            k as u32,
            plan.slice_len,
            plan.cap,
            EmuPtr::new_mut(&mut cand_ids),
            EmuPtr::new_mut(&mut cand_s32),
            EmuPtr::new_mut(&mut cand_s64),
            EmuPtr::new_mut(&mut cand_count),
            EmuPtr::new_mut(&mut theta),
        )
    })?;
    // SAFETY: as above.
    launch(LaunchShape::linear(q as u32, 256, 0), |cfg| unsafe {
        realm_emu_launch_mips_merge(
            cfg,
            EmuPtr::new(&index),
            n as u32,
            dp as u32,
            EmuPtr::new(&qh),
            EmuPtr::new(&queries.exclude),
            k as u32,
            plan.slices,
            plan.cap,
            EmuPtr::new(&cand_ids),
            EmuPtr::new(&cand_s32),
            EmuPtr::new_mut(&mut cand_s64),
            EmuPtr::new(&cand_count),
            EmuPtr::new(&theta),
            plan.p2,
            EmuPtr::new_mut(&mut sort_s),
            EmuPtr::new_mut(&mut sort_id),
            EmuPtr::new_mut(&mut hits.scores),
            EmuPtr::new_mut(&mut hits.ids),
        )
    })?;
    Ok(hits)
}
