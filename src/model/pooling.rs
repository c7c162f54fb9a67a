//! Sentence embeddings from the encoder's last hidden state: the mean over real tokens (what
//! sentence-transformers does for all-MiniLM-L6-v2) or the `[CLS]` vector, optionally
//! L2-normalised. Computed in f32 whatever the compute dtype.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the hidden states of the first `len` tokens (`[CLS]` and `[SEP]` included).
    Mean,
    /// The hidden state of the first token, `[CLS]`.
    Cls,
}

impl FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            other => Err(Error::bad_input(
                "pooling",
                "pooling",
                format!("unknown pooling `{other}` (mean or cls)"),
            )),
        }
    }
}

/// `[b, l, h]` hidden states and `[b]` u32 lengths → `[b, h]` f32.
pub fn pool(hidden: &Tensor, lens: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let hidden = hidden.to_dtype(DType::F32)?;
    match pooling {
        Pooling::Cls => Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?),
        Pooling::Mean => {
            let l = hidden.dim(1)?;
            let valid = crate::device::upload((0..l as u32).collect(), (1, l), hidden.device())?
                .broadcast_lt(&lens.unsqueeze(1)?)?
                .to_dtype(DType::F32)?
                .unsqueeze(2)?;
            let sum = hidden.broadcast_mul(&valid)?.sum(1)?;
            let count = lens.to_dtype(DType::F32)?.unsqueeze(1)?;
            Ok(sum.broadcast_div(&count)?)
        }
    }
}

/// Each row divided by its L2 norm (at least 1e-12, as torch's `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
