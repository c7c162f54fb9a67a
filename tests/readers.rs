//! Every reader of the user's files, fed random bytes and mutations of valid files (bytes
//! flipped, cut, inserted, repeated): the property is an error or a result, never a panic, a
//! hang or an unbounded allocation. Corpora (JSONL, DPR TSV), question files (NQ-open JSONL,
//! SQuAD JSON), index folders (manifest, blocks, embeddings: with the manifest's checksums
//! brought up to date after the mutation, so that the parsers behind them are reached too, and
//! without), `metrics.jsonl` and the report drawn from it. Also: a long text tokenised in parts
//! gives the wordpieces of the whole. Inputs are small and cases few: the file runs in seconds.

mod common;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use realm::data::{Block, CorpusReader};
use realm::index::StoredIndex;
use realm::model::BertTokenizer;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A fresh file path for one case.
fn case_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("realm-readers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)))
}

/// One edit of a byte string, positions taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Cut(usize, usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 0usize..64).prop_map(|(i, n)| Edit::Cut(i, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, b) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes[i] ^= b;
            }
            Edit::Flip(..) => {}
            Edit::Cut(i, n) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Insert(i, b) => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Repeat(i, n) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                let copy = bytes[i..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    bytes
}

/// Random bytes, or a valid file with a few edits.
fn file_bytes(valid: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(edit(), 1..6).prop_map(move |e| apply(valid.to_vec(), &e)),
    ]
}

