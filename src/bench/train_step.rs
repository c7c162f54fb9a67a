//! `realm bench train-step`: one REALM pre-training step, timed phase by phase on random data:
//! retrieval (query tower + exact MIPS over a random index), forward (relevance of the k
//! candidates by the current towers, the encoder over the b·k joined rows, the marginal loss),
//! backward, and the optimizer (clipping + AdamW over every parameter). Each phase is
//! synchronised with the device, so GPU time is counted where it is spent.

use crate::device::{read_vec1, upload, ComputeDevice, Transfers};
use crate::error::{Error, Result};
use crate::model::{
    BertConfig, BertInput, KnowledgeEncoder, MaskSlots, MlmBatch, Mode, RealmModel, RealmSettings,
    Retriever, RetrieverConfig,
};
use crate::ops::mips::{mips_top_k, MipsIndex};
use crate::rng::SplitMix64;
use crate::train::optim::{AdamW, AdamWConfig};
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

const OP: &str = "bench train-step";

/// What `realm bench train-step` runs: one pre-training step of random data at these sizes.
#[derive(Clone, Debug)]
pub struct TrainStepSpec {
    /// A preset size (tiny, mini, small, medium, base, large) or a Hugging Face BERT folder.
    pub model: String,
    /// Queries per step.
    pub batch: usize,
    /// Candidates per query, the null document included.
    pub docs: usize,
    /// Joined encoder rows `[CLS] x [SEP] body [SEP]`, in wordpieces.
    pub len: usize,
    /// `[CLS] x [SEP]` in wordpieces (the query part of `len`).
    pub query_len: usize,
    /// Masked wordpieces per query.
    pub masks: usize,
    /// Blocks in the random index searched.
    pub index_size: usize,
    /// BERT's compute dtype (f32, bf16, f16).
    pub dtype: DType,
    /// Measured steps after one warm-up step.
    pub steps: usize,
}

/// Median milliseconds of each phase, and throughput.
#[derive(Clone, Debug, Serialize)]
pub struct TrainStepReport {
    /// Always `train-step`.
    pub op: String,
    /// The model as given: a preset name or a folder.
    pub model: String,
    /// The device it ran on (`cpu`, `emulate`, `cuda:0`).
    pub device: String,
    /// BERT's compute dtype, lower case.
    pub dtype: String,
    /// Queries per step.
    pub batch: usize,
    /// Candidates per query, the null document included.
    pub docs: usize,
    /// Wordpieces per joined encoder row.
    pub len: usize,
    /// Wordpieces per query.
    pub query_len: usize,
    /// Blocks in the random index searched.
    pub index_size: usize,
    /// Trainable parameters (elements) the optimizer updates.
    pub parameters: usize,
    /// Median milliseconds of the query tower and the exact MIPS.
    pub retrieval_ms: f64,
    /// Median milliseconds of relevance, encoder over the joined rows and marginal loss.
    pub forward_ms: f64,
    /// Median milliseconds of the backward pass.
    pub backward_ms: f64,
    /// Median milliseconds of the gradient norm, clipping and AdamW.
    pub optimizer_ms: f64,
    /// Median milliseconds of the whole step (the median of the phase sums).
    pub step_ms: f64,
    /// b·k·len (the encoder's joined rows) per second of the whole step: comparable with a
    /// plain masked-LM step over the same b·k sequences.
    pub tokens_per_s: f64,
    /// Every wordpiece through a BERT (queries twice, documents, joined rows) per second.
    pub all_tokens_per_s: f64,
    /// Steps measured (after one warm-up step).
    pub steps: usize,
    /// Kernel launches, device→host reads and host→device uploads of one step, by phase.
    pub transfers: PhaseTransfers,
}

/// [`Transfers`] of each phase of a step, and of the whole step.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PhaseTransfers {
    /// The query tower and the MIPS search.
    pub retrieval: Transfers,
    /// Relevance, the encoder over the joined rows and the marginal loss.
    pub forward: Transfers,
    /// The backward pass.
    pub backward: Transfers,
    /// Gradient norm, clipping and AdamW.
    pub optimizer: Transfers,
    /// The whole step.
    pub step: Transfers,
}

