//! The BERT encoder (Devlin et al. 2019) as Hugging Face's `BertModel` computes it, on any candle
//! device: embeddings, post-LayerNorm encoder layers whose self-attention is the fused
//! [`crate::ops::attention()`] (padding skipped by per-example length, no l × l mask), and the tanh
//! pooler.
//!
//! Parameters are f32 `Var`s (the master weights, named as in HF checkpoints); the compute dtype
//! may be f16 or bf16, in which case weights are cast on the fly while LayerNorm statistics stay
//! in f32.

use super::checkpoint::{self, Checkpoint, Init, ParamSource, RandomInit};
use super::config::{Activation, BertConfig};
use super::train_rng::{Site, TrainRng};
use crate::device;
use crate::error::{Error, Result};
use crate::ops::{nn, Heads, KeyLens};
use candle_core::{DType, Device, Tensor, Var};
use std::path::Path;

const OP: &str = "bert";

/// Whether a forward pass trains: `Train` applies the configured hidden and attention dropout
/// (masks a pure function of seed and step) and records the graph for gradients of the
/// parameters; `Eval` does neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inference: no dropout, no gradients needed.
    Eval,
    /// Training: dropout drawn from (seed, step), the graph recorded for gradients.
    Train {
        /// The run's seed.
        seed: u64,
        /// The training step (0-based): a new dropout mask each step.
        step: u64,
    },
}

/// One batch for the encoder, on the model's device. Built from host data ([`BertInput::new`]),
/// or from tensors ([`BertInput::from_tensors`]), so that what a forward checks (lengths, the
/// largest ids) is known on the host and no forward reads the device.
#[derive(Clone, Debug)]
pub struct BertInput {
    /// `[b, l]` u32 wordpiece ids.
    input_ids: Tensor,
    /// `[b, l]` u32 segment ids; `None` means segment 0 everywhere.
    token_type_ids: Option<Tensor>,
    /// Real tokens per example (1 ≤ len ≤ l); positions past it are padding.
    lens: KeyLens,
    /// The largest id in `input_ids` and in `token_type_ids` (0 without them).
    max_ids: [u32; 2],
}

impl BertInput {
    /// `lens.len()` rows of `input_ids.len() / lens.len()` wordpieces (and segment ids, if any),
    /// row-major, uploaded to `device` (one upload each).
    pub fn new(
        input_ids: Vec<u32>,
        token_type_ids: Option<Vec<u32>>,
        lens: &[u32],
        device: &Device,
    ) -> Result<Self> {
        let b = lens.len();
        if b == 0 || input_ids.is_empty() || !input_ids.len().is_multiple_of(b) {
            return Err(Error::bad_input(
                OP,
                "input_ids",
                format!("{} ids do not make {b} rows of ≥ 1", input_ids.len()),
            ));
        }
        let l = input_ids.len() / b;
        let max = |ids: &[u32]| ids.iter().copied().max().unwrap_or(0);
        let mut max_ids = [max(&input_ids), 0];
        let token_type_ids = match token_type_ids {
            Some(tt) if tt.len() != input_ids.len() => {
                return Err(Error::bad_input(
                    OP,
                    "token_type_ids",
                    format!("{} ids for {} wordpieces", tt.len(), input_ids.len()),
                ))
            }
            Some(tt) => {
                max_ids[1] = max(&tt);
                Some(device::upload(tt, (b, l), device)?)
            }
            None => None,
        };
        Ok(BertInput {
            input_ids: device::upload(input_ids, (b, l), device)?,
            token_type_ids,
            lens: KeyLens::new(lens, device)?,
            max_ids,
        })
    }

    /// From `[b, l]` u32 tensors on the model's device, with the lengths from the host: reads
    /// the largest ids (one read per tensor), for callers whose ids are on the device already.
    pub fn from_tensors(
        input_ids: Tensor,
        token_type_ids: Option<Tensor>,
        lens: &[u32],
    ) -> Result<Self> {
        let max = |arg, t: &Tensor| -> Result<u32> {
            if t.dtype() != DType::U32 || t.elem_count() == 0 {
                return Err(Error::bad_input(
                    OP,
                    arg,
                    format!("must be non-empty u32, got {:?} {:?}", t.dtype(), t.dims()),
                ));
            }
            device::read_scalar::<u32>(&t.flatten_all()?.max(0)?)
        };
        let max_ids = [
            max("input_ids", &input_ids)?,
            match &token_type_ids {
                Some(tt) => max("token_type_ids", tt)?,
                None => 0,
            },
        ];
        Ok(BertInput {
            lens: KeyLens::new(lens, input_ids.device())?,
            input_ids,
            token_type_ids,
            max_ids,
        })
    }

