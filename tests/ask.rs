//! `realm ask` on a small fine-tuned-layout checkpoint (random retriever and reader, an index of
//! a small corpus): the answer is a span of a retrieved block, the evidence is a distribution over
//! the blocks read with the sentence holding the span, and bad runs and questions are errors.

mod common;

use common::temp_dir;

use candle_core::Device;
use common::fine_tuned_run;
use realm::ask::{find_checkpoint, Asker};
use realm::model::reader::span_text;

#[test]
fn answers_are_spans_of_the_retrieved_blocks_with_their_evidence() {
    let run = temp_dir("ok");
    let ckpt = fine_tuned_run(&run);
    assert_eq!(find_checkpoint(&run).unwrap(), ckpt);
    let mut asker = Asker::load(&ckpt, None, &Device::Cpu).unwrap();
    asker.beam = 2;
    let a = asker.ask("  where was mozart born?  ").unwrap();
    assert_eq!(a.question, "where was mozart born?");
    assert_eq!(a.evidence.len(), 2);
    let total: f64 = a.evidence.iter().map(|e| e.p).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    assert!(a.evidence.windows(2).all(|w| w[0].p >= w[1].p));
    assert!(a.score.is_finite());
    // The answer is a span of the block it came from, inside the sentence shown.
    let hits = asker
        .searcher()
        .search(&["where was mozart born?"], 2)
        .unwrap()
        .remove(0);
    let block = asker.searcher().block(&hits[a.from]).unwrap();
    assert_eq!(a.evidence[a.from].doc_id, block.doc_id);
    let tok = &asker.searcher().model.tokenizer;
    let spans: Vec<String> = (0..block.tokens.len())
        .flat_map(|s| (s + 1..=block.tokens.len().min(s + 10)).map(move |e| (s, e)))
        .map(|(s, e)| span_text(tok, &block.tokens[s..e]).unwrap())
        .collect();
    assert!(
        spans.contains(&a.answer),
        "{} is not a span of {}",
        a.answer,
        block.title
    );
    assert!(a.evidence[a.from].sentence.contains(&a.answer));

    assert!(asker.ask("   ").unwrap_err().to_string().contains("empty"));
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn runs_without_a_reader_or_index_are_clear_errors() {
    let run = temp_dir("bad");
    let err = find_checkpoint(&run.join("nope")).unwrap_err().to_string();
    assert!(err.contains("no such run directory"), "{err}");
    let err = find_checkpoint(&run).unwrap_err().to_string();
    assert!(err.contains("realm finetune"), "{err}");
    let ckpt = fine_tuned_run(&run);
    std::fs::remove_dir_all(ckpt.join("index")).unwrap();
    let err = Asker::load(&ckpt, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("index"), "{err}");
    std::fs::remove_dir_all(run).unwrap();
}

#[test]
fn an_index_with_sentences_past_its_tokens_is_refused_at_load() {
    let run = temp_dir("ranges");
    let ckpt = fine_tuned_run(&run);
    let blocks = ckpt.join("index").join("blocks.jsonl");
    let text = std::fs::read_to_string(&blocks).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[1]["sentences"][0][1] = 1048.into();
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&blocks, text).unwrap();
    // As a user who edited the file would, with the manifest's checksums brought up to date:
    // the ranges themselves are what must be caught.
    common::reseal_index(&ckpt.join("index"));
    let err = Asker::load(&ckpt, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("blocks.jsonl:2") && err.contains("1048"),
        "{err}"
    );
    std::fs::remove_dir_all(run).unwrap();
}
