//! Question answering data: NQ-open style JSONL (`{"question","answers":[...]}`) and SQuAD JSON,
//! and the SQuAD evaluation's answer normalisation and exact match.

use super::squad;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// One gold answer; `char_start` is its offset in `context` (SQuAD) when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The answer text, trimmed.
    pub text: String,
    /// Offset of the answer in `context`, in characters (not bytes); `None` when there is no
    /// context (NQ-open style).
    pub char_start: Option<usize>,
}

/// A question with its gold answers, and the paragraph it was asked about (SQuAD only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaExample {
    /// The question's id: the file's `id`, else (JSONL without one) its line number.
    pub id: String,
    /// The question text.
    pub question: String,
    /// The gold answers (at least one).
    pub answers: Vec<Answer>,
    /// The SQuAD paragraph; `None` for NQ-open style questions.
    pub context: Option<String>,
}

/// Reads `.jsonl` (NQ-open style) or `.json` (SQuAD) by extension.
/// Text that is not UTF-8 is an error naming its line; a byte-order mark is accepted.
pub fn read_qa(path: impl AsRef<Path>) -> Result<Vec<QaExample>> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => read_jsonl(path),
        Some("json") => parse_squad(path, &crate::lines::read_text(path)?),
        _ => Err(Error::file(
            path,
            "unknown QA format: use .jsonl ({\"question\",\"answers\"} per line) or SQuAD .json",
        )),
    }
}

#[derive(Deserialize)]
struct JsonlQa {
    question: String,
    answers: Vec<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn read_jsonl(path: &Path) -> Result<Vec<QaExample>> {
    let mut out = Vec::new();
    let mut lines = crate::lines::Lines::open(path)?;
    while let Some((number, line)) = lines.next() {
        let line = line.map_err(|e| lines.error(number, &e))?;
        if line.trim().is_empty() {
            continue;
        }
        let parse_err = |msg: String| Error::Parse {
            path: path.to_path_buf(),
            line: number,
            msg,
        };
        let q: JsonlQa = serde_json::from_str(&line).map_err(|e| {
            parse_err(format!(
                "not a {{\"question\",\"answers\":[...]}} object: {e}"
            ))
        })?;
        if q.question.trim().is_empty() || q.answers.is_empty() {
            return Err(parse_err("empty question or no answers".into()));
        }
        out.push(QaExample {
            id: match q.id {
                Some(serde_json::Value::String(s)) => s,
                Some(v) => v.to_string(),
                None => format!("{number}"),
            },
            question: q.question,
            answers: q
                .answers
                .into_iter()
                .map(|text| Answer {
                    text,
                    char_start: None,
                })
                .collect(),
            context: None,
        });
    }
    Ok(out)
}

fn parse_squad(path: &Path, text: &str) -> Result<Vec<QaExample>> {
    let squad = squad::read(text).map_err(|e| Error::file(path, format!("not SQuAD JSON: {e}")))?;
    let mut out = Vec::new();
    for article in squad.data {
        for p in article.paragraphs {
            for qa in p.qas {
                let mut answers = Vec::with_capacity(qa.answers.len());
                for a in &qa.answers {
                    let start = locate_answer(&p.context, a.text.trim(), a.answer_start)
                        .ok_or_else(|| {
                            Error::file(
                                path,
                                format!(
                                    "question {}: answer {:?} does not occur in its paragraph",
                                    qa.id, a.text
                                ),
                            )
                        })?;
                    answers.push(Answer {
                        text: a.text.trim().to_string(),
                        char_start: Some(start),
                    });
                }
                out.push(QaExample {
                    id: qa.id,
                    question: qa.question,
                    answers,
                    context: Some(p.context.clone()),
                });
            }
        }
    }
    Ok(out)
}

/// The character offset of `text` in `context`: `hint` when the text is there, else the nearest
/// occurrence (a few published SQuAD-format files have offsets that are off by one, or answers with
/// a leading space), else `None`.
fn locate_answer(context: &str, text: &str, hint: usize) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    // Occurrences in order (overlapping ones too), as character offsets; the nearest to the hint
    // is the last one before it or the first one at or after it.
    let mut best: Option<usize> = None;
    let (mut from, mut chars_before) = (0, 0);
    while let Some(found) = context[from..].find(text) {
        let at = from + found;
        chars_before += context[from..at].chars().count();
        if best.is_none_or(|b| chars_before.abs_diff(hint) < b.abs_diff(hint)) {
            best = Some(chars_before);
        }
        if chars_before >= hint {
            break;
        }
        let step = context[at..].chars().next().map_or(1, char::len_utf8);
        from = at + step;
        chars_before += 1;
    }
    best
}

/// SQuAD's normalisation: lower case, ASCII punctuation removed, the articles a/an/the removed as
/// whole words (replaced by a space, as the official script's regex does), whitespace collapsed.
pub fn normalize_answer(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let mut out = String::with_capacity(lower.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lower.chars() {
        // Python's \w: Unicode alphanumerics and underscore.
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `prediction` matches any gold answer after normalisation.
pub fn exact_match(prediction: &str, golds: &[Answer]) -> bool {
    let p = normalize_answer(prediction);
    golds.iter().any(|g| normalize_answer(&g.text) == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_located_near_their_offsets() {
        assert_eq!(locate_answer("a cat, a cat", "cat", 8), Some(9));
        assert_eq!(locate_answer("a cat, a cat", "cat", 0), Some(2));
        assert_eq!(locate_answer("a cat", "dog", 0), None);
        assert_eq!(locate_answer("ab", "abc", 0), None);
    }

    #[test]
    fn normalisation_follows_the_squad_script() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize_answer("an apple, a pear"), "apple pear");
        assert_eq!(normalize_answer("theatre"), "theatre");
        assert_eq!(normalize_answer("the—end"), "—end");
        assert_eq!(normalize_answer("U.S.A."), "usa");
        let golds = [Answer {
            text: "Paris".into(),
            char_start: None,
        }];
        assert!(exact_match("the paris.", &golds));
        assert!(!exact_match("paris france", &golds));
    }
}
