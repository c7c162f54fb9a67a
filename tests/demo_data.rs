//! The committed demo data set (data/demo/): well-formed files, every question answerable from
//! its own (trimmed) document, a train/dev split disjoint by question and by document, and a
//! vocabulary that loads and spells every answer without [UNK]. Against ../shared (skipped with a
//! reason when absent): each document is the start of its wiki-vital original.

mod common;

use realm::data::demo::{self, DemoQuestion};
use realm::data::{contains_answer, read_qa, CorpusReader, Document};
use realm::model::BertTokenizer;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo")
}

fn docs() -> HashMap<String, Document> {
    let path = demo_dir().join("docs.jsonl");
    let mut out = HashMap::new();
    for doc in CorpusReader::open(&path, false).unwrap() {
        let doc = doc.unwrap();
        assert!(
            !doc.title.trim().is_empty(),
            "document {} has no title",
            doc.id
        );
        assert!(
            !doc.text.trim().is_empty(),
            "document {} has no text",
            doc.id
        );
        let id = doc.id.clone();
        assert!(out.insert(id.clone(), doc).is_none(), "document {id} twice");
    }
    out
}

fn questions(name: &str) -> Vec<DemoQuestion> {
    let path = demo_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    // Both readers accept it: the NQ-open one the trainers use, and the one keeping doc_id.
    let plain = read_qa(&path).unwrap();
    let full = demo::parse_demo_questions(&path, &text).unwrap();
    assert_eq!(plain.len(), full.len());
    for (p, f) in plain.iter().zip(&full) {
        assert_eq!(
            (p.id.as_str(), p.question.as_str()),
            (f.id.as_str(), f.question.as_str())
        );
    }
    full
}

#[test]
fn the_embedded_copy_is_the_committed_files() {
    let dir = demo_dir();
    for (name, embedded) in [
        ("docs.jsonl", demo::DOCS),
        ("train.jsonl", demo::TRAIN),
        ("dev.jsonl", demo::DEV),
        ("vocab.txt", demo::VOCAB),
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            embedded,
            "{name}"
        );
    }
    let total: usize = [demo::DOCS, demo::TRAIN, demo::DEV, demo::VOCAB]
        .iter()
        .map(|s| s.len())
        .sum();
    assert!(total < 3 << 20, "the demo data is {total} bytes");
}

#[test]
fn documents_are_short_and_every_answer_is_in_its_document() {
    let docs = docs();
    assert!(
        (1900..=2100).contains(&docs.len()),
        "{} documents",
        docs.len()
    );
    for doc in docs.values() {
        // Whole sentences up to 120 words, unless the first sentence alone is longer.
        let words = doc.text.split_whitespace().count();
        let first = realm::data::sentences(&doc.text)[0];
        let first_words = doc.text[first.0..first.1].split_whitespace().count();
        assert!(
            words <= 120 || words == first_words,
            "document {} has {words} words",
            doc.id
        );
    }
    let train = questions("train.jsonl");
    let dev = questions("dev.jsonl");
    assert!(train.len() + dev.len() > 1000);
    let dev_share = dev.len() as f64 / (train.len() + dev.len()) as f64;
    assert!((0.15..0.25).contains(&dev_share), "dev is {dev_share:.3}");
    for q in train.iter().chain(&dev) {
        let doc = docs
            .get(&q.doc_id.to_string())
            .unwrap_or_else(|| panic!("{}: document {} is not in docs.jsonl", q.id, q.doc_id));
        assert!(
            contains_answer(&doc.text, &q.answers),
            "{}: {:?} is not in document {} ({})",
            q.id,
            q.answers,
            q.doc_id,
            doc.title
        );
    }
}

#[test]
fn the_split_is_disjoint_by_question_and_by_document() {
    let train = questions("train.jsonl");
    let dev = questions("dev.jsonl");
    let ids = |qs: &[DemoQuestion]| qs.iter().map(|q| q.id.clone()).collect::<HashSet<_>>();
    let docs = |qs: &[DemoQuestion]| qs.iter().map(|q| q.doc_id).collect::<HashSet<_>>();
    let (train_ids, dev_ids) = (ids(&train), ids(&dev));
    assert_eq!(train_ids.len(), train.len(), "a train id repeats");
    assert_eq!(dev_ids.len(), dev.len(), "a dev id repeats");
    assert!(train_ids.is_disjoint(&dev_ids));
    let texts = |qs: &[DemoQuestion]| {
        qs.iter()
            .map(|q| q.question.clone())
            .collect::<HashSet<_>>()
    };
    assert!(texts(&train).is_disjoint(&texts(&dev)));
    assert!(docs(&train).is_disjoint(&docs(&dev)));
}

#[test]
fn the_vocabulary_loads_and_spells_every_answer() {
    let path = demo_dir().join("vocab.txt");
    let tok = BertTokenizer::from_vocab(&path, true).unwrap();
    assert!(
        (7000..=8000).contains(&tok.vocab_size()),
        "{}",
        tok.vocab_size()
    );
    for (id, token) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
    {
        assert_eq!(tok.token_id(token), Some(id as u32), "{token}");
    }
    let unk = 1;
    let mut answers: Vec<String> = Vec::new();
    let mut questions_text: Vec<String> = Vec::new();
    for q in questions("train.jsonl")
        .into_iter()
        .chain(questions("dev.jsonl"))
    {
        answers.extend(q.answers);
        questions_text.push(q.question);
    }
    let refs: Vec<&str> = answers.iter().map(String::as_str).collect();
    for (a, ids) in refs.iter().zip(tok.wordpieces(&refs).unwrap()) {
        assert!(!ids.is_empty() && !ids.contains(&unk), "{a:?} -> {ids:?}");
    }
    let refs: Vec<&str> = questions_text.iter().map(String::as_str).collect();
    for (q, ids) in refs.iter().zip(tok.wordpieces(&refs).unwrap()) {
        assert!(!ids.contains(&unk), "{q:?} -> {ids:?}");
    }
    // The corpus itself: the vocabulary was trained on it, so every character is known.
    let docs = docs();
    let texts: Vec<&str> = docs
        .values()
        .flat_map(|d| [d.title.as_str(), d.text.as_str()])
        .collect();
    let pieces = tok.wordpieces(&texts).unwrap();
    let total: usize = pieces.iter().map(Vec::len).sum();
    let unknown = pieces.iter().flatten().filter(|&&i| i == unk).count();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "{} documents, titles and texts: {total} wordpieces (mean {:.1}, longest {longest}), \
         {unknown} [UNK]",
        docs.len(),
        total as f64 / docs.len() as f64
    );
    assert_eq!(unknown, 0, "{unknown} of {total} wordpieces are [UNK]");
}

#[test]
fn documents_are_the_start_of_their_wiki_vital_originals() {
    let wiki = "data/wiki-vital/docs.jsonl";
    let Some(source) = common::shared_with(&[wiki]).map(|d| d.join(wiki)) else {
        return;
    };
    let demo = docs();
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut seen = 0;
    for doc in CorpusReader::open(&source, false).unwrap() {
        let doc = doc.unwrap();
        let Some(mine) = demo.get(&doc.id) else {
            continue;
        };
        seen += 1;
        assert_eq!(mine.title, doc.title, "document {}", doc.id);
        assert!(
            squash(&doc.text).starts_with(&squash(&mine.text)),
            "document {} is not a prefix of its original",
            doc.id
        );
    }
    assert_eq!(seen, demo.len(), "documents missing from wiki-vital");
}
