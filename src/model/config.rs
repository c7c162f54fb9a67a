//! `BertConfig`: the fields of Hugging Face's `config.json` for BERT that the encoder uses, and
//! small presets for models trained from scratch.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The feed-forward non-linearity (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `x · Φ(x)` with the error function (HF's "gelu").
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation (HF's "gelu_new", also written "gelu_pytorch_tanh").
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluNew,
    /// `max(x, 0)` (HF's "relu").
    #[serde(rename = "relu")]
    Relu,
}

/// A BERT configuration, read from and written to HF's `config.json` layout (unknown fields are
/// ignored on read; defaults are HF's `BertConfig` defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the word embedding table: the tokenizer's vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state; a multiple of `num_attention_heads`.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; the head width `hidden_size / num_attention_heads` must be 32,
    /// 64 or 128 (the fused attention's sizes).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer's inner activation.
    pub intermediate_size: usize,
    /// The feed-forward non-linearity (default GELU).
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// Dropout probability on embeddings and sublayer outputs while training, in [0, 1)
    /// (default 0.1).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f32,
    /// Dropout probability on attention probabilities while training, in [0, 1) (default 0.1).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f32,
    /// Longest sequence the position embeddings cover, special tokens included (default 512).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments); 2 for BERT's pairs.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initialisation of new weights (default 0.02).
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// The epsilon of every layer norm (default 1e-12).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of `[PAD]`; its word embedding row starts at zero (default 0).
    #[serde(default)]
    pub pad_token_id: u32,
    /// Only "absolute" is implemented; anything else is rejected by [`BertConfig::validate`].
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Written for HF's loaders; always "bert".
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f32 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_model_type() -> String {
    "bert".into()
}

impl BertConfig {
    /// A from-scratch configuration with HF's defaults for everything but the sizes
    /// (intermediate = 4 × hidden, BERT's uncased WordPiece vocabulary of 30,522).
    pub fn new(hidden_size: usize, num_hidden_layers: usize, num_attention_heads: usize) -> Self {
        BertConfig {
            vocab_size: 30_522,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size: 4 * hidden_size,
            hidden_act: default_act(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            max_position_embeddings: default_max_positions(),
            type_vocab_size: default_type_vocab(),
            initializer_range: default_init_range(),
            layer_norm_eps: default_eps(),
            pad_token_id: 0,
            position_embedding_type: default_position_type(),
            model_type: default_model_type(),
        }
    }

    /// Named sizes: `tiny` (2 layers, hidden 128, 2 heads), `mini` (4 × 256, 4 heads),
    /// `small` (4 × 512, 8 heads), `medium` (8 × 512), `base` (12 × 768, 12 heads, BERT-base) and
    /// `large` (24 × 1024, 16 heads); the names and sizes of Turc et al.'s compact BERTs.
    pub fn preset(name: &str) -> Result<Self> {
        let (h, layers, heads) = match name {
            "tiny" => (128, 2, 2),
            "mini" => (256, 4, 4),
            "small" => (512, 4, 8),
            "medium" => (512, 8, 8),
            "base" => (768, 12, 12),
            "large" => (1024, 24, 16),
            other => {
                return Err(Error::bad_input(
                    "BertConfig::preset",
                    "name",
                    format!("unknown preset `{other}` (tiny, mini, small, medium, base, large)"),
                ))
            }
        };
        Ok(Self::new(h, layers, heads))
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| Error::file(path, e))?;
        config.validate().map_err(|e| Error::file(path, e))?;
        Ok(config)
    }

    /// Writes `config.json` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_json_atomic(path, self)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Rejects configurations the encoder cannot run, saying which field is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_input("BertConfig", "config", msg));
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !crate::ops::attention::HEAD_DIMS.contains(&self.head_dim()) {
            return bad(format!(
                "head dimension {} (hidden_size / num_attention_heads) is not supported by the \
                 fused attention (32, 64 or 128)",
                self.head_dim()
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return bad(format!(
                "layer_norm_eps = {} must be positive",
                self.layer_norm_eps
            ));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return bad(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if self.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type `{}` is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_fields_and_rejects_unknown_activations() {
        let json = r#"{"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 128, "hidden_act": "gelu_new",
            "architectures": ["BertModel"]}"#;
        let c: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.hidden_act, Activation::GeluNew);
        assert_eq!(c.layer_norm_eps, 1e-12);
        c.validate().unwrap();
        let back: BertConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let swish = json.replace("gelu_new", "swish");
        assert!(serde_json::from_str::<BertConfig>(&swish).is_err());
    }

    #[test]
    fn rejects_head_dims_the_attention_op_lacks() {
        let mut c = BertConfig::new(96, 1, 2);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("head dimension 48"));
        c.num_attention_heads = 3;
        c.validate().unwrap();
    }
}
