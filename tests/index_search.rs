//! Building and searching an index: corpus → blocks → document-tower embeddings → folder →
//! search with the query tower, against a brute-force ranking by the same towers; the errors of
//! each step; and, with ../shared, a real search over wiki-vital documents with MiniLM.

mod common;

use common::temp_dir;

use candle_core::{DType, Device, Tensor};
use realm::index::build::{corpus_blocks, embed_blocks, index_corpus, EmbedBlocks, IndexCorpus};
use realm::index::{RetrieverModel, Searcher, StoredIndex};
use realm::model::realm_inputs::query_inputs;
use realm::model::retriever::{Retriever, RetrieverConfig};
use realm::model::{BertConfig, BertTokenizer, Mode};
use std::path::{Path, PathBuf};

fn vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt")
}

/// A small random retriever saved as a checkpoint folder with the demo vocabulary.
fn tiny_model(dir: &Path, seed: u64) -> RetrieverModel {
    let tok = BertTokenizer::from_vocab(vocab(), true).unwrap();
    let mut cfg = BertConfig::new(32, 2, 1);
    cfg.vocab_size = tok.vocab_size();
    cfg.intermediate_size = 64;
    cfg.max_position_embeddings = 128;
    let retriever = Retriever::new_random(
        &cfg,
        &RetrieverConfig {
            proj_size: 16,
            ..RetrieverConfig::default()
        },
        seed,
        &Device::Cpu,
    )
    .unwrap();
    retriever.save(dir).unwrap();
    std::fs::copy(vocab(), dir.join("vocab.txt")).unwrap();
    RetrieverModel::load(dir, &Device::Cpu).unwrap()
}

const CORPUS: &str = r#"{"id": "a", "title": "Paris", "text": "Paris is the capital of France. It lies on the Seine. The city has about two million people."}
{"id": "b", "title": "Nile", "text": "The Nile is a river in Africa. It flows north into the Mediterranean Sea."}
{"id": "c", "title": "Empty", "text": ""}
{"id": "d", "title": "Mozart", "text": "Wolfgang Amadeus Mozart was a composer of the Classical period. He was born in Salzburg in 1756. He wrote more than 600 works."}
"#;