const JSONL_CORPUS: &[u8] = b"\xEF\xBB\xBF{\"id\": \"a\", \"title\": \"Paris\", \"text\": \"Paris is the capital of France. It lies on the Seine.\"}\n{\"id\": 7, \"text\": \"The Nile flows north.\"}\n\n{\"id\": \"c\", \"title\": \"Empty\", \"text\": \"\"}\n";
const TSV_CORPUS: &[u8] = b"id\ttext\ttitle\n1\t\"Aaron ( or ; \"\"Ah\xC3\xA4r\xC3\xB4n\"\") is\"\tAaron\n2\tThe Nile flows north.\tNile\r\n";
const NQ_QUESTIONS: &[u8] = b"{\"question\": \"who wrote hamlet\", \"answers\": [\"Shakespeare\", \"William Shakespeare\"]}\n{\"question\": \"capital of france\", \"answers\": [\"Paris\"], \"id\": 3}\n";
const SQUAD: &[u8] = br#"{"data": [{"paragraphs": [{"context": "Paris is the capital of France.", "qas": [{"id": "q1", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}, {"text": "France", "answer_start": 24}]}]}]}]}"#;
const METRICS: &[u8] = b"{\"stage\":\"ict\",\"step\":0,\"time_s\":0.5,\"loss\":3.0,\"lr\":1e-4}\n{\"stage\":\"ict\",\"step\":10,\"time_s\":1.0,\"loss\":2.5,\"recall_at_5\":0.4}\n{\"stage\":\"pretrain\",\"step\":0,\"time_s\":2.0,\"loss\":1.7e308,\"staleness\":3,\"refresh_s\":4.5}\n{\"stage\":\"eval\",\"step\":10,\"time_s\":3.0,\"em\":0.37}\n";

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = case_path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn lines_are_numbered_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let lines: Vec<_> = realm::lines::Lines::new(bytes.as_slice(), "stdin").collect();
        for (i, (n, _)) in lines.iter().enumerate() {
            prop_assert_eq!(*n, i + 1);
        }
    }

    #[test]
    fn corpus_readers_never_panic(
        jsonl in file_bytes(JSONL_CORPUS),
        tsv in file_bytes(TSV_CORPUS),
        skip in any::<bool>(),
    ) {
        for (ext, bytes) in [("jsonl", &jsonl), ("tsv", &tsv)] {
            let path = write(&format!("corpus.{ext}"), bytes);
            let mut reader = CorpusReader::open(&path, skip).unwrap();
            for doc in reader.by_ref() {
                // With skipping, every malformed line is skipped: only documents come out.
                prop_assert!(doc.is_ok() || !skip, "{:?}", doc.err());
            }
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn question_readers_never_panic(
        nq in file_bytes(NQ_QUESTIONS),
        squad in file_bytes(SQUAD),
    ) {
        for (ext, bytes) in [("jsonl", &nq), ("json", &squad)] {
            let path = write(&format!("questions.{ext}"), bytes);
            if let Ok(questions) = realm::data::read_qa(&path) {
                for q in questions {
                    prop_assert!(!q.question.is_empty() || ext == "json");
                }
            }
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn metrics_reader_never_panics(bytes in file_bytes(METRICS)) {
        let path = write("metrics.jsonl", &bytes);
        if let Ok(records) = realm::report::metrics::read_metrics(&path) {
            prop_assert!(!records.is_empty());
            realm::report::metrics::stage_offsets(&records);
        }
        let _ = std::fs::remove_file(path);
    }
}

/// A small valid index folder, written once.
fn template_index() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = case_path("template-index");
        let blocks: Vec<Block> = (0..3)
            .map(|i| Block {
                doc_id: format!("d{i}"),
                title: format!("Title {i}"),
                tokens: vec![5, 6 + i, 7, 8],
                sentences: vec![0..1, 1..4],
            })
            .collect();
        let emb = Tensor::new(&[[1f32, 0.5], [0.25, -1.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        StoredIndex::new("abc", "model", 3, blocks, emb)
            .unwrap()
            .save(&dir)
            .unwrap();
        dir
    })
}

const INDEX_FILES: [&str; 3] = ["manifest.json", "blocks.jsonl", "embeddings.safetensors"];

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn index_folders_never_panic(
        file in 0usize..3,
        edits in proptest::collection::vec(edit(), 1..5),
        reseal in any::<bool>(),
        old_format in any::<bool>(),
    ) {
        let dir = case_path("index");
        std::fs::create_dir_all(&dir).unwrap();
        for name in INDEX_FILES {
            std::fs::copy(template_index().join(name), dir.join(name)).unwrap();
        }
        let target = dir.join(INDEX_FILES[file]);
        std::fs::write(&target, apply(std::fs::read(&target).unwrap(), &edits)).unwrap();
        if reseal && file > 0 {
            common::reseal_index(&dir);
        }
        if old_format && file > 0 {
            // Format 1: no checksums, every other check.
            let path = dir.join("manifest.json");
            let mut m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            m["format_version"] = 1.into();
            m.as_object_mut().unwrap().remove("files");
            std::fs::write(&path, m.to_string()).unwrap();
        }
        if let Ok(index) = StoredIndex::load(&dir, None) {
            prop_assert_eq!(index.blocks.len(), index.manifest.num_blocks);
            prop_assert_eq!(index.embeddings.dims(), &[index.manifest.num_blocks, index.manifest.dim]);
            for b in &index.blocks {
                prop_assert!(!b.tokens.is_empty());
                prop_assert_eq!(b.sentences.last().map(|r| r.end), Some(b.tokens.len()));
                prop_assert!(b.sentences.iter().all(|r| r.start < r.end && r.end <= b.tokens.len()));
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

proptest! {
    // Drawing eight PNGs a case: few cases.
    #![proptest_config(config(12))]

    #[test]
    fn reports_of_mutated_metrics_never_panic_or_hang(bytes in file_bytes(METRICS)) {
        let run = case_path("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("metrics.jsonl"), &bytes).unwrap();
        let _ = realm::report::write_report(&run);
        let _ = std::fs::remove_dir_all(run);
    }
}

fn tokenizer() -> &'static BertTokenizer {
    static TOK: OnceLock<BertTokenizer> = OnceLock::new();
    TOK.get_or_init(|| BertTokenizer::from_vocab(common::demo_vocab(), true).unwrap())
}

/// Text of words, punctuation, accents, CJK, control characters and every kind of whitespace.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Paris".to_string()),
        Just("capital".to_string()),
        Just("unbelievably".to_string()),
        Just("Ünïcödé".to_string()),
        Just("東京".to_string()),
        Just("x".repeat(120)),
        "[a-z]{1,12}",
        "[.,;:!?()\\-\"'/]",
        "[ \t\r\n\u{a0}\u{2028}\u{85}\u{200b}\u{301}]",
    ];
    proptest::collection::vec(piece, 0..80).prop_map(|p| p.concat())
}

/// Whether every run of `text` between ASCII whitespace and punctuation is shorter than a part
/// of `segment` bytes can hold whole (a UTF-8 character is up to four bytes).
fn words_fit(text: &str, segment: usize) -> bool {
    text.split(|c: char| c.is_ascii_whitespace() || c.is_ascii_punctuation())
        .all(|w| w.len() + 4 <= segment)
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn a_text_tokenised_in_parts_gives_the_wordpieces_of_the_whole(
        text in text(),
        segment in 1usize..64,
        max in 0usize..600,
    ) {
        let tok = tokenizer();
        let parts = realm::model::tokenizer::text_segments(&text, segment);
        prop_assert_eq!(parts.concat(), text.clone());
        // Parts end where words end, so the pieces are those of the whole; only a word longer
        // than a part (a run without whitespace or punctuation) may come out otherwise.
        if words_fit(&text, segment) {
            let whole = tok.wordpieces(&[text.as_str()]).unwrap().remove(0);
            prop_assert_eq!(tok.wordpieces_streaming(&text, segment).unwrap(), whole);
        }
        // Long enough to be read in parts by the prefix reader.
        let long = text.repeat(1 + 9000 / (text.len() + 1));
        if words_fit(&long, 4096) {
            let whole = tok.wordpieces(&[long.as_str()]).unwrap().remove(0);
            let prefix = tok.wordpieces_prefix(&[long.as_str()], max).unwrap().remove(0);
            prop_assert_eq!(prefix.as_slice(), &whole[..whole.len().min(max)]);
        }
    }
}

/// transformers' `block_records.npy` (an object array of pickled byte strings) of the tiny REALM
/// fixture.
const BLOCK_RECORDS: &[u8] = include_bytes!("fixtures/hf-realm-tiny/model/block_records.npy");

proptest! {
    #![proptest_config(config(256))]

    /// The `.npy` reader of `realm import hf-realm`: every record it lists is inside the file
    /// and reads back (or is an error naming the file); never a panic, an allocation beyond the
    /// file's size, or a record past its end.
    #[test]
    fn npy_byte_records_never_panic(
        bytes in file_bytes(BLOCK_RECORDS),
        pickle_edits in proptest::collection::vec(edit(), 1..4),
        keep_header in any::<bool>(),
    ) {
        // Half the cases keep the 128-byte header whole, so the edits reach the pickle.
        let bytes = if keep_header {
            let (header, pickle) = BLOCK_RECORDS.split_at(128);
            [header.to_vec(), apply(pickle.to_vec(), &pickle_edits)].concat()
        } else {
            bytes
        };
        let path = write("block_records.npy", &bytes);
        match realm::import::npy::ByteRecords::open(&path) {
            Ok(mut records) => {
                prop_assert!(records.len() <= bytes.len());
                let mut buf = Vec::new();
                for i in 0..records.len() {
                    records.read(i, &mut buf).unwrap();
                    prop_assert!(buf.len() <= bytes.len());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("block_records.npy"), "{e}"),
        }
        let _ = std::fs::remove_file(path);
    }
}
