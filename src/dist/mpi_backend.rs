//! The MPI backend (cargo feature `mpi`): rsmpi over the system's MPI (Open MPI on Debian).
//!
//! A rank that fails calls `MPI_Abort` (through [`Collective::abort`], from the binary's error
//! path), which ends every rank at once. A rank that hangs or is stopped cannot abort: for it a
//! watchdog thread on every rank ends its own process when one collective has waited longer
//! than the time-out (`REALM_DIST_TIMEOUT_S`); `mpirun` then ends the other ranks, as it does
//! when any rank exits with a non-zero status or dies of a signal. The watchdog does not call
//! MPI (the library may be blocked inside the collective it watches): it prints why and leaves
//! with `_exit`.

use super::Collective;
use crate::error::{Error, Result};
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Threading;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The exit status of a rank whose collective timed out.
const TIMED_OUT: i32 = 70;

/// The world communicator; every call holds the lock, so MPI is only ever entered by one thread
/// at a time (the threading level asked for is `Serialized`).
pub struct MpiWorld {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    /// The collective in progress and when it began, for the watchdog.
    busy: Arc<Mutex<Option<(Instant, &'static str)>>>,
}

// SAFETY: the communicator is only used under `comm`'s lock, and MPI was initialised with at
// least `MPI_THREAD_SERIALIZED`, which allows calls from any thread one at a time.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

/// Ends MPI when the program is done with it.
pub struct Finalize(mpi::environment::Universe);

impl Finalize {
    pub fn finalize(self) {
        drop(self.0);
    }
}

pub fn start(timeout: Duration) -> Result<(MpiWorld, Finalize)> {
    let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::Dist("MPI was already initialised".into()))?;
    if level < Threading::Serialized {
        return Err(Error::Dist(format!(
            "the MPI library offers threading level {level:?}; realm needs Serialized"
        )));
    }
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let busy: Arc<Mutex<Option<(Instant, &'static str)>>> = Arc::default();
    let watched = busy.clone();
    std::thread::Builder::new()
        .name("realm-dist-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let late = watched
                .lock()
                .map(|b| b.filter(|(since, _)| since.elapsed() > timeout))
                .unwrap_or(None);
            if let Some((_, what)) = late {
                eprintln!(
                    "Error: distributed: rank {rank} of {size}: {what}: no answer from the other ranks for {:.0} s (a rank died or hangs; REALM_DIST_TIMEOUT_S sets the limit); stopping",
                    timeout.as_secs_f64()
                );
                // SAFETY: ends the process without running anything else (no MPI, no atexit).
                unsafe { libc::_exit(TIMED_OUT) };
            }
        })
        .map_err(|e| Error::Dist(format!("starting the watchdog: {e}")))?;
    Ok((
        MpiWorld {
            comm: Mutex::new(comm),
            rank,
            size,
            busy,
        },
        Finalize(universe),
    ))
}

impl MpiWorld {
    /// Runs one collective under the lock, watched.
    fn watched<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&SimpleCommunicator) -> T,
    ) -> Result<T> {
        let comm = self
            .comm
            .lock()
            .map_err(|_| Error::Dist(format!("{what}: an earlier collective panicked")))?;
        *self.busy.lock().map_err(|_| Error::Dist(what.into()))? = Some((Instant::now(), what));
        let out = f(&comm);
        *self.busy.lock().map_err(|_| Error::Dist(what.into()))? = None;
        Ok(out)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, what: &'static str, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let size = self.size;
        let lens = self.watched(what, |c| {
            let mut lens = vec![0u64; size];
            c.all_gather_into(&(local.len() as u64), &mut lens[..]);
            lens
        })?;
        let counts: Vec<i32> = lens
            .iter()
            .map(|&l| i32::try_from(l))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Dist(format!("{what}: a rank sends more than 2 GiB")))?;
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i64, |at, &c| {
                let d = *at;
                *at += i64::from(c);
                Some(i32::try_from(d))
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Dist(format!("{what}: more than 2 GiB in all")))?;
        let total = lens.iter().sum::<u64>() as usize;
        let all = self.watched(what, |c| {
            let mut all = vec![0u8; total];
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            c.all_gather_varcount_into(local, &mut part);
            all
        })?;
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
            .collect())
    }

    fn broadcast(&self, what: &'static str, root: usize, data: &mut Vec<u8>) -> Result<()> {
        self.watched(what, |c| {
            let root = c.process_at_rank(root as i32);
            let mut len = data.len() as u64;
            root.broadcast_into(&mut len);
            data.resize(len as usize, 0);
            root.broadcast_into(&mut data[..]);
        })
    }

    fn barrier(&self, what: &'static str) -> Result<()> {
        self.watched(what, |c| c.barrier())
    }

    fn abort(&self, code: i32) -> ! {
        // Not under the lock: a collective that failed may still hold it.
        SimpleCommunicator::world().abort(code)
    }
}
