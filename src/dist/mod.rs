//! The processes of a distributed run and what they exchange (docs/distributed.md).
//!
//! One interface, [`Collective`], with two backends: [`Local`] (world size 1, the default: a
//! single process runs exactly as without this module) and, with the cargo feature `mpi`, MPI
//! through rsmpi (`mpirun -np N realm pretrain ...`). [`Dist`] builds what training and search
//! need on it: the sum of f32 gradient buckets, the gathering of top-k candidates, a broadcast
//! and a barrier.
//!
//! Every reduction is a gather followed by a sum in rank order on every rank, so a result never
//! depends on timing or on the MPI library's reduction tree: the same inputs give the same bits.
//! The cost (each rank receives N buffers instead of one) is negligible at the world sizes a CPU
//! run uses. On GPUs, with the cargo feature `nccl`, the gradient sum goes to NCCL instead
//! (`dist::nccl`; [`Dist::for_device`]).

#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod search;

use crate::error::{Error, Result};
use crate::ops::mips::ShardHits;
use candle_core::Tensor;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The exchanges a backend provides; [`Dist`] builds the typed collectives on them. Every rank
/// calls the same collectives in the same order; `what` names the exchange in errors.
pub trait Collective: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Every rank's `local` bytes, in rank order (lengths may differ between ranks).
    fn all_gather(&self, what: &'static str, local: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Root's `data` on every rank (the others' `data` is replaced).
    fn broadcast(&self, what: &'static str, root: usize, data: &mut Vec<u8>) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self, what: &'static str) -> Result<()>;
    /// Ends every rank of the run with `code` (after this rank printed why).
    fn abort(&self, code: i32) -> !;
    /// The element-wise sum over ranks of `buf` computed where it lies, or None when this
    /// backend exchanges host memory only (the default; [`Dist::all_reduce_tensor`] then sums
    /// through [`Collective::all_gather`]).
    fn all_reduce_device(&self, what: &'static str, buf: &Tensor) -> Result<Option<Tensor>> {
        let _ = (what, buf);
        Ok(None)
    }
}

/// A single process: every collective returns its input.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, _: &'static str, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![local.to_vec()])
    }
    fn broadcast(&self, _: &'static str, _: usize, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self, _: &'static str) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A handle on the run's processes (cheap to clone).
#[derive(Clone)]
pub struct Dist {
    backend: Arc<dyn Collective>,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dist(rank {} of {})", self.rank(), self.size())
    }
}

impl Default for Dist {
    fn default() -> Self {
        Dist::local()
    }
}

static WORLD: OnceLock<Dist> = OnceLock::new();

/// Keeps the world's backend alive; dropping it ends MPI (`MPI_Finalize`) where it was started.
pub struct WorldGuard {
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_backend::Finalize>,
}

impl Drop for WorldGuard {
    fn drop(&mut self) {
        #[cfg(feature = "mpi")]
        if let Some(f) = self.mpi.take() {
            f.finalize();
        }
    }
}

/// Starts the world once per process: MPI when this build has the `mpi` feature and the process
/// was started by an MPI launcher (`mpirun` sets `OMPI_COMM_WORLD_SIZE`, `PMI_SIZE` or
/// `PMIX_RANK`), else [`Local`]. [`world`] returns it from then on. Keep the guard until the
/// program ends.
pub fn init() -> Result<WorldGuard> {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() && WORLD.get().is_none() {
        let (backend, finalize) = mpi_backend::start(timeout()?)?;
        let _ = WORLD.set(Dist {
            backend: Arc::new(backend),
        });
        return Ok(WorldGuard {
            mpi: Some(finalize),
        });
    }
    let _ = WORLD.get_or_init(Dist::local);
    Ok(WorldGuard {
        #[cfg(feature = "mpi")]
        mpi: None,
    })
}

/// The world [`init`] started (a single process when it was not called).
pub fn world() -> Dist {
    WORLD.get().cloned().unwrap_or_default()
}

#[cfg(feature = "mpi")]
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// This process's rank among those of the run on its machine, as the MPI launcher tells it
/// (Open MPI's `OMPI_COMM_WORLD_LOCAL_RANK`, MPICH's `MPI_LOCALRANKID`, Slurm's `SLURM_LOCALID`);
/// 0 without a launcher. A rank uses the GPU of this number unless told another.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(0)
}

