//! The run directory of a training stage, and what it reports while it runs.
//!
//! ```text
//! RUN/config.json     the stage's configuration (written when the run starts)
//! RUN/metrics.jsonl   one JSON object per line (schema: [`Metric`])
//! RUN/checkpoint/     the latest checkpoint (model + trainer state), replaced atomically
//! RUN/index/          the document index the stage started from, when it has one
//! ```
//!
//! Progress goes to stderr as indicatif bars (hidden when stderr is not a terminal or when quiet).

use super::state;
use crate::error::{Error, Result};
use crate::report::metrics::Record;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The stage's configuration in a run directory, written when it starts.
pub const CONFIG: &str = "config.json";
/// The metrics log in a run directory: one [`Metric`] per line.
pub const METRICS: &str = "metrics.jsonl";
/// The latest checkpoint folder in a run directory.
pub const CHECKPOINT: &str = "checkpoint";
/// The index folder the stage started from, in a run directory.
pub const INDEX: &str = "index";

/// The training stages, as the metrics name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Inverse cloze task: pre-training the retriever.
    Ict,
    /// REALM pre-training: masked-LM with retrieval and index refreshes.
    Pretrain,
    /// Open-QA fine-tuning of the reader (and the query tower).
    Finetune,
    /// The masked-LM alone trained on questions' cloze forms (`pretrain --cloze-questions
    /// --freeze-retriever`; with the retriever learning, the stage is [`Stage::Pretrain`]).
    Cloze,
    /// An evaluation (`realm eval`), logged as one line.
    Eval,
}

impl Stage {
    /// The name in `metrics.jsonl` (`ict`, `pretrain`, `finetune`, `cloze`, `eval`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ict => "ict",
            Stage::Pretrain => "pretrain",
            Stage::Finetune => "finetune",
            Stage::Cloze => "cloze",
            Stage::Eval => "eval",
        }
    }
}

/// One line of `metrics.jsonl` as training writes it (the schema: [`Record`]).
pub type Metric = Record<Stage>;

impl Metric {
    /// A line with only the stage, step and time set.
    pub fn at(stage: Stage, step: u64, time_s: f64) -> Self {
        Metric {
            stage,
            step,
            time_s,
            loss: None,
            lr: None,
            retrieval_utility: None,
            staleness: None,
            refresh_s: None,
            recall_at_1: None,
            recall_at_5: None,
            question_recall_at_1: None,
            question_recall_at_5: None,
            em: None,
            tokens_per_s: None,
            retrieval_entropy: None,
            null_prior: None,
            null_posterior: None,
            grad_norm_query: None,
            grad_norm_doc: None,
            grad_norm_encoder: None,
        }
    }
}

/// A stage's configuration, as its run's `config.json` (and `--config FILE`) holds it.
pub trait StageConfig: Serialize + DeserializeOwned {
    /// An error naming the first field out of range or in conflict, checked before anything is
    /// read or written.
    fn validate(&self) -> Result<()>;
}

/// A stage's run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    /// This process writes into it (rank 0 of a distributed run; the others only read).
    writer: bool,
}

impl RunDir {
    /// Starts a run in `root` (created if needed) and writes its configuration. A folder that
    /// already holds a checkpoint is an error unless `resume`; with `resume`, a missing
    /// checkpoint is an error too.
    pub fn start<C: Serialize + DeserializeOwned>(
        root: impl AsRef<Path>,
        config: &C,
        resume: bool,
    ) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| Error::file(&root, e))?;
        let run = RunDir { root, writer: true };
        let has_checkpoint = state::recover(&run.checkpoint())?;
        match (resume, has_checkpoint) {
            (false, true) => {
                return Err(Error::file(
                    &run.root,
                    "already holds a run with a checkpoint: pass --resume to continue it, or choose another run directory",
                ))
            }
            (true, false) => {
                return Err(Error::file(
                    &run.root,
                    "--resume: there is no checkpoint to resume from in this run directory",
                ))
            }
            _ => {}
        }
        let value = serde_json::to_value(config).map_err(|e| Error::file(&run.root, e))?;
        if resume {
            // A resumed run must be the same run: the same configuration (compared as read into
            // the stage's type, so that `64` and `64.0` or a defaulted field do not differ).
            let saved: C = run.config()?;
            let saved = serde_json::to_value(saved).map_err(|e| Error::file(&run.root, e))?;
            let mut differ = Vec::new();
            diff("", &saved, &value, &mut differ);
            if !differ.is_empty() {
                return Err(Error::file(
                    run.root.join(CONFIG),
                    format!(
                        "--resume with a different configuration ({}); resume with the run's own",
                        differ.join(", ")
                    ),
                ));
            }
        } else {
            // A fresh run owns its metrics file.
            let _ = fs::remove_file(run.metrics_path());
            crate::io::write_json_atomic(run.root.join(CONFIG), &value)?;
        }
        Ok(run)
    }

    /// An existing run directory (for evaluation or reports): it must exist.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::file(&root, "no such run directory"));
        }
        state::recover(&root.join(CHECKPOINT))?;
        Ok(RunDir { root, writer: true })
    }

    /// The run directory rank 0 of a distributed run has started (on a file system every rank
    /// sees), for another rank: it reads from it and writes nothing.
    pub fn attach(root: impl AsRef<Path>) -> Self {
        RunDir {
            root: root.as_ref().to_path_buf(),
            writer: false,
        }
    }

    /// Whether this process writes into the run directory.
    pub fn is_writer(&self) -> bool {
        self.writer
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN/checkpoint`: the latest checkpoint (it may not exist yet).
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join(CHECKPOINT)
    }

    /// `RUN/index`: the index the stage started from (it may not exist).
    pub fn index(&self) -> PathBuf {
        self.root.join(INDEX)
    }

    /// `RUN/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS)
    }

    /// The run's saved configuration.
    pub fn config<C: DeserializeOwned>(&self) -> Result<C> {
        let path = self.root.join(CONFIG);
        let text = fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&path, e))
    }

    /// The metrics file, for appending. `resume_step`: lines of `stage` past that step were
    /// written by a process that was killed after its last checkpoint; they are dropped, so the
    /// file reads as if the run had not been interrupted.
    /// A reader of the run (another rank than 0) gets a log that writes nothing.
    pub fn metrics(&self, stage: Stage, resume_step: Option<u64>) -> Result<MetricsLog> {
        let path = self.metrics_path();
        if !self.writer {
            return Ok(MetricsLog { path, file: None });
        }
        if let (Some(step), true) = (resume_step, path.exists()) {
            let file = File::open(&path).map_err(|e| Error::file(&path, e))?;
            let mut kept = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| Error::file(&path, e))?;
                let drop = serde_json::from_str::<Metric>(&line)
                    .map(|m| m.stage == stage && m.step > step)
                    // A line cut short by the kill.
                    .unwrap_or(true);
                if !drop {
                    kept.push(line);
                }
            }
            crate::io::write_atomic(&path, |w| {
                for line in &kept {
                    writeln!(w, "{line}")?;
                }
                Ok(())
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::file(&path, e))?;
        Ok(MetricsLog {
            path,
            file: Some(file),
        })
    }
}

