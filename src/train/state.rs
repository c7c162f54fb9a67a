//! Trainer state and atomic checkpoints.
//!
//! A checkpoint is a folder: the model's own files (written by the caller), `trainer.safetensors`
//! (the optimizer's moments) and `trainer.json` ([`TrainerState`]: step, seed, data position,
//! index version, schedule, loss scale). It is assembled in a temporary folder beside the target
//! and renamed into place, so a kill at any moment leaves either the previous checkpoint or the
//! new one, never a mixture. Randomness is a pure function of (seed, step) everywhere in training
//! (see [`step_rng`]), so the seed and the step are the whole RNG state.

use super::optim::{AdamW, AdamWConfig, LinearSchedule};
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_json_atomic};
use crate::rng::SplitMix64;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

pub use crate::model::TRAINER_JSON;
/// The checkpoint file that holds the optimizer's moments.
pub const TRAINER_TENSORS: &str = "trainer.safetensors";
const FORMAT_VERSION: u32 = 1;

/// Where the data stream is: epoch and examples consumed within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Passes over the training examples completed (0 in the first).
    pub epoch: u64,
    /// Examples consumed in the current epoch's shuffled order.
    pub position: u64,
}

/// The index in use when the checkpoint was written: the training step of the document-tower
/// weights that embedded it, and the fingerprint in its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexVersion {
    /// The step of the document-tower weights that embedded the index.
    pub step: u64,
    /// The index manifest's `model_fingerprint`: the hash of those weights.
    pub fingerprint: String,
}

/// Everything besides the weights and moments that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The `trainer.json` layout version; a build reads only its own.
    pub format_version: u32,
    /// "ict", "pretrain" or "finetune".
    pub stage: String,
    /// Steps completed.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// The run's seed; with the step it determines every random draw (see [`step_rng`]).
    pub seed: u64,
    /// Adam's update count (differs from `step` when f16 overflow skipped updates).
    pub optimizer_steps: u64,
    /// The optimizer's hyper-parameters.
    pub adamw: AdamWConfig,
    /// The learning-rate schedule.
    pub schedule: LinearSchedule,
    /// Where the data stream stands after `step` steps.
    pub data: DataCursor,
    /// The index in use; only pre-training records one, `None` in the other stages.
    pub index: Option<IndexVersion>,
    /// The dynamic loss scale (f16 training only).
    pub loss_scale: Option<f64>,
    /// The loss scaler's good steps in a row at this checkpoint.
    #[serde(default)]
    pub loss_scale_good_steps: u32,
    /// Wall seconds spent in the stage up to this checkpoint (metrics' `time_s` continues from
    /// it after a resume).
    #[serde(default)]
    pub elapsed_s: f64,
    /// Pre-training: the step of the weights an index refresh was embedding with when the
    /// checkpoint was written (the weights are in the checkpoint's `refresh/`); a resumed run
    /// starts that refresh again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_running: Option<u64>,
}

impl TrainerState {
    /// The state at step 0 of a run of `stage` ("ict", "pretrain" or "finetune") with `seed`,
    /// `adamw` and `schedule` (whose `total` is the run's steps).
    pub fn new(stage: &str, seed: u64, adamw: AdamWConfig, schedule: LinearSchedule) -> Self {
        TrainerState {
            format_version: FORMAT_VERSION,
            stage: stage.to_string(),
            step: 0,
            total_steps: schedule.total,
            seed,
            optimizer_steps: 0,
            adamw,
            schedule,
            data: DataCursor::default(),
            index: None,
            loss_scale: None,
            loss_scale_good_steps: 0,
            elapsed_s: 0.0,
            refresh_running: None,
        }
    }
}

