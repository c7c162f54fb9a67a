//! BERT's WordPiece tokenizer, from a Hugging Face `tokenizer.json` or a plain `vocab.txt`.
//! The tokenizers crate only splits text into wordpieces; this module adds `[CLS]`/`[SEP]`, segment
//! ids, truncation and padding itself (whatever a `tokenizer.json` says about those is turned
//! off), so both sources give the same batches.

use super::bert::BertInput;
use super::config::BertConfig;
use crate::error::{Error, Result};
use candle_core::Device;
use serde::Deserialize;
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

const OP: &str = "tokenizer";
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What to do with a sequence longer than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop wordpieces from the end (of the longer segment first, for pairs; HF's
    /// "longest_first").
    Truncate,
    /// Refuse the batch, naming the sequence.
    Error,
}

/// A padded batch: the encoder's input (on the device) and each example's length (host).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The padded ids, segment ids and lengths, `[batch, len]` with `len` the longest row.
    pub input: BertInput,
    /// Wordpieces of each example, special tokens included (the host copy of `input.lens`).
    pub lens: Vec<u32>,
}

/// The fields of HF's `tokenizer_config.json` that a `vocab.txt` tokenizer needs.
#[derive(Deserialize)]
struct VocabOptions {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
}

fn yes() -> bool {
    true
}

/// BERT's WordPiece tokenizer, with the ids of its special tokens.
pub struct BertTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
    pad: u32,
}

