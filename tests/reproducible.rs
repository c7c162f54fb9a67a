//! Results on the CPU do not depend on the thread count or on rayon's scheduling: every parallel
//! reduction of ours splits by shape and adds its partial results in a fixed order, and candle's
//! matmul (gemm) sums each output element in an order that its thread split does not change. So
//! the attention backward, a BERT forward+backward and a short ICT run give the same bits in thread
//! pools of 1, 2, 3 and 4 threads. (Another CPU or `REALM_CPU_SIMD=portable` may round differently:
//! see docs/training.md, "Reproducibility".)

mod common;

use candle_core::{DType, Device, Tensor};
use realm::device::ComputeDevice;
use realm::model::{BertConfig, BertInput, BertModel, Mode};
use realm::ops::attention::{forward_backward, random_qkv};
use realm::train::ict::{run_ict, IctConfig};
use realm::train::RunOptions;

const POOLS: [usize; 4] = [1, 2, 3, 4];

/// `f()` in a rayon pool of each size of [`POOLS`]; asserts that every run gives the first's value.
fn same_in_every_pool<T: PartialEq + std::fmt::Debug + Send>(what: &str, f: impl Fn() -> T + Sync) {
    let results: Vec<T> = POOLS
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(&f)
        })
        .collect();
    for (n, r) in POOLS.iter().zip(&results).skip(1) {
        assert!(
            *r == results[0],
            "{what}: {n} threads differ from {} thread",
            POOLS[0]
        );
    }
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn layer_norm_backward_is_the_same_for_every_thread_count() {
    // More rows than the backward's partial sums (dw, db) have tasks: each task sums many rows.
    let (rows, h) = (9000, 16);
    let mut rng = realm::rng::SplitMix64::new(3);
    let t = |v: Vec<f64>, shape: &[usize]| {
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let x = t(rng.normal_vec(rows * h, 3.0), &[rows, h]);
    let r = t(rng.normal_vec(rows * h, 1.0), &[rows, h]);
    let w = candle_core::Var::from_tensor(&t(rng.normal_vec(h, 1.0), &[h])).unwrap();
    let b = candle_core::Var::from_tensor(&t(rng.normal_vec(h, 1.0), &[h])).unwrap();
    same_in_every_pool("layer_norm", || {
        let xv = candle_core::Var::from_tensor(&x).unwrap();
        let y = realm::ops::layer_norm(xv.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        [xv.as_tensor(), w.as_tensor(), b.as_tensor()]
            .map(|v| {
                let g = grads.get(v).unwrap().to_dtype(DType::F64).unwrap();
                bits(&g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            })
            .to_vec()
    });
}

#[test]
fn attention_backward_is_the_same_for_every_thread_count() {
    // One head with many key blocks (the backward splits its keys into groups), and many heads.
    for (shape, lens) in [
        ((1, 1, 300, 64), vec![300u32]),
        ((2, 3, 130, 32), vec![130, 77]),
    ] {
        let qkvg = random_qkv(5, shape, DType::F32, &Device::Cpu).unwrap();
        let lens = realm::ops::KeyLens::new(&lens, &Device::Cpu).unwrap();
        same_in_every_pool(&format!("attention {shape:?}"), || {
            let grads = forward_backward(
                |q, k, v| realm::ops::attention(q, k, v, Some(&lens), 0.125, None),
                &qkvg,
            )
            .unwrap();
            grads.iter().map(|g| bits(g)).collect::<Vec<_>>()
        });
    }
}

#[test]
fn a_bert_forward_and_backward_is_the_same_for_every_thread_count() {
    // Enough rows (8 × 100 tokens) that LayerNorm's backward sums dw and db over several tasks.
    let mut config = BertConfig::new(64, 2, 2);
    config.vocab_size = 500;
    config.max_position_embeddings = 128;
    let bert = BertModel::new_random(&config, 3, &Device::Cpu).unwrap();
    let (b, l) = (8, 100);
    let ids: Vec<u32> = (0..b * l).map(|i| (i * 7919 % 499) as u32 + 1).collect();
    let lens: Vec<u32> = (0..b as u32).map(|i| 100 - 9 * i).collect();
    let input = BertInput::new(ids, None, &lens, &Device::Cpu).unwrap();
    same_in_every_pool("BERT forward+backward", || {
        let out = bert
            .forward(&input, Mode::Train { seed: 1, step: 2 })
            .unwrap();
        let loss = out
            .last_hidden_state
            .to_dtype(DType::F32)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        bert.vars()
            .iter()
            // The pooler does not reach this loss.
            .filter(|(name, _)| !name.contains("pooler"))
            .map(|(name, var)| {
                let g = grads.get(var.as_tensor()).unwrap();
                let g: Vec<u32> = g
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                (name.clone(), g)
            })
            .collect::<Vec<_>>()
    });
}

#[test]
fn an_ict_run_is_the_same_for_every_thread_count() {
    let dir = std::env::temp_dir().join(format!("realm-test-reproducible-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("docs.jsonl");
    let text: String = (0..48)
        .map(|i| {
            let body = format!(
                "Person {i} was born in town {}. Person {i} studied subject {}.",
                i * 3 % 11,
                i * 5 % 7
            );
            format!(
                "{}\n",
                serde_json::json!({"id": i, "title": "", "text": body})
            )
        })
        .collect();
    std::fs::write(&corpus, text).unwrap();
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    let init = common::scratch_init(bert);
    let mut cfg = IctConfig::new(init, corpus);
    cfg.retriever.proj_size = 32;
    cfg.block_len = 32;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.heldout = 8;
    cfg.eval_pool = 48;
    cfg.train.steps = 4;
    cfg.train.batch = 16;
    let runs = std::sync::atomic::AtomicUsize::new(0);
    same_in_every_pool("ICT weights after 4 steps", || {
        let run = dir.join(format!(
            "run{}",
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut opts = RunOptions::new(ComputeDevice::cpu());
        opts.quiet = true;
        run_ict(&cfg, &run, &opts).unwrap();
        std::fs::read(run.join("checkpoint/model.safetensors")).unwrap()
    });
    let _ = std::fs::remove_dir_all(dir);
}
