//! Sentence embeddings: [`Embedder`] (model + tokenizer + pooling) and `realm embed`, which
//! embeds every text of a file into a safetensors file.
//!
//! Input: one text per line, or, for a `.jsonl` file, one JSON object per line with a string
//! field `"text"`. Output: safetensors with `embeddings`, `[n, hidden]` f32, row i for text i, and
//! metadata `model`, `pooling`, `normalized`.

use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::model::bert::{BertModel, Mode};
use crate::model::pooling::{l2_normalize, pool, Pooling};
use crate::model::tokenizer::{BertTokenizer, Overflow};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A model folder ready to embed text.
pub struct Embedder {
    pub model: BertModel,
    pub tokenizer: BertTokenizer,
    /// Longer texts are truncated to this many wordpieces (`[CLS]` and `[SEP]` included).
    pub max_len: usize,
}

impl Embedder {
    /// The model, config and tokenizer of a Hugging Face folder; their vocabularies must agree.
    pub fn load(dir: impl AsRef<Path>, device: &candle_core::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let model = BertModel::load(dir, device)?;
        let tokenizer = BertTokenizer::from_dir(dir)?;
        tokenizer.check_vocab(model.config())?;
        let max_len = model.config().max_position_embeddings;
        Ok(Embedder {
            model,
            tokenizer,
            max_len,
        })
    }

    /// `[texts.len(), hidden]` f32 embeddings of one batch. Only the first `max_len` wordpieces
    /// of a text matter, and only as much of it is tokenised.
    pub fn embed(&self, texts: &[&str], pooling: Pooling, normalize: bool) -> Result<Tensor> {
        let batch = self.tokenizer.encode_batch(
            texts,
            self.max_len,
            Overflow::Truncate,
            self.model.device(),
        )?;
        let out = self.model.forward(&batch.input, Mode::Eval)?;
        let pooled = pool(&out.last_hidden_state, batch.input.lens().tensor(), pooling)?;
        if normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }
}

/// What `realm embed` was asked to do.
#[derive(Clone, Debug)]
pub struct EmbedFile {
    pub model: PathBuf,
    pub input: PathBuf,
    pub out: PathBuf,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Texts per forward pass.
    pub batch: usize,
    /// Truncation length; None: the model's max_position_embeddings.
    pub max_len: Option<usize>,
    /// Compute dtype (f32, f16 or bf16); None: the model's default for the device.
    pub dtype: Option<DType>,
}

/// Embeds every text of `opts.input` and writes them to `opts.out`; returns how many.
pub fn embed_file(dev: &ComputeDevice, opts: &EmbedFile) -> Result<usize> {
    if opts.batch == 0 {
        return Err(Error::bad_input("embed", "batch", "must be at least 1"));
    }
    let _exec = dev.enter()?;
    let mut embedder = Embedder::load(&opts.model, &dev.device)?;
    if let Some(dtype) = opts.dtype {
        embedder.model.set_compute_dtype(dtype)?;
    }
    if let Some(n) = opts.max_len {
        let positions = embedder.max_len;
        if !(2..=positions).contains(&n) {
            return Err(Error::bad_input(
                "embed",
                "max_len",
                format!(
                    "--max-len {n}: must be between 2 ([CLS] and [SEP]) and the model's \
                     {positions} positions"
                ),
            ));
        }
        embedder.max_len = n;
    }
    let texts = read_texts(&opts.input)?;
    if texts.is_empty() {
        return Err(Error::file(&opts.input, "holds no texts"));
    }
    // Batches of similar lengths waste little on padding; rows go back to input order at the end.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut rows = Vec::with_capacity(order.len().div_ceil(opts.batch));
    for chunk in order.chunks(opts.batch) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        rows.push(embedder.embed(&batch, opts.pooling, opts.normalize)?);
    }
    let sorted = Tensor::cat(&rows, 0)?.contiguous()?;
    let mut inverse = vec![0u32; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        inverse[i] = pos as u32;
    }
    let inverse = Tensor::new(inverse.as_slice(), sorted.device())?;
    let embeddings = sorted
        .index_select(&inverse, 0)?
        .to_device(&candle_core::Device::Cpu)?;
    let metadata = HashMap::from([
        ("model".to_string(), opts.model.display().to_string()),
        (
            "pooling".to_string(),
            format!("{:?}", opts.pooling).to_lowercase(),
        ),
        ("normalized".to_string(), opts.normalize.to_string()),
    ]);
    let bytes = safetensors::serialize([("embeddings", &embeddings)], Some(metadata))
        .map_err(|e| Error::file(&opts.out, e))?;
    crate::io::write_atomic(&opts.out, |w| w.write_all(&bytes))?;
    Ok(texts.len())
}

/// The texts of a file: its lines, or the `"text"` fields of a `.jsonl` file (blank lines
/// skipped there).
fn read_texts(path: &Path) -> Result<Vec<String>> {
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut lines = crate::lines::Lines::open(path)?;
    let mut texts = Vec::new();
    while let Some((n, line)) = lines.next() {
        let line = line.map_err(|e| lines.error(n, &e))?;
        if !jsonl {
            texts.push(line);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let parse = |msg: String| Error::Parse {
            path: path.to_path_buf(),
            line: n,
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| parse(e.to_string()))?;
        let text = value
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| parse("no string field \"text\"".into()))?;
        texts.push(text.to_string());
    }
    Ok(texts)
}
