//! The optimizer side of training: AdamW (Loshchilov & Hutter 2019: decoupled weight decay, with
//! Adam's bias correction) over candle `Var`s with moments we own and can save, BERT's rule of no
//! weight decay on biases and LayerNorm parameters, the linear warm-up then linear decay schedule,
//! and global-norm gradient clipping.
//!
//! On the CPU the update is one fused in-place pass over (θ, g, m, v) per parameter, with the
//! moments in host memory; elsewhere it is a composition of tensor ops with the moments on the
//! device. Both compute the same f32 arithmetic.

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

const OP: &str = "AdamW";

/// AdamW's hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
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

enum Moments {
    /// CPU parameters: updated by [`HostUpdate`] in place.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Any other device: tensors of the parameter's shape, f32.
    Device { m: Tensor, v: Tensor },
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// AdamW over named f32 parameters.
pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    /// Updates taken so far (Adam's t, for the bias correction).
    steps: u64,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Parameters that had a gradient and were updated.
    pub updated: usize,
}

impl AdamW {
    /// An optimizer for `params` (HF names, f32 `Var`s); names must be unique.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        Self::build(params, config, false)
    }

    /// `device_moments`: keep the moments as tensors even on the CPU (the GPU path, for tests).
    fn build(
        params: Vec<(String, Var)>,
        config: AdamWConfig,
        device_moments: bool,
    ) -> Result<Self> {
        config.validate()?;
        let mut seen = std::collections::HashSet::new();
        let params = params
            .into_iter()
            .map(|(name, var)| {
                if !seen.insert(name.clone()) {
                    return Err(Error::bad_input(
                        OP,
                        "params",
                        format!("parameter `{name}` appears twice"),
                    ));
                }
                if var.dtype() != DType::F32 {
                    return Err(Error::bad_input(
                        OP,
                        "params",
                        format!("`{name}` is {:?}; master weights must be f32", var.dtype()),
                    ));
                }
                let n = var.elem_count();
                let moments = if var.device().is_cpu() && !device_moments {
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                };
                Ok(Param {
                    decay: decays(&name),
                    name,
                    var,
                    moments,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            config,
            steps: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// One update with learning rate `lr`, every gradient multiplied by `grad_scale` first (the
    /// clipping factor of [`clip_factor`]). Parameters without a gradient are left alone, moments
    /// included (as PyTorch does).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<StepStats> {
        if !(lr.is_finite() && lr >= 0.0 && grad_scale.is_finite()) {
            return Err(Error::bad_input(
                OP,
                "lr",
                format!(
                    "learning rate {lr} and gradient scale {grad_scale} must be finite, lr ≥ 0"
                ),
            ));
        }
        self.steps += 1;
        let t = self.steps as i32;
        let c = self.config;
        let coef = Coefficients {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bias1: 1.0 - c.beta1.powi(t),
            bias2: 1.0 - c.beta2.powi(t),
            grad_scale,
            decay: 0.0,
        };
        let mut updated = 0;
        for p in &mut self.params {
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
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            let coef = Coefficients {
                decay: if p.decay { c.weight_decay } else { 0.0 },
                ..coef
            };
            match &mut p.moments {
                Moments::Host { m, v } => {
                    let op = HostUpdate {
                        coef,
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                    };
                    p.var.as_tensor().inplace_op2(&g, &op)?;
                }
                Moments::Device { m, v } => {
                    let (next, m2, v2) = device_update(p.var.as_tensor(), &g, m, v, &coef)?;
                    p.var.set(&next)?;
                    *m = m2;
                    *v = v2;
                }
            }
            updated += 1;
        }
        Ok(StepStats { updated })
    }

    /// The optimizer state as tensors (on the CPU): `m.NAME` and `v.NAME` for every parameter.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            let shape = p.var.shape();
            let (m, v) = match &p.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, shape, &Device::Cpu)?,
                    Tensor::from_slice(v, shape, &Device::Cpu)?,
                ),
                Moments::Device { m, v } => {
                    (m.to_device(&Device::Cpu)?, v.to_device(&Device::Cpu)?)
                }
            };
            out.push((format!("m.{}", p.name), m));
            out.push((format!("v.{}", p.name), v));
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
        let mut loaded = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let mut get = |key: String| match tensors.remove(&key) {
                None => {
                    missing.push(key);
                    None
                }
                Some(t) if t.dims() != p.var.dims() || t.dtype() != DType::F32 => {
                    wrong_shape.push(format!(
                        "{key}: expected f32 {:?}, found {:?} {:?}",
                        p.var.dims(),
                        t.dtype(),
                        t.dims()
                    ));
                    None
                }
                Some(t) => Some(t),
            };
            let m = get(format!("m.{}", p.name));
            let v = get(format!("v.{}", p.name));
            loaded.push(m.zip(v));
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
        for (p, mv) in self.params.iter_mut().zip(loaded) {
            let Some((m, v)) = mv else { continue };
            p.moments = match p.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.flatten_all()?.to_vec1()?,
                    v: v.flatten_all()?.to_vec1()?,
                },
                Moments::Device { .. } => Moments::Device {
                    m: m.to_device(p.var.device())?,
                    v: v.to_device(p.var.device())?,
                },
            };
        }
        self.steps = steps;
        Ok(())
    }
}

