//! NCCL between the GPUs of a run (cargo feature `nccl`): the gradient sum of
//! [`Dist::all_reduce_tensor`] stays on the devices, an NCCL all-reduce on the training stream,
//! instead of a copy to the host, an MPI exchange and a copy back. Every other exchange (the
//! index's candidates, flags, broadcasts, barriers) goes through the backend the run was
//! started with (MPI), which also carries NCCL's unique id from rank 0 to the others.
//!
//! The sum is NCCL's: the same for a fixed number of ranks and topology, but not the
//! rank-order sum of the host path, so runs on GPUs are not bit-for-bit comparable with runs on
//! the host backend. A rank that dies during the all-reduce leaves the others in it (NCCL has no
//! time-out of its own); the loss exchange before it, on MPI, is where a dead rank is noticed.

use super::{Collective, Dist};
use crate::error::{Error, Result};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::sync::{Arc, Mutex};

const OP: &str = "nccl all-reduce";

/// The GPUs of the ranks of a run, with `host` for everything but the device sums.
pub struct Nccl {
    host: Dist,
    comm: Mutex<RankComm>,
}

/// This rank's communicator.
struct RankComm(Comm);

// SAFETY: NCCL allows a communicator to be used from any thread as long as no two calls on it
// run at once; every use goes through `Nccl::comm`'s mutex. The stream it holds is the training
// device's, which candle shares between threads in the same way.
unsafe impl Send for RankComm {}

impl Nccl {
    /// Connects the GPUs of `host`'s ranks, each rank's communicator on `device`'s stream: rank
    /// 0 makes NCCL's unique id and `host` broadcasts it. Every rank must call it.
    pub fn connect(host: &Dist, device: &candle_core::CudaDevice) -> Result<Dist> {
        let nccl_err = |call: &str, e: cudarc::nccl::result::NcclError| {
            Error::Dist(format!(
                "rank {} of {}: {call}: {e:?}",
                host.rank(),
                host.size()
            ))
        };
        let mut id: Vec<u8> = match host.is_root() {
            true => Id::new()
                .map_err(|e| nccl_err("ncclGetUniqueId", e))?
                .internal()
                .iter()
                .map(|&c| c as u8)
                .collect(),
            false => Vec::new(),
        };
        host.broadcast("nccl unique id", 0, &mut id)?;
        let internal: [std::ffi::c_char; 128] = id
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|v: Vec<_>| {
                Error::Dist(format!("nccl unique id: {} bytes, not 128", v.len()))
            })?;
        let comm = Comm::from_rank(
            device.cuda_stream(),
            host.rank(),
            host.size(),
            Id::uninit(internal),
        )
        .map_err(|e| nccl_err("ncclCommInitRank", e))?;
        Ok(Dist::new(Arc::new(Nccl {
            host: host.clone(),
            comm: Mutex::new(RankComm(comm)),
        })))
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn size(&self) -> usize {
        self.host.size()
    }
    fn all_gather(&self, what: &'static str, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.host.backend.all_gather(what, local)
    }
    fn broadcast(&self, what: &'static str, root: usize, data: &mut Vec<u8>) -> Result<()> {
        self.host.backend.broadcast(what, root, data)
    }
    fn barrier(&self, what: &'static str) -> Result<()> {
        self.host.backend.barrier(what)
    }
    fn abort(&self, code: i32) -> ! {
        self.host.backend.abort(code)
    }
    fn all_reduce_device(&self, what: &'static str, buf: &Tensor) -> Result<Option<Tensor>> {
        if !buf.device().is_cuda() || buf.dtype() != DType::F32 {
            return Ok(None);
        }
        let sum = SumOverRanks { nccl: self, what };
        Ok(Some(buf.contiguous()?.apply_op1_no_bwd(&sum)?))
    }
}

/// The all-reduce as a candle op, so that it runs on the tensor's storage in stream order.
struct SumOverRanks<'a> {
    nccl: &'a Nccl,
    what: &'static str,
}

impl CustomOp1 for SumOverRanks<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(Error::bad_input(OP, self.what, "NCCL sums tensors on CUDA devices only").into())
    }

    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let mine = crate::ops::elem::cuda_data::<f32>(OP, self.what, s, l)?;
        let comm =
            self.nccl.comm.lock().map_err(|_| {
                Error::Dist(format!("{}: the communicator was poisoned", self.what))
            })?;
        let ordinal = s.device.cuda_stream().context().ordinal();
        if comm.0.ordinal() != ordinal {
            return Err(Error::bad_input(
                OP,
                self.what,
                format!(
                    "on cuda:{ordinal}, but this rank's communicator is on cuda:{}",
                    comm.0.ordinal()
                ),
            )
            .into());
        }
        let mut sum = comm
            .0
            .stream()
            .alloc_zeros::<f32>(mine.len())
            .map_err(|e| Error::Dist(format!("{}: allocating the sum: {e}", self.what)))?;
        comm.0
            .all_reduce(&mine, &mut sum, &ReduceOp::Sum)
            .map_err(|e| Error::Dist(format!("{}: ncclAllReduce: {e:?}", self.what)))?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(sum, s.device.clone()),
            l.shape().clone(),
        ))
    }
}

/// `realm selftest`'s check of NCCL on one GPU: a communicator of one rank, whose all-reduce
/// must return its input exactly (it runs the device path that several GPUs run).
pub fn selftest_cases() -> Vec<crate::check::Case> {
    vec![crate::check::Case {
        op: "nccl",
        name: "all-reduce, world of one (exact)".to_string(),
        run: Box::new(|dev: &crate::device::ComputeDevice| {
            let candle_core::Device::Cuda(gpu) = &dev.device else {
                return Err(Error::Device(format!(
                    "NCCL runs on CUDA devices, not on {dev}"
                )));
            };
            let one = Nccl::connect(&Dist::local(), gpu)?;
            let values: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
            let buf = Tensor::from_slice(&values, values.len(), &dev.device)?;
            let sum = one
                .backend
                .all_reduce_device("selftest", &buf)?
                .ok_or_else(|| Error::Dist("NCCL did not take a CUDA f32 tensor".into()))?;
            let got = crate::device::read_vec1::<f32>(&sum)?;
            let wrong = got
                .iter()
                .zip(&values)
                .filter(|(a, b)| a.to_bits() != b.to_bits());
            match wrong.count() {
                0 => Ok(crate::check::Outcome {
                    max_rel_err: 0.0,
                    tolerance: 0.0,
                }),
                n => Err(Error::Dist(format!(
                    "{n} of {} values changed",
                    values.len()
                ))),
            }
        }),
    }]
}
