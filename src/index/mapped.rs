//! Index format 3: flat little-endian arrays, memory-mapped and used in place, so that opening an
//! index of millions of blocks reads no block and copies nothing.
//!
//! | file | contents |
//! |---|---|
//! | `embeddings.f16` | `[n, d]` f16 rows (the CPU search reads the mapping itself) |
//! | `tokens.u16` or `tokens.u32` | every block's body wordpieces, block after block (u16 when the vocabulary fits) |
//! | `token_offsets.u64` | `n + 1` offsets into the tokens: block i is `off[i]..off[i+1]` |
//! | `sentence_ends.u16` | each sentence's end, relative to its block's first token |
//! | `sentence_offsets.u64` | `n + 1` offsets into the sentence ends |
//! | `block_docs.u32` | each block's document (consecutive blocks of a document share one) |
//! | `doc_strings.utf8` | each document's id then title |
//! | `doc_offsets.u64` | `2 · docs + 1` offsets into the strings: id j is `off[2j]..off[2j+1]`, title j `off[2j+1]..off[2j+2]` |
//! | `manifest.json` | [`Manifest`], the [`Layout`] (counts from which every file's size follows, the largest wordpiece id and squared row norm) and each file's size and CRC-32 |
//!
//! [`BlockIndex::open`] checks the manifest and every file's size (a truncated or extended file is
//! an error naming it) and maps the files; a block's offsets and strings are checked when the
//! block is read ([`BlockIndex::block`]), and [`BlockIndex::verify`] reads everything: the
//! checksums, every block, the finiteness and norms of the rows. The largest row norm and
//! wordpiece id come from the manifest, so the search and the vocabulary check need no pass over
//! the data. A mapped file must not be changed while it is open (the index writers never do:
//! they write a new folder and swap it in).

use super::manifest::{check_digest, read_stored_manifest, FileDigest, Manifest};
use crate::data::Block;
use crate::error::{Error, Result};
use crate::ops::mips::{max_row_norm_sq_of, HostRows, MipsIndex};
use candle_core::Tensor;
use half::f16;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The manifest's `format_version` of this layout.
pub const FORMAT_MAPPED: u32 = 3;

/// The files of the layout, in the order the writers produce them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `embeddings.f16`: the `[n, d]` rows.
    Embeddings,
    /// `tokens.u16` or `tokens.u32`: every block's body wordpieces, concatenated.
    Tokens,
    /// `token_offsets.u64`: `n + 1` offsets of the blocks' tokens.
    TokenOffsets,
    /// `sentence_ends.u16`: sentence ends, relative to their block.
    SentenceEnds,
    /// `sentence_offsets.u64`: `n + 1` offsets of the blocks' sentence ends.
    SentenceOffsets,
    /// `block_docs.u32`: each block's entry in the document strings.
    BlockDocs,
    /// `doc_strings.utf8`: documents' ids and titles, concatenated.
    DocStrings,
    /// `doc_offsets.u64`: `2 · docs + 1` offsets of the ids and titles.
    DocOffsets,
}

impl Part {
    /// Every part, in file order.
    pub const ALL: [Part; 8] = [
        Part::Embeddings,
        Part::Tokens,
        Part::TokenOffsets,
        Part::SentenceEnds,
        Part::SentenceOffsets,
        Part::BlockDocs,
        Part::DocStrings,
        Part::DocOffsets,
    ];

    /// The file name; the tokens' depends on their width.
    pub fn file_name(self, token_bytes: usize) -> &'static str {
        match self {
            Part::Embeddings => "embeddings.f16",
            Part::Tokens if token_bytes == 2 => "tokens.u16",
            Part::Tokens => "tokens.u32",
            Part::TokenOffsets => "token_offsets.u64",
            Part::SentenceEnds => "sentence_ends.u16",
            Part::SentenceOffsets => "sentence_offsets.u64",
            Part::BlockDocs => "block_docs.u32",
            Part::DocStrings => "doc_strings.utf8",
            Part::DocOffsets => "doc_offsets.u64",
        }
    }

    /// Position in [`Part::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the files hold: every file's size follows from these counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Document entries (consecutive blocks of one document share one).
    pub num_docs: u64,
    /// Body wordpieces over all blocks.
    pub num_tokens: u64,
    /// Sentence ends over all blocks.
    pub num_sentences: u64,
    /// Bytes of `doc_strings.utf8`.
    pub doc_string_bytes: u64,
    /// 2 (u16) or 4 (u32).
    pub token_bytes: usize,
    /// The largest wordpiece id (0 for no tokens): checked against a model's vocabulary.
    pub max_token_id: u32,
    /// The largest squared row norm (f64 sum in order): the search's error bound.
    pub max_row_norm_sq: f64,
}

