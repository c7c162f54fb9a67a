//! The SQuAD JSON file format (`{"data":[{"title","paragraphs":[{"context","qas":[...]}]}]}`), shared
//! by the QA reader (its questions) and the corpus reader (its paragraphs).

use serde::Deserialize;

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

/// Parses a SQuAD file's text; the caller names the file in its error, with what else the file
/// might have been.
pub(super) fn read(text: &str) -> serde_json::Result<Squad> {
    serde_json::from_str(text)
}
