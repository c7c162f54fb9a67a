//! Stopping a training run cleanly. A [`StopRequest`] asks the training loop to finish the step it
//! is in, write a checkpoint and return (the stage's report says `interrupted`); `--resume`
//! continues from there. The training commands connect it to Ctrl-C and SIGTERM with
//! [`install_signal_handlers`]: the first signal while steps are running requests the stop, a
//! second one (or any signal while no step is running: loading data, building an index, the final
//! evaluation) exits at once with status 128 + the signal number, as the default action would.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

/// A request to stop training at the next step boundary, with a checkpoint.
#[derive(Debug, Default)]
pub struct StopRequest {
    /// The signal that asked for the stop (or [`StopRequest::MANUAL`]); 0 = none.
    signal: AtomicI32,
    /// Whether a training loop is running steps (set by the trainer): only then can a signal be
    /// turned into a clean stop.
    armed: AtomicBool,
}

impl StopRequest {
    /// The "signal" of a stop requested by [`StopRequest::request`] rather than by a signal.
    pub const MANUAL: i32 = -1;

    /// A request not yet made.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the running (or next) training loop to stop after its current step.
    pub fn request(&self) {
        let _ = self
            .signal
            .compare_exchange(0, Self::MANUAL, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.signal.load(Ordering::SeqCst) != 0
    }

    /// The signal number that requested the stop (None: not requested, or by
    /// [`StopRequest::request`]).
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|&s| s > 0)
    }

    /// Marks whether training steps are running (the trainer does this).
    pub(crate) fn set_armed(&self, armed: bool) {
        self.armed.store(armed, Ordering::SeqCst);
    }

    /// Records `signal` if a loop is running and no stop was requested yet; false: the signal
    /// should take its default effect.
    fn take_signal(&self, signal: i32) -> bool {
        self.armed.load(Ordering::SeqCst)
            && self
                .signal
                .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

/// The request the signal handlers feed (one per process).
static SIGNALLED: OnceLock<Arc<StopRequest>> = OnceLock::new();

/// Routes SIGINT and SIGTERM to a process-wide [`StopRequest`] (installed once; later calls
/// return the same request).
#[cfg(unix)]
pub fn install_signal_handlers() -> Result<Arc<StopRequest>> {
    let mut first = false;
    let request = SIGNALLED.get_or_init(|| {
        first = true;
        Arc::new(StopRequest::new())
    });
    if first {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `on_signal` only performs async-signal-safe work (atomic operations on a
            // request that lives for the rest of the process, write(2) and _exit(2)); the
            // sigaction struct is zero-initialised and then fully set up before the call.
            let installed = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
            };
            if !installed {
                return Err(Error::Device(format!(
                    "installing the handler of signal {signal}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    Ok(request.clone())
}

/// Without POSIX signals the default Ctrl-C behaviour stays; the request is never signalled.
#[cfg(not(unix))]
pub fn install_signal_handlers() -> Result<Arc<StopRequest>> {
    Ok(SIGNALLED
        .get_or_init(|| Arc::new(StopRequest::new()))
        .clone())
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    let stopping = SIGNALLED.get().is_some_and(|r| r.take_signal(signal));
    let message: &[u8] = if stopping {
        b"\nrealm: stopping after this step and writing a checkpoint (interrupt again to quit at once)\n"
    } else {
        b"\nrealm: interrupted\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a static byte string.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
        if !stopping {
            libc::_exit(128 + signal);
        }
    }
}

/// The conventional exit status of a process that `signal` ended (130 for SIGINT).
pub fn exit_status(signal: i32) -> i32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_becomes_a_request_only_while_armed_and_only_once() {
        let r = StopRequest::new();
        assert!(!r.take_signal(2), "no loop running: the default action");
        r.set_armed(true);
        assert!(r.take_signal(2));
        assert!(!r.take_signal(15), "a second signal exits at once");
        assert_eq!(r.signal(), Some(2));
        assert!(r.requested());
        let manual = StopRequest::new();
        manual.request();
        assert!(manual.requested());
        assert_eq!(manual.signal(), None);
    }
}
