//! REALM pre-training on tiny synthetic corpora: retrieval against the null-document baseline,
//! kill-and-resume equality (with index refreshes in flight), and clear errors for bad configs.

use realm::device::ComputeDevice;
use realm::index::build::EmbedOptions;
use realm::model::{
    doc_inputs, query_inputs, BertConfig, BertTokenizer, Mode, RealmModel, Retriever,
};
use realm::train::ict::{run_ict, IctConfig};
use realm::train::models::{ModelInit, Origin};
use realm::train::pretrain::{run_pretrain, PretrainConfig, PretrainReport};
use realm::train::search::{Knowledge, LiveIndex};
use realm::train::RunOptions;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-test-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const FIRST: [&str; 20] = [
    "John", "Mary", "Peter", "Anna", "James", "Paul", "George", "William", "Henry", "Charles",
    "Robert", "Thomas", "Edward", "Richard", "Louis", "Maria", "David", "Michael", "Joseph",
    "Frank",
];
const LAST: [&str; 13] = [
    "Smith", "Taylor", "Hall", "Young", "King", "Green", "Mitchell", "Cook", "Bell", "Wood",
    "Watson", "Gray", "Ross",
];
/// One-wordpiece answers (all in the demo vocabulary).
const CITIES: [&str; 32] = [
    "Paris",
    "London",
    "Berlin",
    "Madrid",
    "Rome",
    "Vienna",
    "Cairo",
    "Lima",
    "Oslo",
    "Dublin",
    "Athens",
    "Moscow",
    "Tokyo",
    "Delhi",
    "Boston",
    "Chicago",
    "Sydney",
    "Toronto",
    "Lisbon",
    "Prague",
    "Warsaw",
    "Budapest",
    "Stockholm",
    "Geneva",
    "Milan",
    "Naples",
    "Venice",
    "Florence",
    "Munich",
    "Hamburg",
    "Seoul",
    "Beijing",
];
const SUBJECTS: [&str; 8] = [
    "music", "art", "history", "science", "law", "medicine", "poetry", "physics",
];

fn name(i: usize) -> String {
    format!(
        "{} {}",
        FIRST[i % FIRST.len()],
        LAST[i / FIRST.len() % LAST.len()]
    )
}

/// Person i's birthplace in the first test: 32 cities, each the answer of n/32 people.
fn cities(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| CITIES[i % CITIES.len()].to_string())
        .collect()
}

/// Distinct one-wordpiece answers: whole words of the demo vocabulary past its commonest, capitalised
/// (the tagger takes a capitalised word inside a sentence as a name; the tokenizer lower-cases).
fn answers(n: usize) -> Vec<String> {
    let vocab = std::fs::read_to_string(repo().join("data/demo/vocab.txt")).unwrap();
    let words: Vec<String> = vocab
        .lines()
        .skip(3000)
        .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_lowercase()))
        .take(n)
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect();
    assert_eq!(
        words.len(),
        n,
        "the vocabulary has too few words for {n} answers"
    );
    words
}

/// `places.len()` people (distinct names), person i born in `places[i]`: each fact is in exactly
/// one knowledge document, title = the name (lower case, so the salient-span tagger does not
/// pick it from the texts), body = the place. ICT learns name matching on longer documents about the same
/// people; the pre-training texts state the facts again under other ids (nothing is excluded),
/// and their city is the salient span that gets masked.
struct Synthetic {
    ict_docs: PathBuf,
    docs: PathBuf,
    texts: PathBuf,
    n: usize,
    places: Vec<String>,
}

fn synthetic(dir: &Path, places: Vec<String>) -> Synthetic {
    let (mut docs, mut texts, mut ict_docs) = (String::new(), String::new(), String::new());
    let n = places.len();
    for (i, city) in places.iter().enumerate() {
        let (name, subject) = (name(i), SUBJECTS[i % SUBJECTS.len()]);
        let title = name.to_lowercase();
        let text = format!("{name} was born in {city}. {name} studied {subject}.");
        ict_docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": title, "text": text})
        );
        docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": title, "text": city})
        );
        let text = format!("{name} was born in {city}.");
        texts += &format!(
            "{}\n",
            serde_json::json!({"id": format!("x{i}"), "title": "", "text": text})
        );
    }
    let s = Synthetic {
        ict_docs: dir.join("ict_docs.jsonl"),
        docs: dir.join("docs.jsonl"),
        texts: dir.join("texts.jsonl"),
        n,
        places,
    };
    std::fs::write(&s.ict_docs, ict_docs).unwrap();
    std::fs::write(&s.docs, docs).unwrap();
    std::fs::write(&s.texts, texts).unwrap();
    s
}