/// The scalars of one parameter's update.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// 1 − β₁ᵗ and 1 − β₂ᵗ.
    bias1: f64,
    bias2: f64,
    grad_scale: f64,
    /// The weight decay of this parameter (0 for biases and LayerNorm).
    decay: f64,
}

/// The update as tensor ops: returns (θ', m', v').
fn device_update(
    theta: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: &Coefficients,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = (g * c.grad_scale)?;
    let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
    let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
    let denom = ((&v / c.bias2)?.sqrt()? + c.eps)?;
    let step = ((&m / c.bias1)? / denom)?;
    let theta = theta.detach();
    let next = ((&theta * (1.0 - c.lr * c.decay))? - (step * c.lr)?)?;
    Ok((next, m, v))
}

/// The fused CPU update: θ (in place) and the host moments in one pass.
struct HostUpdate<'a> {
    coef: Coefficients,
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
}

impl InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("adamw-update: parameter and gradient must be f32");
        };
        let (Some((t0, t1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw-update: parameter and gradient must be contiguous");
        };
        let (theta, grad) = (&mut theta[t0..t1], &grad[g0..g1]);
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if grad.len() != theta.len() || m.len() != theta.len() || v.len() != theta.len() {
            candle_core::bail!("adamw-update: parameter, gradient and moments differ in size");
        }
        let c = self.coef;
        let f = |x: f64| x as f32;
        let (lr, b1, b2, eps, gs) = (f(c.lr), f(c.beta1), f(c.beta2), f(c.eps), f(c.grad_scale));
        let (inv_bias1, inv_bias2) = (f(1.0 / c.bias1), f(1.0 / c.bias2));
        let shrink = f(1.0 - c.lr * c.decay);
        const CHUNK: usize = 1 << 14;
        theta
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((th, gr), mm), vv)| {
                for i in 0..th.len() {
                    let g = gr[i] * gs;
                    let m = b1 * mm[i] + (1.0 - b1) * g;
                    let v = b2 * vv[i] + (1.0 - b2) * g * g;
                    mm[i] = m;
                    vv[i] = v;
                    let step = (m * inv_bias1) / ((v * inv_bias2).sqrt() + eps);
                    th[i] = th[i] * shrink - lr * step;
                }
            });
        Ok(())
    }
}

/// The global L2 norm of the gradients of `vars` (those without one count as zero): each
/// gradient's sum of squares in f32, their sum in f64 in the order of `vars`, reduced on the
/// device and read once (one synchronisation per step, not one per parameter).
pub fn global_grad_norm<'a>(
    grads: &GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
) -> Result<f64> {
    let squares = vars
        .into_iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| Ok(g.to_dtype(DType::F32)?.sqr()?.sum_all()?))
        .collect::<Result<Vec<Tensor>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sum = Tensor::stack(&squares, 0)?
        .to_dtype(DType::F64)?
        .sum_all()?;
    Ok(crate::device::read_scalar::<f64>(&sum)?.sqrt())
}

