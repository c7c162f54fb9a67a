//! The optimizer side of training: AdamW (Loshchilov & Hutter 2019: decoupled weight decay, with
//! Adam's bias correction) over candle `Var`s with moments we own and can save, BERT's rule of no
//! weight decay on biases and LayerNorm parameters, the linear warm-up then linear decay schedule,
//! and global-norm gradient clipping.
//!
//! The update is the multi-tensor op [`crate::ops::adamw`] on every device: every parameter in
//! one pass (three kernel launches on a GPU or the emulator), the gradients' global norm reduced
//! and the clip factor applied there, nothing read back unless the caller reads the norm.

use crate::error::{Error, Result};
use crate::ops::adamw::{adamw_step, stats_len, AdamWParam, AdamWStep};
pub use crate::ops::adamw::{clip_factor, global_grad_norm};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{HashMap, HashSet};

const OP: &str = "AdamW";

/// AdamW's hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Decay of the first-moment (mean) estimate, in [0, 1) (BERT: 0.9).
    pub beta1: f64,
    /// Decay of the second-moment estimate, in [0, 1) (BERT: 0.999).
    pub beta2: f64,
    /// Added to the root of the (bias-corrected) second moment, > 0 (BERT: 1e-6).
    pub eps: f64,
    /// Decoupled weight decay, ≥ 0 (BERT: 0.01): each update scales a weight by 1 − lr · decay
    /// (biases and LayerNorm weights excepted, see [`decays`]).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// BERT's pre-training values (β₂ = 0.999, ε = 1e-6, weight decay 0.01).
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// An error unless the betas are in [0, 1), eps > 0 and weight decay ≥ 0 (all finite).
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.eps.is_finite()
            && self.weight_decay >= 0.0
            && self.weight_decay.is_finite();
        if !ok {
            return Err(Error::bad_input(
                OP,
                "config",
                format!("{self:?}: betas must be in [0, 1), eps > 0, weight_decay ≥ 0"),
            ));
        }
        Ok(())
    }
}

/// BERT's exclusion list (`exclude_from_weight_decay` in its optimization.py): a parameter whose
/// name contains one of these is not decayed.
pub fn decays(name: &str) -> bool {
    !["LayerNorm", "layer_norm", "bias"]
        .iter()
        .any(|s| name.contains(s))
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    /// Its learning rate relative to the schedule's (1 unless set).
    lr_scale: f64,
    /// Where its moments start in the flat `m` and `v`.
    offset: usize,
}