fn tiny_origin(dropout: f32) -> ModelInit {
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    bert.hidden_dropout_prob = dropout;
    bert.attention_probs_dropout_prob = dropout;
    ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab: repo().join("data/demo/vocab.txt"),
        lowercase: true,
    })
}

fn quiet() -> RunOptions {
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    opts
}

/// An ICT warm start on the longer documents; returns its checkpoint.
fn ict(data: &Synthetic, dir: &Path, steps: u64) -> PathBuf {
    let mut cfg = IctConfig::new(tiny_origin(0.0), data.ict_docs.clone());
    cfg.retriever.proj_size = 32;
    cfg.retriever.proj_dropout = 0.0;
    cfg.block_len = 32;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.heldout = 4;
    cfg.eval_pool = data.n;
    cfg.train.steps = steps;
    cfg.train.batch = 16;
    cfg.train.lr = 3e-3;
    cfg.train.warmup = Some(steps / 10);
    run_ict(&cfg, &dir.join("ict"), &quiet()).unwrap();
    dir.join("ict/checkpoint")
}

fn pretrain_config(data: &Synthetic, init: ModelInit, top_k: usize, steps: u64) -> PretrainConfig {
    let mut cfg = PretrainConfig::new(init, data.docs.clone());
    cfg.examples = Some(data.texts.clone());
    cfg.retriever.proj_size = 32;
    cfg.top_k = top_k;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.block_len = 32;
    cfg.train.steps = steps;
    cfg.train.batch = 8;
    cfg.train.lr = 1e-3;
    cfg.train.warmup = Some(steps / 10);
    cfg.train.log_every = 10;
    cfg.refresh.every = 20;
    cfg.refresh.swap_after = Some(5);
    cfg
}

fn checkpoint(dir: &Path) -> ModelInit {
    ModelInit::Checkpoint {
        dir: dir.to_path_buf(),
    }
}

/// The pre-training query of person i: "NAME was born in [MASK] ."
fn query(tok: &BertTokenizer, i: usize) -> Vec<u32> {
    let mut q = tok
        .wordpieces(&[&format!("{} was born in", name(i))])
        .unwrap()
        .remove(0);
    q.push(tok.token_id("[MASK]").unwrap());
    q.extend(tok.wordpieces(&["."]).unwrap().remove(0));
    q
}

/// Fraction of the people whose own document `retriever` ranks first (a fresh index by its
/// document tower).
fn recall_at_1(retriever: &Retriever, tok: &BertTokenizer, data: &Synthetic) -> f64 {
    let dev = candle_core::Device::Cpu;
    let cut = realm::index::corpus_blocks(&data.docs, tok, 32, false).unwrap();
    let knowledge = Knowledge::new(cut.blocks, tok).unwrap();
    let opts = EmbedOptions {
        batch: 64,
        max_len: 24,
        progress: None,
    };
    let live =
        LiveIndex::build(retriever.doc_tower(), tok, &knowledge.blocks, &opts, &dev).unwrap();
    let hits = (0..data.n)
        .filter(|&i| {
            let input = query_inputs(tok, &[&query(tok, i)], 16, &dev).unwrap();
            let emb = retriever.query_tower().embed(&input, Mode::Eval).unwrap();
            let found = knowledge.search(&emb, &live.mips, 1, &[None]).unwrap();
            knowledge.blocks[found[0][0] as usize].doc_id == i.to_string()
        })
        .count();
    hits as f64 / data.n as f64
}

/// Mean relevance margin f(x, right document) − f(x, null document): how much the retriever
/// prefers the document holding the answer to no document.
fn margin_over_the_null_document(
    retriever: &Retriever,
    tok: &BertTokenizer,
    data: &Synthetic,
) -> f64 {
    let dev = candle_core::Device::Cpu;
    let total: f64 = (0..data.n)
        .map(|i| {
            let title = tok
                .wordpieces(&[&name(i).to_lowercase()])
                .unwrap()
                .remove(0);
            let body = tok
                .wordpieces(&[data.places[i].as_str()])
                .unwrap()
                .remove(0);
            let q = query_inputs(tok, &[&query(tok, i)], 16, &dev).unwrap();
            let d = doc_inputs(tok, &[&[], &title], &[&[], &body], 24, &dev).unwrap();
            let s = retriever
                .score(&q, &d, Mode::Eval)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            f64::from(s[0][1] - s[0][0])
        })
        .sum();
    total / data.n as f64
}

