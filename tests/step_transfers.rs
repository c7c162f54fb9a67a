//! The host↔device traffic of a REALM pre-training step, counted on the emulator as on a GPU
//! (`device::Exec::transfers`): a step reads the device at most twice, both in its exact MIPS
//! search (the queries, which `ops::mips` prepares on the host, and the retrieved block ids,
//! which build its batch); with f16 the loss scaler reads the gradient norm too. The loss, the
//! retrieval utility and the gradient norms are read once per log interval.

mod common;

use candle_core::{DType, Tensor};
use realm::device::{ComputeDevice, DeviceSpec, Transfers};
use realm::index::live::RefreshPolicy;
use realm::ops::mips::{mips_top_k, MipsIndex};
use realm::train::pretrain::{run_pretrain, PretrainConfig};
use realm::train::RunOptions;
use std::path::{Path, PathBuf};

/// 16 one-sentence documents.
fn corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..16 {
        let body = format!("Person {i} was born in the year {}.", 1900 + i);
        text += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": format!("Person {i}"), "text": body})
        );
    }
    let path = dir.join("docs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// A one-layer BERT (hidden 32, one head of 32, dropout on), k = 3, no index refresh, the loss
/// logged only at the last step.
fn tiny(corpus: PathBuf, steps: u64, dtype: &str) -> PretrainConfig {
    let mut cfg = common::tiny_pretrain(corpus);
    cfg.query_len = 16;
    cfg.doc_len = 16;
    cfg.block_len = 16;
    cfg.train.steps = steps;
    cfg.train.batch = 2;
    cfg.train.log_every = 1000;
    cfg.train.checkpoint_every = 0;
    cfg.train.checkpoint_minutes = 0.0;
    cfg.train.dtype = Some(dtype.into());
    cfg.refresh = RefreshPolicy {
        every: 0,
        swap_after: None,
        threads: 1,
    };
    cfg
}

/// What `steps` − `fewer` more steps cost: two runs that differ only in their length (the same
/// setup, one log line and one checkpoint at the end each).
fn per_extra_steps(dtype: &str, fewer: u64, steps: u64) -> Option<Transfers> {
    let dev = common::exec_device(DeviceSpec::Emulate)?;
    let dir = common::temp_dir(dtype);
    let docs = corpus(&dir);
    let mut opts = RunOptions::new(dev.clone());
    opts.quiet = true;
    let mut counted = Vec::new();
    for n in [fewer, steps] {
        let before = dev.exec.transfers();
        let report = run_pretrain(
            &tiny(docs.clone(), n, dtype),
            &dir.join(format!("run{n}")),
            &opts,
        )
        .unwrap();
        assert_eq!(report.steps, n);
        counted.push(dev.exec.transfers() - before);
    }
    let _ = std::fs::remove_dir_all(dir);
    Some(counted[1] - counted[0])
}

/// Device reads of one exact MIPS search on `dev` (one per training step).
fn search_reads(dev: &ComputeDevice) -> u64 {
    let _mode = dev.enter().unwrap();
    let docs = Tensor::ones((20, 16), DType::F16, &dev.device).unwrap();
    let index = MipsIndex::new(&docs).unwrap();
    let queries = Tensor::ones((2, 16), DType::F32, &dev.device).unwrap();
    let before = dev.exec.transfers();
    mips_top_k(&queries, &index, 2, None).unwrap();
    (dev.exec.transfers() - before).host_reads
}

#[test]
fn a_pretraining_step_reads_the_device_at_most_twice() {
    let Some(dev) = common::exec_device(DeviceSpec::Emulate) else {
        return;
    };
    let search = search_reads(&dev);
    eprintln!("an exact MIPS search reads the device {search} time(s)");
    assert!(search <= 2, "a search reads the device {search} times");
    // bf16 (the GPU default): two reads per step; f16: and the loss scaler's norm.
    for (dtype, per_step) in [("bf16", 2), ("f16", 3)] {
        let Some(extra) = per_extra_steps(dtype, 2, 5) else {
            return;
        };
        eprintln!(
            "{dtype}: per step {:.1} kernel launches, {:.1} device→host reads, {:.1} uploads",
            extra.launches as f64 / 3.0,
            extra.host_reads as f64 / 3.0,
            extra.uploads as f64 / 3.0
        );
        assert!(
            extra.host_reads <= per_step * 3,
            "{dtype}: {extra:?} over 3 steps"
        );
        // The step ran the kernels (attention, doc softmax, MIPS, the fused LayerNorm, GELU,
        // dropout and the multi-tensor AdamW: 91 launches) and uploaded its batch: 21 tensors
        // (ids, masks, positions, targets, ...), no dropout masks (drawn on the device: one
        // upload per dropout site would exceed this). AdamW as element-wise kernels per
        // parameter would add hundreds of launches.
        assert!(
            extra.launches > 0 && extra.launches <= 100 * 3,
            "{dtype}: {extra:?}"
        );
        assert!(
            extra.uploads > 0 && extra.uploads <= 21 * 3,
            "{dtype}: {extra:?}"
        );
    }
}
