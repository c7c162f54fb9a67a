//! The run folder of `realm demo`, and what of it the demo owns.
//!
//! Before it writes anything, the demo records in `.realm-demo.json` (the marker) which of its
//! top-level entries (`data/`, `ict/`, ..., `summary.json`) it is about to create; when it
//! finishes, it adds every file it wrote under them. A folder is a demo folder only if it holds
//! that marker. Running the demo again in it removes exactly the entries the marker lists, after
//! checking that they hold no file but the ones the finished run recorded (a file of the user's
//! inside `report/` is an error naming it, and nothing is removed). An entry of the demo's name
//! that the demo did not create is never touched: the run stops before it starts. A run killed
//! before it finished recorded no files: its entries are its own whole and are removed whole.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The marker file's name.
pub const MARKER: &str = ".realm-demo.json";
const FORMAT_VERSION: u32 = 1;

/// Everything the demo writes at the top of its folder, and what earlier versions did (`cloze`,
/// a stage before 2026-12-07), so that their folders are still recognised and cleared.
pub const ENTRIES: [&str; 9] = [
    "data",
    "ict",
    "pretrain",
    "finetune",
    "cloze",
    "eval",
    "update",
    "report",
    "summary.json",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    /// Top-level entries the demo created (none of them existed before).
    created: Vec<String>,
    /// Every file under them, relative to the folder, once the run finished.
    files: Option<Vec<String>>,
}

/// A demo folder prepared for a run: the previous run's entries removed, the marker written.
#[derive(Debug)]
pub struct DemoDir {
    root: PathBuf,
    marker: Marker,
}

/// What [`inspect`] found.
enum Found {
    /// No folder, or an empty one.
    Fresh,
    /// A demo folder: its marker.
    Demo(Marker),
}

/// Reads `dir` without changing anything: an error, naming what is the user's, unless it is
/// absent, empty or a demo folder whose listed entries hold only what the demo wrote.
pub fn check(dir: &Path) -> Result<()> {
    inspect(dir).map(|_| ())
}

fn inspect(dir: &Path) -> Result<Found> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Fresh),
        Err(e) => return Err(Error::file(dir, format!("--out: {e}"))),
    };
    if entries.next().is_none() {
        return Ok(Found::Fresh);
    }
    let path = dir.join(MARKER);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::file(
                dir,
                format!(
                    "--out: exists, is not empty and was not made by `realm demo` (it has no \
                     {MARKER}); nothing in it is touched: choose another --out"
                ),
            ))
        }
        Err(e) => return Err(Error::file(&path, e)),
    };
    let marker: Marker = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
    if marker.format_version != FORMAT_VERSION {
        return Err(Error::file(
            &path,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                marker.format_version
            ),
        ));
    }
    if let Some(odd) = marker
        .created
        .iter()
        .find(|c| !ENTRIES.contains(&c.as_str()))
    {
        return Err(Error::file(
            &path,
            format!("lists {odd:?}, which the demo never writes: not a demo's marker"),
        ));
    }
    if let Some(recorded) = &marker.files {
        for entry in &marker.created {
            for file in files_under(dir, Path::new(entry))? {
                if !recorded.contains(&file) {
                    return Err(Error::file(
                        dir.join(&file),
                        "--out: was not written by `realm demo`, but is inside a folder the demo \
                         would replace; move it out first (nothing was removed)",
                    ));
                }
            }
        }
    }
    for entry in ENTRIES {
        if !marker.created.iter().any(|c| c == entry)
            && fs::symlink_metadata(dir.join(entry)).is_ok()
        {
            return Err(Error::file(
                dir.join(entry),
                "--out: the demo writes here, but this was not made by `realm demo`; move it or \
                 choose another --out (nothing was removed)",
            ));
        }
    }
    Ok(Found::Demo(marker))
}

impl DemoDir {
    /// Makes `dir` ready for a run: checks it ([`check`]), removes the entries a previous demo
    /// run created, and records that this run creates all of [`ENTRIES`] before it writes any.
    pub fn prepare(dir: &Path) -> Result<DemoDir> {
        if let Found::Demo(previous) = inspect(dir)? {
            for entry in &previous.created {
                remove_entry(&dir.join(entry))?;
            }
        }
        fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        let run = DemoDir {
            root: dir.to_path_buf(),
            marker: Marker {
                format_version: FORMAT_VERSION,
                created: ENTRIES.iter().map(|e| e.to_string()).collect(),
                files: None,
            },
        };
        run.write_marker()?;
        Ok(run)
    }

    /// Records every file under the entries this run created, for the next run's check.
    pub fn finish(&mut self) -> Result<()> {
        let mut files = Vec::new();
        for entry in &self.marker.created {
            files.extend(files_under(&self.root, Path::new(entry))?);
        }
        files.sort();
        self.marker.files = Some(files);
        self.write_marker()
    }

    fn write_marker(&self) -> Result<()> {
        crate::io::write_json_atomic(self.root.join(MARKER), &self.marker)
    }
}

/// Removes a file, link or folder; absent is fine.
fn remove_entry(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    removed.map_err(|e| Error::file(path, format!("removing the previous demo's output: {e}")))
}

/// The files (and links) at or under `rel` in `root`, as paths relative to `root`.
fn files_under(root: &Path, rel: &Path) -> Result<Vec<String>> {
    let path = root.join(rel);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(&path, e)),
    };
    if !meta.is_dir() {
        return Ok(vec![rel.to_string_lossy().into_owned()]);
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| Error::file(&path, e))? {
        let entry = entry.map_err(|e| Error::file(&path, e))?;
        out.extend(files_under(root, &rel.join(entry.file_name()))?);
    }
    Ok(out)
}
