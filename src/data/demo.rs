//! The demo data set of `data/demo/` (see its README.md), compiled into the library so `realm demo`
//! needs no file beside the binary: 2,000 trimmed wiki-vital documents, the vital-facts cloze
//! questions they answer split by document into train and dev, and a WordPiece vocabulary.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `docs.jsonl`: `{"id","title","text"}` per line.
pub const DOCS: &str = include_str!("../../data/demo/docs.jsonl");
/// `train.jsonl`: NQ-open questions with `id`, `subject`, `relation`, `doc_id`.
pub const TRAIN: &str = include_str!("../../data/demo/train.jsonl");
/// `dev.jsonl`: held-out questions, about documents no train question is about.
pub const DEV: &str = include_str!("../../data/demo/dev.jsonl");
/// `vocab.txt`: uncased WordPiece, `[PAD] [UNK] [CLS] [SEP] [MASK]` at ids 0–4.
pub const VOCAB: &str = include_str!("../../data/demo/vocab.txt");

/// Where [`write_demo_files`] put each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoFiles {
    /// `docs.jsonl`, the corpus ([`DOCS`]).
    pub docs: PathBuf,
    /// `train.jsonl`, the train questions ([`TRAIN`]).
    pub train: PathBuf,
    /// `dev.jsonl`, the dev questions ([`DEV`]).
    pub dev: PathBuf,
    /// `vocab.txt`, the WordPiece vocabulary ([`VOCAB`]).
    pub vocab: PathBuf,
}

/// Writes the embedded files into `dir` (atomically; a file already there with the same bytes is
/// left alone) so the file-based readers can take them.
pub fn write_demo_files(dir: impl AsRef<Path>) -> Result<DemoFiles> {
    let dir = dir.as_ref();
    let put = |name: &str, contents: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|b| b == contents.as_bytes()) {
            return Ok(path);
        }
        crate::io::write_atomic(&path, |w| w.write_all(contents.as_bytes()))?;
        Ok(path)
    };
    Ok(DemoFiles {
        docs: put("docs.jsonl", DOCS)?,
        train: put("train.jsonl", TRAIN)?,
        dev: put("dev.jsonl", DEV)?,
        vocab: put("vocab.txt", VOCAB)?,
    })
}

/// One demo question with the fields [`read_qa`](super::read_qa) does not keep.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DemoQuestion {
    /// The question's id, e.g. `vital-facts:1`.
    pub id: String,
    /// The cloze question, e.g. "The genre of J. R. R. Tolkien is".
    pub question: String,
    /// The accepted answers (at least one).
    pub answers: Vec<String>,
    /// The entity the question is about (a document title).
    pub subject: String,
    /// The fact asked for, e.g. `genre`.
    pub relation: String,
    /// The id of the document holding the answer.
    pub doc_id: u64,
}

/// Parses demo questions (`TRAIN`, `DEV` or a file of that form); `origin` names the source in
/// errors, which carry the 1-based line.
pub fn parse_demo_questions(origin: &Path, text: &str) -> Result<Vec<DemoQuestion>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: DemoQuestion = serde_json::from_str(line).map_err(|e| Error::Parse {
            path: origin.to_path_buf(),
            line: i + 1,
            msg: format!(
                "not a {{\"id\",\"question\",\"answers\",\"subject\",\"relation\",\"doc_id\"}} object: {e}"
            ),
        })?;
        if q.question.trim().is_empty() || q.answers.is_empty() {
            return Err(Error::Parse {
                path: origin.to_path_buf(),
                line: i + 1,
                msg: "empty question or no answers".into(),
            });
        }
        out.push(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_embedded_files_once_and_parses_questions() {
        let dir = std::env::temp_dir().join(format!("realm-demo-files-{}", std::process::id()));
        let files = write_demo_files(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(&files.vocab).unwrap(), VOCAB);
        let again = write_demo_files(&dir).unwrap();
        assert_eq!(files, again);
        let dev = parse_demo_questions(Path::new("dev.jsonl"), DEV).unwrap();
        assert!(!dev.is_empty());
        let bad = parse_demo_questions(Path::new("x.jsonl"), "{\"question\":\"q\"}\n");
        let msg = bad.unwrap_err().to_string();
        assert!(msg.starts_with("x.jsonl:1:"), "{msg}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
