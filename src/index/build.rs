//! Building an index: a corpus cut into retrieval blocks ([`corpus_blocks`]), every block embedded
//! by a document tower ([`embed_blocks`]), recorded with the fingerprint of the weights that did
//! it ([`super::model::weights_fingerprint`]).

use crate::data::{pack_blocks, sentences, Block, CorpusReader, Document};
use crate::error::{Error, Result};
use crate::model::realm_inputs::doc_inputs;
use crate::model::retriever::Tower;
use crate::model::{BertTokenizer, Mode};
use crate::progress::{Progress, Unit};
use candle_core::{DType, Device, Tensor};
use half::f16;
use std::path::Path;

const OP: &str = "index build";

/// Documents read and blocks cut from a corpus file.
pub struct CorpusBlocks {
    pub blocks: Vec<Block>,
    pub documents: usize,
    /// Malformed lines skipped (only with `skip_bad_lines`).
    pub skipped: usize,
}

/// Documents tokenised per call: big enough for the tokenizer's own parallelism, small enough
/// that a 21M-passage corpus streams through without holding its text.
const DOCS_PER_CHUNK: usize = 512;
/// Text tokenised per call, at most (one sentence longer than this is tokenised in parts): the
/// tokenizer keeps offsets and alignments of about 100 bytes per byte of text it is given, so
/// what it is given must be bounded, whatever the length of a line of the corpus.
pub(super) const TEXT_PER_CHUNK: usize = 1 << 20;

/// Reads a corpus (JSONL or DPR TSV, streaming) and cuts each document into blocks of at most
/// `max_tokens` body wordpieces, whole sentences at a time. Documents with no text give none.
pub fn corpus_blocks(
    path: &Path,
    tokenizer: &BertTokenizer,
    max_tokens: usize,
    skip_bad_lines: bool,
) -> Result<CorpusBlocks> {
    cut_corpus(
        path,
        tokenizer,
        max_tokens,
        skip_bad_lines,
        &Progress::hidden(),
    )
}

/// [`corpus_blocks`], reporting to `progress` the bytes of the corpus done: read, less the text
/// read but not yet tokenised (so that a document of megabytes on one line shows progress as its
/// sentences are tokenised).
fn cut_corpus(
    path: &Path,
    tokenizer: &BertTokenizer,
    max_tokens: usize,
    skip_bad_lines: bool,
    progress: &Progress,
) -> Result<CorpusBlocks> {
    if max_tokens == 0 {
        return Err(Error::bad_input(OP, "max_tokens", "must be at least 1"));
    }
    let mut reader = CorpusReader::open(path, skip_bad_lines)?;
    let mut out = CorpusBlocks {
        blocks: Vec::new(),
        documents: 0,
        skipped: 0,
    };
    let mut pending = PendingDocs::default();
    while let Some(doc) = reader.next() {
        pending.push(doc?);
        out.documents += 1;
        let read = reader.bytes_read();
        if pending.docs.len() >= DOCS_PER_CHUNK || pending.bytes >= TEXT_PER_CHUNK {
            pending.tokenize(tokenizer, &mut out.blocks, max_tokens, |left| {
                progress.set(read.saturating_sub(left as u64))
            })?;
        }
        progress.set(read.saturating_sub(pending.bytes as u64));
    }
    pending.tokenize(tokenizer, &mut out.blocks, max_tokens, |_| {})?;
    progress.set(reader.bytes_read());
    progress.finish();
    out.skipped = reader.skipped();
    Ok(out)
}

/// Documents read but not yet cut into blocks, with the byte ranges of their sentences.
#[derive(Default)]
pub(super) struct PendingDocs {
    pub docs: Vec<(Document, Vec<(usize, usize)>)>,
    pub bytes: usize,
}

impl PendingDocs {
    pub fn push(&mut self, doc: Document) {
        let spans = sentences(&doc.text);
        self.bytes += doc.text.len();
        self.docs.push((doc, spans));
    }

    /// Tokenises every pending sentence (at most [`TEXT_PER_CHUNK`] bytes per tokenizer call),
    /// telling `left` how many bytes are still to do after each call, and packs each document's
    /// sentences into blocks.
    pub fn tokenize(
        &mut self,
        tokenizer: &BertTokenizer,
        blocks: &mut Vec<Block>,
        max_tokens: usize,
        left: impl Fn(usize),
    ) -> Result<()> {
        let texts: Vec<&str> = self
            .docs
            .iter()
            .flat_map(|(doc, spans)| spans.iter().map(|&(a, b)| &doc.text[a..b]))
            .collect();
        let mut pieces = Vec::with_capacity(texts.len());
        let (mut start, mut done) = (0, 0);
        while start < texts.len() {
            if texts[start].len() > TEXT_PER_CHUNK {
                pieces.push(tokenizer.wordpieces_streaming(texts[start], TEXT_PER_CHUNK)?);
                done += texts[start].len();
                start += 1;
            } else {
                let mut end = start;
                let mut bytes = 0;
                while end < texts.len() && bytes + texts[end].len() <= TEXT_PER_CHUNK {
                    bytes += texts[end].len();
                    end += 1;
                }
                pieces.extend(tokenizer.wordpieces(&texts[start..end])?);
                done += bytes;
                start = end;
            }
            left(self.bytes.saturating_sub(done));
        }
        let mut pieces = pieces.into_iter();
        for (doc, spans) in self.docs.drain(..) {
            let doc_sentences: Vec<Vec<u32>> = pieces.by_ref().take(spans.len()).collect();
            blocks.extend(pack_blocks(&doc.id, &doc.title, &doc_sentences, max_tokens));
        }
        self.bytes = 0;
        Ok(())
    }
}

