//! `realm import hf-realm` against transformers 4.40.2's own RealmForOpenQA: the tiny random
//! model of tests/fixtures/hf-realm-tiny (scripts/hf/make_tiny_realm.py; pytorch_model.bin,
//! block_records.npy) imported, then asked the fixture's questions: the retrieved block ids (in
//! rank order) and scores, and the predicted answers, must be HF's. Also through `realm eval`
//! (exact match 1.0 on questions whose gold answer is HF's prediction), from model.safetensors
//! instead of the .bin, and the import's refusals. No Python at test time.

mod common;

use realm::ask::Asker;
use realm::device::ComputeDevice;
use realm::eval::{evaluate, EvalConfig};
use realm::import::npy::ByteRecords;
use realm::import::{import_hf_realm, CHECKPOINT};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Expected {
    question: String,
    retrieved: Vec<u32>,
    scores: Vec<f32>,
    predicted_block: u32,
    answer: String,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-realm-tiny")
}

fn expected() -> Vec<Expected> {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Imports `model` into a fresh folder named `name`; returns the run directory.
fn import(model: &Path, name: &str) -> PathBuf {
    let out = common::temp_path(name);
    let report = import_hf_realm(model, &out, false).unwrap();
    assert_eq!((report.blocks, report.dim), (16, 16));
    assert_eq!(report.reader_beam_size, Some(3));
    out
}

/// Every fixture question answered by the imported run as HF answered it.
fn assert_answers_as_hf(run: &Path) {
    let ckpt = run.join(CHECKPOINT);
    let mut asker = Asker::load(&ckpt, None, &candle_core::Device::Cpu).unwrap();
    asker.beam = 3;
    for e in expected() {
        let hits = asker.searcher().search(&[e.question.as_str()], 3).unwrap();
        let ids: Vec<u32> = hits[0].iter().map(|h| h.block).collect();
        assert_eq!(ids, e.retrieved, "{}: retrieved blocks", e.question);
        for (h, &want) in hits[0].iter().zip(&e.scores) {
            // realm scores the f16-rounded query against the f16 rows (HF's rows are those
            // values): a few thousandths, far below the fixture's 0.05 gaps between blocks.
            assert!(
                (h.score - want).abs() <= 1e-2 * want.abs().max(1.0),
                "{}: block {} scored {}, HF {want}",
                e.question,
                h.block,
                h.score
            );
            assert_eq!(h.doc_id, h.block.to_string(), "block id = record number");
        }
        let answer = asker.ask(&e.question).unwrap();
        assert_eq!(answer.answer, e.answer, "{}: answer", e.question);
        assert_eq!(
            answer.evidence[answer.from].doc_id,
            e.predicted_block.to_string(),
            "{}: the answer's block",
            e.question
        );
    }
}

#[test]
fn imported_model_retrieves_and_answers_as_transformers() {
    let run = import(&fixture().join("model"), "hf-import-bin");
    assert_answers_as_hf(&run);

    // realm eval on the same questions, gold = HF's answers: exact match 1.0.
    let mut cfg = EvalConfig::new(run.join(CHECKPOINT), fixture().join("questions.jsonl"));
    (cfg.top_k, cfg.reader_beam) = (3, 3);
    let report = evaluate(&cfg, &ComputeDevice::cpu()).unwrap();
    assert_eq!(report.questions, expected().len());
    assert_eq!(report.em_reader, Some(1.0), "{report:?}");
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn model_safetensors_imports_like_pytorch_model_bin() {
    let src = common::temp_dir("hf-import-st-src");
    for entry in std::fs::read_dir(fixture().join("model")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "pytorch_model.bin" {
            std::fs::copy(&path, src.join(path.file_name().unwrap())).unwrap();
        }
    }
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        candle_core::pickle::read_all(fixture().join("model/pytorch_model.bin"))
            .unwrap()
            .into_iter()
            .collect();
    candle_core::safetensors::save(&tensors, src.join("model.safetensors")).unwrap();
    let run = import(&src, "hf-import-st");
    assert_answers_as_hf(&run);
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&src);
}

#[test]
fn import_refuses_what_it_cannot_map_and_replaces_nothing() {
    let model = fixture().join("model");
    let err =
        |src: &Path, out: &Path| format!("{:#}", import_hf_realm(src, out, false).unwrap_err());

    // An output folder with the user's files in it.
    let out = common::temp_dir("hf-import-busy");
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    assert!(
        err(&model, &out).contains("not empty"),
        "{}",
        err(&model, &out)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );

    // Fewer records than block_emb rows; no records file; no weights.
    let src = common::temp_dir("hf-import-src");
    for name in [
        "config.json",
        "pytorch_model.bin",
        "vocab.txt",
        "tokenizer.json",
    ] {
        std::fs::copy(model.join(name), src.join(name)).unwrap();
    }
    let fresh = common::temp_path("hf-import-out");
    assert!(
        err(&src, &fresh).contains("block_records.npy"),
        "{}",
        err(&src, &fresh)
    );
    std::fs::write(src.join("block_records.npy"), npy_fixed(&[b"a", b"b"], 4)).unwrap();
    let msg = err(&src, &fresh);
    assert!(
        msg.contains("2 records") && msg.contains("16 rows"),
        "{msg}"
    );
    std::fs::remove_file(src.join("pytorch_model.bin")).unwrap();
    assert!(
        err(&src, &fresh).contains("pytorch_model.bin"),
        "{}",
        err(&src, &fresh)
    );
    assert!(!fresh.exists(), "a failed import leaves nothing");

    // Not a REALM config.
    std::fs::write(src.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    assert!(err(&src, &fresh).contains("model_type"));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&src);
}

/// A `.npy` of fixed-width byte strings (`|S<width>`), as `np.save` writes one.
fn npy_fixed(records: &[&[u8]], width: usize) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '|S{width}', 'fortran_order': False, 'shape': ({},), }}",
        records.len()
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for r in records {
        let mut padded = r.to_vec();
        padded.resize(width, 0);
        bytes.extend(padded);
    }
    bytes
}

