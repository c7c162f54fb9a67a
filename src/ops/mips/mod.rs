//! Exact maximum-inner-product search: for each query, the k documents of an f16 index with the
//! largest inner product.
//!
//! Semantics (CPU, emulator and CUDA alike; kernels in `kernels/mips_topk.cu`):
//! - Queries (f32, f16 or bf16) are rounded to f16, the index's precision (the tensor cores' input
//!   type), so every device searches the same vectors. The score of a document is the f64 sum, in
//!   order of the dimension, of the products of the two f16 vectors (each product is exact), and is
//!   returned rounded to f32. Results are sorted by that f64 score, descending; equal scores go to
//!   the lower id. Ids and scores are therefore bit-identical on every device and equal to a
//!   float64 brute-force reference ([`reference_top_k`]).
//! - How it stays exact and fast: the scan computes f32 scores (any summation order, tensor cores
//!   on the GPU) and keeps every document whose f32 score can still reach the k-th best, allowing
//!   for a proven bound on the f32 error, `E_q = d · 2^-21 · max_j ‖x_j‖ · ‖q‖` (at least 8 times
//!   the worst error of f32 accumulation in any order). Only the survivors — about k per query —
//!   are rescored in f64 and selected exactly.
//! - `exclude[i]` (u32::MAX = none) is never returned for query i. It is a host slice: it is
//!   validated on the host (ids must exist in the index) and travels to the device with the
//!   queries, which are converted there too.
//! - k from 1 to the number of documents a query can get (n, or n − 1 with an exclusion);
//!   anything else, an empty index, a dimension mismatch or NaN/±inf in the queries (or values
//!   beyond f16's range) is [`Error::BadInput`] naming the argument. The index is validated
//!   (finite in f16) once, when the [`MipsIndex`] is built.
//! - Memory: the index, plus O(q·k) candidates, plus fixed tiles; the q×n score matrix is never
//!   formed.
//! - [`ShardedIndex`] searches several indexes (on any devices) one after another and merges the
//!   per-shard results exactly with [`merge_top_k`].

mod check;
mod cpu;
mod launch;
mod sharded;

pub use check::{bench, random_index, reference_top_k, selftest_cases, MipsBench};
pub use sharded::{check_global, hits_tensors, merge_top_k, search_shard, ShardHits, ShardedIndex};

use super::elem::check_float;
use crate::device::{CpuExec, Exec};
use crate::error::{Error, Result};
use crate::kernels::Emulator;
use candle_core::{DType, Device, Tensor};
use half::f16;
use launch::KernelPlan;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

const OP: &str = "mips_top_k";
const OP_INDEX: &str = "MipsIndex::new";

/// Dimensions are padded with zeros to a multiple of this for the kernels (16-byte rows).
const DIM_ALIGN: usize = 8;

/// `[n, d]` f16 rows in host memory that a [`MipsIndex`] searches in place (a memory-mapped
/// index file: no copy however large the index).
pub trait HostRows: Send + Sync + std::fmt::Debug {
    /// The `n * d` values, row after row.
    fn rows(&self) -> &[f16];
}

/// Where an index's rows are.
#[derive(Clone, Debug)]
enum Rows {
    /// `[n, d]` f16 on the index's device; on a CUDA device the rows are padded with zeros to a
    /// multiple of 8 dimensions, as the kernels read them.
    Tensor(Tensor),
    /// On the host, owned elsewhere.
    Host(Arc<dyn HostRows>),
}

/// An f16 document index `[n, d]`, validated once: non-empty, finite in f16.
#[derive(Clone, Debug)]
pub struct MipsIndex {
    data: Rows,
    n: usize,
    d: usize,
    /// An upper bound on the largest row norm, for the f32 error bound.
    max_norm: f64,
}

