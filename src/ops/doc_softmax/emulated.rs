//! doc_softmax's CUDA kernels run by the emulator (feature `emulate`): the same launch geometry
//! as on a GPU, bounds-checked buffers, outputs poisoned with NaN before the launch.

use super::{launch_geometry, BLOCK_THREADS};
use crate::emulator::{launch, EmuLaunch, EmuPtr, LaunchShape};
use crate::error::Result;
use crate::ops::elem::Elem;
use half::{bf16, f16};

type Fwd<T> = unsafe extern "C" fn(*const EmuLaunch, EmuPtr<'_, T>, EmuPtr<'_, T>, u32, u32) -> i32;
type Bwd<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    u32,
    u32,
) -> i32;
type MllFwd<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    u32,
    u32,
    u32,
) -> i32;
type MllBwd<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    u32,
    u32,
    u32,
) -> i32;

/// One element type's launchers, `[warp variant, block variant]` of each kernel.
pub(super) struct Launchers<T: 'static> {
    softmax_fwd: [Fwd<T>; 2],
    softmax_bwd: [Bwd<T>; 2],
    mll_fwd: [MllFwd<T>; 2],
    mll_bwd: [MllBwd<T>; 2],
}

pub(super) trait EmuElem: Elem {
    const LAUNCHERS: Launchers<Self>;
}

extern "C" {
    fn realm_emu_launch_doc_softmax_fwd_warp_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_fwd_warp_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_fwd_warp_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_fwd_block_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_fwd_block_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_fwd_block_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_warp_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_warp_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_warp_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_block_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_block_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_doc_softmax_bwd_block_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_warp_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_warp_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_warp_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_block_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_block_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_fwd_block_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_warp_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        d: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_warp_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        d: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_warp_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        d: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_block_f32(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f32>,
        b: EmuPtr<'_, f32>,
        c: EmuPtr<'_, f32>,
        d: EmuPtr<'_, f32>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_block_f16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, f16>,
        b: EmuPtr<'_, f16>,
        c: EmuPtr<'_, f16>,
        d: EmuPtr<'_, f16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
    fn realm_emu_launch_mll_bwd_block_bf16(
        cfg: *const EmuLaunch,
        a: EmuPtr<'_, bf16>,
        b: EmuPtr<'_, bf16>,
        c: EmuPtr<'_, bf16>,
        d: EmuPtr<'_, bf16>,
        rows: u32,
        k: u32,
        m: u32,
    ) -> i32;
}

impl EmuElem for f32 {
    const LAUNCHERS: Launchers<Self> = Launchers {
        softmax_fwd: [
            realm_emu_launch_doc_softmax_fwd_warp_f32,
            realm_emu_launch_doc_softmax_fwd_block_f32,
        ],
        softmax_bwd: [
            realm_emu_launch_doc_softmax_bwd_warp_f32,
            realm_emu_launch_doc_softmax_bwd_block_f32,
        ],
        mll_fwd: [
            realm_emu_launch_mll_fwd_warp_f32,
            realm_emu_launch_mll_fwd_block_f32,
        ],
        mll_bwd: [
            realm_emu_launch_mll_bwd_warp_f32,
            realm_emu_launch_mll_bwd_block_f32,
        ],
    };
}

impl EmuElem for f16 {
    const LAUNCHERS: Launchers<Self> = Launchers {
        softmax_fwd: [
            realm_emu_launch_doc_softmax_fwd_warp_f16,
            realm_emu_launch_doc_softmax_fwd_block_f16,
        ],
        softmax_bwd: [
            realm_emu_launch_doc_softmax_bwd_warp_f16,
            realm_emu_launch_doc_softmax_bwd_block_f16,
        ],
        mll_fwd: [
            realm_emu_launch_mll_fwd_warp_f16,
            realm_emu_launch_mll_fwd_block_f16,
        ],
        mll_bwd: [
            realm_emu_launch_mll_bwd_warp_f16,
            realm_emu_launch_mll_bwd_block_f16,
        ],
    };
}

impl EmuElem for bf16 {
    const LAUNCHERS: Launchers<Self> = Launchers {
        softmax_fwd: [
            realm_emu_launch_doc_softmax_fwd_warp_bf16,
            realm_emu_launch_doc_softmax_fwd_block_bf16,
        ],
        softmax_bwd: [
            realm_emu_launch_doc_softmax_bwd_warp_bf16,
            realm_emu_launch_doc_softmax_bwd_block_bf16,
        ],
        mll_fwd: [
            realm_emu_launch_mll_fwd_warp_bf16,
            realm_emu_launch_mll_fwd_block_bf16,
        ],
        mll_bwd: [
            realm_emu_launch_mll_bwd_warp_bf16,
            realm_emu_launch_mll_bwd_block_bf16,
        ],
    };
}

/// Launch shape and index of the kernel variant (0 = warp per row, 1 = block per row).
fn geometry(rows: usize, k: usize) -> (usize, LaunchShape) {
    let (variant, blocks) = launch_geometry(rows, k);
    let index = usize::from(variant == "block");
    (index, LaunchShape::linear(blocks, BLOCK_THREADS, 0))
}

fn poisoned<T: Elem>(len: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); len]
}

