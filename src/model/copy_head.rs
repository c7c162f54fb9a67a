//! An optional copy head for the knowledge-augmented encoder's masked-LM head: the logits of
//! the tokens of the row's own retrieved block are raised by how much the masked position
//! attends to them, logit'(y) = logit(y) + λ·log(ε + Σ_{block positions j with token y} a_j),
//! with a the attention of the mask's state over the block's positions (a bilinear pointer) and
//! λ learnt. It is CopyNet's idea (Gu et al. 2016) in product form: the masked-LM head knows what
//! *kind* of word fits (a language, a continent), the block says which such word is there, so a
//! small model can answer from a block without first learning to carry the word's identity
//! through attention into the tied decoder. A row without a block (the null document) gets the
//! same shift for every token, so its prediction is the masked-LM's alone: the head cannot help
//! without retrieval.
//!
//! Parameters: `cls.copy.{query,key}.{weight,bias}` [h, h] and `cls.copy.scale` [1]; a
//! checkpoint without them has no copy head.

use super::bert::BertInput;
use super::checkpoint::{Init, ParamSource};
use super::heads::{param, take, Dense, Source, TensorFile};
use crate::error::Result;
use candle_core::{DType, Tensor, Var, D};

/// The module prefix under the encoder's head root.
pub(crate) const MODULE: &str = "cls.copy.";

/// Attention mass a token absent from the block is treated as having: with a uniform start
/// (about 1/150 per position) a present token is raised by about 4 nats (λ = 1).
const FLOOR: f64 = 1e-4;

pub(crate) struct CopyHead {
    query: Dense,
    key: Dense,
    /// λ, the weight of the block's evidence.
    scale: Var,
}

impl CopyHead {
    /// Whether `file` holds a copy head under `root`.
    pub fn in_file(file: &TensorFile, root: &str) -> bool {
        file.has(&format!("{root}{MODULE}query.weight"))
    }

    /// The head from `src` (under `{root}cls.copy.`), its parameters recorded in `params`.
    pub fn build(
        src: &mut Source,
        root: &str,
        hidden: usize,
        params: &mut Vec<(String, Var)>,
    ) -> Result<Self> {
        src.module(&format!("{root}{MODULE}"), |s: &mut dyn ParamSource| {
            let mut dense = |name: &str| -> Result<Dense> {
                let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
                Ok(Dense {
                    // The identity: the first scores are the similarity of the mask's state to
                    // each block position's, not the near-zero saddle of two small random maps.
                    weight: take(s, MODULE, &w, &[hidden, hidden], Init::Identity, params)?,
                    bias: take(s, MODULE, &b, &[hidden], Init::Zeros, params)?,
                })
            };
            let (query, key) = (dense("query")?, dense("key")?);
            let scale = take(s, MODULE, "scale", &[1], Init::Ones, params)?;
            Ok(CopyHead { query, key, scale })
        })
    }

