//! Streaming corpus readers: JSONL `{"id","title","text"}` and DPR's TSV (`id\ttext\ttitle`, as in
//! psgs_w100.tsv, header optional, CSV-style quoting). Documents are read one line at a time, so a
//! 21M-passage file is never loaded whole. A malformed line (not UTF-8 included) is an error
//! naming the file and line, or, with `skip_bad_lines`, skipped and counted. A UTF-8 byte-order
//! mark is accepted. The paragraphs of a SQuAD JSON file are a corpus too (read whole, as
//! SQuAD files are small; a paragraph's id is `a:p`, the article's and its 0-based positions).

use crate::error::{Error, Result};
use crate::lines::{LineError, Lines};
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One corpus document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The corpus id (a JSON integer id as its decimal string).
    pub id: String,
    /// The title; empty when the JSONL record has none.
    pub title: String,
    /// The body text.
    pub text: String,
}

/// The on-disk layout of a corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorpusFormat {
    /// JSON lines, one `{"id","title","text"}` object per line.
    Jsonl,
    /// DPR's TSV: `id\ttext\ttitle`, header optional, CSV-style quoting.
    Tsv,
    /// SQuAD JSON: each paragraph a document.
    Squad,
}

impl CorpusFormat {
    /// From the file extension: `.tsv` is DPR's TSV, `.jsonl` JSON lines; `.json` is JSON lines
    /// when its first line is a JSON object without a `data` member, else SQuAD JSON (whose
    /// object has `data`, and whose first line is no whole object when it is pretty-printed).
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("tsv") => Ok(CorpusFormat::Tsv),
            Some("jsonl") => Ok(CorpusFormat::Jsonl),
            Some("json") => Self::sniff_json(path),
            _ => Err(Error::file(
                path,
                "unknown corpus format: use a .jsonl ({\"id\",\"title\",\"text\"} per line), .tsv (id, text, title) or SQuAD .json file",
            )),
        }
    }

    fn sniff_json(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::file(path, e))?;
        let mut first = Vec::new();
        BufReader::new(file)
            .read_until(b'\n', &mut first)
            .map_err(|e| Error::file(path, e))?;
        let line = String::from_utf8_lossy(&first);
        let line = line.trim_start_matches('\u{feff}');
        Ok(match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) if !o.contains_key("data") => CorpusFormat::Jsonl,
            _ => CorpusFormat::Squad,
        })
    }
}

/// Iterates over the documents of a corpus file.
pub struct CorpusReader {
    path: PathBuf,
    source: Source,
    line: usize,
    skip_bad_lines: bool,
    skipped: usize,
}

/// Where the documents come from: lines read as they are needed (`tsv`: DPR's TSV, else JSON
/// lines), or a file read whole.
enum Source {
    Lines {
        lines: Lines<BufReader<File>>,
        tsv: bool,
    },
    Whole {
        docs: std::vec::IntoIter<Document>,
        bytes: u64,
    },
}

impl CorpusReader {
    /// Opens the corpus at `path`, its format taken from the extension (see
    /// [`CorpusFormat::from_path`]). With `skip_bad_lines`, malformed lines are skipped and
    /// counted instead of ending the read with an error.
    pub fn open(path: impl AsRef<Path>, skip_bad_lines: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let format = CorpusFormat::from_path(&path)?;
        let source = match format {
            CorpusFormat::Squad => {
                let text = crate::lines::read_text(&path)?;
                Source::Whole {
                    bytes: text.len() as u64,
                    docs: squad_paragraphs(&path, &text)?.into_iter(),
                }
            }
            CorpusFormat::Jsonl | CorpusFormat::Tsv => Source::Lines {
                lines: Lines::open(&path)?,
                tsv: format == CorpusFormat::Tsv,
            },
        };
        Ok(CorpusReader {
            source,
            path,
            line: 0,
            skip_bad_lines,
            skipped: 0,
        })
    }

    /// Lines skipped so far as malformed (only with `skip_bad_lines`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.source {
            Source::Lines { lines, .. } => lines.bytes_read(),
            Source::Whole { bytes, .. } => *bytes,
        }
    }
}

/// One line of JSON lines or (`tsv`) DPR's TSV; None for TSV's header.
fn parse_line(tsv: bool, line: usize, text: &str) -> std::result::Result<Option<Document>, String> {
    if !tsv {
        return parse_jsonl(text).map(Some);
    }
    // DPR's files start with an `id\ttext\ttitle` header; others have none.
    if line == 1 && text.trim_end() == "id\ttext\ttitle" {
        return Ok(None);
    }
    parse_tsv(text).map(Some)
}