impl MipsIndex {
    /// Builds an index from `embeddings` `[n, d]` (f16, or f32/bf16 rounded to f16), on the device
    /// the tensor is on.
    pub fn new(embeddings: &Tensor) -> Result<Self> {
        let (n, d) = embeddings.dims2().map_err(|_| {
            Error::bad_input(
                OP_INDEX,
                "embeddings",
                format!("shape {:?} must be [n, d]", embeddings.dims()),
            )
        })?;
        if n == 0 || d == 0 {
            return Err(Error::bad_input(
                OP_INDEX,
                "embeddings",
                format!("the index is empty (shape [{n}, {d}])"),
            ));
        }
        // u32::MAX is the "no document" id.
        if n >= u32::MAX as usize {
            return Err(Error::bad_input(
                OP_INDEX,
                "embeddings",
                format!("{n} documents; ids are u32, so at most {}", u32::MAX - 1),
            ));
        }
        check_float(OP_INDEX, "embeddings", embeddings.dtype())?;
        let mut data = embeddings.to_dtype(DType::F16)?.contiguous()?;
        // The kernels read rows with 16-byte cp.async copies, which need 16-byte aligned
        // addresses: a view that starts inside its storage (a narrowed tensor) is copied to a
        // storage of its own.
        if data.layout().start_offset() % DIM_ALIGN != 0 {
            data = data.force_contiguous()?;
        }
        let max_norm_sq = max_row_norm_sq(&data)?;
        let data = match data.device() {
            Device::Cpu => data,
            _ => pad_dims(&data)?,
        };
        Ok(MipsIndex {
            data: Rows::Tensor(data),
            n,
            d,
            max_norm: norm_bound(max_norm_sq),
        })
    }

    /// An index over host rows `[n, d]` searched in place, with the largest squared row norm
    /// (f64 sums in order, as [`Self::new`] computes it) given by the caller, who has checked
    /// that every row is finite: building it reads no row, so opening a mapped index of
    /// millions of rows costs nothing.
    pub fn from_host_rows(
        rows: Arc<dyn HostRows>,
        n: usize,
        d: usize,
        max_row_norm_sq: f64,
    ) -> Result<Self> {
        if n == 0 || d == 0 || rows.rows().len() != n * d {
            return Err(Error::bad_input(
                OP_INDEX,
                "rows",
                format!(
                    "{} values for an index of shape [{n}, {d}] (it must be non-empty)",
                    rows.rows().len()
                ),
            ));
        }
        if n >= u32::MAX as usize {
            return Err(Error::bad_input(
                OP_INDEX,
                "rows",
                format!("{n} documents; ids are u32, so at most {}", u32::MAX - 1),
            ));
        }
        if !max_row_norm_sq.is_finite() || max_row_norm_sq < 0.0 {
            return Err(Error::bad_input(
                OP_INDEX,
                "max_row_norm_sq",
                format!("{max_row_norm_sq} is not a squared norm"),
            ));
        }
        Ok(MipsIndex {
            data: Rows::Host(rows),
            n,
            d,
            max_norm: norm_bound(max_row_norm_sq),
        })
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: an index has at least one document.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The device the index rows live on.
    pub fn device(&self) -> &Device {
        match &self.data {
            Rows::Tensor(t) => t.device(),
            Rows::Host(_) => &Device::Cpu,
        }
    }

    /// The f16 embeddings `[n, d]` (a copy of host rows).
    pub fn embeddings(&self) -> Result<Tensor> {
        Ok(match &self.data {
            Rows::Tensor(t) => t.narrow(1, 0, self.d)?,
            Rows::Host(h) => Tensor::from_slice(h.rows(), (self.n, self.d), &Device::Cpu)?,
        })
    }

    /// Calls `f` with the `[n, d]` rows of an index on the CPU.
    fn with_host_rows<T>(&self, f: impl FnOnce(&[f16]) -> Result<T>) -> Result<T> {
        match &self.data {
            Rows::Tensor(t) => {
                let (storage, layout) = t.storage_and_layout();
                f(cpu_f16(&storage, layout, OP, "index")?)
            }
            Rows::Host(h) => f(h.rows()),
        }
    }
}

/// The norm bound of the error estimate from the largest squared row norm: sqrt and the f32
/// sums on a GPU are rounded, and a relative 2^-10 more covers both.
fn norm_bound(max_norm_sq: f64) -> f64 {
    max_norm_sq.sqrt() * (1.0 + 1.0 / 1024.0)
}

/// The largest squared row norm of `[n, d]` host rows (f64 sums in order of the dimension), or
/// the first row that is not finite: what [`MipsIndex::from_host_rows`] needs.
pub fn max_row_norm_sq_of(rows: &[f16], d: usize) -> std::result::Result<f64, usize> {
    let mut max = 0.0f64;
    for (i, row) in rows.chunks(d.max(1)).enumerate() {
        let sq: f64 = row.iter().map(|v| v.to_f64() * v.to_f64()).sum();
        if !sq.is_finite() {
            return Err(i);
        }
        max = max.max(sq);
    }
    Ok(max)
}

/// The largest squared row norm, or an error naming the first row that is not finite in f16.
fn max_row_norm_sq(data: &Tensor) -> Result<f64> {
    let norms: Vec<f64> = match data.device() {
        Device::Cpu => {
            // Read the storage in place rather than copying a large index.
            let (storage, layout) = data.storage_and_layout();
            let x = cpu_f16(&storage, layout, OP_INDEX, "embeddings")?;
            x.par_chunks(layout.dims()[1])
                .map(|row| row.iter().map(|v| v.to_f64() * v.to_f64()).sum())
                .collect()
        }
        _ => {
            // On a device: f32 sums in chunks of rows, so the temporaries stay small.
            let n = data.dim(0)?;
            let mut norms = Vec::with_capacity(n);
            let chunk = 1 << 20;
            for start in (0..n).step_by(chunk) {
                let rows = data.narrow(0, start, chunk.min(n - start))?;
                let sq = rows.to_dtype(DType::F32)?.sqr()?.sum(1)?;
                norms.extend(sq.to_dtype(DType::F64)?.to_vec1::<f64>()?);
            }
            norms
        }
    };
    let mut max = 0.0f64;
    for (i, v) in norms.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::bad_input(
                OP_INDEX,
                "embeddings",
                format!("row {i} contains NaN or ±inf (after rounding to f16)"),
            ));
        }
        max = max.max(*v);
    }
    Ok(max)
}

