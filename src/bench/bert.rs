//! `realm bench bert`: tokens per second of the encoder on random full-length sequences, forward
//! (eval mode) or forward and backward (training mode: dropout on, gradients of every parameter).

use crate::device::ComputeDevice;
use crate::error::Result;
use crate::measure::{time, Budget, Report};
use crate::model::bert::{BertInput, BertModel, Mode};
use crate::model::config::BertConfig;
use crate::rng::SplitMix64;
use candle_core::DType;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Which encoder to time.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A Hugging Face model folder.
    Dir(PathBuf),
    /// A [`BertConfig::preset`] with random weights.
    Preset(String),
}

#[derive(Clone, Debug)]
pub struct BertBench {
    pub model: ModelSource,
    pub batch: usize,
    pub len: usize,
    /// Compute dtype; the weights stay f32.
    pub dtype: DType,
    pub backward: bool,
}

/// A timing plus throughput.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    #[serde(flatten)]
    pub timing: Report,
    /// batch × len / median time.
    pub tokens_per_s: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timing;
        write!(
            f,
            "{} [{}] {} on {}: {:.0} tokens/s (median {:.1} ms, min {:.1} ms, {} runs)",
            t.op, t.shape, t.dtype, t.device, self.tokens_per_s, t.median_ms, t.min_ms, t.iters
        )
    }
}

/// Multiply-adds ×2 of one token's forward pass at length `l`: the dense layers and the two
/// attention products (the pooler and embeddings are negligible).
fn flops_per_token(c: &BertConfig, l: usize) -> f64 {
    let h = c.hidden_size as f64;
    let dense = 4.0 * h * h + 2.0 * h * c.intermediate_size as f64;
    let attention = 2.0 * l as f64 * h;
    2.0 * c.num_hidden_layers as f64 * (dense + attention)
}

pub fn bench(dev: &ComputeDevice, spec: &BertBench, budget: Budget) -> Result<BenchReport> {
    let _exec = dev.enter()?;
    let mut model = match &spec.model {
        ModelSource::Dir(dir) => BertModel::load(dir, &dev.device)?,
        ModelSource::Preset(name) => {
            BertModel::new_random(&BertConfig::preset(name)?, 0, &dev.device)?
        }
    };
    model.set_compute_dtype(spec.dtype)?;
    let (b, l) = (spec.batch, spec.len);
    let mut rng = SplitMix64::new(1);
    let vocab = model.config().vocab_size as u64;
    let ids: Vec<u32> = (0..b * l).map(|_| rng.below(vocab) as u32).collect();
    let input = BertInput::new(ids, None, &vec![l as u32; b], &dev.device)?;
    let mut step = 0;
    let timing = time(dev, budget, || {
        if spec.backward {
            step += 1;
            let out = model.forward(&input, Mode::Train { seed: 0, step })?;
            out.last_hidden_state
                .to_dtype(DType::F32)?
                .sum_all()?
                .backward()?;
        } else {
            model.forward(&input, Mode::Eval)?;
        }
        Ok(())
    })?;
    let c = model.config();
    let tokens = (b * l) as f64;
    let passes = if spec.backward { 3.0 } else { 1.0 };
    let seconds = timing.median_ms / 1e3;
    Ok(BenchReport {
        timing: Report {
            op: if spec.backward {
                "bert fwd+bwd"
            } else {
                "bert fwd"
            }
            .into(),
            shape: format!(
                "b={b} l={l} layers={} hidden={} heads={}",
                c.num_hidden_layers, c.hidden_size, c.num_attention_heads
            ),
            dtype: format!("{:?}", spec.dtype).to_lowercase(),
            device: dev.to_string(),
            median_ms: timing.median_ms,
            min_ms: timing.min_ms,
            iters: timing.iters,
            gb_per_s: None,
            tflop_per_s: Some(passes * tokens * flops_per_token(c, l) / seconds / 1e12),
        },
        tokens_per_s: tokens / seconds,
    })
}