    /// From HF's `attention_mask` (`[b, l]`, any numeric dtype): each row must be ones followed
    /// by zeros, with at least one one; anything else (e.g. left padding) is an error.
    pub fn from_attention_mask(
        input_ids: Tensor,
        token_type_ids: Option<Tensor>,
        attention_mask: &Tensor,
    ) -> Result<Self> {
        let rows = device::read_vec2::<f32>(&attention_mask.to_dtype(DType::F32)?)?;
        let mut lens = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let n = row.iter().take_while(|&&m| m == 1.0).count();
            if n == 0 || row[n..].iter().any(|&m| m != 0.0) {
                return Err(Error::bad_input(
                    OP,
                    "attention_mask",
                    format!("row {i} is not a non-empty prefix of ones followed by zeros"),
                ));
            }
            lens.push(n as u32);
        }
        Self::from_tensors(input_ids, token_type_ids, &lens)
    }

    /// `[b, l]` u32 wordpiece ids.
    pub fn input_ids(&self) -> &Tensor {
        &self.input_ids
    }

    /// `[b, l]` u32 segment ids; `None` means segment 0 everywhere.
    pub fn token_type_ids(&self) -> Option<&Tensor> {
        self.token_type_ids.as_ref()
    }

    /// Real tokens per example; positions past it are padding.
    pub fn lens(&self) -> &KeyLens {
        &self.lens
    }
}

/// What the encoder returns, in the compute dtype.
#[derive(Clone, Debug)]
pub struct BertOutput {
    /// `[b, l, hidden]`; rows past an example's length are not meaningful.
    pub last_hidden_state: Tensor,
    /// `[b, hidden]`: tanh(dense(hidden state of `[CLS]`)).
    pub pooler_output: Tensor,
}

/// The BERT encoder with its pooler.
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Linear,
    /// Every parameter by HF name, in checkpoint order.
    params: Vec<(String, Var)>,
    compute_dtype: DType,
    device: Device,
}

impl BertModel {
    /// A model with HF's standard initialisation (normal(0, initializer_range) weights and
    /// embeddings, padding row zeroed, zero biases, LayerNorm scales one), reproducible from
    /// `seed`.
    pub fn new_random(config: &BertConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut src = RandomInit::new(seed, config.initializer_range, device);
        Self::build(config, device, &mut src)
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face model folder (prefix
    /// detected, see [`BertModel::from_safetensors`]).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        Self::from_safetensors(&config, dir.join("model.safetensors"), None, device)
    }

    /// Loads the parameters named as in HF's `BertModel` (`embeddings.word_embeddings.weight`,
    /// `encoder.layer.N.attention.self.query.weight`, ...) under `prefix` (`"bert."`, ...; None:
    /// detected from the word embeddings' name). Tensors outside the prefix are ignored; missing
    /// or unexpected tensors under it and wrong shapes are an [`Error::Checkpoint`] naming each.
    /// f16/bf16/f64 tensors are converted to f32.
    pub fn from_safetensors(
        config: &BertConfig,
        path: impl AsRef<Path>,
        prefix: Option<&str>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let mut src = Checkpoint::new(path, &bytes, prefix, device)?;
        let model = Self::build(config, device, &mut src)?;
        src.finish()?;
        Ok(model)
    }

    /// Writes `config.json` and `model.safetensors` (HF names, no prefix) into `dir`, each file
    /// atomically; loading them back gives bit-identical parameters.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        self.config.save(dir.join("config.json"))?;
        checkpoint::save(&dir.join("model.safetensors"), &self.params)
    }