/// REALM's block length in wordpieces: the default of `realm index`.
pub const REALM_BLOCK_TOKENS: usize = 288;

/// The most body wordpieces a block can hold for a model of `positions` positions:
/// `[CLS] title [SEP] body [SEP]` needs the body to fit beside the three special tokens.
pub fn max_block_tokens(positions: usize) -> usize {
    positions.saturating_sub(3)
}

/// Wordpieces of a title's room in a document-tower input.
const TITLE_ROOM: usize = 64;

/// The longest document-tower input, `[CLS] title [SEP] body [SEP]`, for bodies of
/// `block_tokens` wordpieces: room for a title beside the body, at most the model's positions.
pub fn doc_input_len(positions: usize, block_tokens: usize) -> usize {
    positions.min(block_tokens + TITLE_ROOM)
}

/// How [`embed_blocks`] batches and reports.
#[derive(Clone, Debug)]
pub struct EmbedBlocks {
    /// Blocks per forward pass.
    pub batch: usize,
    /// Longest doc-tower input (`[CLS] title [SEP] body [SEP]`); longer bodies are truncated.
    pub max_len: usize,
    /// Show a progress bar (blocks/s, ETA) on stderr with this label.
    pub progress: Option<String>,
}

/// `[n, d]` f16 embeddings (on the CPU) of `blocks` by `tower`, row i for block i. Blocks are
/// embedded longest first so that each batch pads little.
pub fn embed_blocks(
    tower: &Tower,
    tokenizer: &BertTokenizer,
    blocks: &[Block],
    opts: &EmbedBlocks,
    device: &Device,
) -> Result<Tensor> {
    let bar = Progress::optional(
        opts.progress.as_deref(),
        Unit::Items("blocks"),
        Some(blocks.len() as u64),
    );
    let rows = embed_blocks_reporting(tower, tokenizer, blocks, opts, device, &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish();
    Ok(rows)
}

/// [`embed_blocks`] telling `embedded` how many blocks each batch did (`opts.progress` unused).
pub(super) fn embed_blocks_reporting(
    tower: &Tower,
    tokenizer: &BertTokenizer,
    blocks: &[Block],
    opts: &EmbedBlocks,
    device: &Device,
    embedded: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    if opts.batch == 0 {
        return Err(Error::bad_input(OP, "batch", "must be at least 1"));
    }
    if blocks.is_empty() {
        return Err(Error::bad_input(OP, "blocks", "no blocks to embed"));
    }
    let titles: Vec<&str> = blocks.iter().map(|b| b.title.as_str()).collect();
    // A title longer than a row is cut by `doc_inputs` anyway: only its first pieces matter.
    let title_pieces = tokenizer.wordpieces_prefix(&titles, opts.max_len)?;
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(title_pieces[i].len() + blocks[i].tokens.len()));

    let mut rows: Vec<Vec<f16>> = vec![Vec::new(); blocks.len()];
    for ids in order.chunks(opts.batch) {
        let t: Vec<&[u32]> = ids.iter().map(|&i| title_pieces[i].as_slice()).collect();
        let b: Vec<&[u32]> = ids.iter().map(|&i| blocks[i].tokens.as_slice()).collect();
        let input = doc_inputs(tokenizer, &t, &b, opts.max_len, device)?;
        let emb = tower
            .embed(&input, Mode::Eval)?
            .to_dtype(DType::F16)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f16>()?;
        for (&i, row) in ids.iter().zip(emb) {
            rows[i] = row;
        }
        embedded(ids.len());
    }
    let dim = rows[0].len();
    let flat: Vec<f16> = rows.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (blocks.len(), dim), &Device::Cpu)?)
}

/// What `realm index` does: cut a corpus into blocks and embed them with a model's document tower.
#[derive(Clone, Debug)]
pub struct IndexCorpus {
    /// Body wordpieces per block (REALM: 288).
    pub max_block_tokens: usize,
    pub skip_bad_lines: bool,
    pub embed: EmbedBlocks,
    /// The training step of the model's weights, recorded in the manifest.
    pub step: u64,
}

/// How building went, for the user.
pub struct IndexStats {
    pub documents: usize,
    pub skipped: usize,
    pub blocks: usize,
    pub embed_seconds: f64,
}

/// Builds the index of `corpus` with `model`'s document tower.
pub fn index_corpus(
    model: &super::model::RetrieverModel,
    corpus: &Path,
    opts: &IndexCorpus,
    device: &Device,
) -> Result<(super::StoredIndex, IndexStats)> {
    let size = std::fs::metadata(corpus).ok().map(|m| m.len());
    let reading = Progress::optional(
        opts.embed.progress.as_ref().map(|_| "reading the corpus"),
        Unit::Bytes,
        size,
    );
    let cut = cut_corpus(
        corpus,
        &model.tokenizer,
        opts.max_block_tokens,
        opts.skip_bad_lines,
        &reading,
    )?;
    if cut.blocks.is_empty() {
        return Err(Error::file(
            corpus,
            "no document with text: nothing to index",
        ));
    }
    let start = std::time::Instant::now();
    let embeddings = embed_blocks(
        model.retriever.doc_tower(),
        &model.tokenizer,
        &cut.blocks,
        &opts.embed,
        device,
    )?;
    let embed_seconds = start.elapsed().as_secs_f64();
    let stats = IndexStats {
        documents: cut.documents,
        skipped: cut.skipped,
        blocks: cut.blocks.len(),
        embed_seconds,
    };
    let index = super::StoredIndex::new(
        &model.fingerprint,
        &model.path.display().to_string(),
        opts.step,
        cut.blocks,
        embeddings,
    )?;
    Ok((index, stats))
}
