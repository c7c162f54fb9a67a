//! What every training loop shares: the optimizer and schedule, clipping, mixed-precision loss
//! scaling, the step counter, checkpoints on schedule (and resuming from them), metrics and the
//! progress bar. A stage supplies the forward pass and what goes into its checkpoint.
//!
//! The step is split so that nothing in it assumes one device: [`Trainer::backward`] gives the
//! gradients of this replica's batch, [`Trainer::all_reduce`] sums them over the ranks of a
//! data-parallel run (`crate::dist`; nothing at world size 1), [`Trainer::update`] applies them.

use super::interrupt::StopRequest;
use super::optim::{clip_factor, AdamW, AdamWConfig, LinearSchedule};
use super::run::{progress, Metric, MetricsLog, RunDir, Stage};
use super::state::{load_trainer, save_checkpoint, TrainerState};
use crate::device::{read_scalar, read_vec1, ComputeDevice};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::model::DynamicLossScaler;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default checkpoint interval in steps (Hugging Face Trainer's `save_steps`).
pub const CHECKPOINT_EVERY: u64 = 500;
/// Default longest wall time between checkpoints, minutes (TensorFlow Estimator's
/// `save_checkpoints_secs` = 600, which REALM's and ORQA's code ran under).
pub const CHECKPOINT_MINUTES: f64 = 10.0;

fn default_checkpoint_minutes() -> f64 {
    CHECKPOINT_MINUTES
}

/// The optimisation settings of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Training steps in all.
    pub steps: u64,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (None: min(10000, max(100, steps / 10)), capped at `steps`).
    pub warmup: Option<u64>,
    /// The optimizer's hyper-parameters.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (≤ 0: none).
    pub clip_norm: f64,
    /// Checkpoint every this many steps (0: not by step count).
    pub checkpoint_every: u64,
    /// Also checkpoint when this many minutes have passed since the last checkpoint (or the
    /// start), so that a kill loses at most that much work (0: not by time). A run always
    /// checkpoints at its last step and when asked to stop (Ctrl-C, SIGTERM).
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_minutes: f64,
    /// A metrics line every this many steps.
    pub log_every: u64,
    /// The run's seed: with the step, it determines every random draw (data order, masks, dropout).
    pub seed: u64,
    /// BERT's compute dtype: "f32", "bf16" or "f16" (None: the device's,
    /// [`ComputeDevice::default_dtype`]: bf16 where the CUDA kernels run, on a GPU or the
    /// emulator; f32 on the native CPU). f16 trains with dynamic loss scaling.
    pub dtype: Option<String>,
}

impl LoopConfig {
    /// Small-scale CPU defaults for `steps` steps at peak rate `lr`.
    pub fn new(steps: u64, batch: usize, lr: f64) -> Self {
        LoopConfig {
            steps,
            batch,
            lr,
            warmup: None,
            adamw: AdamWConfig::default(),
            clip_norm: 1.0,
            checkpoint_every: CHECKPOINT_EVERY,
            checkpoint_minutes: CHECKPOINT_MINUTES,
            log_every: 10,
            seed: 0,
            dtype: None,
        }
    }

    /// An error naming the field when a value is unusable (no steps, a non-positive rate, a bad
    /// dtype, ...).
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "training config";
        if self.steps == 0 || self.batch == 0 {
            return Err(Error::bad_input(
                OP,
                "steps",
                format!(
                    "steps = {} and batch = {} must be positive",
                    self.steps, self.batch
                ),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::bad_input(
                OP,
                "lr",
                format!("{} must be a positive number", self.lr),
            ));
        }
        if !(self.checkpoint_minutes.is_finite() && self.checkpoint_minutes >= 0.0) {
            return Err(Error::bad_input(
                OP,
                "checkpoint_minutes",
                format!(
                    "{} must be a number ≥ 0 (0: no checkpoints by time)",
                    self.checkpoint_minutes
                ),
            ));
        }
        if self.clip_norm.is_nan() {
            return Err(Error::bad_input(
                OP,
                "clip_norm",
                "must be a number (≤ 0: no clipping)",
            ));
        }
        self.adamw.validate()?;
        self.compute_dtype(DType::F32)?;
        Ok(())
    }

