//! `realm eval` on tiny checkpoints (random retriever, encoder and reader saved in the training
//! checkpoint layout, the demo vocabulary): recall on an index built so that the ranking is
//! known, cloze predictions and retrieval utility recomputed by hand from the encoder, a reader
//! trained on one question, and clear errors for bad inputs.

use candle_core::{Device, Tensor};
use realm::data::Block;
use realm::device::ComputeDevice;
use realm::index::{RetrieverModel, StoredIndex};
use realm::model::*;
use realm::train::eval::{evaluate, is_cloze, log_metrics, EvalConfig, EvalReport};
use realm::train::models::{write_origin, Origin};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch folder unique to this call (tests run in parallel), emptied first.
fn scratch(name: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("realm-eval-{}-{call}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn demo_vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt")
}

fn tiny_config(vocab: usize) -> BertConfig {
    let mut c = BertConfig::new(32, 2, 1);
    c.vocab_size = vocab;
    c.intermediate_size = 64;
    c.max_position_embeddings = 128;
    c
}

/// Query and body lengths that fit the tiny BERT's 128 positions.
fn tiny_eval(checkpoint: &Path, questions: &Path) -> EvalConfig {
    let mut cfg = EvalConfig::new(checkpoint, questions);
    cfg.query_len = 32;
    cfg.doc_len = 64;
    cfg
}

/// What a tiny checkpoint holds besides the retriever.
#[derive(Clone, Copy)]
struct Parts {
    encoder: bool,
    reader: bool,
}

/// A checkpoint folder in the training layout (origin.json, tokenizer files, the retriever or
/// retriever + encoder, reader/), random weights from `seed`; no index.
fn tiny_checkpoint(name: &str, parts: Parts, seed: u64) -> PathBuf {
    let dir = scratch(name);
    std::fs::copy(demo_vocab(), dir.join("vocab.txt")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )
    .unwrap();
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    let config = tiny_config(tok.vocab_size());
    let dev = Device::Cpu;
    let retriever =
        Retriever::new_random(&config, &RetrieverConfig::default(), seed, &dev).unwrap();
    if parts.encoder {
        let encoder = KnowledgeEncoder::new_random(&config, seed + 1, &dev).unwrap();
        RealmModel::from_parts(retriever, encoder, &dir, &RealmSettings::default())
            .unwrap()
            .save(&dir)
            .unwrap();
    } else {
        retriever.save(&dir).unwrap();
    }
    if parts.reader {
        Reader::new_random(&config, &ReaderConfig::default(), seed + 2, &dev)
            .unwrap()
            .save(dir.join("reader"))
            .unwrap();
    }
    let origin = Origin::Scratch {
        config,
        vocab: demo_vocab(),
        lowercase: true,
    };
    write_origin(&origin, &dir).unwrap();
    dir
}

fn block(tok: &BertTokenizer, title: &str, text: &str) -> Block {
    let tokens = tok.wordpieces(&[text]).unwrap().remove(0);
    Block {
        doc_id: title.to_lowercase(),
        title: title.into(),
        sentences: vec![0..tokens.len()],
        tokens,
    }
}

/// Query-tower embeddings [n, d] of `questions`, as the searcher computes them.
fn query_embeddings(model: &RetrieverModel, questions: &[&str], max_len: usize) -> Tensor {
    let pieces = model.tokenizer.wordpieces(questions).unwrap();
    let refs: Vec<&[u32]> = pieces.iter().map(Vec::as_slice).collect();
    let input = query_inputs(&model.tokenizer, &refs, max_len, &Device::Cpu).unwrap();
    model
        .retriever
        .query_tower()
        .embed(&input, Mode::Eval)
        .unwrap()
}