/// AdamW over named f32 parameters: the moments of all of them in two flat f32 tensors on
/// their device, updated by the multi-tensor op ([`crate::ops::adamw`]) in one pass.
pub struct AdamW {
    params: Vec<Param>,
    m: Tensor,
    v: Tensor,
    /// What the update writes besides: ‖g‖², the clip factor, the norm's partial sums.
    stats: Tensor,
    config: AdamWConfig,
    /// Updates taken so far (Adam's t, for the bias correction).
    steps: u64,
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub struct StepStats {
    /// Parameters that had a gradient.
    pub updated: usize,
    /// The squared global norm of their gradients, a scalar f64 on the device (reading it is a
    /// synchronisation). When it is not finite nothing was updated. A view of the optimizer's
    /// stats buffer: its next step overwrites it.
    pub grad_norm_sq: Tensor,
}

impl AdamW {
    /// An optimizer for `params` (HF names, f32 `Var`s on one device); names and variables
    /// must be unique.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let device = params
            .first()
            .map_or(Device::Cpu, |(_, v)| v.device().clone());
        let (mut names, mut ids) = (HashSet::new(), HashSet::new());
        let mut offset = 0;
        let params = params
            .into_iter()
            .map(|(name, var)| {
                let bad = |msg: String| Error::bad_input(OP, "params", msg);
                if !names.insert(name.clone()) || !ids.insert(var.as_tensor().id()) {
                    return Err(bad(format!("parameter `{name}` appears twice")));
                }
                if var.dtype() != DType::F32 {
                    return Err(bad(format!(
                        "`{name}` is {:?}; master weights must be f32",
                        var.dtype()
                    )));
                }
                if !var.device().same_device(&device) {
                    return Err(bad(format!(
                        "`{name}` is not on the first parameter's device"
                    )));
                }
                let p = Param {
                    decay: decays(&name),
                    lr_scale: 1.0,
                    name,
                    offset,
                    var,
                };
                offset += p.var.elem_count();
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        let stats = stats_len(params.iter().map(|p| p.var.elem_count()));
        Ok(AdamW {
            m: Tensor::zeros(offset, DType::F32, &device)?,
            v: Tensor::zeros(offset, DType::F32, &device)?,
            stats: Tensor::zeros(stats, DType::F64, &device)?,
            params,
            config,
            steps: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets every parameter's learning rate relative to the schedule's to `scale(name)`: a
    /// finite number > 0 (a part that should not learn is left out of the optimizer instead,
    /// so that it costs no moments).
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) -> Result<()> {
        for p in &mut self.params {
            let s = scale(&p.name);
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::bad_input(
                    OP,
                    "lr_scale",
                    format!("{s} for `{}`: must be a finite number > 0", p.name),
                ));
            }
            p.lr_scale = s;
        }
        Ok(())
    }

    /// The parameters, by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// One update with learning rate `lr`, the gradients clipped to the global norm `max_norm`
    /// (≤ 0 or infinite: not clipped; the norm is reduced and applied on the device, nothing is
    /// read). Parameters without a gradient are left alone, moments included (as PyTorch
    /// does). When the gradients' norm is not finite nothing is updated: read
    /// [`StepStats::grad_norm_sq`] to know.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: f64) -> Result<StepStats> {
        let c = self.config;
        let step = AdamWStep {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            t: self.steps + 1,
            max_norm,
        };
        let mut present = Vec::new();
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            if g.dims() != p.var.dims() {
                return Err(Error::bad_input(
                    OP,
                    "grads",
                    format!(
                        "gradient of `{}` is {:?}, the parameter {:?}",
                        p.name,
                        g.dims(),
                        p.var.dims()
                    ),
                ));
            }
            present.push((p, g.to_dtype(DType::F32)?.contiguous()?));
        }
        let params: Vec<AdamWParam> = present
            .iter()
            .map(|(p, g)| AdamWParam {
                theta: p.var.as_tensor(),
                grad: g,
                offset: p.offset,
                decay: p.decay,
                lr_scale: p.lr_scale,
            })
            .collect();
        adamw_step(&params, &self.m, &self.v, &self.stats, &step)?;
        self.steps += 1;
        Ok(StepStats {
            updated: params.len(),
            grad_norm_sq: self.stats.narrow(0, 0, 1)?,
        })
    }

    /// The optimizer state as tensors (on the CPU): `m.NAME` and `v.NAME` for every parameter.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            let (shape, n) = (p.var.shape(), p.var.elem_count());
            for (key, flat) in [("m", &self.m), ("v", &self.v)] {
                let t = flat.narrow(0, p.offset, n)?.reshape(shape)?;
                out.push((format!("{key}.{}", p.name), t.to_device(&Device::Cpu)?));
            }
        }
        Ok(out)
    }

    /// Restores what [`AdamW::state_tensors`] saved (with the step count): every parameter's
    /// moments must be there with its shape; anything missing, extra or misshapen is an
    /// [`Error::Checkpoint`] naming it.
    pub fn load_state(
        &mut self,
        path: &std::path::Path,
        mut tensors: HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        let (mut missing, mut wrong_shape) = (Vec::new(), Vec::new());
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        for p in &self.params {
            for (key, into) in [("m", &mut ms), ("v", &mut vs)] {
                let key = format!("{key}.{}", p.name);
                match tensors.remove(&key) {
                    None => missing.push(key),
                    Some(t) if t.dims() != p.var.dims() || t.dtype() != DType::F32 => wrong_shape
                        .push(format!(
                            "{key}: expected f32 {:?}, found {:?} {:?}",
                            p.var.dims(),
                            t.dtype(),
                            t.dims()
                        )),
                    Some(t) => into.push(t.flatten_all()?),
                }
            }
        }
        let mut unexpected: Vec<String> = tensors.into_keys().collect();
        unexpected.sort();
        if !(missing.is_empty() && wrong_shape.is_empty() && unexpected.is_empty()) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                missing,
                unexpected,
                wrong_shape,
            });
        }
        if !self.params.is_empty() {
            let device = self.m.device().clone();
            self.m = Tensor::cat(&ms, 0)?.to_device(&device)?;
            self.v = Tensor::cat(&vs, 0)?.to_device(&device)?;
        }
        self.steps = steps;
        Ok(())
    }
}