/// The f16 elements of a contiguous CPU tensor's storage.
fn cpu_f16<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    op: &'static str,
    arg: &'static str,
) -> Result<&'a [f16]> {
    match storage {
        candle_core::Storage::Cpu(s) => super::elem::cpu_data::<f16>(op, arg, s, layout),
        _ => Err(Error::bad_input(op, arg, "expected a CPU tensor")),
    }
}

/// `x` `[n, d]` with zero columns added up to a multiple of [`DIM_ALIGN`].
fn pad_dims(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(1)?;
    let dp = d.next_multiple_of(DIM_ALIGN);
    Ok(if dp == d {
        x.clone()
    } else {
        x.pad_with_zeros(1, 0, dp - d)?.contiguous()?
    })
}

/// A batch of queries after validation: rounded to f16, with each one's error bound and excluded
/// document.
pub(crate) struct Queries {
    pub q: usize,
    pub d: usize,
    /// `d` rounded up to a multiple of [`DIM_ALIGN`]: the row stride of `rows`.
    pub dp: usize,
    /// `[q, dp]`: the f16-rounded values (as f32), zero-padded.
    pub rows: Vec<f32>,
    /// `E_q`: a bound on |f32 score − f64 score| for this query and any document, rounded up.
    pub margin: Vec<f32>,
    /// The excluded document of each query, u32::MAX for none.
    pub exclude: Vec<u32>,
}

