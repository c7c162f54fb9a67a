//! Failure injection for the kill tests of the folder writers. With `REALM_FAILPOINT=WRITER:N`
//! in the environment, the process ends right after the N-th file operation (create, write,
//! sync, rename, link, remove) that the writer named WRITER makes — as a kill would end it: no
//! clean-up runs. The writers are `checkpoint` (`train::state`: assembling, swapping in and
//! recovering a checkpoint folder) and `run` (`train::run` and `train::models`: starting or
//! reopening a run directory, its metrics). A test loops N over every operation and checks what a
//! kill there leaves behind. Without the variable every hook is one thread-local read.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a failpoint.
pub const VARIABLE: &str = "REALM_FAILPOINT";
/// The exit status of a process ended by a failpoint.
pub const EXIT_STATUS: i32 = 86;

/// The armed writer and operation number, read once.
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(VARIABLE).ok()?;
            let (writer, n) = spec.split_once(':')?;
            Some((writer.to_string(), n.trim().parse().ok()?))
        })
        .as_ref()
}

/// Operations of the armed writer so far (in this process).
static COUNT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The writer whose operations this thread is making.
    static WRITER: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// While alive, this thread's file operations belong to `writer`.
pub struct Scope {
    previous: Option<&'static str>,
}

pub fn scope(writer: &'static str) -> Scope {
    Scope {
        previous: WRITER.with(|w| w.replace(Some(writer))),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        WRITER.with(|w| w.set(self.previous));
    }
}

/// Marks a file operation (`what` on `path`) just done; ends the process if it is the armed one.
pub fn op(what: &str, path: &Path) {
    let Some(writer) = WRITER.with(Cell::get) else {
        return;
    };
    let Some((armed, n)) = armed() else {
        return;
    };
    if armed != writer {
        return;
    }
    if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        eprintln!(
            "{VARIABLE}={writer}:{n}: ending the process after {what} {}",
            path.display()
        );
        std::process::exit(EXIT_STATUS);
    }
}