    fn build(config: &BertConfig, device: &Device, src: &mut dyn ParamSource) -> Result<Self> {
        let mut b = Builder {
            src,
            params: Vec::new(),
            eps: config.layer_norm_eps,
        };
        let h = config.hidden_size;
        let embeddings = Embeddings {
            word: b.param(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, h],
                Init::NormalPaddingRow(config.pad_token_id as usize),
            )?,
            position: b.param(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
                Init::Normal,
            )?,
            token_type: b.param(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
                Init::Normal,
            )?,
            norm: b.layer_norm("embeddings.LayerNorm", h)?,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Layer {
                    query: b.linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: b.linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: b.linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: b.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: b.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    intermediate: b.linear(
                        &format!("{p}.intermediate.dense"),
                        h,
                        config.intermediate_size,
                    )?,
                    output: b.linear(&format!("{p}.output.dense"), config.intermediate_size, h)?,
                    output_norm: b.layer_norm(&format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = b.linear("pooler.dense", h, h)?;
        Ok(BertModel {
            config: config.clone(),
            embeddings,
            layers,
            pooler,
            params: b.params,
            // The device's best (bf16 where the kernels run, on a GPU or the emulator of the
            // calling thread's mode; f32 on the native CPU).
            compute_dtype: device::default_dtype(
                device.is_cuda() || device::Exec::current().cpu == device::CpuExec::Emulator,
            ),
            device: device.clone(),
        })
    }

    /// The model's size and layout.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every parameter by HF name (f32 master weights), e.g. for an optimizer.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.params
    }

    /// [`device::default_dtype`] of the device the model was built on (and the mode it was
    /// built in) unless set.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// Computes in `dtype` (f32, f16 or bf16) from now on; the master weights stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::bad_input(
                OP,
                "dtype",
                format!("compute dtype {dtype:?} is not f32, f16 or bf16"),
            ));
        }
        self.compute_dtype = dtype;
        Ok(())
    }

    /// The encoder and pooler on one batch.
    pub fn forward(&self, input: &BertInput, mode: Mode) -> Result<BertOutput> {
        self.check_input(input)?;
        let ctx = Ctx {
            dtype: self.compute_dtype,
            train: match mode {
                Mode::Eval => None,
                Mode::Train { seed, step } => Some(TrainRng { seed, step }),
            },
            config: &self.config,
        };
        let mut x = self.embeddings.forward(input, &ctx)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &input.lens, i, &ctx)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooler_output = self.pooler.forward(&cls, &ctx)?.tanh()?;
        Ok(BertOutput {
            last_hidden_state: x,
            pooler_output,
        })
    }

    /// Shapes, dtypes, devices and ranges of a batch: ids inside the vocabulary, segments inside
    /// the type vocabulary, 1 ≤ len ≤ l ≤ max_position_embeddings.
    fn check_input(&self, input: &BertInput) -> Result<()> {
        let bad = |arg, msg: String| Err(Error::bad_input(OP, arg, msg));
        let ids = &input.input_ids;
        let (b, l) = match ids.dims() {
            &[b, l] if b > 0 && l > 0 => (b, l),
            dims => {
                return bad(
                    "input_ids",
                    format!("shape {dims:?} must be [b, l], b, l ≥ 1"),
                )
            }
        };
        if l > self.config.max_position_embeddings {
            return bad(
                "input_ids",
                format!(
                    "sequence length {l} exceeds max_position_embeddings = {}",
                    self.config.max_position_embeddings
                ),
            );
        }
        let mut ranged = vec![("input_ids", ids, input.max_ids[0], self.config.vocab_size)];
        if let Some(tt) = &input.token_type_ids {
            if tt.dims() != ids.dims() {
                return bad(
                    "token_type_ids",
                    format!(
                        "shape {:?} differs from input_ids' {:?}",
                        tt.dims(),
                        ids.dims()
                    ),
                );
            }
            ranged.push((
                "token_type_ids",
                tt,
                input.max_ids[1],
                self.config.type_vocab_size,
            ));
        }
        for (arg, t, max, limit) in ranged {
            if t.dtype() != DType::U32 || !t.device().same_device(&self.device) {
                return bad(
                    arg,
                    format!("must be u32 on the model's device, got {:?}", t.dtype()),
                );
            }
            if max as usize >= limit {
                return bad(
                    arg,
                    format!("id {max} is outside the vocabulary of {limit}"),
                );
            }
        }
        let lens = input.lens.host();
        if lens.len() != b {
            return bad("lens", format!("{} lengths for {b} rows", lens.len()));
        }
        if let Some((i, &n)) = lens
            .iter()
            .enumerate()
            .find(|&(_, &n)| n == 0 || n as usize > l)
        {
            return bad("lens", format!("lens[{i}] = {n} is not in 1..={l}"));
        }
        Ok(())
    }
}

/// Collects parameters from a source, by HF name, in the order asked.
struct Builder<'a> {
    src: &'a mut dyn ParamSource,
    params: Vec<(String, Var)>,
    eps: f64,
}

impl Builder<'_> {
    fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let var = Var::from_tensor(&self.src.param(name, shape, init)?)?;
        self.params.push((name.to_string(), var.clone()));
        Ok(var)
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.param(&format!("{name}.weight"), &[outputs, inputs], Init::Normal)?,
            bias: self.param(&format!("{name}.bias"), &[outputs], Init::Zeros)?,
        })
    }

    fn layer_norm(&mut self, name: &str, size: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.param(&format!("{name}.weight"), &[size], Init::Ones)?,
            bias: self.param(&format!("{name}.bias"), &[size], Init::Zeros)?,
            eps: self.eps,
        })
    }
}

