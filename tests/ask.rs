//! `realm ask` on a small fine-tuned-layout checkpoint (random retriever and reader, an index of
//! a small corpus): the answer is a span of a retrieved block, the evidence is a distribution over
//! the blocks read with the sentence holding the span, and bad runs and questions are errors.

use candle_core::Device;
use realm::ask::{find_checkpoint, Asker};
use realm::index::build::{index_corpus, EmbedOptions, IndexCorpus};
use realm::index::RetrieverModel;
use realm::model::reader::span_text;
use realm::model::{BertConfig, BertTokenizer, Reader, ReaderConfig, Retriever, RetrieverConfig};
use std::path::{Path, PathBuf};

const CORPUS: &str = r#"{"id": "1", "title": "Paris", "text": "Paris is the capital of France. It lies on the Seine."}
{"id": "2", "title": "Nile", "text": "The Nile is a river in Africa. It flows north."}
{"id": "3", "title": "Mozart", "text": "Mozart was a composer. He was born in Salzburg in 1756."}
"#;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-ask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `run/checkpoint/` with a retriever, `reader/` and `index/`, as fine-tuning leaves it.
fn fine_tuned_run(run: &Path) -> PathBuf {
    let ckpt = run.join("checkpoint");
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt");
    let tok = BertTokenizer::from_vocab(&vocab, true).unwrap();
    let mut cfg = BertConfig::new(32, 1, 1);
    cfg.vocab_size = tok.vocab_size();
    cfg.intermediate_size = 64;
    cfg.max_position_embeddings = 128;
    let rc = RetrieverConfig {
        proj_size: 8,
        ..RetrieverConfig::default()
    };
    Retriever::new_random(&cfg, &rc, 1, &Device::Cpu)
        .unwrap()
        .save(&ckpt)
        .unwrap();
    std::fs::copy(&vocab, ckpt.join("vocab.txt")).unwrap();
    Reader::new_random(&cfg, &ReaderConfig::default(), 2, &Device::Cpu)
        .unwrap()
        .save(ckpt.join("reader"))
        .unwrap();
    let corpus = run.join("docs.jsonl");
    std::fs::write(&corpus, CORPUS).unwrap();
    let model = RetrieverModel::load(&ckpt, &Device::Cpu).unwrap();
    let opts = IndexCorpus {
        max_block_tokens: 64,
        skip_bad_lines: false,
        embed: EmbedOptions {
            batch: 2,
            max_len: 64,
            progress: None,
        },
        step: 0,
    };
    let (index, _) = index_corpus(&model, &corpus, &opts, &Device::Cpu).unwrap();
    index.save(ckpt.join("index")).unwrap();
    ckpt
}

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
    let block = asker.searcher().block(&hits[a.from]);
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