#[test]
fn npy_records_read_from_object_and_fixed_width_arrays() {
    let mut records = ByteRecords::open(&fixture().join("model/block_records.npy")).unwrap();
    assert_eq!(records.len(), 16);
    let mut buf = Vec::new();
    for i in 0..records.len() {
        records.read(i, &mut buf).unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.starts_with(char::is_uppercase) && text.len() > 20,
            "{text}"
        );
    }
    assert!(records.read(16, &mut buf).is_err());

    let path = common::temp_path("hf-import-fixed.npy");
    std::fs::write(&path, npy_fixed(&[b"abc", b"", b"wxyz"], 4)).unwrap();
    let mut fixed = ByteRecords::open(&path).unwrap();
    let read: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            fixed.read(i, &mut buf).unwrap();
            buf.clone()
        })
        .collect();
    assert_eq!(read, [b"abc".to_vec(), Vec::new(), b"wxyz".to_vec()]);
    let _ = std::fs::remove_file(&path);
}

/// A pickle that copies one list from the memo over and over (each copy as big as the list),
/// or nests tuples deeper and deeper: refused by the cell budget and the depth limit, not
/// followed into memory or recursion.
#[test]
fn npy_pickle_bombs_are_errors() {
    let header = |pickle: &[u8]| {
        let mut h = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((h.len() as u16).to_le_bytes());
        bytes.extend(h.as_bytes());
        bytes.extend(pickle);
        bytes
    };
    // [b'', b'', ...] with 2,000 items, memoised, then fetched 100,000 times.
    let mut copies = b"\x80\x03](".to_vec();
    for _ in 0..2000 {
        copies.extend(b"C\x00");
    }
    copies.extend(b"eq\x00");
    for _ in 0..100_000 {
        copies.extend(b"h\x00");
    }
    copies.push(b'.');
    // ((((...)))) 10,000 deep.
    let mut deep = b"\x80\x03)".to_vec();
    deep.extend(std::iter::repeat_n(0x85u8, 10_000));
    deep.push(b'.');
    for (name, pickle, want) in [
        ("copies", copies, "more objects"),
        ("deep", deep, "nested deeper"),
    ] {
        let path = common::temp_path(&format!("hf-import-bomb-{name}.npy"));
        std::fs::write(&path, header(&pickle)).unwrap();
        let msg = format!("{:#}", ByteRecords::open(&path).unwrap_err());
        assert!(msg.contains(want) && msg.contains(".npy"), "{name}: {msg}");
        let _ = std::fs::remove_file(&path);
    }
}