/// The factor that brings a gradient of global norm `norm` to at most `max_norm` (1 when it is
/// already within; `max_norm` ≤ 0 or infinite: no clipping). A non-finite norm is an error: the
/// step must not be taken.
pub fn clip_factor(norm: f64, max_norm: f64) -> Result<f64> {
    if !norm.is_finite() {
        return Err(Error::bad_input(
            "clip_grad_norm",
            "grads",
            format!("the gradient norm is {norm}: a loss or gradient is not finite"),
        ));
    }
    Ok(
        if max_norm > 0.0 && max_norm.is_finite() && norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        },
    )
}

/// Linear warm-up to the peak learning rate, then linear decay to zero at `total` steps.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearSchedule {
    pub peak_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LinearSchedule {
    /// The REALM default warm-up, min(10000, max(100, total / 10)) steps, capped at `total`.
    pub fn new(peak_lr: f64, total: u64) -> Self {
        Self::with_warmup(peak_lr, default_warmup(total), total)
    }

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

    /// One parameter through two steps, checked against the formula evaluated by hand in f64.
    fn two_steps(device_moments: bool) -> (Vec<f32>, Vec<f32>) {
        let w = var(&[1.0, -2.0]);
        let b = var(&[0.5]);
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::build(
            vec![
                ("layer.dense.weight".into(), w.clone()),
                ("layer.dense.bias".into(), b.clone()),
            ],
            cfg,
            device_moments,
        )
        .unwrap();
        // loss = 3 w0 + w1² + 4 b: gradients (3, 2 w1) and 4.
        for (lr, scale) in [(0.1, 1.0), (0.05, 0.5)] {
            let wt = w.as_tensor();
            let loss = ((wt.get(0).unwrap() * 3.0).unwrap()
                + wt.get(1).unwrap().sqr().unwrap()
                + (b.as_tensor().sum_all().unwrap() * 4.0).unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let stats = opt.step(&grads, lr, scale).unwrap();
            assert_eq!(stats.updated, 2);
        }
        (
            w.as_tensor().to_vec1().unwrap(),
            b.as_tensor().to_vec1().unwrap(),
        )
    }

    fn by_hand() -> (Vec<f64>, f64) {
        let (b1, b2, eps, wd) = (0.9f64, 0.99f64, 1e-8f64, 0.1f64);
        let adam = |theta: &mut f64, grads: &[f64], decay: f64| {
            let (mut m, mut v) = (0.0, 0.0);
            for (t, (&g, (lr, scale))) in grads.iter().zip([(0.1, 1.0), (0.05, 0.5)]).enumerate() {
                let g = g * scale;
                m = b1 * m + (1.0 - b1) * g;
                v = b2 * v + (1.0 - b2) * g * g;
                let mh = m / (1.0 - b1.powi(t as i32 + 1));
                let vh = v / (1.0 - b2.powi(t as i32 + 1));
                *theta = *theta * (1.0 - lr * decay) - lr * mh / (vh.sqrt() + eps);
            }
        };
        let mut w0 = 1.0;
        adam(&mut w0, &[3.0, 3.0], wd);
        // w1's gradient 2·w1 depends on the first update.
        let mut w1 = -2.0f64;
        let g1 = 2.0 * w1;
        let mut first = w1;
        adam(&mut first, &[g1], wd);
        let g2 = 2.0 * first;
        adam(&mut w1, &[g1, g2], wd);
        let mut b = 0.5;
        adam(&mut b, &[4.0, 4.0], 0.0);
        (vec![w0, w1], b)
    }

    #[test]
    fn adamw_matches_a_hand_computed_update_on_both_paths() {
        let (want_w, want_b) = by_hand();
        for device_moments in [false, true] {
            let (w, b) = two_steps(device_moments);
            for (got, want) in w.iter().zip(&want_w) {
                assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
            }
            // The bias is not decayed: with decay it would differ by lr·wd·b ≈ 2.5e-3.
            assert!(
                (f64::from(b[0]) - want_b).abs() < 1e-6,
                "{} vs {want_b}",
                b[0]
            );
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
        assert_eq!(opt.step(&grads, 0.1, 1.0).unwrap().updated, 1);
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
