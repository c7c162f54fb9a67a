//! Training examples: salient-span pre-training examples cut from a corpus (sentences with their
//! salient spans located in wordpieces, packed into windows), their masking at each step, and the
//! data order (a fresh permutation per epoch, a pure function of the seed and the step).

use super::state::{step_rng, DataCursor};
use crate::data::masking::{mask_salient_spans, shuffle};
use crate::data::tokenized::PendingDocs;
use crate::data::{CorpusReader, MaskConfig, MaskedExample, SalientTagger, Span, SpanKind};
use crate::error::{Error, Result};
use crate::model::BertTokenizer;
use std::ops::Range;
use std::path::Path;

const OP: &str = "examples";

/// A pre-training text: wordpieces of whole sentences of one document, with the salient spans
/// found in them (in wordpiece positions), ready to be masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanExample {
    /// The corpus id of the document it was cut from (retrieval excludes that document).
    pub doc_id: String,
    /// The text's wordpieces (no `[CLS]`/`[SEP]`).
    pub tokens: Vec<u32>,
    /// Wordpiece range of each sentence, in order, covering `tokens`.
    pub sentences: Vec<Range<usize>>,
    /// Wordpiece ranges of the salient spans, sorted, not overlapping.
    pub spans: Vec<Range<usize>>,
}

impl SpanExample {
    /// Masks one salient span per sentence (random wordpieces where a sentence has none), at most
    /// `cfg.max_masks` wordpieces in all.
    pub fn mask(&self, cfg: MaskConfig, rng: &mut crate::rng::SplitMix64) -> MaskedExample {
        // Wordpiece positions serve as the "byte offsets" the masker works in.
        let offsets: Vec<(usize, usize)> = (0..self.tokens.len()).map(|i| (i, i + 1)).collect();
        let spans: Vec<Span> = self
            .spans
            .iter()
            .map(|r| Span {
                start: r.start,
                end: r.end,
                kind: SpanKind::Entity,
            })
            .collect();
        mask_salient_spans(&self.tokens, &offsets, &self.sentences, &spans, cfg, rng)
    }

    /// Masks random wordpieces, `cfg.random_fraction` of each sentence, at most `cfg.max_masks`
    /// in all (the masker's fallback for every sentence): REALM's random-token baseline.
    pub fn mask_random(&self, cfg: MaskConfig, rng: &mut crate::rng::SplitMix64) -> MaskedExample {
        let offsets: Vec<(usize, usize)> = (0..self.tokens.len()).map(|i| (i, i + 1)).collect();
        mask_salient_spans(&self.tokens, &offsets, &self.sentences, &[], cfg, rng)
    }
}

/// A sentence's wordpieces and the wordpiece ranges of its salient spans.
type TaggedSentence = (Vec<u32>, Vec<Range<usize>>);

/// Documents read per tokenizer call.
const DOCS_PER_CHUNK: usize = 256;

/// Reads a corpus (JSONL or DPR TSV, streaming) and cuts every document into windows of whole
/// sentences of at most `max_tokens` wordpieces (a longer sentence is cut), with the salient
/// spans `tagger` finds located in the wordpieces. Windows without any salient span are kept:
/// masking falls back to random wordpieces there.
pub fn span_examples(
    path: &Path,
    tokenizer: &BertTokenizer,
    tagger: &dyn SalientTagger,
    max_tokens: usize,
    skip_bad_lines: bool,
) -> Result<Vec<SpanExample>> {
    if max_tokens == 0 {
        return Err(Error::bad_input(OP, "max_tokens", "must be at least 1"));
    }
    let mut reader = CorpusReader::open(path, skip_bad_lines)?;
    let mut pending = PendingDocs::default();
    let mut out = Vec::new();
    loop {
        for doc in reader.by_ref().take(DOCS_PER_CHUNK) {
            pending.push(doc?);
        }
        if pending.is_empty() {
            break;
        }
        let docs = pending.tokenize(tokenizer, |_| {})?;
        // The salient spans of every sentence as text, all tokenised in one call.
        let (span_counts, span_pieces) = {
            let span_texts: Vec<Vec<&str>> = docs
                .iter()
                .flat_map(|t| {
                    t.sentences.iter().map(|r| {
                        let text = &t.doc.text[r.clone()];
                        tagger
                            .tag(text)
                            .iter()
                            .filter_map(|s| text.get(s.start..s.end))
                            .collect()
                    })
                })
                .collect();
            let flat: Vec<&str> = span_texts.iter().flatten().copied().collect();
            let pieces = if flat.is_empty() {
                Vec::new()
            } else {
                tokenizer.wordpieces(&flat)?
            };
            (span_texts.iter().map(Vec::len).collect::<Vec<_>>(), pieces)
        };
        let (mut counts, mut span_pieces) = (span_counts.into_iter(), span_pieces.into_iter());
        for t in docs {
            let list: Vec<TaggedSentence> = t
                .pieces
                .into_iter()
                .zip(counts.by_ref())
                .map(|(sentence, n)| {
                    let located = locate(&sentence, span_pieces.by_ref().take(n));
                    (sentence, located)
                })
                .collect();
            if !list.is_empty() {
                out.extend(pack(&t.doc.id, list, max_tokens));
            }
        }
    }
    Ok(out)
}

