//! Files that must never be seen half-written (checkpoints, indexes, manifests): written to a
//! temporary file in the same folder, flushed to disk, then renamed over the target, so a crash
//! leaves either the old file or the new one.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Writes `path` atomically with the bytes `write` produces.
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        failpoint();
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, format!("writing: {e}")));
    }
    failpoint();
    Ok(())
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)
    })
}

/// The environment variable of [`failpoint`].
pub const KILL_AT_FAILPOINT: &str = "REALM_KILL_AT_FAILPOINT";

/// A point where a kill test may end the process. With `REALM_KILL_AT_FAILPOINT=N` in the
/// environment, the process kills itself (SIGKILL: no clean-up, no destructors) at the Nth
/// failpoint it reaches; otherwise this does nothing.
pub fn failpoint() {
    static AT: OnceLock<Option<usize>> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = *AT.get_or_init(|| std::env::var(KILL_AT_FAILPOINT).ok()?.parse().ok()) else {
        return;
    };
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        kill_self();
    }
}

#[cfg(unix)]
fn kill_self() {
    // SAFETY: raising SIGKILL on this process ends it; no memory is touched.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_self() {
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("realm-io-{}", std::process::id()));
        let p = dir.join("x.json");
        write_json_atomic(&p, &vec![1, 2]).unwrap();
        write_json_atomic(&p, &vec![3]).unwrap();
        assert_eq!(
            fs::read_to_string(&p)
                .unwrap()
                .split_whitespace()
                .collect::<String>(),
            "[3]"
        );
        // A failing writer leaves the old contents and no temporary file.
        let err = write_atomic(&p, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