    /// What makes this run too short to train at its learning rate, for the user (empty when
    /// nothing does): a warm-up over more than half the steps (the default's floor of 100 steps
    /// is all of a run of 100 steps or fewer) leaves the rate below its peak for most of the run,
    /// and one of all the steps never reaches it before the last step.
    pub fn short_run_warnings(&self) -> Vec<String> {
        let warmup = self.schedule().warmup;
        let given = if self.warmup.is_some() {
            "--warmup"
        } else {
            "the default warm-up, min(10000, max(100, steps/10))"
        };
        let mut out = Vec::new();
        if warmup >= self.steps {
            out.push(format!(
                "{given} lasts all {} steps: the learning rate rises to --lr {} only at the last \
                 step and never decays, so the run mostly trains at a fraction of it; give \
                 --warmup {} (a tenth) or more steps",
                self.steps,
                self.lr,
                (self.steps / 10).max(1)
            ));
        } else if 2 * warmup > self.steps {
            out.push(format!(
                "{given} is {warmup} of the {} steps: the learning rate stays below --lr {} for \
                 most of the run; give --warmup {} (a tenth) or more steps",
                self.steps,
                self.lr,
                (self.steps / 10).max(1)
            ));
        }
        out
    }

    /// The learning-rate schedule: `warmup` (or the REALM default) up to `lr`, then linear decay.
    pub fn schedule(&self) -> LinearSchedule {
        match self.warmup {
            Some(w) => LinearSchedule::with_warmup(self.lr, w, self.steps),
            None => LinearSchedule::new(self.lr, self.steps),
        }
    }

    /// The compute dtype: the one asked, else `default` (the device's,
    /// [`ComputeDevice::default_dtype`]).
    pub fn compute_dtype(&self, default: DType) -> Result<DType> {
        Ok(match self.dtype.as_deref() {
            None => default,
            Some("f32") => DType::F32,
            Some("bf16") => DType::BF16,
            Some("f16") => DType::F16,
            Some(other) => {
                return Err(Error::bad_input(
                    "training config",
                    "dtype",
                    format!("`{other}`: use f32, bf16 or f16"),
                ))
            }
        })
    }
}

/// How one invocation runs, besides what the run's `config.json` records.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The device the stage runs on.
    pub device: ComputeDevice,
    /// Continue the run directory's checkpoint.
    pub resume: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Stop (without a checkpoint) once this many steps are done, as if killed there: for
    /// resume tests.
    pub stop_after: Option<u64>,
    /// When requested (e.g. by Ctrl-C, see [`super::interrupt`]), the loop finishes its step,
    /// writes a checkpoint and returns, its report marked `interrupted`.
    pub stop: Option<Arc<StopRequest>>,
    /// The processes of a data-parallel run (default: [`crate::dist::world`], a single process
    /// unless the binary started MPI).
    pub dist: Dist,
}

impl RunOptions {
    /// A fresh start on `device`: no resume, progress shown, no stop.
    pub fn new(device: ComputeDevice) -> Self {
        RunOptions {
            device,
            resume: false,
            quiet: false,
            stop_after: None,
            stop: None,
            dist: crate::dist::world(),
        }
    }
}

/// Gradient values per all-reduce bucket (16 MB of f32, PyTorch DDP's order of size).
const BUCKET: usize = 4 << 20;

/// What [`Trainer::update`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// The learning rate of this update.
    pub lr: f64,
}

/// One step's gradients, with their global norm when the f16 loss scaler read it.
pub struct Gradients {
    store: GradStore,
    /// Their global norm when it was read already (the f16 loss scaler's check); else the
    /// update reads the one it reduced on the device.
    norm: Option<f64>,
}

impl Gradients {
    /// The L2 norm of each group's gradients before clipping, a `[groups]` f64 tensor on the
    /// device (nothing is read); a parameter without a gradient counts as zero.
    pub fn group_norms(&self, groups: &[Vec<Var>], device: &Device) -> Result<Tensor> {
        let mut norms = Vec::with_capacity(groups.len());
        for group in groups {
            let mut squares = Tensor::zeros((), DType::F64, device)?;
            for v in group {
                if let Some(g) = self.store.get(v.as_tensor()) {
                    let sum = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
                    squares = (squares + sum.to_dtype(DType::F64)?)?;
                }
            }
            norms.push(squares.sqrt()?);
        }
        Ok(Tensor::stack(&norms, 0)?)
    }
}

