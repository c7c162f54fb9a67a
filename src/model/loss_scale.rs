//! Dynamic loss scaling for f16 training (Micikevicius et al. 2018): the loss is multiplied by a
//! scale before the backward so small gradients survive f16; if any gradient overflows, the step
//! is skipped and the scale halved; after `growth_interval` good steps in a row it doubles.
//! Master weights stay f32; bf16 needs none of this.

use crate::error::Result;
use crate::train::optim::global_grad_norm;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

#[derive(Clone, Debug)]
pub struct DynamicLossScaler {
    scale: f64,
    growth_interval: u32,
    good_steps: u32,
}

impl Default for DynamicLossScaler {
    /// PyTorch's GradScaler defaults: 2^16, doubling after 2000 good steps.
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

impl DynamicLossScaler {
    pub fn new(initial_scale: f64, growth_interval: u32) -> Self {
        DynamicLossScaler {
            scale: initial_scale,
            growth_interval: growth_interval.max(1),
            good_steps: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn growth_interval(&self) -> u32 {
        self.growth_interval
    }

    /// Good steps in a row since the scale last changed (a checkpoint keeps them, so that a
    /// resumed run grows the scale when the uninterrupted one would).
    pub fn good_steps(&self) -> u32 {
        self.good_steps
    }

    /// A scaler resumed with `good_steps` already counted.
    pub fn resumed(scale: f64, growth_interval: u32, good_steps: u32) -> Self {
        DynamicLossScaler {
            good_steps,
            ..Self::new(scale, growth_interval)
        }
    }

    /// The loss to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.affine(self.scale, 0.0)?)
    }

    /// Unscales the gradients of `vars` in place (as f32) and updates the scale. Returns their
    /// global L2 norm ([`global_grad_norm`], the step's one read from the device: a gradient
    /// that is not finite makes it so), or `None` when it was not finite: the caller skips the
    /// optimizer step.
    pub fn unscale(&mut self, grads: &mut GradStore, vars: &[Var]) -> Result<Option<f64>> {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = g.to_dtype(DType::F32)?.affine(1.0 / self.scale, 0.0)?;
                grads.insert(v.as_tensor(), g);
            }
        }
        let norm = global_grad_norm(grads, vars)?;
        if !norm.is_finite() {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return Ok(None);
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        Ok(Some(norm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn overflow_halves_and_skips_and_good_steps_grow_the_scale() {
        let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut s = DynamicLossScaler::new(8.0, 2);
        // An ordinary step: gradients come back unscaled.
        let loss = (w.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        let mut g = s.scale_loss(&loss).unwrap().backward().unwrap();
        assert!(s
            .unscale(&mut g, std::slice::from_ref(&w))
            .unwrap()
            .is_some());
        assert_eq!(
            g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            [3.0, 3.0]
        );
        // An overflowing step: skipped, scale halved.
        let loss = (w.as_tensor() * f64::from(f32::MAX))
            .unwrap()
            .sum_all()
            .unwrap();
        let mut g = s.scale_loss(&loss).unwrap().backward().unwrap();
        assert!(s
            .unscale(&mut g, std::slice::from_ref(&w))
            .unwrap()
            .is_none());
        assert_eq!(s.scale(), 4.0);
        // Two good steps in a row double it.
        for _ in 0..2 {
            let loss = w.as_tensor().sum_all().unwrap();
            let mut g = s.scale_loss(&loss).unwrap().backward().unwrap();
            assert!(s
                .unscale(&mut g, std::slice::from_ref(&w))
                .unwrap()
                .is_some());
        }
        assert_eq!(s.scale(), 8.0);
        // A scaler resumed after one good step doubles after one more, as the original would.
        let one_good = |s: &mut DynamicLossScaler| {
            let loss = w.as_tensor().sum_all().unwrap();
            let mut g = s.scale_loss(&loss).unwrap().backward().unwrap();
            assert!(s
                .unscale(&mut g, std::slice::from_ref(&w))
                .unwrap()
                .is_some());
        };
        one_good(&mut s);
        let mut resumed =
            DynamicLossScaler::resumed(s.scale(), s.growth_interval(), s.good_steps());
        one_good(&mut s);
        one_good(&mut resumed);
        assert_eq!((resumed.scale(), resumed.good_steps()), (16.0, 0));
        assert_eq!((s.scale(), s.good_steps()), (16.0, 0));
    }
}