impl Queries {
    /// Validates `queries` `[q, d]` and `exclude` against `index`.
    pub(crate) fn new(
        queries: &Tensor,
        index: &MipsIndex,
        exclude: Option<&[u32]>,
    ) -> Result<Self> {
        let (q, d) = queries.dims2().map_err(|_| {
            Error::bad_input(
                OP,
                "queries",
                format!("shape {:?} must be [q, d]", queries.dims()),
            )
        })?;
        if d != index.d {
            return Err(Error::bad_input(
                OP,
                "queries",
                format!("dimension {d} differs from the index's {}", index.d),
            ));
        }
        check_float(OP, "queries", queries.dtype())?;
        if !queries.device().same_device(index.device()) {
            return Err(Error::bad_input(
                OP,
                "queries",
                format!(
                    "on {:?}, the index on {:?}; move one of them",
                    queries.device().location(),
                    index.device().location()
                ),
            ));
        }
        let exclude = match exclude {
            None => vec![u32::MAX; q],
            Some(e) => {
                if e.len() != q {
                    return Err(Error::bad_input(
                        OP,
                        "exclude",
                        format!("{} entries for {q} queries", e.len()),
                    ));
                }
                if let Some((i, v)) = e
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v != u32::MAX && v as usize >= index.n)
                {
                    return Err(Error::bad_input(
                        OP,
                        "exclude",
                        format!(
                            "exclude[{i}] = {v} is not a document of the index (n = {}) nor u32::MAX",
                            index.n
                        ),
                    ));
                }
                e.to_vec()
            }
        };
        // Exact in f32 for every input dtype; queries are small, so one host copy.
        let values = crate::device::read_vec1::<f32>(&queries.to_dtype(DType::F32)?)?;
        let dp = d.next_multiple_of(DIM_ALIGN);
        let mut rows = vec![0.0f32; q * dp];
        let mut margin = Vec::with_capacity(q);
        for (i, (src, dst)) in values.chunks(d.max(1)).zip(rows.chunks_mut(dp)).enumerate() {
            let mut norm_sq = 0.0f64;
            for (j, (&v, r)) in src.iter().zip(dst.iter_mut()).enumerate() {
                if !v.is_finite() {
                    return Err(Error::bad_input(
                        OP,
                        "queries",
                        format!("queries[{i}, {j}] = {v} is not finite"),
                    ));
                }
                let h = f16::from_f32(v);
                if !h.is_finite() {
                    return Err(Error::bad_input(
                        OP,
                        "queries",
                        format!("queries[{i}, {j}] = {v} is beyond f16's range (±65504)"),
                    ));
                }
                *r = h.to_f32();
                norm_sq += (*r as f64) * (*r as f64);
            }
            margin.push(f32_up(error_bound(d, index.max_norm, norm_sq.sqrt())));
        }
        Ok(Queries {
            q,
            d,
            dp,
            rows,
            margin,
            exclude,
        })
    }

    /// The query's f16-rounded values (length d).
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dp..i * self.dp + self.d]
    }

    /// How many results query `i` can have from an index of `n` documents.
    pub(crate) fn available(&self, i: usize, n: usize) -> usize {
        n - usize::from((self.exclude[i] as usize) < n)
    }

    /// The rows as f16 `[q, dp]`, for the kernels (exact: the values are f16 already).
    pub(crate) fn rows_f16(&self) -> Vec<f16> {
        self.rows.iter().map(|&v| f16::from_f32(v)).collect()
    }
}

/// `E = d · 2^-21 · max‖x‖ · ‖q‖`. Each product of two f16 values is exact in f32, and any
/// summation order of d terms in f32 errs by at most `γ_d Σ|x_i q_i| ≤ d · 2^-24 · ‖x‖‖q‖`
/// (Cauchy–Schwarz); the f64 sum errs by far less. The factor 8 on top covers accumulators that
/// truncate instead of rounding (tensor cores) and the rounding of the threshold arithmetic.
fn error_bound(d: usize, max_norm: f64, query_norm: f64) -> f64 {
    d as f64 * 2f64.powi(-21) * max_norm * query_norm
}

