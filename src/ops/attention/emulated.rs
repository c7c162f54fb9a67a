//! attention's CUDA kernels run by the emulator (feature `emulate`): the launch geometry of a GPU,
//! bounds-checked buffers, outputs poisoned with NaN before each launch.

use super::{dkdv_smem_bytes, KernelScalars, Params, DOT_THREADS, KERNEL_THREADS};
use crate::emulator::{launch, EmuLaunch, EmuPtr, LaunchShape};
use crate::error::{Error, Result};
use crate::ops::elem::Elem;
use half::{bf16, f16};

type Fwd<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, u32>,
    EmuPtr<'_, T>,
    EmuPtr<'_, f32>,
    u32,
    u32,
    f32,
    u32,
    u32,
    u32,
    u32,
    u32,
    f32,
) -> i32;
type Dkdv<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, u32>,
    EmuPtr<'_, f32>,
    EmuPtr<'_, f32>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    u32,
    u32,
    f32,
    u32,
    u32,
    u32,
    u32,
    u32,
    f32,
) -> i32;
type Dq<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, u32>,
    EmuPtr<'_, f32>,
    EmuPtr<'_, f32>,
    EmuPtr<'_, T>,
    u32,
    u32,
    f32,
    u32,
    u32,
    u32,
    u32,
    u32,
    f32,
) -> i32;
type Dot<T> = unsafe extern "C" fn(
    *const EmuLaunch,
    EmuPtr<'_, T>,
    EmuPtr<'_, T>,
    EmuPtr<'_, u32>,
    EmuPtr<'_, f32>,
    u32,
    u32,
    u32,
    u32,
) -> i32;

/// One element type's launchers; the per-dh ones in the order of [`super::HEAD_DIMS`].
pub(super) struct Launchers<T: 'static> {
    fwd: [Fwd<T>; 3],
    dkdv: [Dkdv<T>; 3],
    dq: [Dq<T>; 3],
    dot: Dot<T>,
}

/// An element type the emulated kernels may take (f16 and bf16, as on a GPU).
pub(super) trait EmuElem: Elem {
    const LAUNCHERS: Option<Launchers<Self>>;
}

impl EmuElem for f32 {
    const LAUNCHERS: Option<Launchers<Self>> = None;
}

/// Declares one dtype's launchers and ties them to its element type.
macro_rules! launchers {
    ($T:ty, fwd: [$($fwd:ident),+], dkdv: [$($dkdv:ident),+], dq: [$($dq:ident),+], dot: $dot:ident) => {
        extern "C" {
            $(fn $fwd(
                cfg: *const EmuLaunch,
                q: EmuPtr<'_, $T>,
                k: EmuPtr<'_, $T>,
                v: EmuPtr<'_, $T>,
                lens: EmuPtr<'_, u32>,
                out: EmuPtr<'_, $T>,
                lse: EmuPtr<'_, f32>,
                heads: u32,
                l: u32,
                scale: f32,
                seed_lo: u32,
                seed_hi: u32,
                offset_lo: u32,
                offset_hi: u32,
                threshold: u32,
                keep_scale: f32,
            ) -> i32;)+
            $(fn $dkdv(
                cfg: *const EmuLaunch,
                q: EmuPtr<'_, $T>,
                k: EmuPtr<'_, $T>,
                v: EmuPtr<'_, $T>,
                grad: EmuPtr<'_, $T>,
                lens: EmuPtr<'_, u32>,
                lse: EmuPtr<'_, f32>,
                delta: EmuPtr<'_, f32>,
                dk: EmuPtr<'_, $T>,
                dv: EmuPtr<'_, $T>,
                heads: u32,
                l: u32,
                scale: f32,
                seed_lo: u32,
                seed_hi: u32,
                offset_lo: u32,
                offset_hi: u32,
                threshold: u32,
                keep_scale: f32,
            ) -> i32;)+
            $(fn $dq(
                cfg: *const EmuLaunch,
                q: EmuPtr<'_, $T>,
                k: EmuPtr<'_, $T>,
                v: EmuPtr<'_, $T>,
                grad: EmuPtr<'_, $T>,
                lens: EmuPtr<'_, u32>,
                lse: EmuPtr<'_, f32>,
                delta: EmuPtr<'_, f32>,
                dq: EmuPtr<'_, $T>,
                heads: u32,
                l: u32,
                scale: f32,
                seed_lo: u32,
                seed_hi: u32,
                offset_lo: u32,
                offset_hi: u32,
                threshold: u32,
                keep_scale: f32,
            ) -> i32;)+
            fn $dot(
                cfg: *const EmuLaunch,
                out: EmuPtr<'_, $T>,
                grad: EmuPtr<'_, $T>,
                lens: EmuPtr<'_, u32>,
                delta: EmuPtr<'_, f32>,
                heads: u32,
                l: u32,
                dh: u32,
                rows: u32,
            ) -> i32;
        }

        impl EmuElem for $T {
            const LAUNCHERS: Option<Launchers<Self>> = Some(Launchers {
                fwd: [$($fwd),+],
                dkdv: [$($dkdv),+],
                dq: [$($dq),+],
                dot: $dot,
            });
        }
    };
}