impl BertTokenizer {
    /// `dir/tokenizer.json` when present, else `dir/vocab.txt` with the lower-casing (and accent
    /// and Chinese-character options) of `dir/tokenizer_config.json`, uncased when that is absent.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.exists() {
            return Self::from_file(json);
        }
        let config = dir.join("tokenizer_config.json");
        let options: VocabOptions = if config.exists() {
            let text = std::fs::read_to_string(&config).map_err(|e| Error::file(&config, e))?;
            serde_json::from_str(&text).map_err(|e| Error::file(&config, e))?
        } else {
            serde_json::from_str("{}").map_err(|e| Error::file(&config, e))?
        };
        Self::vocab(dir.join("vocab.txt"), options)
    }

    /// A Hugging Face `tokenizer.json` (its padding and truncation are switched off).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut inner = Tokenizer::from_file(path).map_err(|e| Error::file(path, e))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::file(path, e))?;
        Self::new(inner, path)
    }

    /// A `vocab.txt` (one wordpiece per line) with BERT's normaliser and pre-tokenizer;
    /// `lowercase` for uncased models (accents are then stripped too, as BERT does).
    pub fn from_vocab(path: impl AsRef<Path>, lowercase: bool) -> Result<Self> {
        Self::vocab(
            path.as_ref(),
            VocabOptions {
                do_lower_case: lowercase,
                strip_accents: None,
                tokenize_chinese_chars: true,
            },
        )
    }

    fn vocab(path: impl AsRef<Path>, options: VocabOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = path
            .to_str()
            .ok_or_else(|| Error::file(path, "path is not UTF-8"))?;
        let wordpiece = WordPiece::from_file(file)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| Error::file(path, e))?;
        let mut inner = Tokenizer::new(wordpiece);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                options.tokenize_chinese_chars,
                options.strip_accents,
                options.do_lower_case,
            )))
            .map_err(|e| Error::file(path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        // Special tokens written in the text stay whole, as in HF's BertTokenizer.
        inner
            .add_special_tokens(SPECIAL.map(|t| AddedToken::from(t, true)))
            .map_err(|e| Error::file(path, e))?;
        Self::new(inner, path)
    }

    fn new(inner: Tokenizer, path: &Path) -> Result<Self> {
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| Error::file(path, format!("the vocabulary has no {token}")))
        };
        Ok(BertTokenizer {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            inner,
        })
    }

    /// The id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    /// The id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The id of any token of the vocabulary (e.g. `[MASK]`), special tokens included.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// An error unless the tokenizer and the model's embeddings agree on the vocabulary size.
    pub fn check_vocab(&self, config: &BertConfig) -> Result<()> {
        if self.vocab_size() != config.vocab_size {
            return Err(Error::bad_input(
                OP,
                "vocabulary",
                format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {}",
                    self.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// The wordpiece of `id` as the vocabulary spells it (`"##ing"` for a continuation), or None
    /// outside the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The wordpiece ids of each text, without special tokens.
    pub fn wordpieces(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::bad_input(OP, "text", e.to_string()))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The first `max` wordpieces of each text (all of them when it has fewer), tokenising only
    /// as much of a long text as that takes: it is cut where BERT's pre-tokenizer splits words
    /// ([`text_segments`]) and read segment by segment, so the result equals the first `max`
    /// pieces of the whole text while time and memory follow `max`, not the text's length.
    pub fn wordpieces_prefix(&self, texts: &[&str], max: usize) -> Result<Vec<Vec<u32>>> {
        // A wordpiece covers at least one byte; English averages four or more.
        let segment = max.saturating_mul(8).max(MIN_SEGMENT_BYTES);
        let short: Vec<usize> = (0..texts.len())
            .filter(|&i| texts[i].len() <= segment)
            .collect();
        let mut out = vec![Vec::new(); texts.len()];
        let pieces = self.wordpieces(&short.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
        for (&i, mut p) in short.iter().zip(pieces) {
            p.truncate(max);
            out[i] = p;
        }
        for (i, text) in texts.iter().enumerate().filter(|(_, t)| t.len() > segment) {
            for part in text_segments(text, segment) {
                out[i].extend(self.wordpieces(&[part])?.concat());
                if out[i].len() >= max {
                    break;
                }
            }
            out[i].truncate(max);
        }
        Ok(out)
    }

    /// All wordpieces of a text of any length, tokenised [`text_segments`] of at most
    /// `segment_bytes` at a time so that the tokenizer's working memory stays bounded.
    pub fn wordpieces_streaming(&self, text: &str, segment_bytes: usize) -> Result<Vec<u32>> {
        if text.len() <= segment_bytes {
            return Ok(self.wordpieces(&[text])?.concat());
        }
        let mut out = Vec::new();
        for part in text_segments(text, segment_bytes) {
            out.extend(self.wordpieces(&[part])?.concat());
        }
        Ok(out)
    }

    /// `[CLS] text [SEP]` for each text, padded to the longest, at most `max_len` tokens each.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        max_len: usize,
        overflow: Overflow,
        device: &Device,
    ) -> Result<Batch> {
        // One piece beyond the room is enough to tell an overflow.
        let rows = self
            .wordpieces_prefix(texts, max_len)?
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.assemble(i, a, None, max_len, overflow))
            .collect::<Result<Vec<_>>>()?;
        self.pad(rows, device)
    }

    /// `[CLS] a [SEP] b [SEP]` for each pair, segment 0 for the first part and 1 for the second,
    /// padded to the longest, at most `max_len` tokens each.
    pub fn encode_pairs(
        &self,
        pairs: &[(&str, &str)],
        max_len: usize,
        overflow: Overflow,
        device: &Device,
    ) -> Result<Batch> {
        let firsts: Vec<&str> = pairs.iter().map(|p| p.0).collect();
        let seconds: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        let rows = self
            .wordpieces(&firsts)?
            .into_iter()
            .zip(self.wordpieces(&seconds)?)
            .enumerate()
            .map(|(i, (a, b))| self.assemble(i, a, Some(b), max_len, overflow))
            .collect::<Result<Vec<_>>>()?;
        self.pad(rows, device)
    }

    /// One example's ids and segment ids, truncated to `max_len` if allowed.
    fn assemble(
        &self,
        index: usize,
        mut a: Vec<u32>,
        mut b: Option<Vec<u32>>,
        max_len: usize,
        overflow: Overflow,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let specials = if b.is_some() { 3 } else { 2 };
        let total = a.len() + b.as_ref().map_or(0, Vec::len) + specials;
        if total > max_len {
            if overflow == Overflow::Error || max_len < specials {
                return Err(Error::bad_input(
                    OP,
                    "text",
                    format!("sequence {index} is longer than the limit of {max_len} tokens"),
                ));
            }
            let room = max_len - specials;
            match &mut b {
                None => a.truncate(room),
                Some(b) => {
                    let (na, nb) = longest_first(a.len(), b.len(), room);
                    a.truncate(na);
                    b.truncate(nb);
                }
            }
        }
        let mut ids = Vec::with_capacity(max_len.min(total));
        ids.push(self.cls);
        ids.extend_from_slice(&a);
        ids.push(self.sep);
        let mut types = vec![0u32; ids.len()];
        if let Some(b) = b {
            ids.extend_from_slice(&b);
            ids.push(self.sep);
            types.resize(ids.len(), 1);
        }
        Ok((ids, types))
    }

    /// Right-pads every row to the longest with [PAD] (segment 0).
    fn pad(&self, rows: Vec<(Vec<u32>, Vec<u32>)>, device: &Device) -> Result<Batch> {
        if rows.is_empty() {
            return Err(Error::bad_input(OP, "texts", "the batch is empty"));
        }
        let l = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let lens: Vec<u32> = rows.iter().map(|r| r.0.len() as u32).collect();
        let mut ids = Vec::with_capacity(rows.len() * l);
        let mut types = Vec::with_capacity(rows.len() * l);
        for (row_ids, row_types) in rows {
            let pad = l - row_ids.len();
            ids.extend(
                row_ids
                    .into_iter()
                    .chain(std::iter::repeat_n(self.pad, pad)),
            );
            types.extend(row_types.into_iter().chain(std::iter::repeat_n(0, pad)));
        }
        Ok(Batch {
            input: BertInput::new(ids, Some(types), &lens, device)?,
            lens,
        })
    }
}

/// The smallest segment [`BertTokenizer::wordpieces_prefix`] cuts a long text into.
const MIN_SEGMENT_BYTES: usize = 4096;

/// `text` cut into consecutive parts of at most `max_bytes` (a part is longer only when one
/// character is), each ending where BERT's normaliser and pre-tokenizer split words whatever
/// follows: after ASCII whitespace, else after ASCII punctuation, and only when a part holds
/// neither, at a character boundary. The wordpieces of the parts, concatenated, are those of the
/// text, unless a part holds no whitespace: then a word of `max_bytes` or more (one `[UNK]`
/// whole) may give one per part, and a special token written in the text (`[MASK]`) may be cut.
pub fn text_segments(text: &str, max_bytes: usize) -> Vec<&str> {
    let max_bytes = max_bytes.max(1);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let mut limit = max_bytes;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        if limit == 0 {
            // A single character longer than max_bytes.
            limit = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let window = &rest.as_bytes()[..limit];
        let cut = window
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .or_else(|| window.iter().rposition(u8::is_ascii_punctuation))
            .map_or(limit, |i| i + 1);
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// Lengths of two segments after HF's "longest_first" truncation to `room` tokens in all: the
/// longer segment loses tokens first; when both must shrink they get half each, the odd token
/// going to the longer one.
fn longest_first(na: usize, nb: usize, room: usize) -> (usize, usize) {
    let mut s = na.min(nb);
    let mut l = if s > room { s } else { (room - s).max(s) };
    if s + l > room {
        s = room / 2;
        l = s + room % 2;
    }
    if na <= nb {
        (s, l)
    } else {
        (l, s)
    }
}

#[cfg(test)]
mod tests {
    use super::{longest_first, text_segments};

    #[test]
    fn segments_cover_the_text_and_end_where_words_end() {
        let text = "Paris is the capital. Ünïcode—text,no-spaces-here and (more) words";
        for max in [1, 3, 7, 16, 100] {
            let parts = text_segments(text, max);
            assert_eq!(parts.concat(), text, "max {max}");
            for p in &parts[..parts.len() - 1] {
                let last = p.as_bytes()[p.len() - 1];
                let at_word_end = last.is_ascii_whitespace() || last.is_ascii_punctuation();
                assert!(at_word_end || p.len() >= max.min(4), "{max}: {p:?}");
            }
        }
        assert_eq!(text_segments("", 4), Vec::<&str>::new());
        assert_eq!(text_segments("é", 1), ["é"]);
    }

    #[test]
    fn longest_first_trims_the_longer_segment_then_both() {
        assert_eq!(longest_first(3, 10, 8), (3, 5));
        assert_eq!(longest_first(10, 3, 8), (5, 3));
        assert_eq!(longest_first(6, 7, 8), (4, 4));
        assert_eq!(longest_first(7, 6, 9), (5, 4));
        assert_eq!(longest_first(20, 30, 5), (2, 3));
    }
}
