//! Training-time randomness of the encoder, a pure function of (seed, step): hidden-state dropout
//! by a counter-based Philox mask ([`crate::ops::dropout`], drawn on the device), and the per-layer [`Dropout`] handed to the
//! fused attention. The same seed and step give the same masks on every device and execution path
//! (native CPU, emulator, GPU), so runs can be compared and resumed exactly.

use crate::error::Result;
use crate::ops::attention::Dropout;
use crate::ops::dropout::{dropout, DropoutMask};
use crate::rng::SplitMix64;
use candle_core::Tensor;

/// Where a hidden-state mask is drawn: the embeddings, or one of the two residual branches of a
/// layer. Each site gets its own Philox counter stream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    Embeddings,
    AttentionOutput(usize),
    FeedForwardOutput(usize),
}

impl Site {
    fn stream(self) -> u32 {
        match self {
            Site::Embeddings => 0,
            Site::AttentionOutput(layer) => 1 + 2 * layer as u32,
            Site::FeedForwardOutput(layer) => 2 + 2 * layer as u32,
        }
    }
}

/// The dropout state of one training forward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrainRng {
    pub seed: u64,
    pub step: u64,
}

impl TrainRng {
    /// Multiplies `x` by a mask of 0 and 1 / (1 − p): element i is dropped when Philox word
    /// `i % 4` of counter `[i / 4, site, step low, step high]` (keyed by the seed) is below
    /// `round(p · 2³²)`, the rule the attention op uses for its probabilities. Drawn where `x`
    /// is ([`crate::ops::dropout`]: one kernel launch on a GPU, nothing uploaded).
    pub fn hidden(&self, x: &Tensor, p: f32, site: Site) -> Result<Tensor> {
        dropout(
            x,
            DropoutMask {
                p,
                seed: self.seed,
                stream: site.stream(),
                step: self.step,
            },
        )
    }

    /// The attention-probability dropout of `layer`: its own Philox key (derived from the seed
    /// and the layer), the step as the counter offset.
    pub fn attention(&self, p: f32, layer: usize) -> Option<Dropout> {
        (p > 0.0).then(|| Dropout {
            p,
            seed: SplitMix64::new(
                self.seed ^ (layer as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
            .next_u64(),
            offset: self.step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn masks_depend_on_seed_step_and_site_only() {
        let x = Tensor::ones((64, 33), candle_core::DType::F32, &Device::Cpu).unwrap();
        let draw = |seed, step, site| {
            TrainRng { seed, step }
                .hidden(&x, 0.25, site)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = draw(7, 3, Site::Embeddings);
        assert_eq!(a, draw(7, 3, Site::Embeddings));
        for other in [
            draw(8, 3, Site::Embeddings),
            draw(7, 4, Site::Embeddings),
            draw(7, 3, Site::AttentionOutput(0)),
        ] {
            assert_ne!(a, other);
        }
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.05, "dropped fraction {dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    }
}
