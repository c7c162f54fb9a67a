//! What several integration tests share: finding optional data, or saying why a test skips, and
//! training outcomes over seeds ([`outcome`]). Each test binary uses a part of it.
#![allow(dead_code)]

pub mod outcome;

use std::path::{Path, PathBuf};

/// `dir` when it holds every one of `needed` (relative paths); else None after printing which is
/// missing, so the test is skipped with a reason rather than passing silently. `hint` says how
/// to get it.
pub fn folder_with(dir: PathBuf, needed: &[&str], hint: &str) -> Option<PathBuf> {
    if let Some(missing) = needed.iter().find(|p| !dir.join(p).exists()) {
        eprintln!("skipping: {} not found{hint}", dir.join(missing).display());
        return None;
    }
    Some(dir)
}

/// `../shared` next to the crate when it holds every one of `needed`.
pub fn shared_with(needed: &[&str]) -> Option<PathBuf> {
    folder_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        needed,
        " (the shared data set is not next to this clone)",
    )
}