/// The tokenizer, the retriever after ICT (`warm`) and the model after pre-training (`ckpt`).
fn before_and_after(warm: &Path, ckpt: &Path) -> (BertTokenizer, Retriever, RealmModel) {
    let dev = candle_core::Device::Cpu;
    (
        BertTokenizer::from_dir(warm).unwrap(),
        Retriever::load(warm, &dev).unwrap(),
        RealmModel::load(ckpt, &dev).unwrap(),
    )
}

fn pretrain(cfg: &PretrainConfig, run: &Path) -> PretrainReport {
    run_pretrain(cfg, run, &quiet()).unwrap()
}

#[test]
fn retrieval_drives_the_masked_loss_below_the_null_document_baseline() {
    let dir = temp("null");
    let data = synthetic(&dir, cities(256));
    let warm = ict(&data, &dir, 150);
    let steps = 300;
    let with = pretrain(
        &pretrain_config(&data, checkpoint(&warm), 2, steps),
        &dir.join("with"),
    );
    let null = pretrain(
        &pretrain_config(&data, checkpoint(&warm), 1, steps),
        &dir.join("null"),
    );
    let (with_loss, null_loss) = (with.last_loss.unwrap(), null.last_loss.unwrap());
    let ru = with.retrieval_utility.unwrap();
    eprintln!("masked-token loss: retrieval {with_loss:.3}, null document only {null_loss:.3}; retrieval utility {ru:.3}");
    // 256 facts, each seen ~9 times: the null-document model cannot look them up.
    assert!(with_loss < null_loss - 0.5, "{with_loss} vs {null_loss}");
    assert!(ru > 0.5, "retrieval utility {ru}");

    // Gradients reach the retriever: it learns to prefer the document with the answer to the
    // null document, and keeps finding it.
    let (tok, start, end) = before_and_after(&warm, &dir.join("with/checkpoint"));
    let (m0, m1) = (
        margin_over_the_null_document(&start, &tok, &data),
        margin_over_the_null_document(end.retriever(), &tok, &data),
    );
    let (r0, r1) = (
        recall_at_1(&start, &tok, &data),
        recall_at_1(end.retriever(), &tok, &data),
    );
    eprintln!("margin over the null document {m0:.2} → {m1:.2}; recall@1 {r0:.3} → {r1:.3}");
    assert!(m1 > m0 + 3.0, "margin {m0} → {m1}");
    assert!(r1 > 0.8, "recall@1 {r0} → {r1}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pretraining_raises_the_retrievers_recall_of_the_right_document() {
    let dir = temp("recall");
    // Distinct answers: with a city shared by several people, the marginal rewards any
    // document with the right city, and the query tower learns name → city rather than name →
    // the person's own document.
    let data = synthetic(&dir, answers(128));
    // A short warm start: the retriever finds some people's documents, not most.
    let warm = ict(&data, &dir, RECALL_ICT_STEPS);
    let cfg = pretrain_config(&data, checkpoint(&warm), 8, RECALL_STEPS);
    let report = pretrain(&cfg, &dir.join("run"));
    let (tok, start, end) = before_and_after(&warm, &dir.join("run/checkpoint"));
    let (r0, r1) = (
        recall_at_1(&start, &tok, &data),
        recall_at_1(end.retriever(), &tok, &data),
    );
    eprintln!(
        "recall@1 {r0:.3} → {r1:.3}; loss {:?} → {:?}; {} refreshes",
        report.first_loss, report.last_loss, report.refreshes
    );
    // Among 7 retrieved candidates, the marginal likelihood moves probability to the one whose
    // document predicts the masked city, and the refreshed index follows.
    assert!(r1 > r0 + 0.15, "recall@1 {r0} → {r1}");
    let _ = std::fs::remove_dir_all(dir);
}
const RECALL_ICT_STEPS: u64 = 30;
const RECALL_STEPS: u64 = 200;