fn write_corpus(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn embed_opts(batch: usize) -> EmbedBlocks {
    EmbedBlocks {
        batch,
        max_len: 64,
        progress: None,
    }
}

#[test]
fn blocks_keep_whole_sentences_and_their_documents() {
    let dir = temp_dir("blocks");
    let tok = BertTokenizer::from_vocab(vocab(), true).unwrap();
    let corpus = write_corpus(&dir, CORPUS);
    let cut = corpus_blocks(&corpus, &tok, 12, false).unwrap();
    assert_eq!(cut.documents, 4);
    assert_eq!(cut.skipped, 0);
    let docs: Vec<&str> = cut.blocks.iter().map(|b| b.doc_id.as_str()).collect();
    assert!(!docs.contains(&"c"), "an empty document gives no block");
    for id in ["a", "b", "d"] {
        assert!(docs.contains(&id), "{docs:?}");
    }
    // Every sentence's wordpieces appear, in order, in its document's blocks.
    let want = tok
        .wordpieces(&["Paris is the capital of France.", "It lies on the Seine."])
        .unwrap()
        .concat();
    let got: Vec<u32> = cut
        .blocks
        .iter()
        .filter(|b| b.doc_id == "a")
        .flat_map(|b| b.tokens.clone())
        .collect();
    assert_eq!(&got[..want.len()], want.as_slice());
    for b in &cut.blocks {
        assert!(b.tokens.len() <= 12 && !b.tokens.is_empty());
        assert_eq!(b.sentences.last().unwrap().end, b.tokens.len());
    }

    let bad = write_corpus(&dir, &format!("{CORPUS}not json\n"));
    let err = corpus_blocks(&bad, &tok, 12, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corpus.jsonl") && err.contains('5'), "{err}");
    assert_eq!(corpus_blocks(&bad, &tok, 12, true).unwrap().skipped, 1);
    assert!(corpus_blocks(&dir.join("missing.jsonl"), &tok, 12, false).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn search_matches_a_brute_force_ranking_by_the_same_towers() {
    let dir = temp_dir("rank");
    let model = tiny_model(&dir.join("model"), 7);
    let corpus = write_corpus(&dir, CORPUS);
    let opts = IndexCorpus {
        max_block_tokens: 10,
        skip_bad_lines: false,
        embed: embed_opts(3),
        step: 42,
    };
    let (index, stats) = index_corpus(&model, &corpus, &opts, &Device::Cpu).unwrap();
    assert_eq!(stats.blocks, index.blocks.len());
    assert!(index.blocks.len() > 4, "several blocks per document");
    assert_eq!(index.manifest.step, 42);

    // Row i is block i's embedding whatever the batching and length-sorting did.
    let one_by_one = embed_blocks(
        model.retriever.doc_tower(),
        &model.tokenizer,
        &index.blocks,
        &embed_opts(1),
        &Device::Cpu,
    )
    .unwrap();
    let diff = (one_by_one.to_dtype(DType::F32).unwrap()
        - index.embeddings.to_dtype(DType::F32).unwrap())
    .unwrap()
    .abs()
    .unwrap()
    .max_all()
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    assert!(diff < 2e-3, "batched vs single embeddings differ by {diff}");

    index.save(dir.join("index")).unwrap();
    let searcher =
        Searcher::open(&dir.join("index"), Some(&dir.join("model")), &Device::Cpu).unwrap();
    let queries = ["capital of france", "who composed music in salzburg"];
    let hits = searcher.search(&queries, 3).unwrap();

    // Brute force: the query tower's embedding (rounded to f16 as the search does) against every
    // row of the stored f16 index, in f64; ties go to the lower block.
    let tok = &model.tokenizer;
    let rows: Vec<Vec<f64>> = index
        .embeddings
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (qi, q) in queries.iter().enumerate() {
        let pieces = tok.wordpieces(&[q]).unwrap();
        let input = query_inputs(tok, &[pieces[0].as_slice()], 64, &Device::Cpu).unwrap();
        let qe: Vec<f64> = model
            .retriever
            .query_tower()
            .embed(&input, Mode::Eval)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let scores: Vec<f64> = rows
            .iter()
            .map(|r| r.iter().zip(&qe).map(|(a, b)| a * b).sum())
            .collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let got: Vec<usize> = hits[qi].iter().map(|h| h.block as usize).collect();
        assert_eq!(got, order[..3], "query {q}");
        for h in &hits[qi] {
            assert_eq!(h.doc_id, searcher.block(h).unwrap().doc_id);
            assert_eq!(h.score, scores[h.block as usize] as f32);
        }
    }

    // Errors: k, empty query, an index built by other weights.
    let n = searcher.len();
    assert!(searcher
        .search(&["x"], n + 1)
        .err()
        .unwrap()
        .to_string()
        .contains("k ="));
    assert!(searcher
        .search(&["  "], 1)
        .err()
        .unwrap()
        .to_string()
        .contains("empty"));
    tiny_model(&dir.join("other"), 8);
    let err = Searcher::open(&dir.join("index"), Some(&dir.join("other")), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rebuild it"), "{err}");
    assert!(Searcher::open(&dir.join("nope"), None, &Device::Cpu).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_plain_bert_folder_indexes_and_searches_wiki_vital() {
    let Some(shared) =
        common::shared_with(&["models/all-minilm-l6-v2", "data/wiki-vital/docs.jsonl"])
    else {
        return;
    };
    let (model_dir, docs) = (
        shared.join("models/all-minilm-l6-v2"),
        shared.join("data/wiki-vital/docs.jsonl"),
    );
    let dir = temp_dir("minilm");
    // The first 60 documents of wiki-vital.
    let text = std::fs::read_to_string(&docs).unwrap();
    let head: String = text.lines().take(60).map(|l| format!("{l}\n")).collect();
    let corpus = write_corpus(&dir, &head);
    let model = RetrieverModel::load(&model_dir, &Device::Cpu).unwrap();
    let opts = IndexCorpus {
        max_block_tokens: 128,
        skip_bad_lines: false,
        embed: embed_opts(16),
        step: 0,
    };
    let (index, _) = index_corpus(&model, &corpus, &opts, &Device::Cpu).unwrap();
    index.save(dir.join("index")).unwrap();
    let loaded = StoredIndex::load(dir.join("index"), Some(&model.fingerprint)).unwrap();
    assert_eq!(loaded.blocks.len(), index.blocks.len());
    // The manifest names the model folder, so no --model is needed to search.
    let searcher = Searcher::open(&dir.join("index"), None, &Device::Cpu).unwrap();
    let hits = searcher.search(&["0"], 3).unwrap();
    assert_eq!(hits[0].len(), 3);
    let q: Vec<f32> = Tensor::new(&[hits[0][0].score], &Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(q[0].is_finite());
    std::fs::remove_dir_all(dir).unwrap();
}
