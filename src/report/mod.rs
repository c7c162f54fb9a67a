//! `realm report RUN_DIR`: plots of a training run's metrics (PNG, one per metric that has data,
//! each stage in its own colour on one step axis) and a short Markdown summary, both written into
//! `RUN_DIR/report/`.
//!
//! Reads `RUN_DIR/metrics.jsonl` (see [`metrics::Record`]), and `RUN_DIR/config.json` and
//! `RUN_DIR/summary.json` when present. A run whose stages have folders of their own
//! (`RUN_DIR/ict/metrics.jsonl`, `RUN_DIR/pretrain/...`) is read folder by folder, in stage order.

pub mod metrics;
pub mod plot;
mod summary;

use crate::error::{Error, Result};
use metrics::{read_metrics, stage_offsets, Field, Record};
use plot::{Line, Plot, PALETTE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One picture: which fields it shows and how.
struct PlotSpec {
    file: &'static str,
    title: &'static str,
    y_label: &'static str,
    /// The first is drawn solid, the others dashed.
    fields: &'static [Field],
    /// Legend in the lower right (for curves that rise), else the upper right.
    legend_low: bool,
}

const PLOTS: [PlotSpec; 9] = [
    PlotSpec {
        file: "loss.png",
        title: "Training loss",
        y_label: "loss",
        fields: &[Field::Loss],
        legend_low: false,
    },
    PlotSpec {
        file: "retrieval_utility.png",
        title: "Retrieval utility: log p(y|z,x) − log p(y|∅,x)",
        y_label: "retrieval utility (nats)",
        fields: &[Field::RetrievalUtility],
        legend_low: true,
    },
    PlotSpec {
        file: "staleness.png",
        title: "Index staleness",
        y_label: "steps since the index's weights",
        fields: &[Field::Staleness],
        legend_low: false,
    },
    PlotSpec {
        file: "refresh_time.png",
        title: "Index refresh time",
        y_label: "seconds",
        fields: &[Field::RefreshS],
        legend_low: false,
    },
    PlotSpec {
        file: "exact_match.png",
        title: "Exact match",
        y_label: "exact match",
        fields: &[Field::Em],
        legend_low: true,
    },
    PlotSpec {
        file: "recall.png",
        title: "ICT held-out recall (pseudo-query's block in the top k)",
        y_label: "recall",
        fields: &[Field::RecallAt5, Field::RecallAt1],
        legend_low: true,
    },
    PlotSpec {
        file: "question_recall.png",
        title: "Held-out questions: an answer-bearing block in the top k",
        y_label: "recall",
        fields: &[Field::QuestionRecallAt5, Field::QuestionRecallAt1],
        legend_low: true,
    },
    PlotSpec {
        file: "learning_rate.png",
        title: "Learning rate",
        y_label: "learning rate",
        fields: &[Field::Lr],
        legend_low: false,
    },
    PlotSpec {
        file: "throughput.png",
        title: "Throughput",
        y_label: "tokens/s",
        fields: &[Field::TokensPerS],
        legend_low: true,
    },
];

/// What [`write_report`] wrote.
#[derive(Clone, Debug)]
pub struct Report {
    /// `RUN_DIR/report/README.md`.
    pub readme: PathBuf,
    /// The PNGs, in the order of the summary.
    pub images: Vec<PathBuf>,
    /// Records (non-empty lines of `metrics.jsonl`) read, over every stage's file.
    pub records: usize,
}

/// Reads the run directory and writes `RUN_DIR/report/` (README.md and the PNGs).
pub fn write_report(run_dir: impl AsRef<Path>) -> Result<Report> {
    let run_dir = run_dir.as_ref();
    if !run_dir.is_dir() {
        return Err(Error::file(run_dir, "not a run directory"));
    }
    let (records, config) = read_run(run_dir)?;
    let summary = read_optional_json(&run_dir.join("summary.json"))?;
    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e))?;

    let mut images = Vec::new();
    let mut shown = Vec::new();
    for (spec, plot) in build_plots(&records) {
        let path = out.join(spec.file);
        plot::write_png(&plot, &path)?;
        images.push(path);
        shown.push((spec.file, spec.title));
    }
    let text = summary::markdown(&summary::Inputs {
        run_dir,
        records: &records,
        config: config.as_ref(),
        summary: summary.as_ref(),
        images: &shown,
    });
    let readme = out.join("README.md");
    crate::io::write_atomic(&readme, |w| w.write_all(text.as_bytes()))?;
    Ok(Report {
        readme,
        images,
        records: records.len(),
    })
}