impl std::fmt::Display for TrainStepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "train-step {} b={} k={} l={} {} on {}: {:.0} ms/step (retrieval {:.0}, forward {:.0}, backward {:.0}, optimizer {:.0}), {:.0} tokens/s; per step {} kernel launches, {} device→host reads, {} uploads",
            self.model,
            self.batch,
            self.docs,
            self.len,
            self.dtype,
            self.device,
            self.step_ms,
            self.retrieval_ms,
            self.forward_ms,
            self.backward_ms,
            self.optimizer_ms,
            self.tokens_per_s,
            self.transfers.step.launches,
            self.transfers.step.host_reads,
            self.transfers.step.uploads,
        )
    }
}

/// A model of the asked size with random weights, or from a folder, with a tokenizer folder.
fn model(spec: &TrainStepSpec, dev: &Device) -> Result<RealmModel> {
    let settings = RealmSettings {
        num_candidates: spec.docs.max(2),
        query_seq_len: spec.query_len,
        candidate_seq_len: spec.len - spec.query_len + 2,
        max_masks: spec.masks,
    };
    let rcfg = RetrieverConfig::default();
    let dir = PathBuf::from(&spec.model);
    if dir.is_dir() {
        return RealmModel::from_bert_dir(&dir, &rcfg, &settings, 0, dev);
    }
    let config = BertConfig::preset(&spec.model)?;
    // A vocabulary of the preset's size, so the tokenizer checks pass; the ids are random anyway.
    let vocab_dir = std::env::temp_dir().join(format!("realm-bench-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&vocab_dir).map_err(|e| Error::file(&vocab_dir, e))?;
    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend((words.len()..config.vocab_size).map(|i| format!("w{i}")));
    std::fs::write(vocab_dir.join("vocab.txt"), words.join("\n") + "\n")
        .map_err(|e| Error::file(&vocab_dir, e))?;
    let retriever = Retriever::new_random(&config, &rcfg, 0, dev)?;
    let encoder = KnowledgeEncoder::new_random(&config, 1, dev)?;
    let model = RealmModel::from_parts(retriever, encoder, &vocab_dir, &settings);
    let _ = std::fs::remove_dir_all(&vocab_dir);
    model
}

/// `rows` random rows of `len` ids below `vocab` with `[CLS]` first, as a full-length batch.
fn random_rows(
    rng: &mut SplitMix64,
    rows: usize,
    len: usize,
    vocab: usize,
    dev: &Device,
) -> Result<BertInput> {
    let ids: Vec<u32> = (0..rows * len)
        .map(|i| {
            if i % len == 0 {
                2
            } else {
                5 + rng.below(vocab as u64 - 5) as u32
            }
        })
        .collect();
    let segments: Vec<u32> = (0..rows * len)
        .map(|i| u32::from(i % len >= len / 2))
        .collect();
    BertInput::new(ids, Some(segments), &vec![len as u32; rows], dev)
}

/// Loads the model (a folder, or a preset with random weights) and a random index on `dev` and
/// times `spec.steps` steps phase by phase; an unknown preset, an unloadable folder or
/// inconsistent sizes are errors.
pub fn bench_train_step(dev: &ComputeDevice, spec: &TrainStepSpec) -> Result<TrainStepReport> {
    let _exec = dev.enter()?;
    let d = &dev.device;
    let (b, k, l, q) = (spec.batch, spec.docs, spec.len, spec.query_len);
    if b == 0
        || k == 0
        || spec.masks == 0
        || spec.steps == 0
        || q < 3
        || q + 2 > l
        || spec.masks > q - 2
    {
        return Err(Error::bad_input(
            OP,
            "shape",
            format!("batch {b}, docs {k}, len {l}, query_len {q}, masks {}, steps {}: need all ≥ 1, 3 ≤ query_len ≤ len − 2, masks ≤ query_len − 2", spec.masks, spec.steps),
        ));
    }
    if spec.index_size < k {
        return Err(Error::bad_input(
            OP,
            "index_size",
            format!(
                "{} blocks cannot give {k} documents per query",
                spec.index_size
            ),
        ));
    }
    let mut model = model(spec, d)?;
    model.set_compute_dtype(spec.dtype)?;
    let vocab = model.encoder().config().vocab_size;
    let params = model.vars();
    let parameters = params.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(params, AdamWConfig::default())?;

    let mut rng = SplitMix64::new(7);
    let proj = model.retriever().config().proj_size;
    let index_rows: Vec<f32> = (0..spec.index_size * proj)
        .map(|_| rng.normal() as f32)
        .collect();
    let index = MipsIndex::new(&upload(index_rows, (spec.index_size, proj), d)?)?;
    let doc_len = l - q + 2;
    let queries = random_rows(&mut rng, b, q, vocab, d)?;
    let docs = random_rows(&mut rng, b * k, doc_len, vocab, d)?;
    let joined = random_rows(&mut rng, b * k, l, vocab, d)?;
    let positions: Vec<u32> = (0..b * spec.masks)
        .map(|i| 1 + (i % spec.masks) as u32)
        .collect();
    let targets: Vec<u32> = (0..b * spec.masks)
        .map(|_| 5 + rng.below(vocab as u64 - 5) as u32)
        .collect();
    let slots = MaskSlots::new(positions, targets, vec![1; b * spec.masks], spec.masks, d)?;
    let batch = MlmBatch {
        queries: &queries,
        docs: &docs,
        joined: &joined,
        slots: &slots,
        candidate_mask: None,
        doc_scores: None,
    };

    let mut phases: Vec<[f64; 4]> = Vec::new();
    let mut transfers = PhaseTransfers::default();
    for step in 0..=spec.steps {
        let counted = dev.exec.transfers();
        let t = Instant::now();
        let emb = model
            .retriever()
            .query_tower()
            .embed(&queries, Mode::Eval)?;
        let (_, hits) = mips_top_k(&emb, &index, (k - 1).max(1), None)?;
        // The training loop reads the hits to build the batch of documents.
        read_vec1::<u32>(&hits)?;
        dev.synchronize()?;
        let retrieval = t.elapsed().as_secs_f64();
        let after_retrieval = dev.exec.transfers();
        let t = Instant::now();
        let out = model.mlm_forward(
            &batch,
            Mode::Train {
                seed: 0,
                step: step as u64,
            },
        )?;
        dev.synchronize()?;
        let forward = t.elapsed().as_secs_f64();
        let after_forward = dev.exec.transfers();
        let t = Instant::now();
        let grads = out.loss.backward()?;
        dev.synchronize()?;
        let backward = t.elapsed().as_secs_f64();
        let after_backward = dev.exec.transfers();
        let t = Instant::now();
        // As the trainer between logged steps: clipped on the device, the norm not read (the
        // trainer reads it, summed over the steps, at logged steps and checkpoints).
        opt.step(&grads, 1e-5, 1.0)?;
        dev.synchronize()?;
        let optimizer = t.elapsed().as_secs_f64();
        let after_optimizer = dev.exec.transfers();
        if step > 0 {
            phases.push([retrieval, forward, backward, optimizer]);
            // Every step transfers the same; the last measured one is reported.
            transfers = PhaseTransfers {
                retrieval: after_retrieval - counted,
                forward: after_forward - after_retrieval,
                backward: after_backward - after_forward,
                optimizer: after_optimizer - after_backward,
                step: after_optimizer - counted,
            };
        }
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = phases.iter().map(|p| p[i] * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut steps: Vec<f64> = phases.iter().map(|p| p.iter().sum::<f64>() * 1e3).collect();
    steps.sort_by(f64::total_cmp);
    let step_ms = steps[steps.len() / 2];
    let all_tokens = 2 * b * q + b * k * doc_len + b * k * l;
    Ok(TrainStepReport {
        op: "train-step".into(),
        model: spec.model.clone(),
        device: dev.to_string(),
        dtype: format!("{:?}", spec.dtype).to_lowercase(),
        batch: b,
        docs: k,
        len: l,
        query_len: q,
        index_size: spec.index_size,
        parameters,
        retrieval_ms: median(0),
        forward_ms: median(1),
        backward_ms: median(2),
        optimizer_ms: median(3),
        step_ms,
        tokens_per_s: (b * k * l) as f64 / (step_ms / 1e3),
        all_tokens_per_s: all_tokens as f64 / (step_ms / 1e3),
        steps: phases.len(),
        transfers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_step_is_timed_phase_by_phase() {
        let spec = TrainStepSpec {
            model: "tiny".into(),
            batch: 2,
            docs: 3,
            len: 32,
            query_len: 12,
            masks: 2,
            index_size: 50,
            dtype: DType::F32,
            steps: 1,
        };
        let r = bench_train_step(&ComputeDevice::cpu(), &spec).unwrap();
        assert_eq!(r.steps, 1);
        let sum = r.retrieval_ms + r.forward_ms + r.backward_ms + r.optimizer_ms;
        assert!(
            (sum - r.step_ms).abs() < 1e-6 && r.tokens_per_s > 0.0,
            "{r:?}"
        );
        let bad = TrainStepSpec {
            query_len: 40,
            ..spec
        };
        assert!(bench_train_step(&ComputeDevice::cpu(), &bad).is_err());
    }
}