impl TrainerState {
    /// An error naming `json` (the file it was read from) unless the state is consistent: the
    /// step within the run, Adam's count within the steps, a usable loss scale and time.
    pub fn validate(&self, json: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::file(json, msg));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "trainer state format {} (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.step > self.total_steps {
            return bad(format!(
                "step {} is past the run's {} steps: the trainer state is damaged",
                self.step, self.total_steps
            ));
        }
        if self.schedule.total != self.total_steps || self.schedule.warmup > self.total_steps {
            return bad(format!(
                "schedule {:?} does not fit the run's {} steps",
                self.schedule, self.total_steps
            ));
        }
        if !(self.schedule.peak_lr.is_finite() && self.schedule.peak_lr > 0.0) {
            return bad(format!(
                "schedule peak_lr {} must be a positive number",
                self.schedule.peak_lr
            ));
        }
        if let Some(r) = self.refresh_running.filter(|&r| r > self.step) {
            return bad(format!(
                "a refresh of step {r} running at step {}",
                self.step
            ));
        }
        if self.optimizer_steps > self.step {
            return bad(format!(
                "{} optimizer updates in {} steps",
                self.optimizer_steps, self.step
            ));
        }
        if let Some(s) = self.loss_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("loss scale {s} must be a positive number"));
        }
        if !(self.elapsed_s.is_finite() && self.elapsed_s >= 0.0) {
            return bad(format!("elapsed_s {} must be a number ≥ 0", self.elapsed_s));
        }
        self.adamw.validate().map_err(|e| Error::file(json, e))
    }

    /// An error unless this saved state belongs to the run that `fresh` (the state the run's
    /// configuration starts with) begins: the same stage, steps, seed, optimizer and schedule.
    pub fn check_resumes(&self, fresh: &TrainerState, json: &Path) -> Result<()> {
        // Compared as read back from JSON, as the saved one was (serde_json's default float
        // parsing is not guaranteed to round-trip every value).
        let fresh: TrainerState = serde_json::to_string(fresh)
            .and_then(|t| serde_json::from_str(&t))
            .map_err(|e| Error::file(json, e))?;
        let mut differ = Vec::new();
        if self.stage != fresh.stage {
            differ.push(format!("stage `{}`, not `{}`", self.stage, fresh.stage));
        }
        if self.total_steps != fresh.total_steps {
            differ.push(format!(
                "{} steps in all, not {}",
                self.total_steps, fresh.total_steps
            ));
        }
        if self.seed != fresh.seed {
            differ.push(format!("seed {}, not {}", self.seed, fresh.seed));
        }
        if self.adamw != fresh.adamw {
            differ.push(format!("optimizer {:?}, not {:?}", self.adamw, fresh.adamw));
        }
        if self.schedule != fresh.schedule {
            differ.push(format!(
                "schedule {:?}, not {:?}",
                self.schedule, fresh.schedule
            ));
        }
        if differ.is_empty() {
            return Ok(());
        }
        Err(Error::file(
            json,
            format!(
                "is not a checkpoint of this run's configuration: {}",
                differ.join("; ")
            ),
        ))
    }
}

/// The random stream of one step of one stream kind: a pure function of (seed, kind, step), so a
/// resumed run draws exactly what the uninterrupted run drew.
pub fn step_rng(seed: u64, kind: u64, step: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ kind.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let a = mix.next_u64();
    SplitMix64::new(a ^ step.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// Writes a checkpoint folder at `dir` atomically: `write_files` fills a fresh temporary folder
/// (the model files, an index, ...), then the trainer state and optimizer moments are added and
/// the folder replaces `dir` ([`crate::io::write_dir_atomic`]).
pub fn save_checkpoint(
    dir: &Path,
    state: &TrainerState,
    optimizer: &AdamW,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    crate::io::write_dir_atomic(dir, |tmp| {
        write_files(tmp)?;
        let tensors = optimizer.state_tensors()?;
        let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None)
            .map_err(|e| Error::file(tmp.join(TRAINER_TENSORS), e))?;
        write_atomic(tmp.join(TRAINER_TENSORS), |w| w.write_all(&bytes))?;
        write_json_atomic(tmp.join(TRAINER_JSON), state)
    })
}

/// After a kill: restores the previous checkpoint if the kill fell between moving it aside and
/// renaming the new one in, and removes leftover temporary folders. Returns whether a checkpoint
/// exists at `dir`.
pub fn recover(dir: &Path) -> Result<bool> {
    crate::io::recover_dir(dir, TRAINER_JSON)
}

/// Reads `trainer.json` and `trainer.safetensors` of a checkpoint folder.
pub fn load_trainer(dir: &Path) -> Result<(TrainerState, HashMap<String, Tensor>)> {
    let json = dir.join(TRAINER_JSON);
    let text = fs::read_to_string(&json).map_err(|e| {
        Error::file(
            &json,
            format!("not a training checkpoint (no trainer state): {e}"),
        )
    })?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::file(&json, e))?;
    state.validate(&json)?;
    let path = dir.join(TRAINER_TENSORS);
    let tensors =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| Error::file(&path, e))?;
    Ok((state, tensors))
}