    /// What to add to the masked-LM logits [r·m, vocab] for `hidden` [r, l, h] (the encoder's
    /// last states, f32) and `picked` [r·m, h] (those at the masks). Block positions are
    /// segment 1 before the row's final `[SEP]`.
    pub fn logit_bias(
        &self,
        input: &BertInput,
        hidden: &Tensor,
        picked: &Tensor,
        vocab: usize,
        train: bool,
    ) -> Result<Tensor> {
        let (r, l, h) = hidden.dims3()?;
        let m = picked.dim(0)? / r;
        let dev = hidden.device();
        let block = match input.token_type_ids() {
            Some(types) => {
                let last = input
                    .lens()
                    .tensor()
                    .to_dtype(DType::F32)?
                    .affine(1.0, -1.0)?;
                let pos = crate::device::upload((0..l).map(|i| i as f32).collect(), (1, l), dev)?;
                let before_sep = pos.broadcast_lt(&last.unsqueeze(1)?)?;
                (types.eq(1u32)?.to_dtype(DType::F32)? * before_sep.to_dtype(DType::F32)?)?
            }
            None => Tensor::zeros((r, l), DType::F32, dev)?,
        };
        let q = self.query.forward(picked, train)?.reshape((r, m, h))?;
        let k = self
            .key
            .forward(&hidden.reshape((r * l, h))?, train)?
            .reshape((r, l, h))?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (h as f64).sqrt())?;
        // Positions outside the block get −1e4 (not −inf: a row without a block stays finite),
        // and no attention.
        let outside = block.affine(1e4, -1e4)?.unsqueeze(1)?;
        let attention = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&outside)?)?
            .broadcast_mul(&block.unsqueeze(1)?)?
            .contiguous()?;
        // Attention mass per vocabulary entry: [r, m, vocab].
        let ids = input
            .input_ids()
            .unsqueeze(1)?
            .broadcast_as((r, m, l))?
            .contiguous()?;
        let mass = Tensor::zeros((r, m, vocab), DType::F32, dev)?.scatter_add(
            &ids,
            &attention,
            D::Minus1,
        )?;
        let evidence = mass.affine(1.0, FLOOR)?.log()?.reshape((r * m, vocab))?;
        Ok(evidence.broadcast_mul(&param(&self.scale, train))?)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{BertConfig, BertInput, KnowledgeEncoder, Mode};
    use candle_core::{Device, Tensor, D};

    /// Two rows of 8 positions: row 0 has a block (segment 1 at 4..7, its `[SEP]` at 7), row 1
    /// is the null document (`[CLS] x [SEP] [SEP]`, length 5). Masks at position 2.
    fn rows(dev: &Device) -> (BertInput, Tensor) {
        let ids: Vec<u32> = vec![2, 10, 4, 3, 20, 21, 22, 3, 2, 11, 4, 3, 3, 0, 0, 0];
        let types: Vec<u32> = vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        let input = BertInput::new(ids, Some(types), &[8, 5], dev).unwrap();
        let positions = Tensor::from_vec(vec![2u32, 2], (2, 1), dev).unwrap();
        (input, positions)
    }

    fn encoder(dev: &Device) -> KnowledgeEncoder {
        let mut c = BertConfig::new(32, 1, 1);
        (c.vocab_size, c.intermediate_size, c.max_position_embeddings) = (40, 64, 16);
        KnowledgeEncoder::new_random(&c, 7, dev).unwrap()
    }

    #[test]
    fn the_biased_distribution_sums_to_one_and_matches_the_target_path() {
        let dev = Device::Cpu;
        let (input, positions) = rows(&dev);
        let mut enc = encoder(&dev);
        enc.add_copy_head(3).unwrap();
        assert!(enc.has_copy_head());
        let all = enc
            .masked_log_softmax(&input, &positions, Mode::Eval)
            .unwrap();
        let mass = all.exp().unwrap().sum(D::Minus1).unwrap();
        for m in mass.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((f64::from(m) - 1.0).abs() < 1e-5, "mass {m}");
        }
        // The training path (target only) gives the same numbers, for block and other tokens.
        for target in [20u32, 22, 5] {
            let targets = Tensor::from_vec(vec![target; 2], (2, 1), &dev).unwrap();
            let one = enc
                .masked_log_probs(&input, &positions, &targets, Mode::Eval)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let from_all = all
                .narrow(2, target as usize, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in one.iter().zip(&from_all) {
                assert!((a - b).abs() < 1e-5, "target {target}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn only_a_row_with_a_block_can_copy() {
        let dev = Device::Cpu;
        let (input, positions) = rows(&dev);
        let mut enc = encoder(&dev);
        let plain = enc
            .masked_log_softmax(&input, &positions, Mode::Eval)
            .unwrap();
        enc.add_copy_head(3).unwrap();
        let copying = enc
            .masked_log_softmax(&input, &positions, Mode::Eval)
            .unwrap();
        let at = |t: &Tensor, row: usize, tok: usize| -> f32 {
            t.get(row)
                .unwrap()
                .get(0)
                .unwrap()
                .get(tok)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        // The null document's row: the masked-LM's distribution, unchanged.
        for tok in 0..40 {
            assert!((at(&plain, 1, tok) - at(&copying, 1, tok)).abs() < 1e-5);
        }
        // The block's row: its tokens gain, the rest lose.
        for tok in [20, 21, 22] {
            assert!(at(&copying, 0, tok) > at(&plain, 0, tok));
        }
        assert!(at(&copying, 0, 5) < at(&plain, 0, 5));
        // Its [SEP] and the query's tokens are not block positions.
        assert!(at(&copying, 0, 3) < at(&plain, 0, 3));
        assert!(at(&copying, 0, 10) < at(&plain, 0, 10));
    }

    #[test]
    fn the_copy_head_is_saved_and_loaded() {
        let dev = Device::Cpu;
        let (input, positions) = rows(&dev);
        let mut enc = encoder(&dev);
        enc.add_copy_head(3).unwrap();
        let dir = std::env::temp_dir().join(format!("realm-copy-head-{}", std::process::id()));
        enc.save(&dir).unwrap();
        let back = KnowledgeEncoder::load(&dir, &dev).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(back.has_copy_head());
        let a = enc
            .masked_log_softmax(&input, &positions, Mode::Eval)
            .unwrap();
        let b = back
            .masked_log_softmax(&input, &positions, Mode::Eval)
            .unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}