/// The smallest f32 ≥ `x`.
fn f32_up(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) < x {
        f.next_up()
    } else {
        f
    }
}

/// The largest f32 ≤ `x`: thresholds are rounded down so that they only ever keep more.
pub(crate) fn f32_down(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) > x {
        f.next_down()
    } else {
        f
    }
}

/// A document's score as every path reports it: Σ_i x_i q_i in f64, in order of i (the products
/// of f16 values are exact in f64), with −0 made +0.
#[inline]
pub(crate) fn score_f64(x: &[f16], q: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for (a, &b) in x.iter().zip(q) {
        s += a.to_f64() * b as f64;
    }
    s + 0.0
}

/// The result order: score descending, then id ascending.
#[inline]
pub(crate) fn result_order(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Checks `k` against an index of `n` documents and each query's excluded document.
fn check_k(n: usize, exclude: &[u32], k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::bad_input(OP, "k", "k must be at least 1"));
    }
    if k > n {
        return Err(Error::bad_input(
            OP,
            "k",
            format!("k = {k} exceeds the index's {n} documents"),
        ));
    }
    if let Some((i, v)) = exclude
        .iter()
        .enumerate()
        .find(|(_, &v)| (v as usize) < n && k == n)
    {
        return Err(Error::bad_input(
            OP,
            "k",
            format!(
                "k = {k}, but query {i} excludes document {v} and so has only {} left",
                n - 1
            ),
        ));
    }
    Ok(())
}

/// The `k` best documents of `index` for each query: `scores` `[q, k]` f32 (descending) and `ids`
/// `[q, k]` u32, on the index's device. See the module documentation for the exact semantics.
pub fn mips_top_k(
    queries: &Tensor,
    index: &MipsIndex,
    k: usize,
    exclude: Option<&[u32]>,
) -> Result<(Tensor, Tensor)> {
    let prepared = Queries::new(queries, index, exclude)?;
    check_k(index.n, &prepared.exclude, k)?;
    let (scores, ids) = search(index, &prepared, k)?;
    Ok((scores.to_dtype(DType::F32)?, ids))
}

