//! `realm ask`: open-domain QA with a fine-tuned checkpoint (retriever + reader + the index it
//! was fine-tuned with): retrieve the top blocks, read them, return the best span with its
//! evidence.

use crate::error::{Error, Result};
use crate::index::search::Searcher;
use crate::model::reader::span_text;
use crate::model::realm_inputs::joined_inputs;
use crate::model::{Mode, Reader};
use crate::train::models::READER;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A retrieved block shown as evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub title: String,
    pub doc_id: String,
    /// p(z | x): softmax of the retrieval scores over the blocks read.
    pub p: f64,
    /// The sentence of the block holding the answer span (the block's first sentence for the
    /// others).
    pub sentence: String,
}

/// The answer to one question.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub question: String,
    pub answer: String,
    /// Reader span score plus retrieval score of its block.
    pub score: f32,
    /// Which of `evidence` holds the answer.
    pub from: usize,
    pub evidence: Vec<Evidence>,
}

/// A fine-tuned checkpoint ready to answer.
pub struct Asker {
    searcher: Searcher,
    reader: Reader,
    /// Blocks read per question: between 1 and the blocks of the index ([`Searcher::search`]'s
    /// rule for k).
    pub beam: usize,
    /// Longest `[CLS] question [SEP] body [SEP]` row.
    pub max_len: usize,
}

/// The checkpoint folder of a run: `RUN/checkpoint` of a stage directory, or
/// `RUN/finetune/checkpoint` of a demo run; it must hold a reader.
pub fn find_checkpoint(run: &Path) -> Result<PathBuf> {
    if !run.is_dir() {
        return Err(Error::file(run, "no such run directory"));
    }
    // A demo's last stage (cloze) keeps the fine-tuned reader beside its own encoder.
    ["checkpoint", "cloze/checkpoint", "finetune/checkpoint"]
        .into_iter()
        .map(|c| run.join(c))
        .find(|c| c.join(READER).is_dir())
        .ok_or_else(|| {
            Error::file(
                run,
                "holds no fine-tuned checkpoint (checkpoint/, cloze/checkpoint/ or \
                 finetune/checkpoint/ with reader/); run `realm finetune` or `realm demo` first",
            )
        })
}

impl Asker {
    /// Loads the checkpoint's retriever, reader and `index/`, or `index` instead (an index built
    /// by the checkpoint's document tower, e.g. after a knowledge update).
    pub fn load(checkpoint: &Path, index: Option<&Path>, device: &Device) -> Result<Self> {
        let searcher = match index {
            Some(dir) => Searcher::open(dir, Some(checkpoint), device)?,
            None => Searcher::open_checkpoint(checkpoint, device)?,
        };
        let reader = Reader::load(checkpoint.join(READER), device)?;
        let max_len = reader.bert().config().max_position_embeddings.min(256);
        let beam = crate::index::search::DEFAULT_K.min(searcher.len());
        Ok(Asker {
            searcher,
            reader,
            beam,
            max_len,
        })
    }

    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    /// Retrieves, reads and answers one question.
    pub fn ask(&self, question: &str) -> Result<Answer> {
        let question = question.trim();
        let hits = self.searcher.search(&[question], self.beam)?.remove(0);
        let tok = &self.searcher.model.tokenizer;
        let q = tok
            .wordpieces_prefix(&[question], self.max_len / 2)?
            .remove(0);
        let blocks = hits
            .iter()
            .map(|h| self.searcher.block(h))
            .collect::<Result<Vec<_>>>()?;
        let bodies: Vec<Option<&[u32]>> =
            blocks.iter().map(|b| Some(b.tokens.as_slice())).collect();
        let device = self.reader.device();
        let (input, offsets) = joined_inputs(tok, &[q.as_slice()], &bodies, self.max_len, device)?;
        let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        let relevance = Tensor::new(scores.as_slice(), device)?;
        let spans = self
            .reader
            .span_logits(&input, &offsets, Mode::Eval)?
            .plus_relevance(&relevance)?;
        let best = spans.best()?;
        let body = &blocks[best.row].tokens;
        let answer = span_text(tok, best.wordpieces(body)?)?;

        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = scores.iter().map(|&s| f64::from(s - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        let evidence = blocks
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(row, (b, w))| {
                let at = if row == best.row { best.start } else { 0 };
                let sentence = b
                    .sentences
                    .iter()
                    .find(|s| s.contains(&at))
                    .cloned()
                    .unwrap_or(0..b.tokens.len());
                Ok(Evidence {
                    title: b.title.clone(),
                    doc_id: b.doc_id.clone(),
                    p: w / total,
                    sentence: span_text(tok, &b.tokens[sentence])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Answer {
            question: question.to_string(),
            answer,
            score: best.score,
            from: best.row,
            evidence,
        })
    }
}