/// Linear warm-up to the peak learning rate, then linear decay to zero at `total` steps.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearSchedule {
    /// The learning rate at the end of the warm-up.
    pub peak_lr: f64,
    /// Warm-up steps (at most `total`).
    pub warmup: u64,
    /// Steps of the run; the rate is 0 from there on.
    pub total: u64,
}

impl LinearSchedule {
    /// The REALM default warm-up, min(10000, max(100, total / 10)) steps, capped at `total`.
    pub fn new(peak_lr: f64, total: u64) -> Self {
        Self::with_warmup(peak_lr, default_warmup(total), total)
    }

    /// A schedule of `total` steps with `warmup` of them warm-up (capped at `total`).
    pub fn with_warmup(peak_lr: f64, warmup: u64, total: u64) -> Self {
        LinearSchedule {
            peak_lr,
            warmup: warmup.min(total),
            total,
        }
    }

    /// The learning rate of step `step` (0-based): `peak · (step + 1) / warmup` during the
    /// warm-up (so the first step already moves), then `peak · (total − step) / (total −
    /// warmup)`, which reaches peak / (total − warmup) at the last step and 0 after it.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            self.peak_lr * (step + 1) as f64 / self.warmup as f64
        } else if step >= self.total {
            0.0
        } else {
            self.peak_lr * (self.total - step) as f64 / (self.total - self.warmup) as f64
        }
    }
}