/// Hard-links every file of `src` into `dst` (a folder of immutable files, such as an index that
/// did not change since the last checkpoint), copying where links are not possible.
pub fn link_dir(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).map_err(|e| Error::file(dst, e))?;
    for entry in fs::read_dir(src).map_err(|e| Error::file(src, e))? {
        let entry = entry.map_err(|e| Error::file(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry
            .file_type()
            .map_err(|e| Error::file(&from, e))?
            .is_dir()
        {
            link_dir(&from, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(|e| Error::file(&from, format!("copying: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("realm-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn optimizer() -> (Var, AdamW) {
        let w = Var::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default()).unwrap();
        opt.step(&super::super::optim::tests::square_grads(&w), 0.01, 1.0)
            .unwrap();
        (w, opt)
    }

    #[test]
    fn state_round_trips_and_replaces_the_previous_checkpoint_whole() {
        let root = temp("roundtrip");
        let ckpt = root.join("checkpoint");
        let (_, opt) = optimizer();
        let mut state = TrainerState::new(
            "pretrain",
            7,
            AdamWConfig::default(),
            LinearSchedule::new(1e-4, 300),
        );
        state.step = 12;
        state.optimizer_steps = 1;
        state.data = DataCursor {
            epoch: 1,
            position: 40,
        };
        state.index = Some(IndexVersion {
            step: 10,
            fingerprint: "abc".into(),
        });
        save_checkpoint(&ckpt, &state, &opt, |d| {
            fs::write(d.join("model.txt"), "first").map_err(|e| Error::file(d, e))
        })
        .unwrap();
        state.step = 20;
        save_checkpoint(&ckpt, &state, &opt, |d| {
            fs::write(d.join("model.txt"), "second").map_err(|e| Error::file(d, e))
        })
        .unwrap();
        let (loaded, tensors) = load_trainer(&ckpt).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(
            fs::read_to_string(ckpt.join("model.txt")).unwrap(),
            "second"
        );
        let want: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        for (k, t) in &want {
            assert_eq!(
                tensors[k].to_vec1::<f32>().unwrap(),
                t.to_vec1::<f32>().unwrap()
            );
        }
        // Nothing but the checkpoint is left beside it.
        let names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["checkpoint"]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_failed_or_interrupted_save_leaves_the_previous_checkpoint() {
        let root = temp("interrupted");
        let ckpt = root.join("checkpoint");
        let (_, opt) = optimizer();
        let state = TrainerState::new(
            "ict",
            1,
            AdamWConfig::default(),
            LinearSchedule::new(1e-4, 10),
        );
        save_checkpoint(&ckpt, &state, &opt, |_| Ok(())).unwrap();
        // The model writer fails: the old checkpoint stays and no temporary folder is left.
        let err = save_checkpoint(&ckpt, &state, &opt, |_| {
            Err(Error::Device("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert!(load_trainer(&ckpt).is_ok());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        // A kill between moving the old one aside and renaming the new one in.
        fs::rename(&ckpt, root.join(".checkpoint.old")).unwrap();
        // The temporary folder of a process that no longer runs.
        fs::create_dir_all(root.join(format!(".checkpoint.tmp-{}", u32::MAX))).unwrap();
        assert!(recover(&ckpt).unwrap());
        assert!(load_trainer(&ckpt).is_ok());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        // No checkpoint at all.
        let none = root.join("absent");
        assert!(!recover(&none).unwrap());
        let msg = load_trainer(&none).unwrap_err().to_string();
        assert!(msg.contains("not a training checkpoint"), "{msg}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn step_streams_are_reproducible_and_distinct() {
        let draw = |seed, kind, step| step_rng(seed, kind, step).next_u64();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
    }

    #[test]
    fn linked_folders_share_the_files() {
        let root = temp("link");
        let src = root.join("a");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("x"), "1").unwrap();
        fs::write(src.join("sub/y"), "2").unwrap();
        link_dir(&src, &root.join("b")).unwrap();
        assert_eq!(fs::read_to_string(root.join("b/sub/y")).unwrap(), "2");
        assert_eq!(fs::read_to_string(root.join("b/x")).unwrap(), "1");
        fs::remove_dir_all(root).unwrap();
    }
}