pub(super) fn softmax<T: EmuElem>(x: &[T], k: usize) -> Result<Vec<T>> {
    let rows = x.len() / k;
    let mut p = poisoned(x.len());
    let (v, shape) = geometry(rows, k);
    let f = T::LAUNCHERS.softmax_fwd[v];
    // SAFETY: the launcher only touches the buffers through the bounds-checked pointers.
    launch(shape, |cfg| unsafe {
        f(
            cfg,
            EmuPtr::new(x),
            EmuPtr::new_mut(&mut p),
            rows as u32,
            k as u32,
        )
    })?;
    Ok(p)
}

pub(super) fn softmax_bwd<T: EmuElem>(p: &[T], g: &[T], k: usize) -> Result<Vec<T>> {
    let rows = p.len() / k;
    let mut dx = poisoned(p.len());
    let (v, shape) = geometry(rows, k);
    let f = T::LAUNCHERS.softmax_bwd[v];
    // SAFETY: as above.
    launch(shape, |cfg| unsafe {
        f(
            cfg,
            EmuPtr::new(p),
            EmuPtr::new(g),
            EmuPtr::new_mut(&mut dx),
            rows as u32,
            k as u32,
        )
    })?;
    Ok(dx)
}

pub(super) fn mll<T: EmuElem>(x: &[T], c: &[T], k: usize, m: usize) -> Result<Vec<T>> {
    let b = x.len() / k;
    let mut out = poisoned(b * m);
    let (v, shape) = geometry(b * m, k);
    let f = T::LAUNCHERS.mll_fwd[v];
    // SAFETY: as above.
    launch(shape, |cfg| unsafe {
        f(
            cfg,
            EmuPtr::new(x),
            EmuPtr::new(c),
            EmuPtr::new_mut(&mut out),
            b as u32,
            k as u32,
            m as u32,
        )
    })?;
    Ok(out)
}

pub(super) fn mll_bwd<T: EmuElem>(
    x: &[T],
    c: &[T],
    og: &[T],
    k: usize,
    m: usize,
) -> Result<Vec<T>> {
    let b = x.len() / k;
    let mut grad = poisoned(x.len() * (m + 1));
    let (v, shape) = geometry(b, k);
    let f = T::LAUNCHERS.mll_bwd[v];
    // SAFETY: as above.
    launch(shape, |cfg| unsafe {
        f(
            cfg,
            EmuPtr::new(x),
            EmuPtr::new(c),
            EmuPtr::new(og),
            EmuPtr::new_mut(&mut grad),
            b as u32,
            k as u32,
            m as u32,
        )
    })?;
    Ok(grad)
}
