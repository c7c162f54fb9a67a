//! `metrics.jsonl`, as training writes it: one JSON object per line, `stage`, `step` and `time_s`
//! always, the metrics when the stage measured them; unknown fields are ignored.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One line of `metrics.jsonl`: the one schema, written by training
/// ([`crate::train::Metric`], whose stage is a [`crate::train::Stage`]) and read here (the stage
/// as text: `ict`, `pretrain`, `finetune`, `cloze`, `eval`, other names kept as they are).
/// Absent fields were not measured at that step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record<S = String> {
    /// The training stage that wrote the line (text when read back, e.g. `pretrain`).
    pub stage: S,
    /// Optimizer steps of the stage done when the line was written (eval: the checkpoint's step).
    pub step: u64,
    /// Seconds since the stage started (across resumes: the time of the resumed process is
    /// added to what the checkpoint had recorded).
    pub time_s: f64,
    /// Training loss in nats, the mean over the steps since the previous line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Learning rate of this step's update (after warm-up and decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Retrieval utility in nats, log p(y|z,x) − log p(y|∅,x) for the top block, averaged
    /// (positive when retrieval helps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_utility: Option<f64>,
    /// Steps since the weights the index in use was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness: Option<u64>,
    /// Seconds the index refresh that was swapped in at this step took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<f64>,
    /// Fraction (0..=1) of questions with an answer in the top retrieved block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_at_1: Option<f64>,
    /// Fraction (0..=1) of questions with an answer in one of the top 5 blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_at_5: Option<f64>,
    /// Retrieval recall@1 of held-out *questions* (`realm eval`; `realm demo` after every
    /// stage), where `recall_at_*` is ICT's held-out recall of pseudo-queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_recall_at_1: Option<f64>,
    /// The same at 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_recall_at_5: Option<f64>,
    /// Exact match (0..=1, SQuAD normalisation): the reader's, else the cloze answer with
    /// retrieval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub em: Option<f64>,
    /// Training throughput in tokens per second since the previous line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Pre-training: entropy in nats of the retrieval distribution over the k candidates (the
    /// null document included), per example (ln k: the retriever does not tell them apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_entropy: Option<f64>,
    /// Pre-training: the null document's retrieval probability p(∅|x), per example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_prior: Option<f64>,
    /// Pre-training: the null document's posterior p(∅|x, y) given the masked token, per masked
    /// token (near 1: the retrieved blocks do not explain the answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_posterior: Option<f64>,
    /// Pre-training: L2 norm of the query tower's gradients before clipping, at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_query: Option<f64>,
    /// Pre-training: the same for the document tower (the query tower's when they are shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_doc: Option<f64>,
    /// Pre-training: the same for the knowledge-augmented encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_encoder: Option<f64>,
}

/// A metric field of [`Record`] by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`Record::loss`].
    Loss,
    /// [`Record::lr`].
    Lr,
    /// [`Record::retrieval_utility`].
    RetrievalUtility,
    /// [`Record::staleness`].
    Staleness,
    /// [`Record::refresh_s`].
    RefreshS,
    /// [`Record::recall_at_1`].
    RecallAt1,
    /// [`Record::recall_at_5`].
    RecallAt5,
    /// [`Record::question_recall_at_1`].
    QuestionRecallAt1,
    /// [`Record::question_recall_at_5`].
    QuestionRecallAt5,
    /// [`Record::em`].
    Em,
    /// [`Record::tokens_per_s`].
    TokensPerS,
    /// [`Record::retrieval_entropy`].
    RetrievalEntropy,
    /// [`Record::null_prior`].
    NullPrior,
    /// [`Record::null_posterior`].
    NullPosterior,
    /// [`Record::grad_norm_query`].
    GradNormQuery,
    /// [`Record::grad_norm_doc`].
    GradNormDoc,
    /// [`Record::grad_norm_encoder`].
    GradNormEncoder,
}

