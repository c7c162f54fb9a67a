//! Salient spans for REALM's salient-span masking: named entities and dates, found by a tagger
//! behind a trait. The default is a rule-based tagger: dates (years, full dates, months with years,
//! decades), capitalised spans not at a sentence start (multi-word names, and single proper nouns
//! inside a sentence), numbers with units, and a gazetteer (for example the corpus titles). A learned tagger (a BERT token classifier) can be
//! plugged in through the same trait.

use crate::error::{Error, Result};
use regex::Regex;
use std::collections::HashSet;
use std::path::Path;

/// What kind of salient span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// A year, full date, month with year, decade or century.
    Date,
    /// A name: capitalised words or a gazetteer entry.
    Entity,
    /// A number with a unit, e.g. `12 km`, `40%` or `$5 million`.
    Quantity,
}

/// A salient span: byte offsets `[start, end)` into the tagged text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte of the span.
    pub start: usize,
    /// One past the last byte of the span.
    pub end: usize,
    /// What the span is.
    pub kind: SpanKind,
}

/// Finds salient spans in a text. Spans are sorted by start and do not overlap.
pub trait SalientTagger: Send + Sync {
    /// The salient spans of `text`, sorted by start, not overlapping.
    fn tag(&self, text: &str) -> Vec<Span>;
}

/// `[start, end)` byte ranges of the sentences of `text`: a sentence ends at `.`, `!` or `?`
/// followed by whitespace and an upper-case letter, digit or quote, unless the word before the
/// period is a common abbreviation or a single capital (an initial, as in "J. R. R. Tolkien").
pub fn sentences(text: &str) -> Vec<(usize, usize)> {
    const ABBREVIATIONS: [&str; 12] = [
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "e.g", "i.e", "etc", "no",
    ];
    let mut out = Vec::new();
    let mut start = 0;
    // Byte offsets, no per-character table: a document may be tens of megabytes.
    for (pos, c) in text.char_indices() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let end = pos + c.len_utf8();
        let next_ws = text[end..].chars().next().is_some_and(char::is_whitespace);
        if !next_ws {
            continue;
        }
        let after = text[end..].char_indices().find(|(_, n)| !n.is_whitespace());
        let starts_sentence =
            after.is_some_and(|(_, n)| n.is_uppercase() || n.is_ascii_digit() || n == '"');
        if !starts_sentence {
            continue;
        }
        if c == '.' {
            let word = text[start..pos]
                .rsplit(|ch: char| ch.is_whitespace())
                .next()
                .unwrap_or("");
            // Lower-casing never makes fewer characters, and no abbreviation has more than three
            // (so a long word is not lower-cased for nothing).
            let abbreviation = word.chars().nth(3).is_none() && {
                let single_initial =
                    word.chars().count() == 1 && word.chars().all(char::is_uppercase);
                single_initial || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
            };
            if abbreviation {
                continue;
            }
        }
        out.push((start, end));
        start = after.map_or(text.len(), |(p, _)| end + p);
    }
    if text[start..].trim().is_empty() {
        if out.is_empty() && !text.trim().is_empty() {
            out.push((0, text.len()));
        }
    } else {
        out.push((start, text.len()));
    }
    out
}

const MONTHS: &str = "January|February|March|April|May|June|July|August|September|October|November|December|Jan\\.|Feb\\.|Mar\\.|Apr\\.|Jun\\.|Jul\\.|Aug\\.|Sep\\.|Sept\\.|Oct\\.|Nov\\.|Dec\\.";

/// Words that may join the capitalised words of one name ("University of Cambridge").
const CONNECTORS: [&str; 9] = ["of", "the", "de", "von", "van", "der", "la", "del", "and"];

/// The default tagger: regular expressions for dates and quantities, capitalisation for names,
/// and an optional gazetteer of known names matched as whole words.
pub struct RuleTagger {
    date: Regex,
    quantity: Regex,
    word: Regex,
    gazetteer: HashSet<String>,
    longest_entry_words: usize,
}

impl Default for RuleTagger {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleTagger {
    /// The tagger with an empty gazetteer.
    pub fn new() -> Self {
        let date = format!(
            r"\b(?:(?:\d{{1,2}}\s+(?:{MONTHS})\s+\d{{3,4}})|(?:(?:{MONTHS})\s+\d{{1,2}},\s+\d{{3,4}})|(?:(?:{MONTHS})\s+\d{{3,4}})|(?:\d{{4}}-\d{{2}}-\d{{2}})|(?:\d{{3}}0s)|(?:\d{{1,2}}(?:st|nd|rd|th)\s+century)|(?:\d{{3,4}}\s+(?:BC|BCE|AD|CE))|(?:1[0-9]{{3}}|20[0-9]{{2}}))\b"
        );
        RuleTagger {
            date: Regex::new(&date).expect("date pattern"),
            quantity: Regex::new(
                r"(?:\$|€|£)?\b\d+(?:[.,]\d+)*(?:\s*(?:%|percent|km|kilometres|kilometers|miles|mi|m|metres|meters|cm|mm|kg|g|tonnes|tons|lb|pounds|°C|°F|degrees|million|billion|trillion|thousand|hectares|acres|years|people|inhabitants|megaparsecs|parsecs|light-years|species|languages)\b|%)",
            )
            .expect("quantity pattern"),
            word: Regex::new(r"[\p{L}\p{N}](?:[\p{L}\p{N}'’\-]|\.[\p{L}\p{N}])*").expect("word pattern"),
            gazetteer: HashSet::new(),
            longest_entry_words: 0,
        }
    }

