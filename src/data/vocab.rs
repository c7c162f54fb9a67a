//! Training a WordPiece vocabulary (`realm vocab`): the tokenizers crate's WordPieceTrainer over a
//! corpus and optional QA files, with exactly the normaliser and pre-tokenizer that
//! [`BertTokenizer::from_vocab`](crate::model::BertTokenizer::from_vocab) applies, written as a BERT
//! `vocab.txt` with the special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]` at ids 0–4 (the layout of
//! vocabularies trained with HF's `BertWordPieceTokenizer`).

use crate::data::{read_qa, CorpusReader};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Model, Tokenizer};

const OP: &str = "vocab";
/// BERT's special tokens, in the order of their ids.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What to train on and how.
#[derive(Clone, Debug)]
pub struct VocabSpec {
    /// A corpus (`.jsonl` or DPR `.tsv`): titles and texts.
    pub corpus: PathBuf,
    /// QA files (NQ-open `.jsonl` or SQuAD `.json`): questions, answers (and SQuAD paragraphs).
    pub extra: Vec<PathBuf>,
    /// Tokens in all, special tokens included.
    pub size: usize,
    /// Lower-case (and strip accents), as uncased BERT.
    pub lowercase: bool,
    /// A merge must occur this often to enter the vocabulary.
    pub min_frequency: u64,
}

/// What [`build_vocab`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocabSummary {
    /// Texts trained on: corpus titles and bodies, then the QA files' questions, answers and
    /// paragraphs.
    pub texts: usize,
    /// Tokens in the written vocabulary, the special tokens included.
    pub tokens: usize,
}

/// Trains a vocabulary on `spec`'s files and writes it to `out` (atomically).
pub fn build_vocab(spec: &VocabSpec, out: &Path) -> Result<VocabSummary> {
    let mut texts = corpus_texts(&spec.corpus)?;
    for path in &spec.extra {
        texts.extend(qa_texts(path)?);
    }
    let tokens = train_wordpiece(texts.iter().map(String::as_str), spec)?;
    write_vocab(out, &tokens)?;
    Ok(VocabSummary {
        texts: texts.len(),
        tokens: tokens.len(),
    })
}

/// Titles and texts of a corpus file.
fn corpus_texts(path: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for doc in CorpusReader::open(path, false)? {
        let doc = doc?;
        if !doc.title.is_empty() {
            texts.push(doc.title);
        }
        texts.push(doc.text);
    }
    if texts.is_empty() {
        return Err(Error::file(path, "the corpus has no documents"));
    }
    Ok(texts)
}

/// Questions, answers and (SQuAD) paragraphs of a QA file; each paragraph once.
fn qa_texts(path: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut last_context: Option<String> = None;
    for example in read_qa(path)? {
        texts.push(example.question);
        texts.extend(example.answers.into_iter().map(|a| a.text));
        if let Some(c) = example.context {
            if last_context.as_ref() != Some(&c) {
                texts.push(c.clone());
                last_context = Some(c);
            }
        }
    }
    Ok(texts)
}