impl Layout {
    /// The size in bytes of `part` for `n` blocks of dimension `d`.
    pub fn bytes(&self, part: Part, n: u64, d: u64) -> u64 {
        match part {
            Part::Embeddings => n * d * 2,
            Part::Tokens => self.num_tokens * self.token_bytes as u64,
            Part::TokenOffsets | Part::SentenceOffsets => (n + 1) * 8,
            Part::SentenceEnds => self.num_sentences * 2,
            Part::BlockDocs => n * 4,
            Part::DocStrings => self.doc_string_bytes,
            Part::DocOffsets => (2 * self.num_docs + 1) * 8,
        }
    }
}

/// How `realm index` made an index's blocks: a resumed build must have been started with the
/// same, and the shards of a merge must agree on all but the shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The corpus file as given, and its size.
    pub corpus: String,
    /// Size of the corpus file, in bytes.
    pub corpus_bytes: u64,
    /// Body wordpieces per block (REALM: 288).
    pub block_tokens: usize,
    /// Whether malformed corpus lines were skipped.
    pub skip_bad_lines: bool,
    /// Documents per chunk: the unit of embedding batches, checkpoints and shards.
    pub docs_per_chunk: usize,
    /// Blocks per forward pass of the document tower.
    pub batch: usize,
    /// Longest document-tower input, in wordpieces.
    pub max_len: usize,
    /// `(i, n)`: this index holds the chunks `c` with `c % n == i`.
    pub shard: Option<(usize, usize)>,
}

/// `manifest.json` of format 3.
#[derive(Serialize, Deserialize)]
pub(super) struct MappedManifest {
    #[serde(flatten)]
    pub manifest: Manifest,
    pub layout: Layout,
    #[serde(default)]
    pub build: Option<BuildInfo>,
    pub files: BTreeMap<String, FileDigest>,
}

/// A file's bytes: mapped, or (for an index converted in memory) owned, 8-byte aligned.
#[derive(Debug)]
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u64>, usize),
}

impl Bytes {
    fn owned(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Bytes::Owned(words, bytes.len())
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(w, len) => &bytemuck::cast_slice(w)[..*len],
        }
    }

    /// The bytes as `T`s: the size was checked to be a multiple, and both kinds of storage are
    /// aligned (pages, u64 words) for every `T` used here.
    fn values<T: bytemuck::Pod>(&self) -> &[T] {
        bytemuck::cast_slice(self.bytes())
    }
}

impl HostRows for Bytes {
    fn rows(&self) -> &[f16] {
        self.values()
    }
}

/// An index of format 3, opened in place (or converted in memory from an older format).
#[derive(Debug)]
pub struct BlockIndex {
    /// Model fingerprint and path, step, block count and dimension.
    pub manifest: Manifest,
    /// The counts that size every file, the token width, largest id and row norm.
    pub layout: Layout,
    /// How `realm index` built it (none for an index upgraded or converted).
    pub build: Option<BuildInfo>,
    /// The folder, for error messages (empty for an index converted in memory).
    dir: PathBuf,
    files: BTreeMap<String, FileDigest>,
    embeddings: Arc<Bytes>,
    parts: Vec<Bytes>,
}

