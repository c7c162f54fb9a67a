//! `realm eval` on tiny checkpoints (random retriever, encoder and reader saved in the training
//! checkpoint layout, the demo vocabulary): recall on an index built so that the ranking is
//! known, cloze predictions and retrieval utility recomputed by hand from the encoder, a reader
//! trained on one question, and clear errors for bad inputs.

use candle_core::{Device, Tensor};
use realm::data::Block;
use realm::device::ComputeDevice;
use realm::eval::{evaluate, is_cloze, log_metrics, EvalConfig, EvalReport};
use realm::index::{RetrieverModel, StoredIndex};
use realm::model::*;
use realm::train::models::{write_origin, Origin};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::outcome::{seeds, summarise};

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

const RETRIEVER: Parts = Parts {
    encoder: false,
    reader: false,
};
const WITH_ENCODER: Parts = Parts {
    encoder: true,
    reader: false,
};
const WITH_READER: Parts = Parts {
    encoder: false,
    reader: true,
};
const EVERYTHING: Parts = Parts {
    encoder: true,
    reader: true,
};

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
    let config = common::tiny_config(tok.vocab_size(), 128);
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
        sentences: std::iter::once(0..tokens.len()).collect(),
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
    let parts = RETRIEVER;
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
    let parts = EVERYTHING;
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
    let parts = RETRIEVER;
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
    let parts = RETRIEVER;
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
    let parts = WITH_ENCODER;
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
        let joined_bodies = [None, Some(bodies[1]), Some(bodies[2])];
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

const COLOURS: [&str; 6] = ["red", "blue", "green", "black", "white", "yellow"];
const FLAG: &str = "The colour of the flag is";

/// The document about the flag: its colour, many times over, so that even a BERT that attends
/// evenly across the row (as a random one does) carries it to the masked position, and the
/// tiny model learns to read it in a few steps.
fn flag_text(colour: &str) -> String {
    format!("the flag is {}.", vec![colour; 24].join(" "))
}

/// Writes a one-document corpus and the question about it into `dir`.
fn flag_case(dir: &Path, colour: &str, question: &str) -> (PathBuf, PathBuf) {
    let corpus = dir.join(format!("corpus-{colour}.jsonl"));
    let doc = serde_json::json!({"id": 0, "title": "Flag", "text": flag_text(colour)});
    std::fs::write(&corpus, doc.to_string()).unwrap();
    let qa = serde_json::json!({"question": question, "answers": [colour]});
    let questions = dir.join(format!("questions-{colour}.jsonl"));
    std::fs::write(&questions, qa.to_string()).unwrap();
    (corpus, questions)
}

/// Pre-trains the checkpoint's retriever and encoder with REALM's marginal objective (the null
/// document and the one document as candidates) on "The colour of the flag is [MASK]" with a
/// random colour each time, the colour only in the document: the encoder must learn to read it
/// there. Returns the last loss.
fn train_to_read_the_document(dir: &Path, steps: usize, lr: f64, seed: u64) -> f32 {
    use realm::train::{AdamW, AdamWConfig};
    let dev = Device::Cpu;
    let model = RealmModel::load(dir, &dev).unwrap();
    let tok = model.tokenizer();
    let mut opt = AdamW::new(model.vars(), AdamWConfig::default()).unwrap();
    let mut q = tok.wordpieces(&[FLAG]).unwrap().remove(0);
    let position = 1 + q.len() as u32;
    q.push(tok.token_id("[MASK]").unwrap());
    let title = tok.wordpieces(&["Flag"]).unwrap().remove(0);
    let b = 12;
    let mut loss = f32::INFINITY;
    for step in 0..steps {
        let colours: Vec<&str> = (0..b).map(|i| COLOURS[(i * 7 + step * 5) % 6]).collect();
        let texts: Vec<String> = colours.iter().map(|c| flag_text(c)).collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bodies = tok.wordpieces(&text_refs).unwrap();
        let queries: Vec<&[u32]> = vec![&q; b];
        let mut titles: Vec<&[u32]> = Vec::new();
        let mut doc_bodies: Vec<&[u32]> = Vec::new();
        let mut joined_bodies = Vec::new();
        for body in &bodies {
            titles.extend([&[][..], &title]);
            doc_bodies.extend([&[][..], body]);
            joined_bodies.extend([None, Some(body.as_slice())]);
        }
        let query_input = query_inputs(tok, &queries, 32, &dev).unwrap();
        let docs = doc_inputs(tok, &titles, &doc_bodies, 128, &dev).unwrap();
        let (joined, _) = joined_inputs(tok, &queries, &joined_bodies, 96, &dev).unwrap();
        let gold: Vec<u32> = colours.iter().map(|c| tok.token_id(c).unwrap()).collect();
        let slots = MaskSlots::new(vec![position; b], gold, vec![1; b], 1, &dev).unwrap();
        let batch = MlmBatch {
            queries: &query_input,
            docs: &docs,
            joined: &joined,
            slots: &slots,
            candidate_mask: None,
            doc_scores: None,
        };
        let out = model
            .mlm_forward(
                &batch,
                Mode::Train {
                    seed,
                    step: step as u64,
                },
            )
            .unwrap();
        loss = out.loss.to_scalar::<f32>().unwrap();
        if step % 50 == 0 {
            eprintln!("step {step} loss {loss}");
        }
        let grads = out.loss.backward().unwrap();
        opt.step(&grads, lr, 1.0).unwrap();
    }
    model.save(dir).unwrap();
    loss
}

