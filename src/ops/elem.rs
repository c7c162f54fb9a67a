//! Element types the ops accept (f32, f16, bf16; arithmetic in f32) and checked access to the
//! contiguous data behind a candle storage.

use crate::device::{CpuExec, Exec};
use crate::error::{Error, Result};
use crate::kernels::Emulator;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout};
use half::{bf16, f16};

/// A storage element that the ops compute on in f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// The matching `CpuStorage` variant's slice, if `storage` holds this type.
    fn cpu_slice(storage: &CpuStorage) -> Option<&[Self]>;
    fn into_cpu_storage(data: Vec<Self>) -> CpuStorage;
    /// The elements as f32 without a copy, when they are f32.
    fn as_f32(_data: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl Elem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn cpu_slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn into_cpu_storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(data)
    }
    fn as_f32(data: &[Self]) -> Option<&[f32]> {
        Some(data)
    }
}

impl Elem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn cpu_slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }
    fn into_cpu_storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::F16(data)
    }
}

impl Elem for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn cpu_slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }
    fn into_cpu_storage(data: Vec<Self>) -> CpuStorage {
        CpuStorage::BF16(data)
    }
}

/// `data` as f32: borrowed when it already is, else widened into `buf`.
pub(crate) fn widened<'a, T: Elem>(data: &'a [T], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if let Some(x) = T::as_f32(data) {
        return x;
    }
    buf.clear();
    buf.extend(data.iter().map(|v| v.to_f32()));
    buf
}

/// Runs `native` or, on the emulator, `emulated`; both produce the output's elements.
pub(crate) fn on_cpu<T: Elem>(
    exec: &Exec,
    native: impl FnOnce() -> Result<Vec<T>>,
    emulated: impl FnOnce(&Emulator) -> Result<Vec<T>>,
) -> candle_core::Result<CpuStorage> {
    let out = match exec.cpu {
        CpuExec::Native => native()?,
        CpuExec::Emulator => emulated(&Emulator::new(exec.clone()))?,
    };
    Ok(T::into_cpu_storage(out))
}

/// The contiguous elements of argument `arg` of `op`, or a clear error.
pub(crate) fn cpu_data<'a, T: Elem>(
    op: &'static str,
    arg: &'static str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    let (start, end) = contiguous_range(op, arg, layout)?;
    let data = T::cpu_slice(storage).ok_or_else(|| {
        Error::bad_input(
            op,
            arg,
            format!(
                "dtype {:?} does not match the other arguments",
                storage.dtype()
            ),
        )
    })?;
    Ok(&data[start..end])
}

/// The contiguous elements of argument `arg` of `op` on a CUDA device, or a clear error.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_data<'a, T: candle_core::cuda_backend::CudaDType>(
    op: &'static str,
    arg: &'static str,
    storage: &'a candle_core::CudaStorage,
    layout: &Layout,
) -> Result<cudarc::driver::CudaView<'a, T>> {
    let (start, end) = contiguous_range(op, arg, layout)?;
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

/// `[start, end)` of a contiguous layout, or an error naming the argument.
pub(crate) fn contiguous_range(
    op: &'static str,
    arg: &'static str,
    layout: &Layout,
) -> Result<(usize, usize)> {
    layout.contiguous_offsets().ok_or_else(|| {
        Error::bad_input(
            op,
            arg,
            format!(
                "must be contiguous (shape {:?}, strides {:?}); call .contiguous() first",
                layout.dims(),
                layout.stride()
            ),
        )
    })
}

/// Rejects dtypes other than f32, f16 and bf16.
pub(crate) fn check_float(op: &'static str, arg: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::bad_input(
            op,
            arg,
            format!("dtype {other:?} is not supported (f32, f16 or bf16)"),
        )),
    }
}

/// Dispatches a generic function over the float element type of `$dtype`.
macro_rules! with_float_elem {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::F16 => {
                type $T = half::f16;
                $body
            }
            candle_core::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(candle_core::Error::UnsupportedDTypeForOp(other, "realm op").into()),
        }
    };
}
pub(crate) use with_float_elem;
