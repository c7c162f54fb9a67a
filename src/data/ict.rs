//! Inverse Cloze Task examples (ORQA, Lee et al. 2019): a sentence of a block is the pseudo-query
//! and the block is its positive context, with the sentence removed from the block 90% of the time
//! so the retriever learns more than word matching. Negatives are the other blocks of a batch.

use super::blocks::Block;
use crate::rng::SplitMix64;

/// One ICT pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IctExample {
    /// The query sentence's wordpiece ids (no special tokens).
    pub query: Vec<u32>,
    /// The block's wordpiece ids, without the query sentence when `removed`.
    pub context: Vec<u32>,
    /// The block's title, as text.
    pub title: String,
    /// Whether the query sentence was removed from the context.
    pub removed: bool,
}

/// Picks a random sentence of `block` as the query; removes it from the context with probability
/// `remove_prob` (ORQA: 0.9). `None` for a block with fewer than two sentences (the context
/// would be empty or the query would be the whole block).
pub fn ict_example(block: &Block, remove_prob: f64, rng: &mut SplitMix64) -> Option<IctExample> {
    if block.sentences.len() < 2 {
        return None;
    }
    let pick = block.sentences[rng.below(block.sentences.len() as u64) as usize].clone();
    let query = block.tokens[pick.clone()].to_vec();
    let removed = rng.uniform() < remove_prob;
    let context = if removed {
        [&block.tokens[..pick.start], &block.tokens[pick.end..]].concat()
    } else {
        block.tokens.clone()
    };
    Some(IctExample {
        query,
        context,
        title: block.title.clone(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_removed_about_nine_times_in_ten() {
        let block = Block {
            doc_id: "1".into(),
            title: "T".into(),
            tokens: (0..9).collect(),
            sentences: vec![0..3, 3..6, 6..9],
        };
        let mut rng = SplitMix64::new(5);
        let mut removed = 0;
        for _ in 0..1000 {
            let ex = ict_example(&block, 0.9, &mut rng).unwrap();
            assert_eq!(ex.query.len(), 3);
            if ex.removed {
                removed += 1;
                assert_eq!(ex.context.len(), 6);
                assert!(ex.query.iter().all(|t| !ex.context.contains(t)));
            } else {
                assert_eq!(ex.context, block.tokens);
            }
        }
        assert!((850..950).contains(&removed), "{removed} of 1000 removed");
        let single = Block {
            sentences: std::iter::once(0..9).collect(),
            ..block
        };
        assert!(ict_example(&single, 0.9, &mut rng).is_none());
    }
}