/// The tokens of a WordPiece vocabulary trained on `texts`, in id order: the special tokens
/// first, then what the trainer produced.
pub fn train_wordpiece<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    spec: &VocabSpec,
) -> Result<Vec<String>> {
    if spec.size <= SPECIAL_TOKENS.len() {
        return Err(Error::bad_input(
            OP,
            "size",
            format!(
                "{} leaves no room beside the {} special tokens",
                spec.size,
                SPECIAL_TOKENS.len()
            ),
        ));
    }
    let mut tokenizer = Tokenizer::new(WordPiece::default());
    // The same text processing as BertTokenizer::from_vocab, so training sees what encoding will.
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, spec.lowercase)))
        .map_err(|e| Error::bad_input(OP, "normalizer", e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(spec.size)
        .min_frequency(spec.min_frequency)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build()
        .into();
    let seen = AtomicUsize::new(0);
    let counted = texts.inspect(|_| {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    tokenizer
        .train(&mut trainer, counted)
        .map_err(|e| Error::bad_input(OP, "texts", e.to_string()))?;
    if seen.load(Ordering::Relaxed) == 0 {
        return Err(Error::bad_input(OP, "texts", "nothing to train on"));
    }
    let mut vocab: Vec<(String, u32)> = tokenizer.get_model().get_vocab().into_iter().collect();
    vocab.sort_by_key(|&(_, id)| id);
    for (i, (token, id)) in vocab.iter().enumerate() {
        if *id as usize != i {
            return Err(Error::bad_input(
                OP,
                "vocabulary",
                format!(
                    "the trainer's ids are not contiguous: {token:?} has id {id}, expected {i}"
                ),
            ));
        }
        if let Some(special) = SPECIAL_TOKENS.get(i) {
            if token != special {
                return Err(Error::bad_input(
                    OP,
                    "vocabulary",
                    format!("id {i} is {token:?}, expected {special}"),
                ));
            }
        }
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(Error::bad_input(
                OP,
                "vocabulary",
                format!("token {i} ({token:?}) cannot be written one per line"),
            ));
        }
    }
    // The trainer keeps every character it saw (and its ## continuation), whatever the size: a
    // vocabulary without them would turn text into [UNK]s. A size below that is refused rather
    // than silently exceeded.
    if vocab.len() > spec.size {
        return Err(Error::bad_input(
            OP,
            "size",
            format!(
                "--size {}: the texts' characters alone need {} tokens (the special tokens, \
                 every character and its ## continuation); use --size {} or more",
                spec.size,
                vocab.len(),
                vocab.len()
            ),
        ));
    }
    // The trainer numbers characters in hash-map order, which changes from run to run; a fixed
    // order (specials, characters, continuation characters, then the rest by code point) makes
    // the file reproducible.
    let mut tokens: Vec<String> = vocab.into_iter().map(|(t, _)| t).collect();
    tokens[SPECIAL_TOKENS.len()..].sort_by_cached_key(|t| {
        let rest = t.strip_prefix("##");
        let class = match rest.unwrap_or(t).chars().count() {
            1 if rest.is_none() => 0,
            1 => 1,
            _ => 2,
        };
        (class, t.clone())
    });
    Ok(tokens)
}

/// Writes a `vocab.txt`: one token per line, line i = id i.
pub fn write_vocab(path: &Path, tokens: &[String]) -> Result<()> {
    crate::io::write_atomic(path, |w| {
        for t in tokens {
            writeln!(w, "{t}")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BertTokenizer;

    fn spec(size: usize) -> VocabSpec {
        VocabSpec {
            corpus: PathBuf::new(),
            extra: Vec::new(),
            size,
            lowercase: true,
            min_frequency: 1,
        }
    }

    const TEXTS: [&str; 4] = [
        "The capital of France is Paris.",
        "Paris is on the Seine, a river of northern France.",
        "The Loire is the longest river in France.",
        "Élodie lives in Paris; Zoë lives in Lyon.",
    ];

    #[test]
    fn specials_first_and_the_tokenizer_reads_it_back_without_unknowns() {
        let tokens = train_wordpiece(TEXTS.into_iter(), &spec(120)).unwrap();
        assert_eq!(&tokens[..5], &SPECIAL_TOKENS);
        assert!(tokens.len() <= 120, "{} tokens", tokens.len());
        let dir = std::env::temp_dir().join(format!("realm-vocab-{}", std::process::id()));
        let path = dir.join("vocab.txt");
        write_vocab(&path, &tokens).unwrap();
        let tok = BertTokenizer::from_vocab(&path, true).unwrap();
        assert_eq!(tok.vocab_size(), tokens.len());
        let unk = tok.token_id("[UNK]").unwrap();
        assert_eq!(unk, 1);
        for ids in tok.wordpieces(&TEXTS).unwrap() {
            assert!(!ids.contains(&unk), "{ids:?}");
        }
        // Lower-cased and accents stripped, as the tokenizer normalises.
        assert!(tokens.iter().any(|t| t == "paris"));
        assert!(!tokens.iter().any(|t| t.contains('É') || t.contains('é')));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_sizes_and_empty_input_are_errors() {
        assert!(train_wordpiece(TEXTS.into_iter(), &spec(5)).is_err());
        // Fewer tokens than the characters need: refused, not silently exceeded.
        let msg = train_wordpiece(TEXTS.into_iter(), &spec(10))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("--size 10") && msg.contains("or more"),
            "{msg}"
        );
        assert!(train_wordpiece(std::iter::empty(), &spec(100)).is_err());
    }
}
