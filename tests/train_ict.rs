//! ICT warm start of the retriever on a tiny synthetic corpus with a tiny from-scratch BERT.

use realm::device::ComputeDevice;
use realm::model::BertConfig;
use realm::train::ict::{run_ict, IctConfig};
use realm::train::models::{ModelInit, Origin};
use realm::train::run::read_metrics;
use realm::train::RunOptions;
use std::path::{Path, PathBuf};

mod common;
use common::outcome::{seeds, summarise};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-test-ict-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const FIRST: [&str; 8] = [
    "John", "Mary", "Peter", "Anna", "James", "Paul", "George", "William",
];
const LAST: [&str; 8] = [
    "Smith", "Taylor", "Hall", "Young", "King", "Green", "Cook", "Bell",
];
const PLACES: [&str; 8] = [
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Cairo", "Lima",
];
const SUBJECTS: [&str; 8] = [
    "music", "art", "history", "science", "law", "medicine", "poetry", "physics",
];

/// 64 documents of two sentences about 64 people: a sentence's only clue to its document is the
/// name, which ICT has to learn to match.
fn corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..64 {
        let name = format!("{} {}", FIRST[i % 8], LAST[i / 8]);
        let body = format!(
            "{name} was born in {}. {name} studied {}.",
            PLACES[(i * 3) % 8],
            SUBJECTS[(i * 5) % 8]
        );
        text += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": "", "text": body})
        );
    }
    let path = dir.join("docs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ict_raises_held_out_recall_over_the_untrained_retriever() {
    let dir = temp("recall");
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    // Without dropout the tiny model learns in a few dozen steps.
    bert.hidden_dropout_prob = 0.0;
    bert.attention_probs_dropout_prob = 0.0;
    let init = ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt"),
        lowercase: true,
    });
    let mut cfg = IctConfig::new(init, corpus(&dir));
    cfg.retriever.proj_size = 32;
    cfg.retriever.proj_dropout = 0.0;
    cfg.block_len = 32;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.heldout = 16;
    cfg.eval_pool = 64;
    cfg.train.steps = 80;
    cfg.train.batch = 16;
    cfg.train.lr = 3e-3;
    cfg.train.warmup = Some(8);
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let seeds = seeds(&[0, 1, 2]);
    let mut gains = Vec::new();
    for &seed in &seeds {
        cfg.train.seed = seed;
        let run = dir.join(format!("run-{seed}"));
        let report = run_ict(&cfg, &run, &opts).unwrap();
        let (before, after) = (report.recall_before.unwrap(), report.recall_after.unwrap());
        eprintln!(
            "seed {seed}: held-out recall@1 {:.3} → {:.3}, @5 {:.3} → {:.3}",
            before.recall_at_1, after.recall_at_1, before.recall_at_5, after.recall_at_5
        );
        // Held-out blocks are never trained on; the pool has 64 contexts (recall@5 by chance:
        // 5/64).
        assert_eq!((after.queries, after.pool), (16, 64));
        gains.push(after.recall_at_5 - before.recall_at_5);
        // The metrics file has the loss and the recall before and after.
        let metrics = read_metrics(run.join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.first().unwrap().recall_at_5,
            Some(before.recall_at_5)
        );
        assert_eq!(metrics.last().unwrap().recall_at_5, Some(after.recall_at_5));
        assert!(metrics.iter().any(|m| m.loss.is_some() && m.lr.is_some()));
        assert!(run.join("checkpoint/trainer.json").exists());
    }
    let gain = summarise("ICT: held-out recall@5 gain", &seeds, &gains);
    assert!(gain >= 0.3, "median recall@5 gain {gain}");
    let _ = std::fs::remove_dir_all(dir);
}