/// The loop state of one stage.
pub struct Trainer {
    stage: Stage,
    /// Step, data position, loss scale and the rest a resume needs.
    pub state: TrainerState,
    opt: AdamW,
    vars: Vec<Var>,
    schedule: LinearSchedule,
    clip_norm: f64,
    checkpoint_every: u64,
    checkpoint_interval: Option<Duration>,
    last_checkpoint: Instant,
    log_every: u64,
    scaler: Option<DynamicLossScaler>,
    log: MetricsLog,
    bar: ProgressBar,
    started: Instant,
    stop_after: Option<u64>,
    stop: Option<Arc<StopRequest>>,
    /// A stop was requested and the checkpoint it asks for is due (or written).
    stopping: bool,
    dist: Dist,
    /// This process writes the checkpoints (rank 0).
    writer: bool,
    /// ‖g‖² of the updates not checked yet, summed on the device in f64 (a sum of finite
    /// squares stays finite, one with a non-finite term does not), and the first step it covers:
    /// read at the next logged step or checkpoint instead of at every step.
    unread_norm_sq: Option<(u64, Tensor)>,
}

impl Trainer {
    /// A trainer for `params`; with `opts.resume`, the step, optimizer moments and the rest of
    /// the trainer state come from the run's checkpoint (whose stage must be `stage`).
    pub fn new(
        run: &RunDir,
        stage: Stage,
        params: Vec<(String, Var)>,
        cfg: &LoopConfig,
        opts: &RunOptions,
    ) -> Result<Self> {
        cfg.validate()?;
        let dist = opts.dist.clone();
        dist.check_divisible("batch", cfg.batch)?;
        let vars = params.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = AdamW::new(params, cfg.adamw)?;
        let schedule = cfg.schedule();
        let f16 = cfg.compute_dtype(opts.device.default_dtype())? == DType::F16;
        let mut state = TrainerState::new(stage.name(), cfg.seed, cfg.adamw, schedule);
        if f16 && dist.size() > 1 {
            // Each rank's scaler would skip its own overflowing steps: the replicas would part.
            return Err(Error::bad_input(
                "training config",
                "dtype",
                "f16 (dynamic loss scaling) trains in one process only; use bf16 or f32 with several ranks",
            ));
        }
        let mut scaler = f16.then(DynamicLossScaler::default);
        let growth = DynamicLossScaler::default().growth_interval();
        if opts.resume {
            let ckpt = run.checkpoint();
            let (saved, tensors) = load_trainer(&ckpt)?;
            saved.check_resumes(&state, &ckpt.join(super::state::TRAINER_JSON))?;
            opt.load_state(&ckpt, tensors, saved.optimizer_steps)?;
            if let (Some(s), true) = (saved.loss_scale, f16) {
                scaler = Some(DynamicLossScaler::resumed(
                    s,
                    growth,
                    saved.loss_scale_good_steps,
                ));
            }
            state = saved;
        }
        let log = run.metrics(stage, opts.resume.then_some(state.step))?;
        let bar = progress(cfg.steps, stage.name(), opts.quiet || !dist.is_root());
        bar.set_position(state.step);
        Ok(Trainer {
            stage,
            state,
            opt,
            vars,
            schedule,
            clip_norm: cfg.clip_norm,
            checkpoint_every: cfg.checkpoint_every,
            // An interval too long for a Duration means never by wall time.
            checkpoint_interval: (cfg.checkpoint_minutes > 0.0)
                .then(|| Duration::try_from_secs_f64(cfg.checkpoint_minutes * 60.0).ok())
                .flatten(),
            last_checkpoint: Instant::now(),
            log_every: cfg.log_every.max(1),
            scaler,
            log,
            bar,
            started: Instant::now(),
            stop_after: opts.stop_after,
            stop: opts.stop.clone(),
            stopping: false,
            writer: run.is_writer(),
            dist,
            unread_norm_sq: None,
        })
    }

