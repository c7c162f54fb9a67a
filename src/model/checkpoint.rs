//! Where the encoder's parameters come from and go to: standard initialisation from a seed, a
//! Hugging Face `model.safetensors` (by HF tensor names, with or without a prefix such as `bert.`),
//! and saving in the same layout.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use safetensors::SafeTensors;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// How a parameter is initialised when there is no checkpoint (HF's `BertPreTrainedModel`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// Normal(0, initializer_range): dense weights.
    Normal,
    /// Normal(0, initializer_range) with the row of the padding token zeroed: word embeddings.
    NormalPaddingRow(usize),
    /// Biases.
    Zeros,
    /// LayerNorm scales.
    Ones,
    /// The identity matrix (square shapes): a projection that starts as a no-op.
    Identity,
}

/// Supplies each parameter by HF name (without prefix) and shape, as an f32 tensor.
pub(crate) trait ParamSource {
    fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor>;
}

/// Standard initialisation from a seed: the same parameters on every machine.
pub(crate) struct RandomInit {
    rng: SplitMix64,
    std: f64,
    device: Device,
}

impl RandomInit {
    pub fn new(seed: u64, std: f64, device: &Device) -> Self {
        RandomInit {
            rng: SplitMix64::new(seed),
            std,
            device: device.clone(),
        }
    }
}

impl ParamSource for RandomInit {
    fn param(&mut self, _name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Identity => {
                let width = shape.last().copied().unwrap_or(1).max(1);
                (0..n)
                    .map(|i| f32::from(u8::from(i / width == i % width)))
                    .collect()
            }
            Init::Normal | Init::NormalPaddingRow(_) => {
                let mut v: Vec<f32> = (0..n)
                    .map(|_| (self.rng.normal() * self.std) as f32)
                    .collect();
                if let (Init::NormalPaddingRow(row), Some(&width)) = (init, shape.last()) {
                    v[row * width..(row + 1) * width].fill(0.0);
                }
                v
            }
        };
        Ok(Tensor::from_vec(data, shape, &self.device)?)
    }
}

/// Buffers HF writes next to the parameters that carry no learned state.
const BUFFERS: [&str; 1] = ["embeddings.position_ids"];

/// A parsed `model.safetensors`, read under one prefix; problems are collected while the model
/// asks for its parameters and reported together by [`Checkpoint::finish`].
pub(crate) struct Checkpoint<'a> {
    path: PathBuf,
    st: SafeTensors<'a>,
    prefix: String,
    device: Device,
    requested: HashSet<String>,
    missing: Vec<String>,
    wrong_shape: Vec<String>,
}

impl<'a> Checkpoint<'a> {
    /// Parses `bytes` (the contents of `path`). With `prefix` None, the prefix is found from the
    /// word embeddings' name (`""`, `"bert."`, `"realm.embedder.bert."`, ...); more than one
    /// candidate is an error naming them.
    pub fn new(
        path: &Path,
        bytes: &'a [u8],
        prefix: Option<&str>,
        device: &Device,
    ) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, e))?;
        let prefix = match prefix {
            Some(p) => p.to_string(),
            None => {
                const ANCHOR: &str = "embeddings.word_embeddings.weight";
                let mut found: Vec<String> = st
                    .names()
                    .into_iter()
                    .filter_map(|n| n.strip_suffix(ANCHOR).map(str::to_string))
                    .collect();
                found.sort();
                match found.len() {
                    0 => String::new(),
                    1 => found.remove(0),
                    _ => {
                        return Err(Error::file(
                            path,
                            format!(
                                "holds several BERTs (prefixes {found:?}); choose one explicitly"
                            ),
                        ))
                    }
                }
            }
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            st,
            prefix,
            device: device.clone(),
            requested: HashSet::new(),
            missing: Vec::new(),
            wrong_shape: Vec::new(),
        })
    }

    /// Every problem met: names under the prefix that the model did not ask for (besides HF's
    /// buffers) are unexpected.
    pub fn finish(self) -> Result<()> {
        let mut unexpected: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(self.prefix.as_str()))
            .filter(|n| !self.requested.contains(*n) && !BUFFERS.contains(n))
            .map(|n| format!("{}{n}", self.prefix))
            .collect();
        unexpected.sort();
        if self.missing.is_empty() && unexpected.is_empty() && self.wrong_shape.is_empty() {
            return Ok(());
        }
        Err(Error::Checkpoint {
            path: self.path,
            missing: self.missing,
            unexpected,
            wrong_shape: self.wrong_shape,
        })
    }
}

impl ParamSource for Checkpoint<'_> {
    fn param(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor> {
        self.requested.insert(name.to_string());
        let full = format!("{}{name}", self.prefix);
        // A stand-in so that the model can be built to the end and every problem reported.
        let stand_in = || Tensor::zeros(shape, DType::F32, &self.device);
        let view = match self.st.tensor(&full) {
            Ok(v) => v,
            Err(_) => {
                self.missing.push(full);
                return Ok(stand_in()?);
            }
        };
        let dtype_ok = matches!(
            view.dtype(),
            safetensors::Dtype::F32
                | safetensors::Dtype::F16
                | safetensors::Dtype::BF16
                | safetensors::Dtype::F64
        );
        if view.shape() != shape || !dtype_ok {
            self.wrong_shape.push(format!(
                "{full}: expected f32 {shape:?}, found {:?} {:?}",
                view.dtype(),
                view.shape()
            ));
            return Ok(stand_in()?);
        }
        Ok(view.load(&self.device)?.to_dtype(DType::F32)?)
    }
}

/// Writes `params` (HF names) to `path` as safetensors, atomically, marked as PyTorch-format so
/// that transformers loads it too.
pub(crate) fn save(path: &Path, params: &[(String, Var)]) -> Result<()> {
    let on_cpu = params
        .iter()
        .map(|(n, v)| Ok((n.as_str(), v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(on_cpu, Some(metadata)).map_err(|e| Error::file(path, e))?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes))
}