/// Cloze pre-training texts from questions (NQ-open JSONL or SQuAD): `question answer`, the first
/// gold answer as the one salient span, so masking it gives the question's cloze form. Their
/// source is no corpus document, so nothing is excluded from their retrieval. A question whose
/// text and answer do not fit `max_tokens` wordpieces is an error naming it.
pub fn cloze_examples(
    path: &Path,
    tokenizer: &BertTokenizer,
    max_tokens: usize,
) -> Result<Vec<SpanExample>> {
    let questions = crate::data::read_qa(path)?;
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        let Some(answer) = q.answers.first() else {
            return Err(Error::file(
                path,
                format!("question {} has no answer", q.id),
            ));
        };
        let mut pieces = tokenizer.wordpieces(&[q.question.as_str(), answer.text.as_str()])?;
        let answer = pieces.pop().unwrap_or_default();
        let mut tokens = pieces.pop().unwrap_or_default();
        let start = tokens.len();
        if answer.is_empty() || start + answer.len() > max_tokens {
            return Err(Error::file(
                path,
                format!(
                    "question {}: {} question and {} answer wordpieces; the answer must be \
                     non-empty and both must fit {max_tokens}",
                    q.id,
                    start,
                    answer.len()
                ),
            ));
        }
        tokens.extend_from_slice(&answer);
        let end = tokens.len();
        // One sentence, one salient span: the answer.
        out.push(SpanExample {
            doc_id: String::new(),
            sentences: std::iter::once(0..end).collect(),
            spans: std::iter::once(start..end).collect(),
            tokens,
        });
    }
    Ok(out)
}

/// Wordpiece ranges of `spans` (each tokenized alone) inside `sentence`, in order, each found
/// after the previous one; a span whose wordpieces do not occur is dropped.
fn locate(sentence: &[u32], spans: impl Iterator<Item = Vec<u32>>) -> Vec<Range<usize>> {
    let mut from = 0;
    let mut out = Vec::new();
    for span in spans {
        if span.is_empty() || span.len() > sentence.len() {
            continue;
        }
        if let Some(p) =
            (from..=sentence.len() - span.len()).find(|&p| sentence[p..p + span.len()] == span[..])
        {
            out.push(p..p + span.len());
            from = p + span.len();
        }
    }
    out
}

/// Packs the sentences of one document greedily into windows of at most `max_tokens`.
fn pack(doc_id: &str, sentences: Vec<TaggedSentence>, max_tokens: usize) -> Vec<SpanExample> {
    let mut out = Vec::new();
    let empty = || SpanExample {
        doc_id: doc_id.to_string(),
        tokens: Vec::new(),
        sentences: Vec::new(),
        spans: Vec::new(),
    };
    let mut window = empty();
    for (tokens, spans) in sentences {
        for (c, piece) in tokens.chunks(max_tokens).enumerate() {
            if window.tokens.len() + piece.len() > max_tokens {
                out.push(std::mem::replace(&mut window, empty()));
            }
            let start = window.tokens.len();
            let lo = c * max_tokens;
            let hi = lo + piece.len();
            window.tokens.extend_from_slice(piece);
            window.sentences.push(start..window.tokens.len());
            window.spans.extend(
                spans
                    .iter()
                    .filter(|r| r.start >= lo && r.end <= hi)
                    .map(|r| start + r.start - lo..start + r.end - lo),
            );
        }
    }
    if !window.tokens.is_empty() {
        out.push(window);
    }
    out
}