launchers!(
    f16,
    fwd: [realm_emu_launch_attention_fwd_d32_f16, realm_emu_launch_attention_fwd_d64_f16, realm_emu_launch_attention_fwd_d128_f16],
    dkdv: [realm_emu_launch_attention_bwd_dkdv_d32_f16, realm_emu_launch_attention_bwd_dkdv_d64_f16, realm_emu_launch_attention_bwd_dkdv_d128_f16],
    dq: [realm_emu_launch_attention_bwd_dq_d32_f16, realm_emu_launch_attention_bwd_dq_d64_f16, realm_emu_launch_attention_bwd_dq_d128_f16],
    dot: realm_emu_launch_attention_bwd_dot_f16
);
launchers!(
    bf16,
    fwd: [realm_emu_launch_attention_fwd_d32_bf16, realm_emu_launch_attention_fwd_d64_bf16, realm_emu_launch_attention_fwd_d128_bf16],
    dkdv: [realm_emu_launch_attention_bwd_dkdv_d32_bf16, realm_emu_launch_attention_bwd_dkdv_d64_bf16, realm_emu_launch_attention_bwd_dkdv_d128_bf16],
    dq: [realm_emu_launch_attention_bwd_dq_d32_bf16, realm_emu_launch_attention_bwd_dq_d64_bf16, realm_emu_launch_attention_bwd_dq_d128_bf16],
    dot: realm_emu_launch_attention_bwd_dot_bf16
);

fn launchers<T: EmuElem>() -> Result<Launchers<T>> {
    T::LAUNCHERS.ok_or_else(|| {
        Error::bad_input(
            super::OP,
            "q",
            "the attention kernels take f16 or bf16 (f32 runs on the native CPU path)",
        )
    })
}

fn poisoned<T: Elem>(len: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); len]
}

fn tiled(p: &Params, dyn_smem: u32) -> LaunchShape {
    LaunchShape {
        grid: p.kernel_grid(),
        block: [KERNEL_THREADS, 1, 1],
        dyn_smem,
    }
}

/// `(out [b, h, l, dh], lse [b, h, l])`.
pub(super) fn forward<T: EmuElem>(
    p: &Params,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<(Vec<T>, Vec<f32>)> {
    let f = launchers::<T>()?.fwd[p.dh_variant()];
    let mut out = poisoned::<T>(q.len());
    let mut lse = vec![f32::NAN; p.b * p.h * p.l];
    let KernelScalars {
        heads,
        l,
        scale,
        seed,
        offset,
        threshold,
        keep_scale,
    } = p.kernel_scalars();
    // SAFETY: the launcher only touches the buffers through the bounds-checked pointers.
    launch(tiled(p, 0), |cfg| unsafe {
        f(
            cfg,
            EmuPtr::new(q),
            EmuPtr::new(k),
            EmuPtr::new(v),
            EmuPtr::new(&p.lens),
            EmuPtr::new_mut(&mut out),
            EmuPtr::new_mut(&mut lse),
            heads,
            l,
            scale,
            seed[0],
            seed[1],
            offset[0],
            offset[1],
            threshold,
            keep_scale,
        )
    })?;
    Ok((out, lse))
}

/// The gradients `[3, b, h, l, dh]` from `[q, k, v, out, grad]` and the forward's lse.
pub(super) fn backward<T: EmuElem>(p: &Params, inputs: [&[T]; 5], lse: &[f32]) -> Result<Vec<T>> {
    let fs = launchers::<T>()?;
    let [q, k, v, out, grad] = inputs;
    let rows = p.b * p.h * p.l;
    let mut delta = vec![f32::NAN; rows];
    let warps = (DOT_THREADS / 32) as usize;
    // SAFETY: as in `forward`.
    launch(
        LaunchShape::linear(rows.div_ceil(warps) as u32, DOT_THREADS, 0),
        |cfg| unsafe {
            (fs.dot)(
                cfg,
                EmuPtr::new(out),
                EmuPtr::new(grad),
                EmuPtr::new(&p.lens),
                EmuPtr::new_mut(&mut delta),
                p.h as u32,
                p.l as u32,
                p.dh as u32,
                rows as u32,
            )
        },
    )?;

    let n = q.len();
    let mut grads = poisoned::<T>(3 * n);
    let (dq, rest) = grads.split_at_mut(n);
    let (dk, dv) = rest.split_at_mut(n);
    let KernelScalars {
        heads,
        l,
        scale,
        seed,
        offset,
        threshold,
        keep_scale,
    } = p.kernel_scalars();
    let variant = p.dh_variant();
    let dkdv = fs.dkdv[variant];
    // SAFETY: as in `forward`.
    launch(tiled(p, dkdv_smem_bytes(p.dh)), |cfg| unsafe {
        dkdv(
            cfg,
            EmuPtr::new(q),
            EmuPtr::new(k),
            EmuPtr::new(v),
            EmuPtr::new(grad),
            EmuPtr::new(&p.lens),
            EmuPtr::new(lse),
            EmuPtr::new(&delta),
            EmuPtr::new_mut(dk),
            EmuPtr::new_mut(dv),
            heads,
            l,
            scale,
            seed[0],
            seed[1],
            offset[0],
            offset[1],
            threshold,
            keep_scale,
        )
    })?;
    let dq_kernel = fs.dq[variant];
    // SAFETY: as in `forward`.
    launch(tiled(p, 0), |cfg| unsafe {
        dq_kernel(
            cfg,
            EmuPtr::new(q),
            EmuPtr::new(k),
            EmuPtr::new(v),
            EmuPtr::new(grad),
            EmuPtr::new(&p.lens),
            EmuPtr::new(lse),
            EmuPtr::new(&delta),
            EmuPtr::new_mut(dq),
            heads,
            l,
            scale,
            seed[0],
            seed[1],
            offset[0],
            offset[1],
            threshold,
            keep_scale,
        )
    })?;
    Ok(grads)
}