/// How long a rank waits in one collective for the others before it stops the run
/// (`REALM_DIST_TIMEOUT_S`, seconds; default 600: longer than any step or index build between
/// two collectives on the machines we run).
#[cfg(feature = "mpi")]
fn timeout() -> Result<std::time::Duration> {
    const DEFAULT_S: f64 = 600.0;
    let s = match std::env::var("REALM_DIST_TIMEOUT_S") {
        Err(_) => DEFAULT_S,
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                Error::Dist(format!(
                    "REALM_DIST_TIMEOUT_S = `{v}`: give a positive number of seconds"
                ))
            })?,
    };
    Ok(std::time::Duration::from_secs_f64(s))
}

impl Dist {
    /// A single process.
    pub fn local() -> Self {
        Dist {
            backend: Arc::new(Local),
        }
    }

    /// A handle on another backend.
    pub fn new(backend: Arc<dyn Collective>) -> Self {
        Dist { backend }
    }

    /// This process's rank, 0..size.
    pub fn rank(&self) -> usize {
        self.backend.rank()
    }

    /// Ranks in the run (1 for a single process).
    pub fn size(&self) -> usize {
        self.backend.size()
    }

    /// Rank 0: the one that writes files and prints.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's part of `n` items: the contiguous range `rank·n/N .. (rank+1)·n/N`, so the
    /// parts of ranks 0..N in order are 0..n.
    pub fn shard(&self, n: usize) -> Range<usize> {
        self.shard_of(self.rank(), n)
    }

    /// Rank `rank`'s part of `n` items (see [`Dist::shard`]).
    pub fn shard_of(&self, rank: usize, n: usize) -> Range<usize> {
        let s = self.size();
        rank * n / s..(rank + 1) * n / s
    }

    /// The rank whose part of `n` items holds item `i` (< `n`): without a scan over the ranks,
    /// since rank ⌊i·size/n⌋'s part ends at or after i, and the next one's starts there.
    pub fn owner_of(&self, i: usize, n: usize) -> usize {
        let r = i * self.size() / n;
        if i < self.shard_of(r, n).end {
            r
        } else {
            r + 1
        }
    }

    /// An error unless every rank gets at least one of `n` items (`what` names them).
    pub fn check_divisible(&self, what: &'static str, n: usize) -> Result<()> {
        if n < self.size() {
            return Err(Error::bad_input(
                "distributed run",
                what,
                format!(
                    "{n} for {} ranks: every rank needs at least one",
                    self.size()
                ),
            ));
        }
        Ok(())
    }

    /// The element-wise sum over ranks of `buf` (in place), added in rank order, the same bits
    /// on every rank.
    pub fn all_reduce_sum(&self, what: &'static str, buf: &mut [f32]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let parts = self.backend.all_gather(what, bytemuck::cast_slice(buf))?;
        for (r, p) in parts.iter().enumerate() {
            if p.len() != std::mem::size_of_val(buf) {
                return Err(Error::Dist(format!(
                    "{what}: rank {r} sent {} bytes, rank {} {}",
                    p.len(),
                    self.rank(),
                    std::mem::size_of_val(buf)
                )));
            }
        }
        let mut sum: Vec<f32> = from_bytes(&parts[0]);
        for p in &parts[1..] {
            let p: Vec<f32> = from_bytes(p);
            sum.iter_mut().zip(&p).for_each(|(s, x)| *s += x);
        }
        buf.copy_from_slice(&sum);
        Ok(())
    }

    /// The element-wise sum over ranks of the f32 tensor `buf`: on its device where the backend
    /// can (NCCL, `dist::nccl`), else through host memory in buckets of `bucket` values, each
    /// added in rank order ([`Dist::all_reduce_sum`]). A single process gets `buf` back.
    pub fn all_reduce_tensor(
        &self,
        what: &'static str,
        buf: &Tensor,
        bucket: usize,
    ) -> Result<Tensor> {
        if self.size() == 1 {
            return Ok(buf.clone());
        }
        if let Some(sum) = self.backend.all_reduce_device(what, buf)? {
            return Ok(sum);
        }
        let mut host = crate::device::read_vec1::<f32>(&buf.flatten_all()?)?;
        for part in host.chunks_mut(bucket.max(1)) {
            self.all_reduce_sum(what, part)?;
        }
        Ok(Tensor::from_vec(host, buf.shape(), buf.device())?)
    }

