//! Writing index format 3 ([`super::mapped`]) into a folder, block by block: the files are
//! appended to and digested as they grow, so memory does not depend on the index's size; a
//! writer can be flushed to a known length and reopened there after a kill
//! ([`FolderWriter::resume`]), and [`write_index`] writes a whole folder atomically.

use super::manifest::{Digesting, FileDigest, Manifest};
use super::mapped::{
    format_version, BlockIndex, BuildInfo, Encoder, Layout, MappedManifest, Part, Sink,
    FORMAT_MAPPED,
};
use super::store::StoredIndex;
use crate::data::Block;
use crate::error::{Error, Result};
use crate::io::{write_dir_atomic, write_json_atomic};
use half::f16;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The eight files of a format-3 folder being written.
pub struct FolderWriter {
    dir: PathBuf,
    token_bytes: usize,
    files: Vec<Digesting<BufWriter<File>>>,
}

impl FolderWriter {
    /// New, empty files in `dir` (which must exist).
    pub fn create(dir: &Path, token_bytes: usize) -> Result<Self> {
        let files = Part::ALL
            .iter()
            .map(|p| {
                let path = dir.join(p.file_name(token_bytes));
                let file = File::create(&path).map_err(|e| Error::file(&path, e))?;
                Ok(Digesting::new(BufWriter::new(file)))
            })
            .collect::<Result<_>>()?;
        Ok(FolderWriter {
            dir: dir.to_path_buf(),
            token_bytes,
            files,
        })
    }

    /// The files of `dir` cut back to `lengths` (what [`Self::lengths`] said at a checkpoint),
    /// their digests recomputed from what is kept, ready to append to.
    pub fn resume(dir: &Path, token_bytes: usize, lengths: &[u64]) -> Result<Self> {
        if lengths.len() != Part::ALL.len() {
            return Err(Error::file(
                dir,
                "a checkpoint without the length of every file",
            ));
        }
        let files = Part::ALL
            .iter()
            .zip(lengths)
            .map(|(p, &len)| {
                let path = dir.join(p.file_name(token_bytes));
                let err = |e: std::io::Error| Error::file(&path, format!("resuming: {e}"));
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(err)?;
                let have = file.metadata().map_err(err)?.len();
                if have < len {
                    return Err(Error::file(
                        &path,
                        format!(
                            "{have} bytes, shorter than the {len} of the checkpoint: the build \
                             folder was damaged; start the build again without --resume"
                        ),
                    ));
                }
                file.set_len(len).map_err(err)?;
                let mut digest = Digesting::new(());
                let mut buf = vec![0u8; 1 << 20];
                let mut reader = (&file).take(len);
                loop {
                    let got = reader.read(&mut buf).map_err(err)?;
                    if got == 0 {
                        break;
                    }
                    digest.eat(&buf[..got]);
                }
                file.seek(SeekFrom::End(0)).map_err(err)?;
                let mut w = Digesting::new(BufWriter::new(file));
                w.continue_from(&digest);
                Ok(w)
            })
            .collect::<Result<_>>()?;
        Ok(FolderWriter {
            dir: dir.to_path_buf(),
            token_bytes,
            files,
        })
    }

    /// Every file's length so far.
    pub fn lengths(&self) -> Vec<u64> {
        self.files.iter().map(|f| f.digest().bytes).collect()
    }

    /// Flushes every file to disk (before a checkpoint records their lengths).
    pub fn sync(&mut self) -> Result<()> {
        for (f, p) in self.files.iter_mut().zip(Part::ALL) {
            let path = self.dir.join(p.file_name(self.token_bytes));
            f.flush()
                .and_then(|()| f.get_ref().get_ref().sync_all())
                .map_err(|e| Error::file(&path, e))?;
        }
        Ok(())
    }

    /// Flushes the files and writes `manifest.json` with their sizes and checksums.
    pub fn finish(
        mut self,
        mut manifest: Manifest,
        layout: Layout,
        build: Option<BuildInfo>,
    ) -> Result<()> {
        self.sync()?;
        let files: BTreeMap<String, FileDigest> = Part::ALL
            .iter()
            .zip(&self.files)
            .map(|(p, f)| (p.file_name(self.token_bytes).to_string(), f.digest()))
            .collect();
        manifest.format_version = FORMAT_MAPPED;
        write_json_atomic(
            self.dir.join("manifest.json"),
            &MappedManifest {
                manifest,
                layout,
                build,
                files,
            },
        )
    }
}

impl Sink for FolderWriter {
    fn put(&mut self, part: Part, bytes: &[u8]) -> Result<()> {
        let f = &mut self.files[part.index()];
        f.write_all(bytes).map_err(|e| {
            Error::file(
                self.dir.join(part.file_name(self.token_bytes)),
                format!("writing: {e}"),
            )
        })
    }
}

/// Writes the folder `out` atomically as a whole, with the blocks and rows `blocks` yields (in
/// order). `manifest`'s block count is set from what was written; its model path is stored as
/// given (relative to `out`, or absolute). `build` says how the blocks were made, when known.
pub fn write_index<I>(
    out: &Path,
    mut manifest: Manifest,
    token_bytes: usize,
    build: Option<BuildInfo>,
    blocks: I,
) -> Result<()>
where
    I: IntoIterator<Item = Result<(Block, Vec<f16>)>>,
{
    write_dir_atomic(out, |tmp| {
        let mut w = FolderWriter::create(tmp, token_bytes)?;
        let mut enc = Encoder::new(manifest.dim, token_bytes, &mut w)?;
        for item in blocks {
            let (block, row) = item?;
            enc.push(&mut w, &block, &row)?;
        }
        manifest.num_blocks = enc.num_blocks;
        w.finish(manifest, enc.layout(), build)
    })
}

/// An index of any format: format 3 opened in place, formats 1 and 2 loaded (parsed, every block
/// checked) and converted in memory.
fn open_any(dir: &Path) -> Result<BlockIndex> {
    crate::io::recover_dir(dir, "manifest.json")?;
    if format_version(dir)? == FORMAT_MAPPED {
        BlockIndex::open(dir)
    } else {
        let stored = StoredIndex::load(dir, None)?;
        BlockIndex::from_blocks(&stored.manifest, &stored.blocks, &stored.embeddings)
    }
}

/// Rewrites an index of format 1 or 2 in format 3, in place (atomically); the blocks and rows
/// are the same. Returns the number of blocks, or an error if it is format 3 already.
pub fn upgrade(dir: &Path) -> Result<usize> {
    let index = open_any(dir)?;
    if index.manifest.format_version == FORMAT_MAPPED {
        return Err(Error::file(
            dir,
            format!("is format {FORMAT_MAPPED} already: nothing to upgrade"),
        ));
    }
    let (n, d) = (index.len(), index.manifest.dim);
    let rows = index.embeddings();
    write_index(
        dir,
        index.manifest.clone(),
        index.layout.token_bytes,
        None,
        (0..n).map(|i| Ok((index.block(i)?, rows[i * d..(i + 1) * d].to_vec()))),
    )?;
    Ok(n)
}
