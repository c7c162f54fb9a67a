//! Corpus documents cut into sentences and tokenised in bounded batches: what both the index
//! build (sentences packed into blocks) and pre-training's span examples (sentences packed into
//! windows with their salient spans) read a corpus as.

use super::corpus::Document;
use super::salient::sentences;
use crate::error::Result;
use crate::model::BertTokenizer;
use std::ops::Range;

/// Text tokenised per call, at most (one sentence longer than this is tokenised in parts): the
/// tokenizer keeps offsets and alignments of about 100 bytes per byte of text it is given, so
/// what it is given must be bounded, whatever the length of a line of the corpus.
pub const TEXT_PER_CHUNK: usize = 1 << 20;

/// A document with the byte range of each of its sentences in `doc.text` and their wordpieces.
pub struct TokenizedDoc {
    /// The document as read.
    pub doc: Document,
    /// Byte ranges of its sentences in `doc.text`, in order.
    pub sentences: Vec<Range<usize>>,
    /// The wordpieces of each sentence (no special tokens), in the same order.
    pub pieces: Vec<Vec<u32>>,
}

/// Documents read but not yet tokenised, with the byte ranges of their sentences.
#[derive(Default)]
pub struct PendingDocs {
    docs: Vec<(Document, Vec<(usize, usize)>)>,
    bytes: usize,
}

impl PendingDocs {
    /// Adds a document, cut into sentences.
    pub fn push(&mut self, doc: Document) {
        let spans = sentences(&doc.text);
        self.bytes += doc.text.len();
        self.docs.push((doc, spans));
    }

    /// Documents waiting.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document is waiting.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes of text waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the waiting documents (a chunk another shard builds, or one built already).
    pub fn clear(&mut self) {
        self.docs.clear();
        self.bytes = 0;
    }

    /// Tokenises every waiting sentence (at most [`TEXT_PER_CHUNK`] bytes per tokenizer call),
    /// telling `left` how many bytes are still to do after each call, and hands back the
    /// documents with their sentences' wordpieces, in the order they were pushed.
    pub fn tokenize(
        &mut self,
        tokenizer: &BertTokenizer,
        left: impl Fn(usize),
    ) -> Result<Vec<TokenizedDoc>> {
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
        let out = self
            .docs
            .drain(..)
            .map(|(doc, spans)| TokenizedDoc {
                pieces: pieces.by_ref().take(spans.len()).collect(),
                sentences: spans.into_iter().map(|(a, b)| a..b).collect(),
                doc,
            })
            .collect();
        self.bytes = 0;
        Ok(out)
    }
}