    /// The handle a run on `device` trains with: with the `nccl` feature, several ranks on CUDA
    /// devices sum their gradients through NCCL (connected here: every rank must call it);
    /// otherwise this one.
    pub fn for_device(&self, device: &candle_core::Device) -> Result<Dist> {
        #[cfg(feature = "nccl")]
        if let (true, candle_core::Device::Cuda(gpu)) = (self.size() > 1, device) {
            return nccl::Nccl::connect(self, gpu);
        }
        let _ = device;
        Ok(self.clone())
    }

    /// Every rank's `local` values (any length), in rank order.
    pub fn all_gather_values<T: bytemuck::Pod>(
        &self,
        what: &'static str,
        local: &[T],
    ) -> Result<Vec<Vec<T>>> {
        if self.size() == 1 {
            return Ok(vec![local.to_vec()]);
        }
        let parts = self.backend.all_gather(what, bytemuck::cast_slice(local))?;
        parts
            .iter()
            .enumerate()
            .map(|(r, p)| match p.len() % std::mem::size_of::<T>() {
                0 => Ok(from_bytes(p)),
                _ => Err(Error::Dist(format!(
                    "{what}: rank {r} sent {} bytes, not whole values of {} bytes",
                    p.len(),
                    std::mem::size_of::<T>()
                ))),
            })
            .collect()
    }

    /// Whether `flag` is set on any rank.
    pub fn any(&self, what: &'static str, flag: bool) -> Result<bool> {
        if self.size() == 1 {
            return Ok(flag);
        }
        let parts = self.backend.all_gather(what, &[u8::from(flag)])?;
        Ok(parts.iter().any(|p| p.first() == Some(&1)))
    }

    /// Every rank's top-k candidates, in rank order.
    pub fn all_gather_hits(&self, what: &'static str, local: &ShardHits) -> Result<Vec<ShardHits>> {
        if self.size() == 1 {
            return Ok(vec![local.clone()]);
        }
        let mut bytes = Vec::with_capacity(8 + local.scores.len() * 12);
        bytes.extend_from_slice(&(local.k as u64).to_le_bytes());
        bytes.extend_from_slice(bytemuck::cast_slice(&local.scores));
        bytes.extend_from_slice(bytemuck::cast_slice(&local.ids));
        let parts = self.backend.all_gather(what, &bytes)?;
        parts
            .iter()
            .enumerate()
            .map(|(r, p)| {
                let bad = || Error::Dist(format!("{what}: rank {r} sent {} bytes", p.len()));
                let (k, rest) = p.split_first_chunk::<8>().ok_or_else(bad)?;
                let k = u64::from_le_bytes(*k) as usize;
                if rest.len() % 12 != 0 {
                    return Err(bad());
                }
                let (scores, ids) = rest.split_at(rest.len() / 12 * 8);
                Ok(ShardHits {
                    k,
                    scores: from_bytes(scores),
                    ids: from_bytes(ids),
                })
            })
            .collect()
    }

    /// Root's bytes on every rank.
    pub fn broadcast(&self, what: &'static str, root: usize, data: &mut Vec<u8>) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        self.backend.broadcast(what, root, data)
    }

    /// Waits until every rank reaches this point (`what` names it in errors).
    pub fn barrier(&self, what: &'static str) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        self.backend.barrier(what)
    }

    /// Ends every rank of the run with `code`; a single process just exits.
    pub fn abort(&self, code: i32) -> ! {
        self.backend.abort(code)
    }

    /// The seed of this rank's random draws that must differ between replicas (dropout): rank
    /// 0 keeps `seed`, so a single process draws what it always drew.
    pub fn replica_seed(&self, seed: u64) -> u64 {
        seed.wrapping_add((self.rank() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// The values whose bytes (native order, any alignment) `b` holds; `b.len()` is a multiple of
/// the value's size (checked by the callers).
fn from_bytes<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); b.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(b);
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Each rank's contribution to the gather under way, and the barrier the ranks meet at.
    type Table = Arc<(Mutex<Vec<Option<Vec<u8>>>>, std::sync::Barrier)>;

    /// N ranks in one process, each a thread: the gathers meet at a shared table.
    struct Threads {
        rank: usize,
        table: Table,
    }

    impl Collective for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.table.0.lock().unwrap().len()
        }
        fn all_gather(&self, _: &'static str, local: &[u8]) -> Result<Vec<Vec<u8>>> {
            self.table.0.lock().unwrap()[self.rank] = Some(local.to_vec());
            self.table.1.wait();
            let all = self
                .table
                .0
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .cloned()
                .collect();
            self.table.1.wait();
            Ok(all)
        }
        fn broadcast(&self, what: &'static str, root: usize, data: &mut Vec<u8>) -> Result<()> {
            *data = self.all_gather(what, data)?.swap_remove(root);
            Ok(())
        }
        fn barrier(&self, _: &'static str) -> Result<()> {
            self.table.1.wait();
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            panic!("abort {code}")
        }
    }