/// What one forward pass needs besides the activations.
struct Ctx<'a> {
    dtype: DType,
    train: Option<TrainRng>,
    config: &'a BertConfig,
}

impl Ctx<'_> {
    /// A master weight in f32, in the gradient graph only when training (an inference pass then
    /// keeps no activations alive).
    fn master(&self, v: &Var) -> Tensor {
        match self.train {
            Some(_) => v.as_tensor().clone(),
            None => v.as_detached_tensor(),
        }
    }

    /// A weight in the compute dtype.
    fn weight(&self, v: &Var) -> Result<Tensor> {
        Ok(self.master(v).to_dtype(self.dtype)?)
    }

    fn hidden_dropout(&self, x: &Tensor, site: Site) -> Result<Tensor> {
        match &self.train {
            Some(rng) => rng.hidden(x, self.config.hidden_dropout_prob, site),
            None => Ok(x.clone()),
        }
    }
}

struct Linear {
    /// `[out, in]`, as PyTorch stores it.
    weight: Var,
    bias: Var,
}

impl Linear {
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.forward_heads(x, Heads::Keep, ctx)
    }

    fn forward_heads(&self, x: &Tensor, heads: Heads, ctx: &Ctx) -> Result<Tensor> {
        let (w, b) = (ctx.weight(&self.weight)?, ctx.weight(&self.bias)?);
        crate::ops::linear(x, &w, &b, heads)
    }
}

struct LayerNorm {
    weight: Var,
    bias: Var,
    eps: f64,
}

impl LayerNorm {
    /// Statistics in f32 with the f32 master scale and shift, whatever `x`'s dtype (kept).
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let (w, b) = (ctx.master(&self.weight), ctx.master(&self.bias));
        nn::layer_norm(x, &w, &b, self.eps)
    }
}

struct Embeddings {
    word: Var,
    position: Var,
    token_type: Var,
    norm: LayerNorm,
}

impl Embeddings {
    /// word + position + segment embeddings (gathered from the f32 master tables), LayerNorm,
    /// dropout.
    fn forward(&self, input: &BertInput, ctx: &Ctx) -> Result<Tensor> {
        let (b, l) = input.input_ids.dims2()?;
        let gather = |table: &Var, ids: &Tensor| -> Result<Tensor> {
            let t = ctx.master(table);
            let h = t.dim(1)?;
            Ok(t.index_select(&ids.flatten_all()?, 0)?.reshape((b, l, h))?)
        };
        let words = gather(&self.word, &input.input_ids)?;
        let positions = ctx.master(&self.position).narrow(0, 0, l)?;
        let mut x = words.broadcast_add(&positions)?;
        x = match &input.token_type_ids {
            Some(tt) => (x + gather(&self.token_type, tt)?)?,
            None => x.broadcast_add(&ctx.master(&self.token_type).get(0)?)?,
        };
        let x = self.norm.forward(&x, ctx)?.to_dtype(ctx.dtype)?;
        ctx.hidden_dropout(&x, Site::Embeddings)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn forward(&self, x: &Tensor, lens: &KeyLens, index: usize, ctx: &Ctx) -> Result<Tensor> {
        let cfg = ctx.config;
        let heads = cfg.num_attention_heads;
        let dh = x.dim(2)? / heads;
        // q, k and v straight into the attention's [b, heads, l, dh], and its output read back
        // as rows by the output projection: no reshapes or copies for autograd to track.
        let [q, k, v] = [&self.query, &self.key, &self.value]
            .map(|p| p.forward_heads(x, Heads::Split(heads), ctx));
        let dropout = ctx
            .train
            .and_then(|rng| rng.attention(cfg.attention_probs_dropout_prob, index));
        let context = crate::ops::attention::attention(
            &q?,
            &k?,
            &v?,
            Some(lens),
            1.0 / (dh as f64).sqrt(),
            dropout,
        )?;
        let attended = self
            .attention_out
            .forward_heads(&context, Heads::Merge, ctx)?;
        let attended = ctx.hidden_dropout(&attended, Site::AttentionOutput(index))?;
        let x = self.attention_norm.forward(&(attended + x)?, ctx)?;

        let inner = self.intermediate.forward(&x, ctx)?;
        let inner = match cfg.hidden_act {
            Activation::Gelu => nn::gelu(&inner, nn::GeluForm::Erf)?,
            Activation::GeluNew => nn::gelu(&inner, nn::GeluForm::Tanh)?,
            Activation::Relu => inner.relu()?,
        };
        let out = self.output.forward(&inner, ctx)?;
        let out = ctx.hidden_dropout(&out, Site::FeedForwardOutput(index))?;
        self.output_norm.forward(&(out + x)?, ctx)
    }
}