/// Runs a stage whose run directory is `root`. When it fails before writing a checkpoint, what
/// this call created is removed again: `root` itself (with any missing parents) when it did not
/// exist, else the entries it added to it. A failed start leaves nothing behind, and nothing
/// that was there before is touched.
///
/// Only rank 0 of a distributed run cleans up (the others create nothing).
pub fn removed_on_failure<T>(
    root: &Path,
    dist: &crate::dist::Dist,
    stage: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !dist.is_root() {
        return stage();
    }
    let created = root
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| !p.exists())
        .last()
        .map(Path::to_path_buf);
    let entries = |dir: &Path| -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let before = entries(root);
    let result = stage();
    if result.is_err() && !root.join(CHECKPOINT).join(state::TRAINER_JSON).exists() {
        match created {
            Some(top) => {
                let _ = fs::remove_dir_all(top);
            }
            None => {
                for name in entries(root).into_iter().filter(|n| !before.contains(n)) {
                    let path = root.join(name);
                    let _ = match path.is_dir() {
                        true => fs::remove_dir_all(&path),
                        false => fs::remove_file(&path),
                    };
                }
            }
        }
    }
    result
}

/// The paths (`a.b.c`) where two JSON values differ.
fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    _ => out.push(p),
                }
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            "(all)".into()
        } else {
            path.into()
        }),
        _ => {}
    }
}

/// Appends [`Metric`] lines, each written whole and flushed.
pub struct MetricsLog {
    path: PathBuf,
    /// None on a rank that does not write.
    file: Option<File>,
}

impl MetricsLog {
    /// Appends `metric` as one JSON line.
    pub fn log(&mut self, metric: &Metric) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut line = serde_json::to_string(metric).map_err(|e| Error::file(&self.path, e))?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .map_err(|e| Error::file(&self.path, e))
    }
}

/// Reads a metrics file (for tests and reports).
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<Metric>> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg: e.to_string(),
            })
        })
        .collect()
}

/// A progress bar for `total` steps labelled `label` (hidden when `quiet`).
pub fn progress(total: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("realm-run-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn metrics_lines_follow_the_schema_and_resume_drops_lines_after_the_checkpoint() {
        let root = temp("metrics");
        let run = RunDir::start(&root, &serde_json::json!({"steps": 3}), false).unwrap();
        let mut log = run.metrics(Stage::Pretrain, None).unwrap();
        for step in 1..=4 {
            let mut m = Metric::at(Stage::Pretrain, step, step as f64 * 0.5);
            m.loss = Some(1.0 / step as f64);
            m.staleness = Some(step);
            log.log(&m).unwrap();
        }
        drop(log);
        let text = fs::read_to_string(run.metrics_path()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"stage": "pretrain", "step": 1, "time_s": 0.5, "loss": 1.0, "staleness": 1})
        );
        // A half-written last line, as a kill leaves it.
        fs::OpenOptions::new()
            .append(true)
            .open(run.metrics_path())
            .unwrap()
            .write_all(b"{\"stage\": \"pre")
            .unwrap();
        let mut log = run.metrics(Stage::Pretrain, Some(2)).unwrap();
        log.log(&Metric::at(Stage::Pretrain, 3, 9.0)).unwrap();
        let steps: Vec<u64> = read_metrics(run.metrics_path())
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(run.config::<serde_json::Value>().unwrap()["steps"], 3);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn starting_over_a_checkpoint_or_resuming_without_one_are_errors() {
        let root = temp("start");
        let msg = RunDir::start(&root, &1, true).unwrap_err().to_string();
        assert!(msg.contains("no checkpoint"), "{msg}");
        let run = RunDir::start(&root, &1, false).unwrap();
        fs::create_dir_all(run.checkpoint()).unwrap();
        fs::write(run.checkpoint().join(state::TRAINER_JSON), "{}").unwrap();
        let msg = RunDir::start(&root, &1, false).unwrap_err().to_string();
        assert!(msg.contains("--resume"), "{msg}");
        assert!(RunDir::start(&root, &1, true).is_ok());
        let msg = RunDir::start(&root, &2, true).unwrap_err().to_string();
        assert!(msg.contains("different configuration"), "{msg}");
        assert!(RunDir::open(root.join("nope")).is_err());
        fs::remove_dir_all(root).unwrap();
    }
}