impl BlockIndex {
    /// Opens a folder of format 3 (after repairing a swap that a kill interrupted): the manifest,
    /// every file's presence and size, then the mappings. No block is read.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        crate::io::recover_dir(dir, "manifest.json")?;
        let MappedManifest {
            manifest,
            layout,
            build,
            files,
        } = read_mapped_manifest(dir)?;
        let (n, d) = (manifest.num_blocks as u64, manifest.dim as u64);
        let mut maps = Vec::with_capacity(Part::ALL.len());
        for part in Part::ALL {
            let name = part.file_name(layout.token_bytes);
            let path = dir.join(name);
            let want = layout.bytes(part, n, d);
            let file = std::fs::File::open(&path).map_err(|e| {
                Error::file(
                    &path,
                    format!("missing or unreadable: {e} (rebuild the index)"),
                )
            })?;
            let got = file.metadata().map_err(|e| Error::file(&path, e))?.len();
            if got != want {
                return Err(Error::file(
                    &path,
                    format!(
                        "{got} bytes, but the manifest's counts make it {want}: the file is \
                         truncated, extended or from another index (rebuild it with `realm index`)"
                    ),
                ));
            }
            maps.push(if got == 0 {
                Bytes::Owned(Vec::new(), 0)
            } else {
                // SAFETY: the index's files are never written in place (writers build a new
                // folder and swap it in), so the mapping does not change under us.
                Bytes::Mapped(
                    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(&path, e))?,
                )
            });
        }
        let mut index = Self::assemble(manifest, layout, files, dir.to_path_buf(), maps)?;
        index.build = build;
        Ok(index)
    }

    /// An in-memory index (its manifest, blocks and `[n, d]` f16 embeddings) converted to this
    /// layout (in memory).
    pub fn from_blocks(manifest: &Manifest, blocks: &[Block], embeddings: &Tensor) -> Result<Self> {
        let rows = embeddings
            .flatten_all()?
            .to_vec1::<f16>()
            .map_err(Error::from)?;
        let token_bytes = token_bytes_for(
            blocks
                .iter()
                .flat_map(|b| b.tokens.iter())
                .max()
                .map_or(0, |&m| m as usize + 1),
        );
        let mut sink = MemorySink::default();
        let mut enc = Encoder::new(manifest.dim, token_bytes, &mut sink)?;
        for (b, row) in blocks.iter().zip(rows.chunks(manifest.dim)) {
            enc.push(&mut sink, b, row)?;
        }
        // The source's format stays in the manifest: it says what was checked at load.
        let manifest = manifest.clone();
        let layout = enc.layout();
        let maps = sink.parts.iter().map(|p| Bytes::owned(p)).collect();
        Self::assemble(manifest, layout, BTreeMap::new(), PathBuf::new(), maps)
    }

    fn assemble(
        manifest: Manifest,
        layout: Layout,
        files: BTreeMap<String, FileDigest>,
        dir: PathBuf,
        mut maps: Vec<Bytes>,
    ) -> Result<Self> {
        let embeddings = Arc::new(maps.remove(Part::Embeddings.index()));
        let index = BlockIndex {
            manifest,
            layout,
            build: None,
            dir,
            files,
            embeddings,
            parts: maps,
        };
        // The offsets' first and last values bound every block's reads; checked once.
        let n = index.manifest.num_blocks;
        for (part, total) in [
            (Part::TokenOffsets, index.layout.num_tokens),
            (Part::SentenceOffsets, index.layout.num_sentences),
            (Part::DocOffsets, index.layout.doc_string_bytes),
        ] {
            let off = index.part(part).values::<u64>();
            let last = if part == Part::DocOffsets {
                2 * index.layout.num_docs as usize
            } else {
                n
            };
            if off[0] != 0 || off[last] != total {
                return Err(index.corrupt(
                    part,
                    format!(
                        "offsets run from {} to {}, not from 0 to {total}",
                        off[0], off[last]
                    ),
                ));
            }
        }
        Ok(index)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.manifest.num_blocks
    }

    /// Always false: an index has at least one block.
    pub fn is_empty(&self) -> bool {
        self.manifest.num_blocks == 0
    }

    /// The folder it was opened from (empty when converted in memory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn part(&self, part: Part) -> &Bytes {
        match part {
            Part::Embeddings => &self.embeddings,
            other => &self.parts[other.index() - 1],
        }
    }

    fn corrupt(&self, part: Part, msg: String) -> Error {
        Error::file(
            self.dir.join(part.file_name(self.layout.token_bytes)),
            format!("{msg}: the index is damaged (`realm index verify` checks it all; rebuild it)"),
        )
    }

    /// The search over the mapped rows, in place.
    pub fn mips(&self) -> Result<MipsIndex> {
        MipsIndex::from_host_rows(
            self.embeddings.clone(),
            self.len(),
            self.manifest.dim,
            self.layout.max_row_norm_sq,
        )
    }

    /// The `[n, d]` f16 rows.
    pub fn embeddings(&self) -> &[f16] {
        self.embeddings.values()
    }

    /// `range` of the `u64` offsets of `part` at `i`, checked against `total`.
    fn range(&self, part: Part, i: usize, total: u64) -> Result<std::ops::Range<usize>> {
        let off = self.part(part).values::<u64>();
        let (a, b) = (off[i], off[i + 1]);
        if a > b || b > total {
            return Err(self.corrupt(
                part,
                format!("entry {i}: range {a}..{b} is not inside 0..{total}"),
            ));
        }
        Ok(a as usize..b as usize)
    }

    /// Block `i`'s document id and title.
    pub fn doc(&self, i: usize) -> Result<(&str, &str)> {
        let doc = self.part(Part::BlockDocs).values::<u32>()[i] as usize;
        if doc as u64 >= self.layout.num_docs {
            return Err(self.corrupt(
                Part::BlockDocs,
                format!("block {i} names document {doc} of {}", self.layout.num_docs),
            ));
        }
        let strings = self.part(Part::DocStrings).bytes();
        let text = |j: usize| -> Result<&str> {
            let r = self.range(Part::DocOffsets, j, self.layout.doc_string_bytes)?;
            std::str::from_utf8(&strings[r])
                .map_err(|e| self.corrupt(Part::DocStrings, format!("string {j}: {e}")))
        };
        Ok((text(2 * doc)?, text(2 * doc + 1)?))
    }

    /// Block `i` (`i < len()`), its offsets and sentences checked.
    pub fn block(&self, i: usize) -> Result<Block> {
        if i >= self.len() {
            return Err(Error::bad_input(
                "BlockIndex::block",
                "i",
                format!("block {i} of an index of {}", self.len()),
            ));
        }
        let tr = self.range(Part::TokenOffsets, i, self.layout.num_tokens)?;
        let tokens: Vec<u32> = match self.layout.token_bytes {
            2 => self.part(Part::Tokens).values::<u16>()[tr.clone()]
                .iter()
                .map(|&t| u32::from(t))
                .collect(),
            _ => self.part(Part::Tokens).values::<u32>()[tr.clone()].to_vec(),
        };
        let sr = self.range(Part::SentenceOffsets, i, self.layout.num_sentences)?;
        let ends = &self.part(Part::SentenceEnds).values::<u16>()[sr];
        let mut sentences = Vec::with_capacity(ends.len());
        let mut start = 0usize;
        for &end in ends {
            let end = end as usize;
            if end <= start || end > tokens.len() {
                return Err(self.corrupt(
                    Part::SentenceEnds,
                    format!(
                        "block {i}: sentence {start}..{end} is empty or beyond its {} tokens",
                        tokens.len()
                    ),
                ));
            }
            sentences.push(start..end);
            start = end;
        }
        if start != tokens.len() || tokens.is_empty() {
            return Err(self.corrupt(
                Part::SentenceEnds,
                format!(
                    "block {i}: the sentences cover {start} of its {} tokens",
                    tokens.len()
                ),
            ));
        }
        let (doc_id, title) = self.doc(i)?;
        Ok(Block {
            doc_id: doc_id.to_string(),
            title: title.to_string(),
            tokens,
            sentences,
        })
    }

    /// An error when a wordpiece id is outside a vocabulary of `vocab_size` (from the manifest's
    /// largest id: no pass over the tokens).
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        if self.layout.max_token_id as usize >= vocab_size {
            return Err(Error::file(
                self.dir
                    .join(Part::Tokens.file_name(self.layout.token_bytes)),
                format!(
                    "wordpiece id {} is outside the model's vocabulary of {vocab_size}",
                    self.layout.max_token_id
                ),
            ));
        }
        Ok(())
    }

    /// Reads everything: each file's checksum, then every block, the rows' finiteness and
    /// largest norm and the largest wordpiece id against the manifest.
    pub fn verify(&self) -> Result<()> {
        for part in Part::ALL {
            let name = part.file_name(self.layout.token_bytes);
            if let Some(want) = self.files.get(name) {
                check_digest(&self.dir.join(name), want, self.part(part).bytes())?;
            }
        }
        let max_norm = max_row_norm_sq_of(self.embeddings(), self.manifest.dim)
            .map_err(|row| self.corrupt(Part::Embeddings, format!("row {row} is not finite")))?;
        if max_norm != self.layout.max_row_norm_sq {
            return Err(self.corrupt(
                Part::Embeddings,
                format!(
                    "the largest squared row norm is {max_norm}, the manifest says {}",
                    self.layout.max_row_norm_sq
                ),
            ));
        }
        let mut max_token = 0u32;
        for i in 0..self.len() {
            let b = self.block(i)?;
            max_token = max_token.max(b.tokens.iter().copied().max().unwrap_or(0));
        }
        if max_token != self.layout.max_token_id {
            return Err(self.corrupt(
                Part::Tokens,
                format!(
                    "the largest wordpiece id is {max_token}, the manifest says {}",
                    self.layout.max_token_id
                ),
            ));
        }
        Ok(())
    }
}

