//! Salient-span masking (REALM §3.4): in each sentence one salient span (a named entity or date)
//! is masked whole, up to `max_masks` wordpieces per example; a sentence with no salient span
//! falls back to random-token masking. Works on wordpieces with their character offsets, so it is
//! independent of the tokenizer.

use super::salient::Span;
use crate::rng::SplitMix64;
use std::ops::Range;

/// Masking settings.
#[derive(Clone, Copy, Debug)]
pub struct MaskConfig {
    /// At most this many wordpieces masked per example (REALM: 10).
    pub max_masks: usize,
    /// The id of `[MASK]`.
    pub mask_id: u32,
    /// Fraction of a span-less sentence's wordpieces masked by the fallback (at least one).
    pub random_fraction: f64,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            max_masks: 10,
            mask_id: 103,
            random_fraction: 0.15,
        }
    }
}

/// An example with its masked positions and the original ids there (the targets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedExample {
    /// The tokens, with `mask_id` at every masked position.
    pub input_ids: Vec<u32>,
    /// Sorted positions in `input_ids` that were masked.
    pub positions: Vec<usize>,
    /// The original id at each of `positions`, in the same order.
    pub targets: Vec<u32>,
    /// How many of the masked positions came from salient spans (the rest: the fallback).
    pub salient_masks: usize,
}

/// Masks `tokens`, whose byte offsets into the text are `offsets`, with `sentences` the token
/// ranges of the sentences and `spans` the salient spans of the text (byte ranges).
pub fn mask_salient_spans(
    tokens: &[u32],
    offsets: &[(usize, usize)],
    sentences: &[Range<usize>],
    spans: &[Span],
    cfg: MaskConfig,
    rng: &mut SplitMix64,
) -> MaskedExample {
    let mut masked = vec![false; tokens.len()];
    let mut count = 0;
    let mut salient = 0;
    // Sentences in random order, so the budget does not always go to the first ones.
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    shuffle(&mut order, rng);
    for si in order {
        let sentence = &sentences[si];
        let (lo, hi) = match (
            offsets.get(sentence.start),
            sentence.end.checked_sub(1).and_then(|e| offsets.get(e)),
        ) {
            (Some(a), Some(b)) => (a.0, b.1),
            _ => continue,
        };
        // Token ranges of the salient spans inside this sentence.
        let candidates: Vec<Range<usize>> = spans
            .iter()
            .filter(|s| s.start >= lo && s.end <= hi)
            .filter_map(|s| {
                let toks: Vec<usize> = sentence
                    .clone()
                    .filter(|&t| offsets[t].0 < s.end && offsets[t].1 > s.start)
                    .collect();
                Some(*toks.first()?..*toks.last()? + 1)
            })
            .filter(|r| r.len() <= cfg.max_masks - count.min(cfg.max_masks))
            .collect();
        if count >= cfg.max_masks {
            break;
        }
        if !candidates.is_empty() {
            let pick = candidates[rng.below(candidates.len() as u64) as usize].clone();
            for t in pick {
                masked[t] = true;
                count += 1;
                salient += 1;
            }
        } else {
            let n = ((sentence.len() as f64 * cfg.random_fraction).round() as usize)
                .max(1)
                .min(cfg.max_masks - count);
            let mut positions: Vec<usize> = sentence.clone().collect();
            shuffle(&mut positions, rng);
            for &t in positions.iter().take(n) {
                masked[t] = true;
                count += 1;
            }
        }
    }
    let positions: Vec<usize> = (0..tokens.len()).filter(|&t| masked[t]).collect();
    let targets = positions.iter().map(|&t| tokens[t]).collect();
    let mut input_ids = tokens.to_vec();
    for &t in &positions {
        input_ids[t] = cfg.mask_id;
    }
    MaskedExample {
        input_ids,
        positions,
        targets,
        salient_masks: salient,
    }
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::salient::SpanKind;

    type Example = (Vec<u32>, Vec<(usize, usize)>, Vec<Range<usize>>, Vec<Span>);

    /// "Mozart was born in 1756 . He lived ." as one token per word.
    fn example() -> Example {
        let text = "Mozart was born in 1756 . He lived .";
        let mut offsets = Vec::new();
        let mut pos = 0;
        for w in text.split(' ') {
            offsets.push((pos, pos + w.len()));
            pos += w.len() + 1;
        }
        let tokens = (0..offsets.len() as u32).map(|i| 1000 + i).collect();
        let spans = vec![Span {
            start: 19,
            end: 23,
            kind: SpanKind::Date,
        }];
        (tokens, offsets, vec![0..6, 6..9], spans)
    }

    #[test]
    fn one_salient_span_per_sentence_and_a_random_fallback() {
        let (tokens, offsets, sentences, spans) = example();
        for seed in 0..20 {
            let m = mask_salient_spans(
                &tokens,
                &offsets,
                &sentences,
                &spans,
                MaskConfig::default(),
                &mut SplitMix64::new(seed),
            );
            // The date (token 4) is always masked; the span-less second sentence gets one random mask.
            assert!(m.positions.contains(&4));
            assert_eq!(m.salient_masks, 1);
            assert_eq!(m.positions.iter().filter(|&&p| p >= 6).count(), 1);
            for (&p, &t) in m.positions.iter().zip(&m.targets) {
                assert_eq!((m.input_ids[p], t), (103, tokens[p]));
            }
        }
    }

    #[test]
    fn the_mask_budget_is_respected() {
        let (tokens, offsets, sentences, spans) = example();
        let cfg = MaskConfig {
            max_masks: 1,
            ..MaskConfig::default()
        };
        for seed in 0..20 {
            let m = mask_salient_spans(
                &tokens,
                &offsets,
                &sentences,
                &spans,
                cfg,
                &mut SplitMix64::new(seed),
            );
            assert_eq!(m.positions.len(), 1);
        }
    }
}