/// Which examples each step takes: the examples in a fresh random order each epoch, `batch` per
/// step, a pure function of (seed, stream, step) so that a resumed run takes what the
/// uninterrupted one would have.
pub struct DataOrder {
    n: usize,
    batch: usize,
    seed: u64,
    stream: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    /// The order over `n` examples, `batch` per step, drawn from `seed` and `stream`; no examples
    /// or a zero batch is an error.
    pub fn new(n: usize, batch: usize, seed: u64, stream: u64) -> Result<Self> {
        if n == 0 {
            return Err(Error::bad_input(
                OP,
                "examples",
                "there are no training examples",
            ));
        }
        if batch == 0 {
            return Err(Error::bad_input(OP, "batch", "must be at least 1"));
        }
        Ok(DataOrder {
            n,
            batch,
            seed,
            stream,
            epoch: None,
        })
    }

    /// The example indices of step `step` (0-based) and where the stream stands after it.
    pub fn batch(&mut self, step: u64) -> (Vec<usize>, DataCursor) {
        let start = step * self.batch as u64;
        let ids = (start..start + self.batch as u64)
            .map(|p| {
                let (epoch, at) = (p / self.n as u64, (p % self.n as u64) as usize);
                self.order(epoch)[at]
            })
            .collect();
        let end = start + self.batch as u64;
        let cursor = DataCursor {
            epoch: end / self.n as u64,
            position: end % self.n as u64,
        };
        (ids, cursor)
    }

    fn order(&mut self, epoch: u64) -> &[usize] {
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..self.n).collect();
            shuffle(&mut order, &mut step_rng(self.seed, self.stream, epoch));
            self.epoch = Some((epoch, order));
        }
        match &self.epoch {
            Some((_, order)) => order,
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// `a..b` (a function, so the tests' one-range lists are not mistaken for ranges of vectors).
    fn r(a: usize, b: usize) -> Range<usize> {
        a..b
    }

    #[test]
    fn spans_are_located_in_wordpieces_and_windows_keep_them() {
        assert_eq!(
            locate(
                &[1, 2, 3, 2, 3],
                [vec![2, 3], vec![2, 3], vec![9]].into_iter()
            ),
            [1..3, 3..5]
        );
        let sentences = vec![
            (vec![10, 11, 12], vec![r(1, 3)]),
            (vec![20, 21], vec![r(0, 1)]),
            (vec![30, 31, 32, 33, 34, 35, 36], vec![r(1, 2), r(5, 7)]),
        ];
        let windows = pack("d", sentences, 5);
        let tokens: Vec<&[u32]> = windows.iter().map(|w| w.tokens.as_slice()).collect();
        assert_eq!(
            tokens,
            [&[10, 11, 12, 20, 21][..], &[30, 31, 32, 33, 34], &[35, 36]]
        );
        let sentences: Vec<&[Range<usize>]> =
            windows.iter().map(|w| w.sentences.as_slice()).collect();
        assert_eq!(sentences, [&[r(0, 3), r(3, 5)][..], &[r(0, 5)], &[r(0, 2)]]);
        let spans: Vec<&[Range<usize>]> = windows.iter().map(|w| w.spans.as_slice()).collect();
        assert_eq!(spans, [&[r(1, 3), r(3, 4)][..], &[r(1, 2)], &[r(0, 2)]]);
    }

    #[test]
    fn masking_takes_a_salient_span_per_sentence() {
        let ex = SpanExample {
            doc_id: "1".into(),
            tokens: (100..110).collect(),
            sentences: vec![0..5, 5..10],
            spans: vec![2..4, 6..7],
        };
        for seed in 0..10 {
            let m = ex.mask(MaskConfig::default(), &mut SplitMix64::new(seed));
            assert_eq!(m.positions, [2, 3, 6]);
            assert_eq!(m.targets, [102, 103, 106]);
            assert_eq!(m.salient_masks, 3);
        }
    }

    #[test]
    fn data_order_is_a_permutation_per_epoch_and_depends_only_on_the_step() {
        let mut order = DataOrder::new(5, 2, 7, 1).unwrap();
        let mut seen: Vec<usize> = Vec::new();
        let mut last = DataCursor::default();
        for step in 0..5 {
            let (ids, cursor) = order.batch(step);
            seen.extend(ids);
            last = cursor;
        }
        assert_eq!(
            last,
            DataCursor {
                epoch: 2,
                position: 0
            }
        );
        for epoch in seen.chunks(5) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, [0, 1, 2, 3, 4]);
        }
        assert_ne!(seen[..5], seen[5..]);
        // A fresh order (a resumed run) gives the same batch for the same step.
        let mut again = DataOrder::new(5, 2, 7, 1).unwrap();
        assert_eq!(again.batch(3).0, seen[6..8]);
        assert!(DataOrder::new(0, 2, 7, 1).is_err());
        assert!(DataOrder::new(3, 0, 7, 1).is_err());
    }
}
