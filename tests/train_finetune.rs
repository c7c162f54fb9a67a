//! Open-QA fine-tuning on a slice of the demo data with a tiny from-scratch BERT: the loss falls,
//! the checkpoint holds the model, `reader/` and the fixed `index/`, `realm ask` answers from it,
//! and bad beams or question files are clear errors.

use realm::ask::{find_checkpoint, Asker};
use realm::device::ComputeDevice;
use realm::model::BertConfig;
use realm::train::finetune::{run_finetune, FinetuneConfig};
use realm::train::models::{ModelInit, Origin};
use realm::train::RunOptions;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-test-ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The documents of the first `n` train questions, and those questions.
fn data(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let questions = std::fs::read_to_string(repo().join("data/demo/train.jsonl")).unwrap();
    let questions: Vec<&str> = questions.lines().take(n).collect();
    let ids: Vec<u64> = questions
        .iter()
        .map(|q| {
            serde_json::from_str::<serde_json::Value>(q).unwrap()["doc_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let docs = std::fs::read_to_string(repo().join("data/demo/docs.jsonl")).unwrap();
    let docs: Vec<&str> = docs
        .lines()
        .filter(|d| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            ids.contains(&v["id"].as_u64().unwrap())
        })
        .collect();
    let (c, q) = (dir.join("docs.jsonl"), dir.join("questions.jsonl"));
    std::fs::write(&c, docs.join("\n") + "\n").unwrap();
    std::fs::write(&q, questions.join("\n") + "\n").unwrap();
    (c, q)
}

fn tiny(dir: &Path) -> FinetuneConfig {
    let mut bert = BertConfig::new(64, 1, 1);
    bert.vocab_size = 8000;
    bert.intermediate_size = 128;
    bert.max_position_embeddings = 256;
    let init = ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab: repo().join("data/demo/vocab.txt"),
        lowercase: true,
    });
    let (corpus, questions) = data(dir, 12);
    let mut cfg = FinetuneConfig::new(init, questions);
    cfg.corpus = Some(corpus);
    cfg.retriever.proj_size = 16;
    cfg.retriever_beam = 6;
    cfg.reader_beam = 3;
    cfg.query_len = 32;
    cfg.doc_len = 160;
    cfg.block_len = 160;
    cfg.train.steps = 40;
    cfg.train.batch = 4;
    cfg.train.lr = 2e-3;
    cfg.train.warmup = Some(4);
    cfg.train.log_every = 10;
    cfg
}

#[test]
fn fine_tuning_lowers_the_loss_and_leaves_an_answering_checkpoint() {
    let dir = temp("ok");
    let cfg = tiny(&dir);
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let report = run_finetune(&cfg, &dir.join("run"), &opts).unwrap();
    assert_eq!(report.steps, 40);
    let (first, last) = (report.first_loss.unwrap(), report.last_loss.unwrap());
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    let ckpt = find_checkpoint(&dir.join("run")).unwrap();
    for part in ["reader", "index", "model.safetensors", "trainer.json"] {
        assert!(ckpt.join(part).exists(), "{part} missing");
    }
    let asker = Asker::load(&ckpt, None, &realm::device::ComputeDevice::cpu().device).unwrap();
    let q = std::fs::read_to_string(&cfg.questions).unwrap();
    let first_q: serde_json::Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
    let answer = asker.ask(first_q["question"].as_str().unwrap()).unwrap();
    assert!(!answer.answer.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_beams_and_questions_are_clear_errors() {
    let dir = temp("bad");
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let mut cfg = tiny(&dir);
    cfg.reader_beam = 7;
    let err = run_finetune(&cfg, &dir.join("a"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reader beam 7"), "{err}");
    let mut cfg = tiny(&dir);
    cfg.retriever_beam = 1000;
    let err = run_finetune(&cfg, &dir.join("b"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds"), "{err}");
    let mut cfg = tiny(&dir);
    std::fs::write(dir.join("empty.jsonl"), "").unwrap();
    cfg.questions = dir.join("empty.jsonl");
    assert!(run_finetune(&cfg, &dir.join("c"), &opts).is_err());
    let mut cfg = tiny(&dir);
    cfg.corpus = None;
    let err = run_finetune(&cfg, &dir.join("d"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corpus"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