/// The search behind [`mips_top_k`] for any `1 ≤ k ≤ n`, scores in f64: a query with fewer than k
/// documents left (one excluded) gets score −inf and id u32::MAX in the places it cannot fill.
pub(crate) fn search(index: &MipsIndex, queries: &Queries, k: usize) -> Result<(Tensor, Tensor)> {
    let exec = Exec::current();
    match index.device() {
        Device::Cpu => {
            let hits = index.with_host_rows(|x| {
                Ok(match exec.cpu {
                    CpuExec::Native => cpu::search(x, index.n, index.d, queries, k),
                    CpuExec::Emulator => {
                        emulated_search(&Emulator::new(exec), x, index, queries, k)?
                    }
                })
            })?;
            hits.into_tensors(queries.q)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => gpu_search(dev, exec, index, queries, k),
        other => Err(Error::Device(format!(
            "{OP}: device {:?} is not supported",
            other.location()
        ))),
    }
}

/// Index slices the emulator asks for: enough for several per query at test shapes, so that the
/// cross-slice thresholds and the merge are exercised.
const EMULATOR_SLICES: usize = 4;

/// The kernels on the emulator; `x` is the `[n, d]` index.
fn emulated_search(
    emu: &Emulator,
    x: &[f16],
    index: &MipsIndex,
    queries: &Queries,
    k: usize,
) -> Result<Hits> {
    let (q, n, d, dp) = (queries.q, index.n, index.d, queries.dp);
    if q == 0 {
        return Ok(Hits {
            k,
            scores: Vec::new(),
            ids: Vec::new(),
        });
    }
    // Host memory: the lists of test shapes are small, so no limit.
    let plan = KernelPlan::new(n, dp, q, k, EMULATOR_SLICES, usize::MAX)?;
    // The kernels read rows of dp values (16-byte aligned chunks).
    let padded: Cow<[f16]> = if dp == d {
        Cow::Borrowed(x)
    } else {
        let mut padded = vec![f16::ZERO; n * dp];
        for (dst, src) in padded.chunks_exact_mut(dp).zip(x.chunks_exact(d)) {
            dst[..d].copy_from_slice(src);
        }
        Cow::Owned(padded)
    };
    let (scores, ids) = launch::search(emu, &&*padded, n, queries, k, &plan)?;
    Ok(Hits { k, scores, ids })
}

/// The kernels on the index's GPU (its rows are padded to a multiple of 8 dimensions).
#[cfg(feature = "cuda")]
fn gpu_search(
    dev: &candle_core::CudaDevice,
    exec: Exec,
    index: &MipsIndex,
    queries: &Queries,
    k: usize,
) -> Result<(Tensor, Tensor)> {
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::op::BackpropOp;
    use candle_core::Storage;
    use cudarc::driver::sys::CUdevice_attribute;
    let (q, n, dp) = (queries.q, index.n, queries.dp);
    if q == 0 {
        return Ok((
            Tensor::zeros((0, k), DType::F64, index.device())?,
            Tensor::zeros((0, k), DType::U32, index.device())?,
        ));
    }
    let Rows::Tensor(data) = &index.data else {
        return Err(Error::Device(format!(
            "{OP}: the index is not on a CUDA device"
        )));
    };
    let (storage, layout) = data.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        return Err(Error::Device(format!(
            "{OP}: the index is not on a CUDA device"
        )));
    };
    let x = super::elem::cuda_data::<f16>(OP, "index", cs, layout)?;
    let sms = dev
        .cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| Error::Device(format!("{OP}: reading the SM count: {e}")))?
        as usize;
    // Two blocks per SM over all query batches (of up to 64 queries).
    let wish = (2 * sms).div_ceil(q.div_ceil(64));
    // The candidate lists are sized to the memory free now (fewer slices, less parallelism,
    // where it is short).
    let (free, _) = dev
        .cuda_stream()
        .context()
        .mem_get_info()
        .map_err(|e| Error::Device(format!("{OP}: reading the free device memory: {e}")))?;
    let plan = KernelPlan::new(n, dp, q, k, wish, free)?;
    let be = crate::kernels::Cuda::new(dev, exec);
    let (scores, ids) = launch::search(&be, &x, n, queries, k, &plan)?;
    let tensor =
        |s: CudaStorage| Tensor::from_storage(Storage::Cuda(s), (q, k), BackpropOp::none(), false);
    Ok((
        tensor(CudaStorage::wrap_cuda_slice(scores, dev.clone())),
        tensor(CudaStorage::wrap_cuda_slice(ids, dev.clone())),
    ))
}

/// Results on the host: `[q, k]` f64 scores and u32 ids, padded with (−inf, u32::MAX).
pub(crate) struct Hits {
    pub k: usize,
    pub scores: Vec<f64>,
    pub ids: Vec<u32>,
}

impl Hits {
    fn into_tensors(self, q: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_vec(self.scores, (q, self.k), &Device::Cpu)?,
            Tensor::from_vec(self.ids, (q, self.k), &Device::Cpu)?,
        ))
    }
}

/// Lays out the exact results of one query from its candidates (distinct ids with f64 scores):
/// the best `out_scores.len()` by [`result_order`], padded with (−inf, u32::MAX).
pub(crate) fn write_sorted(
    mut cands: Vec<(f64, u32)>,
    out_scores: &mut [f64],
    out_ids: &mut [u32],
) {
    let k = out_scores.len();
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, result_order);
        cands.truncate(k);
    }
    cands.sort_unstable_by(result_order);
    for (i, (s, id)) in out_scores.iter_mut().zip(out_ids.iter_mut()).enumerate() {
        (*s, *id) = cands
            .get(i)
            .copied()
            .unwrap_or((f64::NEG_INFINITY, u32::MAX));
    }
}