    /// Runs `f` on `n` ranks, each a thread; their results in rank order.
    pub(crate) fn run_ranks<T: Send + 'static>(
        n: usize,
        f: impl Fn(Dist) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let table = Arc::new((Mutex::new(vec![None; n]), std::sync::Barrier::new(n)));
        let f = Arc::new(f);
        let handles: Vec<_> = (0..n)
            .map(|rank| {
                let (table, f) = (table.clone(), f.clone());
                std::thread::spawn(move || f(Dist::new(Arc::new(Threads { rank, table }))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn shards_cover_the_items_in_order() {
        for n in [3usize, 8, 10] {
            let parts = run_ranks(3, move |d| d.shard(n));
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[2].end, n);
            assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn each_item_has_the_owner_whose_part_holds_it() {
        for size in [1usize, 2, 3, 5, 7] {
            let wrong = run_ranks(size, move |d| {
                (size..=40)
                    .flat_map(|n| (0..n).map(move |i| (i, n)))
                    .find(|&(i, n)| !d.shard_of(d.owner_of(i, n), n).contains(&i))
            });
            assert_eq!(wrong[0], None, "{size} ranks: item, n");
        }
    }

    #[test]
    fn all_reduce_adds_in_rank_order_on_every_rank() {
        // 1e8 + 1 − 1e8 is 0 in f32 but (1e8 − 1e8) + 1 is 1: the order is rank order.
        let sums = run_ranks(3, |d| {
            let mut v = [[1e8f32, 1.0], [1.0, 1e8], [-1e8, -1e8]][d.rank()];
            d.all_reduce_sum("test", &mut v).unwrap();
            v
        });
        for s in &sums {
            assert_eq!(s, &[(1e8f32 + 1.0) - 1e8, (1.0 + 1e8f32) - 1e8]);
        }
        assert_eq!(sums[0], [0.0, 0.0]);
    }

    #[test]
    fn a_tensor_is_summed_in_host_buckets_as_the_values_are() {
        // Buckets of 2 over 5 values: the last bucket is short, and each is the rank-order sum.
        let sums = run_ranks(3, |d| {
            let r = d.rank() as f32;
            let v = [1e8 * (1.0 - r), 1.0 + r, -2.5, r * r, 0.5];
            let t = Tensor::new(&v, &candle_core::Device::Cpu).unwrap();
            let got = d.all_reduce_tensor("test", &t, 2).unwrap();
            let mut want = v;
            d.all_reduce_sum("test", &mut want).unwrap();
            (got.to_vec1::<f32>().unwrap(), want)
        });
        for (got, want) in &sums {
            assert_eq!(got.as_slice(), want.as_slice());
        }
        assert_eq!(sums[0].0, sums[2].0);
        let one = Tensor::new(&[3f32, f32::NAN], &candle_core::Device::Cpu).unwrap();
        let same = Dist::local().all_reduce_tensor("test", &one, 1).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap()[0], 3.0);
    }

    #[test]
    fn hits_gather_round_trips() {
        let got = run_ranks(2, |d| {
            let r = d.rank() as u32;
            let local = ShardHits {
                k: 2,
                scores: vec![f64::from(r), -1.5, f64::NEG_INFINITY, 2.0],
                ids: vec![r, 7, u32::MAX, 9],
            };
            (local.clone(), d.all_gather_hits("test", &local).unwrap())
        });
        let sent: Vec<ShardHits> = got.iter().map(|(l, _)| l.clone()).collect();
        for (_, all) in &got {
            assert_eq!(all, &sent);
        }
        assert!(run_ranks(2, |d| d.any("test", d.rank() == 1).unwrap())
            .into_iter()
            .all(|x| x));
    }

    #[test]
    fn a_single_process_is_unchanged() {
        let d = Dist::local();
        let mut v = [1.0f32, f32::NAN];
        d.all_reduce_sum("test", &mut v).unwrap();
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan());
        assert_eq!(d.shard(5), 0..5);
        assert_eq!(d.replica_seed(42), 42);
        assert!(d.check_divisible("batch", 1).is_ok());
    }
}
