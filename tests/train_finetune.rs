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

mod common;
use common::outcome::{seeds, summarise};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
    let dir = common::temp_dir("ok");
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let seeds = seeds(&[0, 1, 2]);
    let mut ratios = Vec::new();
    for &seed in &seeds {
        let mut cfg = tiny(&dir);
        cfg.train.seed = seed;
        let run = dir.join(format!("run-{seed}"));
        let report = run_finetune(&cfg, &run, &opts).unwrap();
        assert_eq!(report.steps, 40);
        ratios.push(report.last_loss.unwrap() / report.first_loss.unwrap());
        let ckpt = find_checkpoint(&run).unwrap();
        for part in ["reader", "index", "model.safetensors", "trainer.json"] {
            assert!(ckpt.join(part).exists(), "{part} missing");
        }
        let asker = Asker::load(&ckpt, None, &realm::device::ComputeDevice::cpu().device).unwrap();
        let q = std::fs::read_to_string(&cfg.questions).unwrap();
        let first_q: serde_json::Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
        let answer = asker.ask(first_q["question"].as_str().unwrap()).unwrap();
        assert!(!answer.answer.is_empty());
    }
    let ratio = summarise("fine-tuning: last loss / first loss", &seeds, &ratios);
    assert!(ratio < 0.8, "median loss ratio {ratio}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_beams_and_questions_are_clear_errors() {
    let dir = common::temp_dir("bad");
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let mut cfg = tiny(&dir);
    cfg.reader_beam = 7;
    let err = run_finetune(&cfg, &dir.join("a"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reader_beam") && err.contains("7 must be"),
        "{err}"
    );
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

/// The demo's cloze stage: pre-training on the questions' cloze forms from a fine-tuned
/// checkpoint with the retriever frozen trains the encoder alone, retrieves from the fine-tuned
/// checkpoint's own index, keeps its reader, and logs the stage as `cloze`.
#[test]
fn a_cloze_stage_trains_the_encoder_alone_and_keeps_the_reader() {
    use realm::model::RealmModel;
    use realm::train::pretrain::{run_pretrain, PretrainConfig};
    let dir = common::temp_dir("cloze");
    let ft = tiny(&dir);
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    run_finetune(&ft, &dir.join("ft"), &opts).unwrap();
    let ft_ckpt = find_checkpoint(&dir.join("ft")).unwrap();
    let init = ModelInit::Checkpoint {
        dir: ft_ckpt.clone(),
    };
    let mut cfg = PretrainConfig::new(init, ft.corpus.clone().unwrap());
    cfg.cloze_questions = Some(ft.questions.clone());
    cfg.freeze_retriever = true;
    cfg.top_k = 3;
    (cfg.query_len, cfg.doc_len, cfg.block_len) = (32, 160, 160);
    (cfg.train.steps, cfg.train.batch, cfg.train.lr) = (30, 4, 2e-3);
    cfg.train.warmup = Some(3);
    cfg.train.log_every = 10;
    let seeds = seeds(&[0, 1, 2]);
    let mut ratios = Vec::new();
    for &seed in &seeds {
        cfg.train.seed = seed;
        let run = dir.join(format!("cloze-{seed}"));
        let report = run_pretrain(&cfg, &run, &opts).unwrap();
        ratios.push(report.last_loss.unwrap() / report.first_loss.unwrap());
        assert_eq!(report.refreshes, 0);
        assert_eq!(report.max_staleness, 0);
    }
    let ratio = summarise("cloze stage: last loss / first loss", &seeds, &ratios);
    assert!(ratio < 1.0, "median loss ratio {ratio}");
    // The rest is about what the stage keeps and changes: the first seed's run.
    let cloze = dir.join(format!("cloze-{}", seeds[0]));

    let ckpt = find_checkpoint(&cloze).unwrap();
    let dev = candle_core::Device::Cpu;
    let (before, after) = (
        RealmModel::load(&ft_ckpt, &dev).unwrap(),
        RealmModel::load(&ckpt, &dev).unwrap(),
    );
    let max_change = |prefix: &str| -> f32 {
        let old = before.vars();
        after
            .vars()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, v)| {
                let o = &old.iter().find(|(m, _)| m == n).unwrap().1;
                let d = (v.as_tensor() - o.as_tensor()).unwrap().abs().unwrap();
                d.max_all().unwrap().to_scalar::<f32>().unwrap()
            })
            .fold(0.0, f32::max)
    };
    assert_eq!(max_change("embedder."), 0.0, "the retriever changed");
    assert!(max_change("encoder.") > 0.0, "the encoder did not train");
    // The fine-tuned index (its embeddings and blocks) and reader are the ones kept.
    for file in [
        "index/embeddings.safetensors",
        "index/blocks.jsonl",
        "reader/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(ft_ckpt.join(file)).unwrap(),
            std::fs::read(ckpt.join(file)).unwrap(),
            "{file}"
        );
    }
    let metrics = std::fs::read_to_string(cloze.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().all(|l| l.contains(r#""stage":"cloze""#)));
    let asker = Asker::load(&ckpt, None, &dev).unwrap();
    assert!(!asker
        .ask("The capital of France is")
        .unwrap()
        .answer
        .is_empty());

    // A question without room for its answer is an error naming it.
    let long = dir.join("long.jsonl");
    let words = vec!["word"; 40].join(" ");
    std::fs::write(
        &long,
        format!("{{\"question\":\"{words}\",\"answers\":[\"x\"]}}\n"),
    )
    .unwrap();
    cfg.cloze_questions = Some(long);
    let err = run_pretrain(&cfg, &dir.join("long"), &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("long.jsonl") && err.contains("fit"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--corpus` beside a checkpoint that has an index is the corpus fine-tuned over (indexed with the
/// checkpoint's document tower), as its config.json records; without it the checkpoint's index is
/// used.
#[test]
fn a_corpus_given_with_a_checkpoint_is_the_one_fine_tuned_over() {
    use realm::index::StoredIndex;
    let dir = common::temp_dir("corpus");
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    let mut first = tiny(&dir);
    first.train.steps = 2;
    run_finetune(&first, &dir.join("first"), &opts).unwrap();
    let start = ModelInit::Checkpoint {
        dir: dir.join("first/checkpoint"),
    };
    let blocks = |run: &str| {
        StoredIndex::load(dir.join(run).join("checkpoint/index"), None)
            .unwrap()
            .blocks
            .len()
    };
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (fewer_docs, _) = data(&other, 8);

    let mut over_other = first.clone();
    over_other.init = start.clone();
    over_other.corpus = Some(fewer_docs);
    run_finetune(&over_other, &dir.join("over-other"), &opts).unwrap();
    let mut over_own = over_other.clone();
    over_own.corpus = None;
    run_finetune(&over_own, &dir.join("over-own"), &opts).unwrap();

    assert_eq!(blocks("over-own"), blocks("first"));
    assert!(
        blocks("over-other") < blocks("first"),
        "{} blocks over the smaller corpus, {} in the checkpoint's index",
        blocks("over-other"),
        blocks("first")
    );
    std::fs::remove_dir_all(dir).unwrap();
}
