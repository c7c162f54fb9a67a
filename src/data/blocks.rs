//! Retrieval blocks: documents split greedily into blocks of at most `max_tokens` wordpieces
//! (REALM: 288), whole sentences at a time, each block keeping its title and source document.
//! Tokenizer-agnostic: it packs already-tokenized sentences.

use std::ops::Range;

/// One retrievable block of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Source document id (the corpus id), for "no trivial retrieval" and evidence display.
    pub doc_id: String,
    /// The source document's title, as text.
    pub title: String,
    /// Body wordpiece ids (no special tokens).
    pub tokens: Vec<u32>,
    /// Token range of each sentence inside `tokens`, in order, covering `tokens`.
    pub sentences: Vec<Range<usize>>,
}

/// Packs `sentences` (token ids of each sentence, in order) into blocks of at most `max_tokens`:
/// sentences are added while they fit; a sentence longer than `max_tokens` is cut into pieces of
/// `max_tokens` that each start a block. Empty sentences are dropped; no block is empty.
pub fn pack_blocks(
    doc_id: &str,
    title: &str,
    sentences: &[Vec<u32>],
    max_tokens: usize,
) -> Vec<Block> {
    let max_tokens = max_tokens.max(1);
    let mut blocks = Vec::new();
    let mut current = Block {
        doc_id: doc_id.to_string(),
        title: title.to_string(),
        tokens: Vec::new(),
        sentences: Vec::new(),
    };
    let flush = |current: &mut Block, blocks: &mut Vec<Block>| {
        if !current.tokens.is_empty() {
            let next = Block {
                doc_id: current.doc_id.clone(),
                title: current.title.clone(),
                tokens: Vec::new(),
                sentences: Vec::new(),
            };
            blocks.push(std::mem::replace(current, next));
        }
    };
    for sentence in sentences.iter().filter(|s| !s.is_empty()) {
        for piece in sentence.chunks(max_tokens) {
            if current.tokens.len() + piece.len() > max_tokens {
                flush(&mut current, &mut blocks);
            }
            let start = current.tokens.len();
            current.tokens.extend_from_slice(piece);
            current.sentences.push(start..current.tokens.len());
        }
    }
    flush(&mut current, &mut blocks);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_packed_greedily_and_long_ones_are_cut() {
        let s = |n: usize, base: u32| (0..n as u32).map(|i| base + i).collect::<Vec<_>>();
        let blocks = pack_blocks(
            "7",
            "T",
            &[s(3, 0), s(4, 10), vec![], s(2, 20), s(11, 30)],
            8,
        );
        let lens: Vec<usize> = blocks.iter().map(|b| b.tokens.len()).collect();
        assert_eq!(lens, [7, 2, 8, 3]);
        assert_eq!(blocks[0].sentences, [0..3, 3..7]);
        assert_eq!(blocks[2].tokens, s(8, 30));
        assert!(blocks.iter().all(|b| b.doc_id == "7" && b.title == "T"));
        // Every token survives, in order.
        let all: Vec<u32> = blocks.iter().flat_map(|b| b.tokens.clone()).collect();
        assert_eq!(all, [s(3, 0), s(4, 10), s(2, 20), s(11, 30)].concat());
        assert!(pack_blocks("x", "", &[vec![]], 8).is_empty());
    }
}