    /// Adds names to match as whole words (case-sensitive), e.g. the titles of the corpus.
    pub fn with_gazetteer<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, names: I) -> Self {
        for name in names {
            let words: Vec<&str> = name.as_ref().split_whitespace().collect();
            // Single lower-case words and numbers would mask ordinary vocabulary.
            let informative = words.len() > 1
                || words
                    .first()
                    .is_some_and(|w| w.chars().next().is_some_and(char::is_uppercase));
            if informative {
                self.longest_entry_words = self.longest_entry_words.max(words.len());
                self.gazetteer.insert(words.join(" "));
            }
        }
        self
    }

    /// Adds a gazetteer from a file with one name per line.
    pub fn with_gazetteer_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Ok(self.with_gazetteer(text.lines().map(str::trim).filter(|l| !l.is_empty())))
    }

    fn entities(&self, text: &str, sentence_start: usize, spans: &mut Vec<Span>) {
        let words: Vec<(usize, usize)> = self
            .word
            .find_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        let capitalised = |w: &(usize, usize)| {
            text[w.0..w.1]
                .chars()
                .next()
                .is_some_and(char::is_uppercase)
        };
        let mut i = 0;
        while i < words.len() {
            // Gazetteer first: the longest known name starting here.
            let gaz = (1..=self.longest_entry_words.min(words.len() - i))
                .rev()
                .find(|&n| {
                    let candidate: Vec<&str> =
                        words[i..i + n].iter().map(|w| &text[w.0..w.1]).collect();
                    self.gazetteer.contains(&candidate.join(" "))
                });
            if let Some(n) = gaz {
                spans.push(Span {
                    start: sentence_start + words[i].0,
                    end: sentence_start + words[i + n - 1].1,
                    kind: SpanKind::Entity,
                });
                i += n;
                continue;
            }
            if !capitalised(&words[i]) {
                i += 1;
                continue;
            }
            // A run of capitalised words, allowing connectors between them.
            let mut j = i + 1;
            let mut last = i;
            while j < words.len() {
                let w = &text[words[j].0..words[j].1];
                if capitalised(&words[j]) {
                    last = j;
                } else if !CONNECTORS.contains(&w) {
                    break;
                }
                j += 1;
            }
            // At a sentence start capitalisation says nothing: drop that word (and any
            // connector after it); what remains must still be several words. Elsewhere a single
            // capitalised word is a proper noun ("France"), except the pronoun "I".
            let mut first = i;
            if i == 0 {
                first += 1;
                while first < last && !capitalised(&words[first]) {
                    first += 1;
                }
            }
            let single_name = i > 0 && last == i && &text[words[i].0..words[i].1] != "I";
            if last > first || single_name {
                spans.push(Span {
                    start: sentence_start + words[first].0,
                    end: sentence_start + words[last].1,
                    kind: SpanKind::Entity,
                });
            }
            i = last + 1;
        }
    }
}

impl SalientTagger for RuleTagger {
    fn tag(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        for m in self.date.find_iter(text) {
            spans.push(Span {
                start: m.start(),
                end: m.end(),
                kind: SpanKind::Date,
            });
        }
        for m in self.quantity.find_iter(text) {
            spans.push(Span {
                start: m.start(),
                end: m.end(),
                kind: SpanKind::Quantity,
            });
        }
        for (s, e) in sentences(text) {
            self.entities(&text[s..e], s, &mut spans);
        }
        remove_overlaps(spans)
    }
}

/// Keeps the earliest-starting, then longest, of overlapping spans.
fn remove_overlaps(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        if out.last().is_none_or(|last| s.start >= last.end) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, tagger: &RuleTagger) -> Vec<(String, SpanKind)> {
        tagger
            .tag(text)
            .into_iter()
            .map(|s| (text[s.start..s.end].to_string(), s.kind))
            .collect()
    }

    #[test]
    fn dates_quantities_and_names() {
        let t = RuleTagger::new();
        let found = texts(
            "Mozart was born on 27 January 1756 in Salzburg. He moved to Vienna in the 1780s and wrote for the Holy Roman Emperor. The city had 200,000 people and covers 414 km.",
            &t,
        );
        assert!(
            found.contains(&("27 January 1756".into(), SpanKind::Date)),
            "{found:?}"
        );
        assert!(
            found.contains(&("1780s".into(), SpanKind::Date)),
            "{found:?}"
        );
        assert!(
            found.contains(&("Holy Roman Emperor".into(), SpanKind::Entity)),
            "{found:?}"
        );
        assert!(
            found.contains(&("200,000 people".into(), SpanKind::Quantity)),
            "{found:?}"
        );
        assert!(
            found.contains(&("414 km".into(), SpanKind::Quantity)),
            "{found:?}"
        );
        // "Mozart" and "He" start sentences; single capitalised words are not spans by themselves.
        assert!(
            !found.iter().any(|(s, _)| s == "Mozart" || s == "He"),
            "{found:?}"
        );
    }

    #[test]
    fn gazetteer_names_are_found_anywhere() {
        let t = RuleTagger::new().with_gazetteer([
            "Salzburg",
            "Vienna",
            "the",
            "Wolfgang Amadeus Mozart",
        ]);
        let found = texts("Wolfgang Amadeus Mozart left Salzburg for Vienna.", &t);
        assert_eq!(
            found,
            vec![
                ("Wolfgang Amadeus Mozart".to_string(), SpanKind::Entity),
                ("Salzburg".to_string(), SpanKind::Entity),
                ("Vienna".to_string(), SpanKind::Entity)
            ]
        );
    }

    #[test]
    fn sentences_do_not_split_at_initials_or_abbreviations() {
        let text = "J. R. R. Tolkien met Dr. Smith. They talked! Then left";
        let s: Vec<&str> = sentences(text)
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect();
        assert_eq!(
            s,
            [
                "J. R. R. Tolkien met Dr. Smith.",
                "They talked!",
                "Then left"
            ]
        );
    }
}