    /// Sets every parameter's learning rate relative to the schedule's to `scale(name)`, a
    /// finite number above 0 ([`AdamW::set_lr_scales`]): per-group rates, e.g. retriever towers
    /// that learn more slowly than the encoder.
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) -> Result<()> {
        self.opt.set_lr_scales(scale)
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Whether the loop should stop: all steps done, a requested stop checkpointed, or the
    /// `stop_after` of the options. While it answers false, steps run, and a stop request (a
    /// signal) is turned into a checkpoint at the end of the step.
    pub fn done(&self) -> bool {
        let done = self.state.step >= self.schedule.total
            || self.stopping
            || self.stop_after.is_some_and(|s| self.state.step >= s);
        if let Some(stop) = &self.stop {
            stop.set_armed(!done);
        }
        done
    }

    /// Whether this invocation ended (by a stop request or `stop_after`) before the run was
    /// complete.
    pub fn interrupted(&self) -> bool {
        self.state.step < self.schedule.total
    }

    /// Gradients of `loss` and their global norm (scaled and unscaled again under f16; None
    /// when they overflowed).
    pub fn backward(&mut self, loss: &Tensor) -> Result<Option<Gradients>> {
        match &mut self.scaler {
            None => {
                let store = loss.backward()?;
                Ok(Some(Gradients { store, norm: None }))
            }
            Some(scaler) => {
                let mut store = scaler.scale_loss(loss)?.backward()?;
                let norm = scaler.unscale(&mut store, &self.vars)?;
                self.state.loss_scale = Some(scaler.scale());
                self.state.loss_scale_good_steps = scaler.good_steps();
                Ok(norm.map(|norm| Gradients {
                    store,
                    norm: Some(norm),
                }))
            }
        }
    }

    /// The gradients and loss of the global batch from this rank's: `loss` is the mean of this
    /// rank's `terms` loss terms (masked tokens, examples), so each rank's gradients are weighted
    /// by its share of all terms and summed over the ranks, in buckets, in rank order (the same
    /// bits on every rank); the update takes the norm of the sum. A single process gets its
    /// arguments back unchanged, without reading anything from the device.
    pub fn all_reduce(
        &self,
        grads: Option<Gradients>,
        loss: &Tensor,
        terms: usize,
    ) -> Result<(Option<Gradients>, Tensor)> {
        let dist = &self.dist;
        if dist.size() == 1 {
            return Ok((grads, loss.clone()));
        }
        // f16 is refused with several ranks, so the gradients are always there.
        let mut store = grads
            .ok_or_else(|| Error::Dist("no gradients to all-reduce".into()))?
            .store;
        let local = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let mut head = [terms as f32, local * terms as f32];
        dist.all_reduce_sum("loss", &mut head)?;
        if head[0] <= 0.0 {
            return Err(Error::Dist(format!(
                "{} step {}: no loss terms on any rank",
                self.stage.name(),
                self.state.step + 1
            )));
        }
        let weight = f64::from(terms as f32 / head[0]);
        // Per variable: 1 if this rank has its gradient, then the weighted gradient (zeros
        // without one), so that a gradient absent on every rank stays absent; all in one f32
        // tensor on the device, summed there (NCCL) or in host buckets.
        let dev = loss.device();
        let mut parts = Vec::with_capacity(2 * self.vars.len());
        for var in &self.vars {
            let (present, g) = match store.get(var.as_tensor()) {
                Some(g) => (
                    1f32,
                    g.to_dtype(DType::F32)?.flatten_all()?.affine(weight, 0.0)?,
                ),
                None => (0f32, Tensor::zeros(var.elem_count(), DType::F32, dev)?),
            };
            parts.push(Tensor::new(&[present], dev)?);
            parts.push(g);
        }
        let flat = dist.all_reduce_tensor("gradients", &Tensor::cat(&parts, 0)?, BUCKET)?;
        // Where each variable's flag is in `flat`; its gradient follows.
        let starts: Vec<usize> = self
            .vars
            .iter()
            .scan(0, |at, var| {
                let start = *at;
                *at += 1 + var.elem_count();
                Some(start)
            })
            .collect();
        let flags: Vec<Tensor> = starts
            .iter()
            .map(|&at| flat.narrow(0, at, 1))
            .collect::<candle_core::Result<_>>()?;
        let present = read_vec1::<f32>(&Tensor::cat(&flags, 0)?)?;
        for ((var, &at), present) in self.vars.iter().zip(&starts).zip(present) {
            if present > 0.0 {
                let g = flat
                    .narrow(0, at + 1, var.elem_count())?
                    .reshape(var.shape())?;
                store.insert(var.as_tensor(), g.to_dtype(var.dtype())?);
            }
        }
        let global = Tensor::new(head[1] / head[0], loss.device())?.to_dtype(loss.dtype())?;
        // The update reduces the norm of the summed gradients on the device and reads it once.
        Ok((Some(Gradients { store, norm: None }), global))
    }

    /// Clips and applies the gradients (None: skip the update) and counts the step. The
    /// clipping happens on the device, which skips an update whose norm is not finite; the norm
    /// is read at logged steps, checkpoints and the invocation's last step (summed over the
    /// steps since the last read: one device read), and a norm that was not finite then stops
    /// the run. The f16 loss scaler has read it already.
    pub fn update(&mut self, grads: Option<Gradients>) -> Result<Update> {
        let lr = self.schedule.lr(self.state.step);
        let step = self.state.step + 1;
        if let Some(Gradients { store: grads, norm }) = grads {
            let stats = self.opt.step(&grads, lr, self.clip_norm)?;
            match norm {
                Some(norm) => self.check_norm(norm, step, step)?,
                None => {
                    // A view of the optimizer's stats, which its next step overwrites: summed
                    // into (or copied to) a tensor of its own.
                    let sq = &stats.grad_norm_sq;
                    self.unread_norm_sq = Some(match self.unread_norm_sq.take() {
                        Some((first, sum)) => (first, (sum + sq)?),
                        None => (step, sq.copy()?),
                    });
                    // Read at logged steps and at the last step of this invocation (a
                    // checkpoint reads it too).
                    let last = self.stop_after.is_some_and(|s| step >= s);
                    if self.log_due_after_update() || last {
                        self.read_norms(step)?;
                    }
                }
            }
        }
        self.state.step = step;
        self.state.optimizer_steps = self.opt.steps();
        self.bar.set_position(self.state.step);
        Ok(Update { lr })
    }

    /// Reads the summed ‖g‖² of the updates up to step `last` not checked yet.
    fn read_norms(&mut self, last: u64) -> Result<()> {
        match self.unread_norm_sq.take() {
            Some((first, sum)) => self.check_norm(read_scalar::<f64>(&sum)?.sqrt(), first, last),
            None => Ok(()),
        }
    }

    /// An error naming steps `first..=last` when `norm` is not finite.
    fn check_norm(&self, norm: f64, first: u64, last: u64) -> Result<()> {
        clip_factor(norm, self.clip_norm).map_err(|e| {
            let steps = if first == last {
                format!("step {last}")
            } else {
                format!("steps {first}–{last} (one of them)")
            };
            Error::bad_input(
                "training",
                "loss",
                format!("{} {steps}: {e}", self.stage.name()),
            )
        })?;
        Ok(())
    }

    /// Seconds in this stage, across resumes.
    pub fn time_s(&self) -> f64 {
        self.state.elapsed_s + self.started.elapsed().as_secs_f64()
    }

    /// A metrics line for the current step.
    pub fn metric(&self) -> Metric {
        Metric::at(self.stage, self.state.step, self.time_s())
    }

    /// Whether a metrics line is due at the current step (and always at the last).
    pub fn log_due(&self) -> bool {
        self.logs_at(self.state.step)
    }

    /// Whether a metrics line will be due once the step in progress is updated: what only the
    /// logged step measures is computed then.
    pub fn log_due_after_update(&self) -> bool {
        self.logs_at(self.state.step + 1)
    }

    fn logs_at(&self, step: u64) -> bool {
        step.is_multiple_of(self.log_every) || step == self.schedule.total
    }

    /// Appends `metric` to `metrics.jsonl` (and shows its loss on the progress bar).
    pub fn log(&mut self, metric: &Metric) -> Result<()> {
        if let Some(loss) = metric.loss {
            self.bar.set_message(format!("loss {loss:.4}"));
        }
        self.log.log(metric)
    }

    /// Whether a checkpoint is due at the current step: at the end, every `checkpoint_every`
    /// steps, when `checkpoint_minutes` have passed since the last one, and when a stop was
    /// requested (after which [`Trainer::done`] is true). The caller writes it with
    /// [`Trainer::save`].
    ///
    /// A stop requested on any rank stops them all at this step (mpirun passes a signal to every
    /// rank, not necessarily during the same step).
    pub fn checkpoint_due(&mut self) -> Result<bool> {
        let requested = self.stop.as_ref().is_some_and(|s| s.requested());
        if self.dist.any("stop request", requested)? {
            self.stopping = true;
        }
        let s = self.state.step;
        // The clocks of the ranks differ: the interval is due when it is on any of them, so
        // that every rank takes part in the checkpoint (it gathers the sharded index).
        let timed = match self.checkpoint_interval {
            Some(i) => self
                .dist
                .any("checkpoint time", self.last_checkpoint.elapsed() >= i)?,
            None => false,
        };
        Ok(self.stopping
            || s == self.schedule.total
            || (self.checkpoint_every > 0 && s.is_multiple_of(self.checkpoint_every))
            || timed)
    }

    /// Whether this step's checkpoint is the last one of the run (all steps done), rather than
    /// one it will continue from.
    pub fn final_step(&self) -> bool {
        self.state.step >= self.schedule.total
    }

    /// Writes the checkpoint: `write_files` puts the models (and index) into the folder. Only
    /// rank 0 writes (every rank holds the same model and optimizer state).
    pub fn save(
        &mut self,
        dir: &Path,
        write_files: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        // No checkpoint of weights after an update that was skipped for a non-finite norm.
        self.read_norms(self.state.step)?;
        if !self.writer {
            self.last_checkpoint = Instant::now();
            return Ok(());
        }
        let mut state = self.state.clone();
        state.elapsed_s = self.time_s();
        save_checkpoint(dir, &state, &self.opt, write_files)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Clears the progress bar; from here on a signal takes its default effect.
    pub fn finish(&self) {
        self.disarm();
        self.bar.finish_and_clear();
    }

    fn disarm(&self) {
        if let Some(stop) = &self.stop {
            stop.set_armed(false);
        }
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::{LoopConfig, RunOptions, Trainer};
    use crate::device::ComputeDevice;
    use crate::train::run::{RunDir, Stage};
    use candle_core::{Device, Var};

    #[test]
    fn a_non_finite_gradient_is_skipped_and_stops_the_run_at_the_next_logged_step() {
        let dir = std::env::temp_dir().join(format!("realm-trainer-nan-{}", std::process::id()));
        let mut cfg = LoopConfig::new(8, 1, 1e-2);
        cfg.log_every = 4;
        cfg.checkpoint_every = 0;
        cfg.checkpoint_minutes = 0.0;
        let run = RunDir::start(&dir, &cfg, false).unwrap();
        let w = Var::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let mut opts = RunOptions::new(ComputeDevice::cpu());
        opts.quiet = true;
        let params = vec![("w".to_string(), w.clone())];
        let mut trainer = Trainer::new(&run, Stage::Pretrain, params, &cfg, &opts).unwrap();
        let value = || w.as_tensor().to_vec1::<f32>().unwrap();
        let mut before = value();
        for step in 1..=4u64 {
            let scale = if step == 3 { f64::NAN } else { 1.0 };
            let loss = w.as_tensor().affine(scale, 0.0).unwrap().sum_all().unwrap();
            let grads = trainer.backward(&loss).unwrap();
            let done = trainer.update(grads);
            match step {
                // The device skipped the update; nothing was read yet.
                3 => {
                    done.unwrap();
                    assert_eq!(value(), before, "the non-finite update was applied");
                }
                // The logged step reads the norms of steps 1–4 and stops the run.
                4 => {
                    let e = done.unwrap_err().to_string();
                    assert!(e.contains("steps 1–4") && e.contains("not finite"), "{e}");
                }
                _ => {
                    done.unwrap();
                    assert_ne!(value(), before, "step {step} updated nothing");
                }
            }
            before = value();
        }
        let _ = std::fs::remove_dir_all(&dir);

        // An invocation that stops before a logged step (`stop_after`) reads at its last step.
        let dir = std::env::temp_dir().join(format!("realm-trainer-nan2-{}", std::process::id()));
        let run = RunDir::start(&dir, &cfg, false).unwrap();
        opts.stop_after = Some(2);
        let params = vec![("w".to_string(), w.clone())];
        let mut trainer = Trainer::new(&run, Stage::Pretrain, params, &cfg, &opts).unwrap();
        let nan = w
            .as_tensor()
            .affine(f64::NAN, 0.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = trainer.backward(&nan).unwrap();
        trainer.update(grads).unwrap();
        let fine = w.as_tensor().sum_all().unwrap();
        let grads = trainer.backward(&fine).unwrap();
        let e = trainer.update(grads).unwrap_err().to_string();
        assert!(e.contains("steps 1–2"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_runs_are_told_about_their_warm_up() {
        // The default warm-up (at least 100 steps) is all of a 40-step run, most of a 150-step one.
        let all = LoopConfig::new(40, 8, 1e-5).short_run_warnings();
        assert!(all.len() == 1 && all[0].contains("all 40 steps"), "{all:?}");
        let most = LoopConfig::new(150, 8, 1e-5).short_run_warnings();
        assert!(
            most.len() == 1 && most[0].contains("100 of the 150"),
            "{most:?}"
        );
        assert!(LoopConfig::new(1000, 8, 1e-5)
            .short_run_warnings()
            .is_empty());
        let mut given = LoopConfig::new(40, 8, 1e-5);
        given.warmup = Some(4);
        assert!(given.short_run_warnings().is_empty());
        given.warmup = Some(40);
        assert!(given.short_run_warnings()[0].contains("--warmup lasts"));
    }
}