/// Writes `index/` into the checkpoint with block j's embedding (1 − j/n)·q̄, q̄ the mean query
/// embedding of `questions`: every question (its embedding has a positive inner product with
/// q̄) ranks the blocks in their order, block 0 first, however alike the random tower makes the
/// queries.
fn index_in_block_order(dir: &Path, questions: &[&str], blocks: Vec<Block>) {
    let model = RetrieverModel::load(dir, &Device::Cpu).unwrap();
    let mean = query_embeddings(&model, questions, 32)
        .mean_keepdim(0)
        .unwrap();
    let n = blocks.len();
    let weights: Vec<f32> = (0..n).map(|j| 1.0 - j as f32 / n as f32).collect();
    let embeddings = Tensor::new(weights.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap()
        .broadcast_mul(&mean)
        .unwrap();
    let index = StoredIndex::new(
        &model.fingerprint,
        &dir.display().to_string(),
        0,
        blocks,
        embeddings,
    )
    .unwrap();
    index.save(dir.join("index")).unwrap();
}

fn write_questions(dir: &Path, qa: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("questions.jsonl");
    let lines: Vec<String> = qa
        .iter()
        .map(|(q, a)| serde_json::json!({"question": q, "answers": [a]}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

const QUESTIONS: [(&str, &str); 5] = [
    ("The language of France is", "french"),
    ("The capital of France is", "paris"),
    ("The continent of China is", "asia"),
    ("The language of Germany is", "german"),
    ("The continent of Spain is", "europe"),
];

/// Every question ranks the blocks 0, 1, 2, 3, 4; the answers of questions 0 and 1 are in
/// block 0, question 2's in block 1, question 3's in block 3, question 4's nowhere: recall@1 =
/// 2/5, recall@2 = 3/5, recall@4 = recall@5 = 4/5.
fn recall_fixture(name: &str, parts: Parts) -> (PathBuf, PathBuf) {
    let dir = tiny_checkpoint(name, parts, 7);
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    let blocks = vec![
        block(
            &tok,
            "France",
            "people in france speak french . the capital is paris .",
        ),
        block(&tok, "China", "china is a large country in asia ."),
        block(&tok, "Spain", "a country with a long coast ."),
        block(
            &tok,
            "Germany",
            "germany is in the middle and its people speak german .",
        ),
        block(&tok, "Moon", "the moon goes around the earth ."),
    ];
    let asked: Vec<&str> = QUESTIONS.iter().map(|q| q.0).collect();
    index_in_block_order(&dir, &asked, blocks);
    let questions = write_questions(&dir, &QUESTIONS);
    (dir, questions)
}

fn run(cfg: &EvalConfig) -> EvalReport {
    evaluate(cfg, &ComputeDevice::cpu()).unwrap()
}

fn eval_error(cfg: &EvalConfig) -> String {
    format!("{:#}", evaluate(cfg, &ComputeDevice::cpu()).unwrap_err())
}

#[test]
fn recall_on_an_index_with_a_known_ranking() {
    let parts = Parts {
        encoder: false,
        reader: false,
    };
    let (dir, questions) = recall_fixture("recall", parts);
    let report = run(&tiny_eval(&dir, &questions));
    assert_eq!(report.questions, 5);
    assert_eq!(report.blocks, 5);
    assert_eq!(report.recall_at_1, 0.4, "{report:?}");
    assert_eq!(report.recall_at_5, Some(0.8));
    assert_eq!(report.recall_at_k, 0.8);
    // The retriever alone: nothing else is measured.
    assert_eq!(report.em_reader, None);
    assert_eq!(report.em_cloze_retrieval, None);
    assert_eq!(report.em_cloze_null_doc, None);
    assert_eq!(report.retrieval_utility, None);
    assert_eq!(report.examples.len(), 5);
    assert!(report.examples.iter().all(|e| e.top_title == "France"));

    for (k, recall) in [(1, 0.4), (2, 0.6), (3, 0.6), (4, 0.8)] {
        let mut cfg = tiny_eval(&dir, &questions);
        cfg.top_k = k;
        assert_eq!(run(&cfg).recall_at_k, recall, "recall@{k}");
    }
    let mut three = tiny_eval(&dir, &questions);
    three.max_questions = Some(3);
    three.top_k = 2;
    let report = run(&three);
    assert_eq!(report.questions, 3);
    assert_eq!(report.recall_at_k, 1.0);
    assert!((report.recall_at_1 - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn every_part_of_a_full_checkpoint_is_measured() {
    let parts = Parts {
        encoder: true,
        reader: true,
    };
    let (dir, questions) = recall_fixture("full", parts);
    let report = run(&tiny_eval(&dir, &questions));
    assert_eq!(report.cloze_questions, 5);
    for em in [
        report.em_reader,
        report.em_cloze_retrieval,
        report.em_cloze_null_doc,
    ] {
        let em = em.unwrap();
        assert!((0.0..=1.0).contains(&em), "{report:?}");
    }
    assert!(report.retrieval_utility.unwrap().is_finite());
    assert!(report.examples[0].prediction.is_some());
    assert!(report.examples[0].prediction_null_doc.is_some());

    // The metrics line.
    let run_dir = scratch("run");
    log_metrics(&run_dir, &report).unwrap();
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["stage"], "eval");
    assert_eq!(line["recall_at_1"], 0.4);
    assert_eq!(line["em"], report.em_reader.unwrap());
}

#[test]
fn cloze_statements_are_told_from_questions() {
    assert!(is_cloze("The language of La Princesse de Clèves is"));
    assert!(!is_cloze("who wrote the hobbit"));
    assert!(!is_cloze("The capital of France is what?"));
    assert!(!is_cloze("  "));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let parts = Parts {
        encoder: false,
        reader: false,
    };
    let (dir, questions) = recall_fixture("errors", parts);

    let missing = eval_error(&tiny_eval(Path::new("/no/such/checkpoint"), &questions));
    assert!(missing.contains("no such checkpoint folder"), "{missing}");

    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let msg = eval_error(&tiny_eval(&dir, &empty));
    assert!(msg.contains("holds no questions"), "{msg}");

    let mut too_many = tiny_eval(&dir, &questions);
    too_many.top_k = 6;
    let msg = eval_error(&too_many);
    assert!(msg.contains("only 5"), "{msg}");

    // An index built by another model.
    let other = tiny_checkpoint("other", parts, 99);
    let tok = BertTokenizer::from_dir(&other).unwrap();
    index_in_block_order(&other, &["a question"], vec![block(&tok, "A", "a b")]);
    let mut foreign = tiny_eval(&dir, &questions);
    foreign.index = Some(other.join("index"));
    let msg = eval_error(&foreign);
    assert!(msg.contains("was built by model"), "{msg}");

    // No index and no corpus.
    let bare = tiny_checkpoint("bare", parts, 5);
    let msg = eval_error(&tiny_eval(&bare, &questions));
    assert!(msg.contains("has no index"), "{msg}");
}

#[test]
fn without_an_index_the_corpus_is_indexed() {
    let parts = Parts {
        encoder: false,
        reader: false,
    };
    let dir = tiny_checkpoint("corpus", parts, 3);
    let corpus = dir.join("corpus.jsonl");
    let docs = [
        ("France", "people in france speak french."),
        ("Paris", "the capital city is paris."),
        ("Spain", "a country with a long coast."),
    ];
    let lines: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, (t, x))| serde_json::json!({"id": i, "title": t, "text": x}).to_string())
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let questions = write_questions(&dir, &QUESTIONS[..2]);
    let mut cfg = tiny_eval(&dir, &questions);
    cfg.corpus = Some(corpus);
    cfg.top_k = 3;
    let report = run(&cfg);
    assert_eq!(report.blocks, 3);
    // Every block is retrieved and two of them hold the answers.
    assert_eq!(report.recall_at_k, 1.0);
    assert_eq!(report.recall_at_5, None);
}

/// f64 log-softmax of a row.
fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f64]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

#[test]
fn cloze_answers_and_utility_match_the_encoder_by_hand() {
    let parts = Parts {
        encoder: true,
        reader: false,
    };
    let (dir, questions) = recall_fixture("cloze", parts);
    let mut cfg = tiny_eval(&dir, &questions);
    cfg.top_k = 2;
    let report = run(&cfg);
    assert_eq!(report.cloze_questions, 5);

    // Every question's candidates: the null document, then blocks 0 and 1 (the index order).
    let dev = Device::Cpu;
    let model = RealmModel::load(&dir, &dev).unwrap();
    let tok = model.tokenizer();
    let index = StoredIndex::load(dir.join("index"), None).unwrap();
    let candidates = [&index.blocks[0], &index.blocks[1]];
    let vocab = tok.vocab_size();
    let mask = tok.token_id("[MASK]").unwrap();
    let (mut em_retrieval, mut em_null, mut utility) = (0, 0, 0.0);
    for (i, (question, answer)) in QUESTIONS.iter().enumerate() {
        let mut q = tok.wordpieces(&[question]).unwrap().remove(0);
        let position = 1 + q.len() as u32;
        q.push(mask);
        let query = query_inputs(tok, &[&q], 32, &dev).unwrap();
        let mut titles = vec![Vec::new()];
        titles.extend(
            candidates
                .iter()
                .map(|b| tok.wordpieces(&[b.title.as_str()]).unwrap().remove(0)),
        );
        let title_refs: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
        let bodies = [&[][..], &candidates[0].tokens, &candidates[1].tokens];
        let docs = doc_inputs(tok, &title_refs, &bodies, 128, &dev).unwrap();
        let scores = model.retriever().score(&query, &docs, Mode::Eval).unwrap();
        let log_pz = log_softmax(&scores.to_vec2::<f32>().unwrap()[0]);
        let joined_bodies = [None, Some(&bodies[1][..]), Some(&bodies[2][..])];
        let (joined, _) = joined_inputs(tok, &[&q], &joined_bodies, 96, &dev).unwrap();
        // log p(v | z, x) for every vocabulary entry v ...
        let encoder = model.encoder();
        let at = Tensor::full(position, (3, 1), &dev).unwrap();
        let lp: Vec<Vec<f64>> = encoder
            .masked_log_softmax(&joined, &at, Mode::Eval)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| row.iter().map(|&v| v as f64).collect())
            .collect();
        // ... which is what the encoder's per-target log-probabilities give, at every 61st entry.
        let some: Vec<u32> = (0..vocab as u32).step_by(61).collect();
        let targets = Tensor::new(some.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .repeat((3, 1))
            .unwrap();
        let positions = Tensor::full(position, (3, some.len()), &dev).unwrap();
        let picked = encoder
            .masked_log_probs(&joined, &positions, &targets, Mode::Eval)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for z in 0..3 {
            for (j, &v) in some.iter().enumerate() {
                let diff = (picked[z][j] as f64 - lp[z][v as usize]).abs();
                assert!(diff < 1e-5, "row {z}, token {v}: {diff}");
            }
        }
        let marginal: Vec<f64> = (0..vocab)
            .map(|v| {
                let terms: Vec<f64> = (0..3).map(|z| log_pz[z] + lp[z][v]).collect();
                let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
            })
            .collect();
        let with_retrieval = tok.id_to_token(argmax(&marginal) as u32).unwrap();
        let null_doc = tok.id_to_token(argmax(&lp[0]) as u32).unwrap();
        let example = &report.examples[i];
        assert_eq!(example.prediction.as_deref(), Some(with_retrieval.as_str()));
        assert_eq!(
            example.prediction_null_doc.as_deref(),
            Some(null_doc.as_str())
        );
        em_retrieval += usize::from(with_retrieval == *answer);
        em_null += usize::from(null_doc == *answer);
        let gold = tok.token_id(answer).unwrap() as usize;
        utility += lp[1][gold] - lp[0][gold];
    }
    assert_eq!(report.em_cloze_retrieval, Some(em_retrieval as f64 / 5.0));
    assert_eq!(report.em_cloze_null_doc, Some(em_null as f64 / 5.0));
    let got = report.retrieval_utility.unwrap();
    assert!(
        (got - utility / 5.0).abs() < 1e-4,
        "{got} vs {}",
        utility / 5.0
    );
}