impl Field {
    /// Every field, in the order of the report's tables.
    pub const ALL: [Field; 17] = [
        Field::Loss,
        Field::Lr,
        Field::RetrievalUtility,
        Field::Staleness,
        Field::RefreshS,
        Field::RecallAt1,
        Field::RecallAt5,
        Field::QuestionRecallAt1,
        Field::QuestionRecallAt5,
        Field::Em,
        Field::TokensPerS,
        Field::RetrievalEntropy,
        Field::NullPrior,
        Field::NullPosterior,
        Field::GradNormQuery,
        Field::GradNormDoc,
        Field::GradNormEncoder,
    ];

    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            Field::Loss => "loss",
            Field::Lr => "lr",
            Field::RetrievalUtility => "retrieval_utility",
            Field::Staleness => "staleness",
            Field::RefreshS => "refresh_s",
            Field::RecallAt1 => "recall_at_1",
            Field::RecallAt5 => "recall_at_5",
            Field::QuestionRecallAt1 => "question_recall_at_1",
            Field::QuestionRecallAt5 => "question_recall_at_5",
            Field::Em => "em",
            Field::TokensPerS => "tokens_per_s",
            Field::RetrievalEntropy => "retrieval_entropy",
            Field::NullPrior => "null_prior",
            Field::NullPosterior => "null_posterior",
            Field::GradNormQuery => "grad_norm_query",
            Field::GradNormDoc => "grad_norm_doc",
            Field::GradNormEncoder => "grad_norm_encoder",
        }
    }

    /// A label for legends and tables.
    pub fn label(self) -> &'static str {
        match self {
            Field::Loss => "loss",
            Field::Lr => "learning rate",
            Field::RetrievalUtility => "retrieval utility",
            Field::Staleness => "staleness (steps)",
            Field::RefreshS => "refresh time (s)",
            Field::RecallAt1 => "recall@1",
            Field::RecallAt5 => "recall@5",
            Field::QuestionRecallAt1 => "questions' recall@1",
            Field::QuestionRecallAt5 => "questions' recall@5",
            Field::Em => "exact match",
            Field::TokensPerS => "tokens/s",
            Field::RetrievalEntropy => "retrieval entropy (nats)",
            Field::NullPrior => "null document prior",
            Field::NullPosterior => "null document posterior",
            Field::GradNormQuery => "query tower gradient norm",
            Field::GradNormDoc => "document tower gradient norm",
            Field::GradNormEncoder => "encoder gradient norm",
        }
    }

    /// This field's value in `r` (staleness as f64); None when the line did not measure it.
    pub fn get(self, r: &Record) -> Option<f64> {
        match self {
            Field::Loss => r.loss,
            Field::Lr => r.lr,
            Field::RetrievalUtility => r.retrieval_utility,
            Field::Staleness => r.staleness.map(|s| s as f64),
            Field::RefreshS => r.refresh_s,
            Field::RecallAt1 => r.recall_at_1,
            Field::RecallAt5 => r.recall_at_5,
            Field::QuestionRecallAt1 => r.question_recall_at_1,
            Field::QuestionRecallAt5 => r.question_recall_at_5,
            Field::Em => r.em,
            Field::TokensPerS => r.tokens_per_s,
            Field::RetrievalEntropy => r.retrieval_entropy,
            Field::NullPrior => r.null_prior,
            Field::NullPosterior => r.null_posterior,
            Field::GradNormQuery => r.grad_norm_query,
            Field::GradNormDoc => r.grad_norm_doc,
            Field::GradNormEncoder => r.grad_norm_encoder,
        }
    }
}

/// Reads every record of `path`; a missing file, a malformed line (with its number), a
/// non-finite time or an empty file is an error.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>> {
    let mut lines = crate::lines::Lines::open(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot read the metrics ({e}); is this a run directory?"),
        )
    })?;
    let mut records = Vec::new();
    while let Some((number, line)) = lines.next() {
        let line = line.map_err(|e| lines.error(number, &e))?;
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| Error::Parse {
            path: path.to_path_buf(),
            line: number,
            msg,
        };
        let r: Record = serde_json::from_str(&line).map_err(|e| {
            err(format!(
                "not a metrics record ({{\"stage\",\"step\",\"time_s\",...}}): {e}"
            ))
        })?;
        if r.stage.trim().is_empty() {
            return Err(err("empty stage".into()));
        }
        if !(r.time_s.is_finite() && r.time_s >= 0.0) {
            return Err(err(format!(
                "time_s must be a non-negative number, got {}",
                r.time_s
            )));
        }
        records.push(r);
    }
    if records.is_empty() {
        return Err(Error::file(path, "no metrics records"));
    }
    Ok(records)
}

/// Stage names in the order they first appear.
pub fn stages(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.stage) {
            out.push(r.stage.clone());
        }
    }
    out
}

/// What to add to each stage's steps to put all stages on one step axis: stages run one after
/// another, so a stage whose first step is below the last step so far (its count started again)
/// is shifted to begin where the previous stages ended; stages that count on keep their steps.
pub fn stage_offsets(records: &[Record]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut end = 0u64;
    for stage in stages(records) {
        let steps = records.iter().filter(|r| r.stage == stage).map(|r| r.step);
        let (first, last) = steps.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let offset = if out.is_empty() || first >= end {
            0
        } else {
            end - first
        };
        end = end.max(offset.saturating_add(last));
        out.push((stage, offset));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stage: &str, step: u64) -> Record {
        Record {
            stage: stage.into(),
            step,
            ..Record::default()
        }
    }

    #[test]
    fn restarting_stages_follow_each_other_and_counting_ones_keep_their_steps() {
        let restart = [
            rec("ict", 0),
            rec("ict", 100),
            rec("pretrain", 0),
            rec("pretrain", 50),
            rec("eval", 50),
        ];
        assert_eq!(
            stage_offsets(&restart),
            [
                ("ict".to_string(), 0),
                ("pretrain".to_string(), 100),
                ("eval".to_string(), 100)
            ]
        );
        let global = [
            rec("ict", 0),
            rec("ict", 100),
            rec("pretrain", 101),
            rec("eval", 300),
        ];
        assert_eq!(
            stage_offsets(&global)
                .into_iter()
                .map(|(_, o)| o)
                .collect::<Vec<_>>(),
            [0, 0, 0]
        );
    }
}
