//! The small layers REALM puts on top of BERT (the retriever's projection, the masked-LM head),
//! and where their parameters come from: a seeded standard initialisation or a safetensors file
//! read module by module under Hugging Face names. Computed in f32 whatever BERT's compute dtype.

use super::checkpoint::{Checkpoint, Init, ParamSource, RandomInit};
use crate::error::{Error, Result};
use crate::ops::nn;
use candle_core::{Device, Tensor, Var};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A `model.safetensors` held in memory, with the names it contains.
pub(crate) struct TensorFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
    names: HashSet<String>,
}

impl TensorFile {
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let names = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, e))?
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        Ok(TensorFile {
            path: path.to_path_buf(),
            bytes,
            names,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// Where the parameters of a head come from.
pub(crate) enum Source<'a> {
    Random(RandomInit),
    File(&'a TensorFile, Device),
}

impl Source<'_> {
    /// Runs `build` against the parameters under `prefix` (a module path such as
    /// `"embedder.cls.dense."`): from the file, every tensor under the prefix must be asked for
    /// and have the asked shape, or the error names each that does not fit.
    pub fn module<R>(
        &mut self,
        prefix: &str,
        build: impl FnOnce(&mut dyn ParamSource) -> Result<R>,
    ) -> Result<R> {
        match self {
            Source::Random(init) => build(init),
            Source::File(file, device) => {
                let mut src = Checkpoint::new(&file.path, &file.bytes, Some(prefix), device)?;
                let out = build(&mut src)?;
                src.finish()?;
                Ok(out)
            }
        }
    }
}

/// Whether a forward pass records the graph of the parameters (training) or not.
pub(crate) fn param(v: &Var, train: bool) -> Tensor {
    if train {
        v.as_tensor().clone()
    } else {
        v.as_detached_tensor()
    }
}

/// `x wᵀ + b` over the last dimension of a 2-D `x`.
pub(crate) struct Dense {
    pub weight: Var,
    pub bias: Var,
}

impl Dense {
    /// `weight` [outputs, inputs] normal, `bias` zero, named `{name}weight`/`{name}bias`.
    pub fn build(
        src: &mut dyn ParamSource,
        name: &str,
        inputs: usize,
        outputs: usize,
        params: &mut Vec<(String, Var)>,
    ) -> Result<Self> {
        Ok(Dense {
            weight: take(
                src,
                name,
                "weight",
                &[outputs, inputs],
                Init::Normal,
                params,
            )?,
            bias: take(src, name, "bias", &[outputs], Init::Zeros, params)?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (w, b) = (param(&self.weight, train), param(&self.bias, train));
        crate::ops::linear(x, &w, &b, crate::ops::Heads::Keep)
    }
}

/// LayerNorm over the last dimension (f32 statistics).
pub(crate) struct Norm {
    pub weight: Var,
    pub bias: Var,
    pub eps: f64,
}

impl Norm {
    /// Scale one, shift zero, named `{name}weight`/`{name}bias`.
    pub fn build(
        src: &mut dyn ParamSource,
        name: &str,
        size: usize,
        eps: f64,
        params: &mut Vec<(String, Var)>,
    ) -> Result<Self> {
        Ok(Norm {
            weight: take(src, name, "weight", &[size], Init::Ones, params)?,
            bias: take(src, name, "bias", &[size], Init::Zeros, params)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (w, b) = (param(&self.weight, train), param(&self.bias, train));
        nn::layer_norm(x, &w, &b, self.eps)
    }
}

/// One parameter `leaf` of the module whose full name prefix is `name`, recorded in `params`.
pub(crate) fn take(
    src: &mut dyn ParamSource,
    name: &str,
    leaf: &str,
    shape: &[usize],
    init: Init,
    params: &mut Vec<(String, Var)>,
) -> Result<Var> {
    let var = Var::from_tensor(&src.param(leaf, shape, init)?)?;
    params.push((format!("{name}{leaf}"), var.clone()));
    Ok(var)
}

/// Copies every parameter of `from` into `to` (same names, same order): with `to` freshly built,
/// a deep copy that training `from` further leaves untouched.
pub(crate) fn copy_params(to: &[(String, Var)], from: &[(String, Var)]) -> Result<()> {
    if to.len() != from.len() {
        return Err(Error::bad_input(
            "copy_params",
            "from",
            format!("{} parameters for {}", from.len(), to.len()),
        ));
    }
    for ((dst_name, dst), (src_name, src)) in to.iter().zip(from) {
        if dst_name != src_name {
            return Err(Error::bad_input(
                "copy_params",
                "from",
                format!("parameter `{src_name}` where `{dst_name}` was expected"),
            ));
        }
        // On another device (a refresh's stream), copied there first.
        dst.set(&src.as_detached_tensor().to_device(dst.device())?)?;
    }
    Ok(())
}
