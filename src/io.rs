//! Files and folders that must never be seen half-written (checkpoints, indexes, manifests).
//!
//! A file is written to a temporary file in the same folder, flushed to disk, then renamed over
//! the target ([`write_atomic`]). A folder is filled in a temporary sibling, flushed, and swapped
//! in with two renames: the old folder is moved aside, the new one renamed into place, the old
//! one removed ([`write_dir_atomic`]); [`recover_dir`] puts the old folder back when a kill fell
//! between the two renames. Either way a crash leaves the old version or the new one.
//!
//! [`failpoint`] marks the steps of these writes so that tests can kill the process at each one.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
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

/// Checks, before any long work, that an output can be written at `path`: it is not a folder
/// (a file output) and its folder exists, or can be created, and takes new files (probed with an
/// empty file that is removed at once). `flag` is the command-line argument that named it.
pub fn check_new_output(path: &Path, flag: &str) -> Result<()> {
    let named = |msg: String| Error::file(path, format!("{flag}: {msg}"));
    if path.is_dir() {
        return Err(named("is a folder; give a file name".into()));
    }
    check_writable_parent(path, flag)
}

/// [`check_new_output`] for an output that is a folder: `path` must not be a file.
pub fn check_new_output_dir(path: &Path, flag: &str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::file(
            path,
            format!("{flag}: is a file; give a folder name"),
        ));
    }
    check_writable_parent(path, flag)
}

fn check_writable_parent(path: &Path, flag: &str) -> Result<()> {
    let parent = parent_of(path);
    let named = |msg: String| Error::file(parent, format!("{flag}: {msg}"));
    fs::create_dir_all(parent).map_err(|e| named(format!("cannot create this folder: {e}")))?;
    let probe = parent.join(format!(".realm-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| named(format!("cannot write in this folder: {e}")))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Replaces the folder `dir` with one that `fill` writes (into a fresh temporary sibling, which is
/// removed if `fill` fails). The files `fill` writes need not be atomic themselves: the folder is
/// flushed to disk before it is swapped in.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, &format!("tmp-{}", std::process::id()))?;
    remove_stale_temporaries(dir)?;
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))?;
    failpoint();
    let filled = fill(&tmp).and_then(|()| {
        failpoint();
        sync_tree(&tmp)
    });
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    failpoint();
    swap_in(&tmp, dir)
}

/// Puts a folder that was filled elsewhere (a resumable build's work folder, beside `dir`) in
/// place of `dir` as [`write_dir_atomic`] does: flushed to disk, then swapped in.
pub fn install_dir(filled: &Path, dir: &Path) -> Result<()> {
    sync_tree(filled)?;
    failpoint();
    swap_in(filled, dir)
}

/// Replaces `dir` by `tmp`: the old folder is moved aside first and removed last.
fn swap_in(tmp: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, "old")?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::file(&old, e))?;
    }
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| Error::file(dir, format!("moving aside: {e}")))?;
        failpoint();
    }
    fs::rename(tmp, dir).map_err(|e| Error::file(dir, format!("renaming into place: {e}")))?;
    failpoint();
    sync_dir(parent_of(dir))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::file(&old, e))?;
        failpoint();
    }
    Ok(())
}

/// After a kill during [`write_dir_atomic`]: puts the previous folder back if the kill fell
/// between moving it aside and renaming the new one in, removes the previous folder if the kill
/// fell after the new one was in place (a folder counts as complete when it holds the file
/// `complete`), and removes the temporary folders of processes that no longer run. Returns
/// whether `dir` is complete.
pub fn recover_dir(dir: &Path, complete: &str) -> Result<bool> {
    let old = sibling(dir, "old")?;
    if !dir.exists() && old.join(complete).exists() {
        fs::rename(&old, dir).map_err(|e| Error::file(&old, format!("restoring: {e}")))?;
    } else if dir.join(complete).exists() && old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::file(&old, e))?;
    }
    remove_stale_temporaries(dir)?;
    Ok(dir.join(complete).exists())
}

/// Removes `.NAME.tmp-PID` beside `dir` for every PID that is no longer a running process.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let Some(name) = dir.file_name() else {
        return Ok(());
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent_of(dir)) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_runs(pid) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| Error::file(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_runs(_pid: u32) -> bool {
    // Without a way to ask, a temporary folder is assumed to be in use.
    true
}

/// `.NAME.suffix` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::file(dir, "must name a folder"))?;
    Ok(dir.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a folder's entries (names, not contents) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::file(dir, format!("syncing: {e}")))
}

/// Flushes every file and folder under `dir` to disk.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::file(dir, e))? {
        let path = entry.map_err(|e| Error::file(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::file(&path, format!("syncing: {e}")))?;
        }
    }
    sync_dir(dir)
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

    #[test]
    fn a_folder_is_swapped_whole_and_restored_after_a_kill_between_the_renames() {
        let root = std::env::temp_dir().join(format!("realm-io-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join("out");
        let fill = |text: &'static str| {
            move |d: &Path| {
                fs::write(d.join("a"), text).map_err(|e| Error::file(d, e))?;
                fs::write(d.join("done"), "").map_err(|e| Error::file(d, e))
            }
        };
        write_dir_atomic(&dir, fill("one")).unwrap();
        write_dir_atomic(&dir, fill("two")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "two");
        let names = |d: &Path| {
            let mut n: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&root), ["out"]);
        // A failing writer leaves the previous folder and no temporary one.
        let err = write_dir_atomic(&dir, |_| Err(Error::Device("disk full".into()))).unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(names(&root), ["out"]);
        // Killed after the old folder moved aside, and a dead process's temporary folder.
        fs::rename(&dir, root.join(".out.old")).unwrap();
        fs::create_dir_all(root.join(format!(".out.tmp-{}", u32::MAX))).unwrap();
        assert!(recover_dir(&dir, "done").unwrap());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "two");
        assert_eq!(names(&root), ["out"]);
        // Killed after the new folder is in place, before the old one is removed.
        fs::create_dir_all(root.join(".out.old")).unwrap();
        assert!(recover_dir(&dir, "done").unwrap());
        assert_eq!(names(&root), ["out"]);
        assert!(!recover_dir(&root.join("absent"), "done").unwrap());
        fs::remove_dir_all(root).unwrap();
    }
}