/// min(10000, max(100, total / 10)).
pub fn default_warmup(total: u64) -> u64 {
    (total / 10).clamp(100, 10_000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn var(values: &[f32]) -> Var {
        Var::new(values, &Device::Cpu).unwrap()
    }

    /// The gradients of Σ v² (2v).
    pub(crate) fn square_grads(v: &Var) -> GradStore {
        v.as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    /// The two steps of both tests below: learning rate and clipping norm (the second clips:
    /// the gradients' norm is about 6).
    const STEPS: [(f64, f64); 2] = [(0.1, 0.0), (0.05, 2.0)];

    /// Two parameters through two steps of the optimizer.
    fn two_steps() -> (Vec<f32>, Vec<f32>) {
        let w = var(&[1.0, -2.0]);
        let b = var(&[0.5]);
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(
            vec![
                ("layer.dense.weight".into(), w.clone()),
                ("layer.dense.bias".into(), b.clone()),
            ],
            cfg,
        )
        .unwrap();
        // The bias learns at half the rate.
        opt.set_lr_scales(|name| if decays(name) { 1.0 } else { 0.5 })
            .unwrap();
        let e = opt.set_lr_scales(|_| 0.0).unwrap_err().to_string();
        assert!(
            e.contains("lr_scale") && e.contains("layer.dense.weight"),
            "{e}"
        );
        opt.set_lr_scales(|name| if decays(name) { 1.0 } else { 0.5 })
            .unwrap();
        // loss = 3 w0 + w1² + 4 b: gradients (3, 2 w1) and 4.
        for (lr, max_norm) in STEPS {
            let wt = w.as_tensor();
            let loss = ((wt.get(0).unwrap() * 3.0).unwrap()
                + wt.get(1).unwrap().sqr().unwrap()
                + (b.as_tensor().sum_all().unwrap() * 4.0).unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let stats = opt.step(&grads, lr, max_norm).unwrap();
            assert_eq!(stats.updated, 2);
        }
        (
            w.as_tensor().to_vec1().unwrap(),
            b.as_tensor().to_vec1().unwrap(),
        )
    }

    /// The same, the formula evaluated by hand in f64.
    fn by_hand() -> (Vec<f64>, f64) {
        let (b1, b2, eps, wd) = (0.9f64, 0.99f64, 1e-8f64, 0.1f64);
        let mut theta = [1.0, -2.0, 0.5];
        let decay = [wd, wd, 0.0];
        let lr_scale = [1.0, 1.0, 0.5];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        for (t, (lr, max_norm)) in STEPS.into_iter().enumerate() {
            let g = [3.0, 2.0 * theta[1], 4.0];
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            let scale = if max_norm > 0.0 && norm > max_norm {
                max_norm / (norm + 1e-6)
            } else {
                1.0
            };
            for i in 0..3 {
                let g = g[i] * scale;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mh = m[i] / (1.0 - b1.powi(t as i32 + 1));
                let vh = v[i] / (1.0 - b2.powi(t as i32 + 1));
                let lr = lr * lr_scale[i];
                theta[i] = theta[i] * (1.0 - lr * decay[i]) - lr * mh / (vh.sqrt() + eps);
            }
        }
        (vec![theta[0], theta[1]], theta[2])
    }

    #[test]
    fn adamw_matches_a_hand_computed_update_natively_and_on_the_emulator() {
        let (want_w, want_b) = by_hand();
        let mut modes = vec![None];
        if cfg!(feature = "emulate") {
            modes.push(Some(crate::ops::use_emulator().unwrap()));
        }
        for mode in modes {
            let (w, b) = two_steps();
            for (got, want) in w.iter().zip(&want_w) {
                assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
            }
            // The bias is not decayed (with decay it would differ by lr·wd·b ≈ 1.3e-3) and moves
            // at half the rate.
            assert!(
                (f64::from(b[0]) - want_b).abs() < 1e-6,
                "{} vs {want_b}",
                b[0]
            );
            drop(mode);
        }
    }

    #[test]
    fn weight_decay_skips_biases_and_layer_norms() {
        assert!(decays("encoder.layer.0.attention.self.query.weight"));
        assert!(decays("embeddings.word_embeddings.weight"));
        assert!(!decays("encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("embeddings.LayerNorm.weight"));
        assert!(!decays("cls.predictions.transform.LayerNorm.weight"));
        assert!(!decays("qa_outputs.layer_norm.weight"));
    }

    #[test]
    fn parameters_without_gradients_are_untouched_and_state_round_trips() {
        let used = var(&[1.0, 2.0]);
        let unused = var(&[5.0]);
        let mut opt = AdamW::new(
            vec![("a".into(), used.clone()), ("b".into(), unused.clone())],
            AdamWConfig::default(),
        )
        .unwrap();
        let grads = used.as_tensor().sum_all().unwrap().backward().unwrap();
        assert_eq!(opt.step(&grads, 0.1, 0.0).unwrap().updated, 1);
        assert_eq!(unused.as_tensor().to_vec1::<f32>().unwrap(), [5.0]);

        let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        let m = state["m.a"].to_vec1::<f32>().unwrap();
        assert!((m[0] - 0.1).abs() < 1e-7);
        // A fresh optimizer with the loaded state takes the same next step.
        let twin = var(&used.as_tensor().to_vec1::<f32>().unwrap());
        let mut again = AdamW::new(
            vec![("a".into(), twin.clone()), ("b".into(), var(&[5.0]))],
            AdamWConfig::default(),
        )
        .unwrap();
        let p = std::path::Path::new("trainer.safetensors");
        again.load_state(p, state.clone(), opt.steps()).unwrap();
        let (g1, g2) = (square_grads(&used), square_grads(&twin));
        opt.step(&g1, 0.1, 1.0).unwrap();
        again.step(&g2, 0.1, 1.0).unwrap();
        assert_eq!(
            used.as_tensor().to_vec1::<f32>().unwrap(),
            twin.as_tensor().to_vec1::<f32>().unwrap()
        );

        // Missing, extra and misshapen moments are named.
        let mut bad = state;
        bad.remove("v.b");
        bad.insert(
            "m.a".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        bad.insert(
            "m.z".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let msg = again.load_state(p, bad, 1).unwrap_err().to_string();
        assert!(
            msg.contains("v.b") && msg.contains("m.z") && msg.contains("m.a"),
            "{msg}"
        );
    }

    #[test]
    fn bad_parameters_and_rates_are_errors() {
        let a = var(&[1.0]);
        let twice = vec![("a".to_string(), a.clone()), ("a".to_string(), a.clone())];
        assert!(AdamW::new(twice, AdamWConfig::default()).is_err());
        let aliased = vec![("a".to_string(), a.clone()), ("b".to_string(), a.clone())];
        assert!(AdamW::new(aliased, AdamWConfig::default()).is_err());
        let half = Var::from_tensor(
            &Tensor::new(&[1f32], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        )
        .unwrap();
        assert!(AdamW::new(vec![("h".into(), half)], AdamWConfig::default()).is_err());
        let bad_cfg = AdamWConfig {
            beta1: 1.0,
            ..AdamWConfig::default()
        };
        assert!(AdamW::new(vec![], bad_cfg).is_err());
        let mut opt = AdamW::new(vec![("a".into(), a.clone())], AdamWConfig::default()).unwrap();
        let g = a.as_tensor().sum_all().unwrap().backward().unwrap();
        assert!(opt.step(&g, f64::NAN, 1.0).is_err());
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn a_gradient_that_is_not_finite_updates_nothing() {
        let a = var(&[1.0, 2.0]);
        let mut opt = AdamW::new(vec![("a".into(), a.clone())], AdamWConfig::default()).unwrap();
        let loss = (a.as_tensor() * f64::INFINITY).unwrap().sum_all().unwrap();
        let stats = opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
        let sq = stats.grad_norm_sq.to_vec1::<f64>().unwrap()[0];
        assert!(!sq.is_finite(), "{sq}");
        assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), [1.0, 2.0]);
        let state = opt.state_tensors().unwrap();
        assert!(state
            .iter()
            .all(|(_, t)| t.sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0));
    }

    #[test]
    fn schedule_warms_up_then_decays_linearly() {
        assert_eq!(default_warmup(50), 100);
        assert_eq!(default_warmup(5_000), 500);
        assert_eq!(default_warmup(1_000_000), 10_000);
        let s = LinearSchedule::new(1e-4, 2_000);
        assert_eq!(s.warmup, 200);
        assert!((s.lr(0) - 1e-4 / 200.0).abs() < 1e-15);
        assert!((s.lr(99) - 0.5e-4).abs() < 1e-15);
        assert!((s.lr(199) - 1e-4).abs() < 1e-15);
        assert!((s.lr(200) - 1e-4).abs() < 1e-15);
        assert!((s.lr(1_100) - 0.5e-4).abs() < 1e-15);
        assert!((s.lr(1_999) - 1e-4 / 1_800.0).abs() < 1e-15);
        assert_eq!(s.lr(2_000), 0.0);
        // Shorter than the minimum warm-up: the warm-up spans the run.
        let short = LinearSchedule::new(1.0, 40);
        assert_eq!(short.warmup, 40);
        assert!((short.lr(39) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let a = var(&[3.0]);
        let b = var(&[0.0, 0.0]);
        // Gradients (3) and (4, 0): global norm 5.
        let loss = ((a.as_tensor() * 3.0).unwrap().sum_all().unwrap()
            + (b.as_tensor().get(0).unwrap() * 4.0).unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let norm = global_grad_norm(&grads, [&a, &b]).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((clip_factor(norm, 1.0).unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(clip_factor(norm, 10.0).unwrap(), 1.0);
        assert_eq!(clip_factor(norm, 0.0).unwrap(), 1.0);
        assert!(clip_factor(f64::NAN, 1.0).is_err());
        assert!(clip_factor(f64::INFINITY, 1.0).is_err());
    }
}