impl Iterator for CorpusReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        let (lines, tsv) = match &mut self.source {
            Source::Lines { lines, tsv } => (lines, *tsv),
            Source::Whole { docs, .. } => return docs.next().map(Ok),
        };
        loop {
            let (line, text) = lines.next()?;
            self.line = line;
            let text = match text {
                Ok(t) => t,
                Err(e @ LineError::Io(_)) => return Some(Err(lines.error(line, &e))),
                Err(_) if self.skip_bad_lines => {
                    self.skipped += 1;
                    continue;
                }
                Err(e) => return Some(Err(lines.error(line, &e))),
            };
            if text.trim().is_empty() {
                continue;
            }
            match parse_line(tsv, line, &text) {
                Ok(Some(doc)) => return Some(Ok(doc)),
                Ok(None) => continue,
                Err(_) if self.skip_bad_lines => self.skipped += 1,
                Err(msg) => {
                    return Some(Err(Error::Parse {
                        path: self.path.clone(),
                        line: self.line,
                        msg,
                    }))
                }
            }
        }
    }
}

/// An id may be a JSON string or integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonId {
    Str(String),
    Int(u64),
}

#[derive(Deserialize)]
struct JsonDoc {
    id: JsonId,
    #[serde(default)]
    title: String,
    text: String,
}

fn parse_jsonl(line: &str) -> std::result::Result<Document, String> {
    let doc: JsonDoc = serde_json::from_str(line)
        .map_err(|e| format!("not a {{\"id\",\"title\",\"text\"}} object: {e}"))?;
    Ok(Document {
        id: match doc.id {
            JsonId::Str(s) => s,
            JsonId::Int(i) => i.to_string(),
        },
        title: doc.title,
        text: doc.text,
    })
}

fn parse_tsv(line: &str) -> std::result::Result<Document, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [id, text, title] = fields[..] else {
        return Err(format!(
            "expected 3 tab-separated fields (id, text, title), found {}",
            fields.len()
        ));
    };
    if id.trim().is_empty() {
        return Err("empty id".into());
    }
    Ok(Document {
        id: id.trim().to_string(),
        text: unquote(text)?,
        title: unquote(title)?,
    })
}

/// CSV-style quoting as DPR writes it: `"..."` with `""` for a quote inside.
fn unquote(field: &str) -> std::result::Result<String, String> {
    match field.strip_prefix('"') {
        None => Ok(field.to_string()),
        Some(rest) => rest
            .strip_suffix('"')
            .map(|inner| inner.replace("\"\"", "\""))
            .ok_or_else(|| format!("unterminated quoted field: {field:.40}")),
    }
}

/// The paragraphs of a SQuAD file as corpus documents, in file order: id `a:p` (the article's
/// and the paragraph's 0-based positions), the article's title with `_` as spaces (SQuAD keeps
/// Wikipedia's URL form), the paragraph as the text.
fn squad_paragraphs(path: &Path, text: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    let squad = super::squad::read(text).map_err(|e| {
        Error::file(
            path,
            format!(
                "neither JSON lines (line 1 is no {{\"id\",\"title\",\"text\"}} object) nor \
                 SQuAD JSON: {e}"
            ),
        )
    })?;
    for (a, article) in squad.data.into_iter().enumerate() {
        let title = article.title.replace('_', " ");
        for (p, paragraph) in article.paragraphs.into_iter().enumerate() {
            docs.push(Document {
                id: format!("{a}:{p}"),
                title: title.clone(),
                text: paragraph.context,
            });
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_fields_are_unquoted() {
        let d = parse_tsv("7\t\"Aaron ( or ; \"\"Ahärôn\"\") is\"\tAaron").unwrap();
        assert_eq!(d.text, "Aaron ( or ; \"Ahärôn\") is");
        assert_eq!((d.id.as_str(), d.title.as_str()), ("7", "Aaron"));
        assert!(parse_tsv("1\ttext")
            .unwrap_err()
            .contains("3 tab-separated"));
        assert!(parse_tsv("1\t\"open\tt")
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn jsonl_ids_may_be_numbers_or_strings() {
        assert_eq!(
            parse_jsonl(r#"{"id": 3, "title": "T", "text": "x"}"#)
                .unwrap()
                .id,
            "3"
        );
        assert_eq!(
            parse_jsonl(r#"{"id": "a", "text": "x"}"#).unwrap().title,
            ""
        );
        assert!(parse_jsonl(r#"{"id": 3}"#).is_err());
    }
}