/// Exact matches with retrieval and with the null document, and the mean retrieval utility, over
/// four flag colours after training one seed's tiny model to read the document.
fn flag_outcome(seed: u64) -> (f64, f64, f64) {
    let dir = tiny_checkpoint(&format!("flag-{seed}"), WITH_ENCODER, 11 + seed);
    let loss = train_to_read_the_document(&dir, 150, 2e-3, 1 + seed);
    eprintln!("seed {seed}: last training loss {loss}");
    let (mut with_retrieval, mut null_doc, mut utility) = (0.0, 0.0, 0.0);
    for colour in &COLOURS[..4] {
        let (corpus, questions) = flag_case(&dir, colour, FLAG);
        let mut cfg = tiny_eval(&dir, &questions);
        cfg.corpus = Some(corpus);
        cfg.top_k = 1;
        let report = run(&cfg);
        eprintln!("seed {seed}: {colour}: {:?}", report.examples[0]);
        with_retrieval += report.em_cloze_retrieval.unwrap();
        null_doc += report.em_cloze_null_doc.unwrap();
        utility += report.retrieval_utility.unwrap();
    }
    (with_retrieval, null_doc, utility / 4.0)
}

#[test]
fn retrieval_beats_the_null_document_when_the_answer_is_only_in_the_document() {
    let seeds = seeds(&[0, 1, 2]);
    let runs: Vec<(f64, f64, f64)> = seeds.iter().map(|&s| flag_outcome(s)).collect();
    let with = summarise(
        "colours answered with retrieval (of 4)",
        &seeds,
        &runs.iter().map(|r| r.0).collect::<Vec<_>>(),
    );
    let null = summarise(
        "colours answered with the null document (of 4)",
        &seeds,
        &runs.iter().map(|r| r.1).collect::<Vec<_>>(),
    );
    let utility = summarise(
        "retrieval utility",
        &seeds,
        &runs.iter().map(|r| r.2).collect::<Vec<_>>(),
    );
    // The null document sees the same question each time, so it gives one answer for all four.
    assert!(runs.iter().all(|r| r.1 <= 1.0), "{runs:?}");
    assert_eq!(with, 4.0);
    assert!(null <= 1.0, "{null}");
    assert!(utility > 1.0, "median retrieval utility {utility}");
}

/// Trains the checkpoint's reader on one question and its document (ORQA's loss, the reader's
/// parameters only) and saves it back.
fn train_reader(dir: &Path, question: &str, text: &str, answer: &str, steps: usize, seed: u64) {
    use realm::train::{AdamW, AdamWConfig};
    let dev = Device::Cpu;
    let tok = BertTokenizer::from_dir(dir).unwrap();
    let reader = Reader::load(dir.join("reader"), &dev).unwrap();
    let mut opt = AdamW::new(reader.vars().to_vec(), AdamWConfig::default()).unwrap();
    let q = tok.wordpieces(&[question]).unwrap().remove(0);
    let body = tok.wordpieces(&[text]).unwrap().remove(0);
    let gold = tok.wordpieces(&[answer]).unwrap();
    let spans = realm::data::answer_spans(&body, &gold, 10);
    assert!(!spans.is_empty());
    let (input, offsets) = joined_inputs(&tok, &[&q], &[Some(&body[..])], 96, &dev).unwrap();
    let relevance = Tensor::zeros(1, candle_core::DType::F32, &dev).unwrap();
    for step in 0..steps {
        let logits = reader
            .span_logits(
                &input,
                &offsets,
                Mode::Train {
                    seed,
                    step: step as u64,
                },
            )
            .unwrap()
            .plus_relevance(&relevance)
            .unwrap();
        let loss = qa_loss(&logits, std::slice::from_ref(&spans), &relevance, &[true]).unwrap();
        let grads = loss.loss.backward().unwrap();
        opt.step(&grads, 1e-3, 1.0).unwrap();
    }
    reader.save(dir.join("reader")).unwrap();
}

#[test]
fn a_reader_trained_on_a_question_answers_it() {
    let seeds = seeds(&[0, 1, 2]);
    let mut answered = Vec::new();
    for &seed in &seeds {
        let dir = tiny_checkpoint(&format!("reader-{seed}"), WITH_READER, 13 + seed);
        let text = "the flag of the island is red and its shield is blue.";
        let corpus = dir.join("corpus.jsonl");
        let doc = serde_json::json!({"id": 0, "title": "Island", "text": text});
        std::fs::write(&corpus, doc.to_string()).unwrap();
        let question = "what colour is the flag of the island?";
        let questions = write_questions(&dir, &[(question, "red")]);
        let mut cfg = tiny_eval(&dir, &questions);
        cfg.corpus = Some(corpus);
        cfg.top_k = 1;
        cfg.reader_beam = 1;
        let before = run(&cfg);
        assert_eq!(before.cloze_questions, 0);
        assert_eq!(before.em_reader, Some(0.0), "{:?}", before.examples);

        train_reader(&dir, question, text, "red", 40, 3 + seed);
        let after = run(&cfg);
        eprintln!("seed {seed}: {:?}", after.examples[0]);
        answered.push(after.em_reader.unwrap());
        if after.em_reader == Some(1.0) {
            assert_eq!(after.examples[0].prediction.as_deref(), Some("red"));
        }
    }
    let em = summarise("reader exact match after training", &seeds, &answered);
    assert_eq!(em, 1.0);
}
