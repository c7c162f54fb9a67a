//! The SQuAD JSON file format (`{"data":[{"title","paragraphs":[{"context","qas":[...]}]}]}`), shared
//! by the QA reader (its questions) and the corpus reader (its paragraphs).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
pub(super) struct Squad {
    pub(super) data: Vec<SquadArticle>,
}
#[derive(Deserialize)]
pub(super) struct SquadArticle {
    #[serde(default)]
    pub(super) title: String,
    pub(super) paragraphs: Vec<SquadParagraph>,
}
#[derive(Deserialize)]
pub(super) struct SquadParagraph {
    pub(super) context: String,
    pub(super) qas: Vec<SquadQa>,
}
#[derive(Deserialize)]
pub(super) struct SquadQa {
    pub(super) id: String,
    pub(super) question: String,
    pub(super) answers: Vec<SquadAnswer>,
}
#[derive(Deserialize)]
pub(super) struct SquadAnswer {
    pub(super) text: String,
    pub(super) answer_start: usize,
}

/// Parses a SQuAD file's text; an error names `path`.
pub(super) fn read(path: &Path, text: &str) -> Result<Squad> {
    serde_json::from_str(text).map_err(|e| Error::file(path, format!("not SQuAD JSON: {e}")))
}