/// The manifest's format version, without reading the rest.
pub fn format_version(dir: &Path) -> Result<u32> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::file(
            &path,
            format!("not an index folder (no readable manifest): {e}"),
        )
    })?;
    let v: Version = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
    Ok(v.format_version)
}

fn read_mapped_manifest(dir: &Path) -> Result<MappedManifest> {
    let path = dir.join("manifest.json");
    let stored: MappedManifest = read_stored_manifest(&path)?;
    let (m, l) = (&stored.manifest, &stored.layout);
    let bad = |msg: String| Err(Error::file(&path, msg));
    if m.format_version != FORMAT_MAPPED {
        return bad(format!(
            "format version {}, not {FORMAT_MAPPED}",
            m.format_version
        ));
    }
    if m.num_blocks == 0 || m.dim == 0 || l.num_docs == 0 {
        return bad(format!(
            "an index of {} blocks of dimension {} from {} documents: nothing to search",
            m.num_blocks, m.dim, l.num_docs
        ));
    }
    if m.num_blocks >= u32::MAX as usize || l.num_docs > m.num_blocks as u64 {
        return bad(format!(
            "{} blocks from {} documents: not an index this build can read",
            m.num_blocks, l.num_docs
        ));
    }
    if l.token_bytes != 2 && l.token_bytes != 4 {
        return bad(format!("tokens of {} bytes (2 or 4)", l.token_bytes));
    }
    if !l.max_row_norm_sq.is_finite() || l.max_row_norm_sq < 0.0 {
        return bad(format!(
            "max_row_norm_sq {} is not a squared norm",
            l.max_row_norm_sq
        ));
    }
    let names: Vec<&str> = Part::ALL
        .iter()
        .map(|p| p.file_name(l.token_bytes))
        .collect();
    if let Some(odd) = stored.files.keys().find(|f| !names.contains(&f.as_str())) {
        return bad(format!("lists a file {odd:?} that an index does not have"));
    }
    if let Some(missing) = names.iter().find(|f| !stored.files.contains_key(**f)) {
        return bad(format!("has no checksum of {missing}; rebuild the index"));
    }
    for part in Part::ALL {
        let name = part.file_name(l.token_bytes);
        let want = l.bytes(part, m.num_blocks as u64, m.dim as u64);
        if stored.files[name].bytes != want {
            return bad(format!(
                "{name}: {} bytes listed, but the counts make it {want}",
                stored.files[name].bytes
            ));
        }
    }
    Ok(stored)
}

