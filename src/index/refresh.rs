//! Asynchronous index refresh (REALM §3.3): every R steps a snapshot of the document tower
//! re-embeds the corpus on a background worker while training goes on; the new index is swapped in
//! atomically when ready. A training step never waits for a refresh.

use crate::error::{Error, Result};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The current index, readable by the training loop and replaced whole by a refresh.
pub struct IndexSlot<T> {
    current: RwLock<Arc<Versioned<T>>>,
}

/// An index with the training step of the weights that built it.
#[derive(Debug)]
pub struct Versioned<T> {
    /// The index.
    pub index: T,
    /// The training step of the weights that built it.
    pub step: u64,
}

impl<T> IndexSlot<T> {
    /// A slot holding `index`, built by the weights of step `step`.
    pub fn new(index: T, step: u64) -> Self {
        IndexSlot {
            current: RwLock::new(Arc::new(Versioned { index, step })),
        }
    }

    /// The index to search now (a cheap handle; a concurrent swap does not affect it).
    pub fn get(&self) -> Arc<Versioned<T>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the index in one step.
    pub fn swap(&self, index: T, step: u64) {
        let new = Arc::new(Versioned { index, step });
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Steps since the weights behind the current index.
    pub fn staleness(&self, step: u64) -> u64 {
        step.saturating_sub(self.get().step)
    }
}

/// A finished refresh.
#[derive(Debug)]
pub struct Refreshed<T> {
    /// The new index.
    pub index: T,
    /// The step of the weight snapshot it was built from.
    pub step: u64,
    /// Wall time of the rebuild.
    pub build_time: Duration,
}

/// A refresh running on its own thread.
pub struct Refresh<T> {
    rx: Receiver<Result<(T, Duration)>>,
    handle: Option<JoinHandle<()>>,
    step: u64,
}

impl<T: Send + 'static> Refresh<T> {
    /// Starts `build` (which owns its weight snapshot) in the background for step `step`.
    pub fn spawn(step: u64, build: impl FnOnce() -> Result<T> + Send + 'static) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("index-refresh-{step}"))
            .spawn(move || {
                let start = Instant::now();
                let result = build().map(|index| (index, start.elapsed()));
                // The receiver may be gone if training ended first; nothing to report then.
                let _ = tx.send(result);
            })
            .map_err(|e| Error::Device(format!("starting the index refresh thread: {e}")))?;
        Ok(Refresh {
            rx,
            handle: Some(handle),
            step,
        })
    }

    /// The result if the refresh has finished, without waiting.
    pub fn try_finish(&mut self) -> Option<Result<Refreshed<T>>> {
        let result = match self.rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                Err(Error::Device("the index refresh thread died".into()))
            }
        };
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        Some(result.map(|(index, build_time)| Refreshed {
            index,
            step: self.step,
            build_time,
        }))
    }

    /// Waits for the result (at the end of training, or in tests).
    pub fn finish(mut self) -> Result<Refreshed<T>> {
        let result = self
            .rx
            .recv()
            .map_err(|_| Error::Device("the index refresh thread died".into()))?;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        result.map(|(index, build_time)| Refreshed {
            index,
            step: self.step,
            build_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn a_refresh_never_blocks_the_reader_and_swaps_whole() {
        let slot = IndexSlot::new(vec![0u32; 3], 0);
        let (release, gate) = sync_channel::<()>(0);
        let mut refresh = Refresh::spawn(10, move || {
            // The build cannot finish until the test lets it: reads must not wait for it.
            gate.recv().map_err(|_| Error::Device("gate".into()))?;
            Ok(vec![1u32; 5])
        })
        .unwrap();
        for step in 10..15 {
            assert!(refresh.try_finish().is_none());
            assert_eq!(slot.get().index.len(), 3);
            assert_eq!(slot.staleness(step), step);
        }
        release.send(()).unwrap();
        let done = loop {
            if let Some(r) = refresh.try_finish() {
                break r.unwrap();
            }
            std::thread::yield_now();
        };
        let before = slot.get();
        slot.swap(done.index, done.step);
        assert_eq!((before.index.len(), slot.get().index.len()), (3, 5));
        assert_eq!(slot.staleness(17), 7);
    }

    #[test]
    fn a_failed_refresh_reports_its_error() {
        let r = Refresh::<u32>::spawn(1, || Err(Error::Device("out of memory".into()))).unwrap();
        assert!(r
            .finish()
            .unwrap_err()
            .to_string()
            .contains("out of memory"));
    }
}
