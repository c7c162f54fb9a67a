//! What every index format shares: the [`Manifest`] (what produced the index), the size and
//! CRC-32 of each file ([`FileDigest`], counted by [`Digesting`] as bytes pass) and the checks
//! that a file is the one its manifest was written with.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// 2: the manifest binds its files (size and CRC-32) and a relative model path is relative to
/// the index folder. 1: neither.
pub(super) const FORMAT_VERSION: u32 = 2;
pub(super) const FORMAT_UNCHECKED: u32 = 1;

/// What produced an index: checked against the model that searches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// An identifier of the document tower's weights (e.g. a content hash of the checkpoint).
    pub model_fingerprint: String,
    /// The model folder that built the index: relative to the index folder (or absolute) when
    /// it was a folder at save time, else a label such as `checkpoint`.
    pub model_path: String,
    /// The training step of those weights.
    pub step: u64,
    pub num_blocks: usize,
    pub dim: usize,
}

impl Manifest {
    /// Whether the folder's files were checked against the manifest's sizes and checksums when
    /// it was loaded (format 2; format 1 predates them).
    pub fn has_checksums(&self) -> bool {
        self.format_version >= FORMAT_VERSION
    }

    /// Where [`Self::model_path`] points, seen from the index folder `index_dir`.
    pub fn model_dir(&self, index_dir: &Path) -> PathBuf {
        let path = Path::new(&self.model_path);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        let beside = index_dir.join(path);
        // Format 1 wrote the path as given on the command line, relative to where it ran.
        if self.format_version == FORMAT_UNCHECKED && !beside.join("config.json").is_file() {
            return path.to_path_buf();
        }
        beside
    }
}

/// Size and CRC-32 of one file of the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileDigest {
    pub bytes: u64,
    pub crc32: u32,
}

/// Counts and checksums the bytes that pass through it, read or written.
pub(super) struct Digesting<T> {
    inner: T,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl<T> Digesting<T> {
    pub(super) fn new(inner: T) -> Self {
        Digesting {
            inner,
            bytes: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    pub(super) fn digest(&self) -> FileDigest {
        FileDigest {
            bytes: self.bytes,
            crc32: self.crc.clone().finalize(),
        }
    }

    /// Goes on from another digest's state (a file reopened to be appended to).
    pub(super) fn continue_from<U>(&mut self, other: &Digesting<U>) {
        self.bytes = other.bytes;
        self.crc = other.crc.clone();
    }

    pub(super) fn get_ref(&self) -> &T {
        &self.inner
    }

    pub(super) fn eat(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.crc.update(bytes);
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.eat(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.eat(&buf[..n]);
        Ok(n)
    }
}

/// `manifest.json` at `path` parsed as `T`.
pub(super) fn read_stored_manifest<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::file(
            path,
            format!("not an index folder (no readable manifest): {e}"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, e))
}

/// Compares a file with the size and checksum its manifest recorded.
pub(super) fn check_file_digest(path: &Path, want: &FileDigest) -> Result<()> {
    let got = std::fs::File::open(path)
        .and_then(|file| {
            let mut reader = Digesting::new(file);
            std::io::copy(&mut reader, &mut std::io::sink())?;
            Ok(reader.digest())
        })
        .map_err(|e| Error::file(path, e))?;
    compare_digest(path, &got, want)
}

/// Compares the bytes of the file at `path` (in memory, or mapped) with the size and checksum
/// its manifest recorded.
pub(super) fn check_digest(path: &Path, want: &FileDigest, bytes: &[u8]) -> Result<()> {
    let mut d = Digesting::new(());
    d.eat(bytes);
    compare_digest(path, &d.digest(), want)
}

fn compare_digest(path: &Path, got: &FileDigest, want: &FileDigest) -> Result<()> {
    if got.bytes != want.bytes {
        return Err(Error::file(
            path,
            format!(
                "{} bytes, but the manifest was written for {} bytes: this file does not belong \
                 to this index (rebuild it with `realm index`)",
                got.bytes, want.bytes
            ),
        ));
    }
    if got.crc32 != want.crc32 {
        return Err(Error::file(
            path,
            format!(
                "checksum {:08x}, but the manifest was written for {:08x}: this file was altered \
                 or belongs to another index (rebuild it with `realm index`)",
                got.crc32, want.crc32
            ),
        ));
    }
    Ok(())
}
