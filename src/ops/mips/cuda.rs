//! mips_top_k's kernels on a CUDA device. The queries were validated and rounded on the host (they
//! are small); they go up with their error bounds and exclusions, then one scan launch over
//! (slices × query batches) blocks and one merge launch with a block per query.

use super::{theta_start, KernelPlan, MipsIndex, Queries, OP};
use crate::error::{Error, Result};
use crate::kernels::{function, Family};
use crate::ops::elem::contiguous_range;
use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{DType, Storage, Tensor};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use half::f16;
use std::sync::Arc;

/// Bytes the candidate lists of one search may take: beyond it, fewer slices (less parallelism).
const LIST_BUDGET: usize = 512 << 20;

/// Uninitialised device memory for `len` elements.
fn alloc<T: DeviceRepr>(stream: &Arc<CudaStream>, len: usize, what: &str) -> Result<CudaSlice<T>> {
    // SAFETY: the kernels write every element before it is read (see kernels/mips_topk.cu).
    unsafe { stream.alloc::<T>(len) }
        .map_err(|e| Error::Device(format!("{OP}: allocating {what} ({len} elements): {e}")))
}

fn upload<T: DeviceRepr>(stream: &Arc<CudaStream>, host: &[T], what: &str) -> Result<CudaSlice<T>> {
    stream
        .clone_htod(host)
        .map_err(|e| Error::Device(format!("{OP}: copying {what} to the device: {e}")))
}

pub(super) fn search(index: &MipsIndex, queries: &Queries, k: usize) -> Result<(Tensor, Tensor)> {
    let (q, n, dp) = (queries.q, index.n, queries.dp);
    if q == 0 {
        let dev = index.device();
        return Ok((
            Tensor::zeros((0, k), DType::F64, dev)?,
            Tensor::zeros((0, k), DType::U32, dev)?,
        ));
    }
    let (storage, layout) = index.data.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        return Err(Error::Device(format!(
            "{OP}: the index is not on a CUDA device"
        )));
    };
    let dev = cs.device.clone();
    let (start, end) = contiguous_range(OP, "index", layout)?;
    let x = cs.as_cuda_slice::<f16>()?.slice(start..end);

    let merge = function(&dev, Family::Mips, "mips_merge")?;
    let stream = merge.stream.clone();
    let sms = stream
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| Error::Device(format!("{OP}: reading the SM count: {e}")))?
        as usize;
    // Two blocks per SM over all query batches (of up to 64 queries).
    let wish = (2 * sms).div_ceil(q.div_ceil(64));
    let plan = KernelPlan::new(n, dp, q, k, wish, LIST_BUDGET)?;
    let scan = function(&dev, Family::Mips, plan.scan)?;

    let qh = upload(&stream, &queries.rows_f16(), "queries")?;
    let margin = upload(&stream, &queries.margin, "error bounds")?;
    let exclude = upload(&stream, &queries.exclude, "exclusions")?;
    let mut theta = upload(&stream, &vec![theta_start(); q], "thresholds")?;
    let len = plan.list_len(q);
    let mut cand_ids = alloc::<u32>(&stream, len, "candidate ids")?;
    let mut cand_s32 = alloc::<f32>(&stream, len, "candidate scores")?;
    let mut cand_s64 = alloc::<f64>(&stream, len, "candidate exact scores")?;
    let mut cand_count = alloc::<u32>(&stream, q * plan.slices as usize, "list lengths")?;

    let (n32, d32, q32, k32) = (n as u32, dp as u32, q as u32, k as u32);
    let mut b = stream.launch_builder(&scan.function);
    b.arg(&x);
    b.arg(&n32);
    b.arg(&d32);
    b.arg(&qh);
    b.arg(&q32);
    b.arg(&margin);
    b.arg(&exclude);
    b.arg(&k32);
    b.arg(&plan.slice_len);
    b.arg(&plan.cap);
    b.arg(&mut cand_ids);
    b.arg(&mut cand_s32);
    b.arg(&mut cand_s64);
    b.arg(&mut cand_count);
    b.arg(&mut theta);
    let cfg = LaunchConfig {
        grid_dim: (plan.batches, plan.slices, 1),
        block_dim: (plan.threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature in kernels/mips_topk.cu.
    unsafe { b.launch(cfg) }.map_err(|e| Error::Device(format!("launching {}: {e}", plan.scan)))?;

    let p2 = plan.p2 as usize;
    let mut sort_s = alloc::<f64>(&stream, q * p2, "sort scratch")?;
    let mut sort_id = alloc::<u32>(&stream, q * p2, "sort scratch")?;
    let mut out_s = alloc::<f64>(&stream, q * k, "scores")?;
    let mut out_id = alloc::<u32>(&stream, q * k, "ids")?;
    let mut b = stream.launch_builder(&merge.function);
    b.arg(&x);
    b.arg(&n32);
    b.arg(&d32);
    b.arg(&qh);
    b.arg(&exclude);
    b.arg(&k32);
    b.arg(&plan.slices);
    b.arg(&plan.cap);
    b.arg(&cand_ids);
    b.arg(&cand_s32);
    b.arg(&mut cand_s64);
    b.arg(&cand_count);
    b.arg(&theta);
    b.arg(&plan.p2);
    b.arg(&mut sort_s);
    b.arg(&mut sort_id);
    b.arg(&mut out_s);
    b.arg(&mut out_id);
    let cfg = LaunchConfig {
        grid_dim: (q32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above.
    unsafe { b.launch(cfg) }.map_err(|e| Error::Device(format!("launching mips_merge: {e}")))?;

    let tensor =
        |s: CudaStorage| Tensor::from_storage(Storage::Cuda(s), (q, k), BackpropOp::none(), false);
    Ok((
        tensor(CudaStorage::wrap_cuda_slice(out_s, dev.clone())),
        tensor(CudaStorage::wrap_cuda_slice(out_id, dev)),
    ))
}