/// 2 when every id below `vocab_size` fits a u16, else 4.
pub fn token_bytes_for(vocab_size: usize) -> usize {
    if vocab_size <= 1 << 16 {
        2
    } else {
        4
    }
}

/// Where an [`Encoder`] puts the bytes of each part.
pub trait Sink {
    /// Appends `bytes` to `part`.
    fn put(&mut self, part: Part, bytes: &[u8]) -> Result<()>;
}

/// Parts in memory.
#[derive(Default)]
struct MemorySink {
    parts: [Vec<u8>; 8],
}

impl Sink for MemorySink {
    fn put(&mut self, part: Part, bytes: &[u8]) -> Result<()> {
        self.parts[part.index()].extend_from_slice(bytes);
        Ok(())
    }
}

/// Turns blocks and their rows into the layout's bytes, one block at a time. Its state is small
/// and serialisable, so a build can stop and go on ([`super::stream`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Blocks encoded so far.
    pub num_blocks: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// The counts of what was encoded so far.
    pub layout: Layout,
    /// The last block's document id and title: a following block of the same document shares
    /// its entry.
    last_doc: Option<(String, String)>,
}

impl Encoder {
    /// A new encoder; writes the offsets' leading zeros to `sink`.
    pub fn new(dim: usize, token_bytes: usize, sink: &mut dyn Sink) -> Result<Self> {
        for part in [Part::TokenOffsets, Part::SentenceOffsets, Part::DocOffsets] {
            sink.put(part, &0u64.to_le_bytes())?;
        }
        Ok(Encoder {
            num_blocks: 0,
            dim,
            layout: Layout {
                num_docs: 0,
                num_tokens: 0,
                num_sentences: 0,
                doc_string_bytes: 0,
                token_bytes,
                max_token_id: 0,
                max_row_norm_sq: 0.0,
            },
            last_doc: None,
        })
    }