/// The records and configuration of a run: `RUN_DIR/metrics.jsonl` and `config.json`, or, when
/// the stages ran in folders of their own (`RUN_DIR/ict/metrics.jsonl`, ...), every such folder's
/// records in stage order, and their configurations under the folders' names.
fn read_run(run_dir: &Path) -> Result<(Vec<Record>, Option<serde_json::Value>)> {
    let top = run_dir.join("metrics.jsonl");
    let top_config = read_optional_json(&run_dir.join("config.json"))?;
    if top.exists() {
        return Ok((read_metrics(&top)?, top_config));
    }
    let entries = std::fs::read_dir(run_dir).map_err(|e| Error::file(run_dir, e))?;
    let mut stages = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::file(run_dir, e))?.path();
        if path.join("metrics.jsonl").is_file() {
            let records = read_metrics(&path.join("metrics.jsonl"))?;
            let config = read_optional_json(&path.join("config.json"))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            stages.push((stage_rank(&records[0].stage), name, records, config));
        }
    }
    if stages.is_empty() {
        return Err(Error::file(
            &top,
            "no metrics here nor in RUN_DIR/*/metrics.jsonl: is this a run directory?",
        ));
    }
    stages.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut config = match top_config {
        Some(serde_json::Value::Object(map)) => map,
        Some(other) => [("config".to_string(), other)].into_iter().collect(),
        None => serde_json::Map::new(),
    };
    let mut records = Vec::new();
    for (_, name, stage_records, stage_config) in stages {
        records.extend(stage_records);
        if let Some(c) = stage_config {
            config.insert(name, c);
        }
    }
    let config = (!config.is_empty()).then_some(serde_json::Value::Object(config));
    Ok((records, config))
}

/// The order stages run in; unknown stages after them.
fn stage_rank(stage: &str) -> usize {
    ["ict", "pretrain", "finetune", "cloze", "eval"]
        .iter()
        .position(|s| *s == stage)
        .unwrap_or(5)
}

/// `None` when the file is absent; an error naming it when it is there but not JSON.
fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::file(path, format!("not JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(path, e)),
    }
}

/// A stage's colour: the usual stages keep theirs across runs, others take the rest in order.
fn stage_color(stage: &str, order: usize) -> plotters::style::RGBColor {
    match stage {
        "ict" => PALETTE[0],
        "pretrain" => PALETTE[1],
        "finetune" => PALETTE[2],
        "eval" => PALETTE[3],
        "cloze" => PALETTE[4],
        _ => PALETTE[5 + order % (PALETTE.len() - 5)],
    }
}

/// The plots that have data, each with one line per (stage, field).
fn build_plots(records: &[Record]) -> Vec<(&'static PlotSpec, Plot)> {
    let offsets = stage_offsets(records);
    let shifted = offsets.iter().any(|&(_, o)| o > 0);
    let mut out = Vec::new();
    for spec in &PLOTS {
        let mut lines = Vec::new();
        let mut starts = Vec::new();
        for (order, (stage, offset)) in offsets.iter().enumerate() {
            let mut stage_has_data = false;
            for (i, &field) in spec.fields.iter().enumerate() {
                // By step, the last record winning: a resumed run logs its steps again.
                let mut points = BTreeMap::new();
                for r in records.iter().filter(|r| &r.stage == stage) {
                    if let Some(v) = field.get(r) {
                        points.insert(r.step.saturating_add(*offset), v);
                    }
                }
                if points.is_empty() {
                    continue;
                }
                stage_has_data = true;
                let label = if spec.fields.len() > 1 {
                    format!("{stage}: {}", field.label())
                } else {
                    stage.clone()
                };
                lines.push(Line {
                    label,
                    points: points.into_iter().map(|(x, y)| (x as f64, y)).collect(),
                    color: stage_color(stage, order),
                    dashed: i > 0,
                });
            }
            if stage_has_data {
                let first = records
                    .iter()
                    .filter(|r| &r.stage == stage)
                    .map(|r| r.step.saturating_add(*offset))
                    .min();
                starts.extend(first.map(|s| s as f64));
            }
        }
        if lines.is_empty() {
            continue;
        }
        // A rule where each stage after the first begins.
        starts.sort_by(f64::total_cmp);
        let rules = starts.into_iter().skip(1).collect();
        out.push((
            spec,
            Plot {
                title: spec.title.to_string(),
                x_label: if shifted {
                    "step (stages one after another)".to_string()
                } else {
                    "step".to_string()
                },
                y_label: spec.y_label.to_string(),
                lines,
                rules,
                legend_low: spec.legend_low,
            },
        ));
    }
    out
}