    /// The counts of what was encoded so far (a copy).
    pub fn layout(&self) -> Layout {
        self.layout.clone()
    }

    /// Appends a block and its embedding row.
    pub fn push(&mut self, sink: &mut dyn Sink, block: &Block, row: &[f16]) -> Result<()> {
        const OP: &str = "index writer";
        let i = self.num_blocks;
        if row.len() != self.dim {
            return Err(Error::bad_input(
                OP,
                "row",
                format!(
                    "block {i}: {} values, the index has {}",
                    row.len(),
                    self.dim
                ),
            ));
        }
        let norm = max_row_norm_sq_of(row, self.dim).map_err(|_| {
            Error::bad_input(OP, "row", format!("block {i}: a value is not finite"))
        })?;
        let n_tok = block.tokens.len();
        let limit = if self.layout.token_bytes == 2 {
            1 << 16
        } else {
            u32::MAX as usize
        };
        let max_id = block.tokens.iter().copied().max().unwrap_or(0);
        let covered = block.sentences.first().is_some_and(|s| s.start == 0)
            && block.sentences.last().is_some_and(|s| s.end == n_tok)
            && block.sentences.windows(2).all(|w| w[0].end == w[1].start)
            && block.sentences.iter().all(|s| s.start < s.end);
        if n_tok == 0 || n_tok > u16::MAX as usize || max_id as usize >= limit || !covered {
            return Err(Error::bad_input(
                OP,
                "block",
                format!(
                    "block {i}: {n_tok} tokens (1 to {}), ids up to {max_id} (< {limit}), \
                     sentences covering them in order: {}",
                    u16::MAX,
                    if covered { "yes" } else { "no" }
                ),
            ));
        }
        sink.put(Part::Embeddings, bytemuck::cast_slice(row))?;
        let tokens: Vec<u8> = if self.layout.token_bytes == 2 {
            block
                .tokens
                .iter()
                .flat_map(|&t| (t as u16).to_le_bytes())
                .collect()
        } else {
            block.tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
        };
        sink.put(Part::Tokens, &tokens)?;
        self.layout.num_tokens += n_tok as u64;
        sink.put(Part::TokenOffsets, &self.layout.num_tokens.to_le_bytes())?;
        let ends: Vec<u8> = block
            .sentences
            .iter()
            .flat_map(|s| (s.end as u16).to_le_bytes())
            .collect();
        sink.put(Part::SentenceEnds, &ends)?;
        self.layout.num_sentences += block.sentences.len() as u64;
        sink.put(
            Part::SentenceOffsets,
            &self.layout.num_sentences.to_le_bytes(),
        )?;
        let same_doc = self
            .last_doc
            .as_ref()
            .is_some_and(|(id, title)| *id == block.doc_id && *title == block.title);
        if !same_doc {
            for s in [&block.doc_id, &block.title] {
                sink.put(Part::DocStrings, s.as_bytes())?;
                self.layout.doc_string_bytes += s.len() as u64;
                sink.put(
                    Part::DocOffsets,
                    &self.layout.doc_string_bytes.to_le_bytes(),
                )?;
            }
            self.layout.num_docs += 1;
            self.last_doc = Some((block.doc_id.clone(), block.title.clone()));
        }
        let doc = u32::try_from(self.layout.num_docs - 1)
            .map_err(|_| Error::bad_input(OP, "block", "more than 2^32 documents"))?;
        sink.put(Part::BlockDocs, &doc.to_le_bytes())?;
        self.layout.max_token_id = self.layout.max_token_id.max(max_id);
        self.layout.max_row_norm_sq = self.layout.max_row_norm_sq.max(norm);
        self.num_blocks += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_norm_bound_survives_the_manifest_exactly() {
        // serde_json's default parser reads this one 1 ulp low (19.36695707578316): a real
        // index whose manifest then failed its exact check on load.
        let layout = Layout {
            num_docs: 1,
            num_tokens: 0,
            num_sentences: 0,
            doc_string_bytes: 0,
            token_bytes: 2,
            max_token_id: 0,
            max_row_norm_sq: 19.366957075783162,
        };
        let text = serde_json::to_string(&layout).unwrap();
        let back: Layout = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.max_row_norm_sq.to_bits(),
            layout.max_row_norm_sq.to_bits()
        );
    }
}
