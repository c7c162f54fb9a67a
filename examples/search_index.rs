//! Indexing a corpus with a retriever's document tower and searching it with its query tower, as
//! `realm index` and `realm search` do, from Rust: 300 documents of the embedded demo corpus.
//!
//! ```sh
//! cargo run --release --example search_index                    # a small untrained retriever
//! cargo run --release --example search_index -- MODEL_FOLDER    # a BERT folder or a checkpoint
//! ```
//!
//! The untrained retriever ranks arbitrarily; `realm ict` trains one, or pass a sentence-embedding
//! BERT (e.g. all-MiniLM-L6-v2) for meaningful hits.

use candle_core::Device;
use realm::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use realm::index::{RetrieverModel, Searcher};
use realm::model::{BertConfig, BertTokenizer, Retriever, RetrieverConfig, TowerPooling};
use std::path::{Path, PathBuf};

fn main() -> realm::Result<()> {
    let dev = Device::Cpu;
    let work = std::env::temp_dir().join(format!("realm-example-search-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    let corpus = work.join("docs.jsonl");
    let docs: Vec<&str> = realm::data::demo::DOCS.lines().take(300).collect();
    std::fs::write(&corpus, docs.join("\n") + "\n")?;

    let model_dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => untrained_retriever(&work.join("model"), &dev)?,
    };
    let model = RetrieverModel::load(&model_dir, &dev)?;
    let options = IndexCorpus {
        max_block_tokens: 128,
        skip_bad_lines: false,
        embed: EmbedBlocks {
            batch: 32,
            max_len: 160,
            progress: None,
        },
        step: 0,
    };
    let (index, stats) = index_corpus(&model, &corpus, &options, &dev)?;
    println!(
        "{} documents -> {} blocks in {:.1} s",
        stats.documents, stats.blocks, stats.embed_seconds
    );
    // An index is a folder (manifest, block records, f16 embeddings); the searcher reopens it
    // with the model that built it.
    let index_dir = work.join("index");
    index.save(&index_dir)?;
    let searcher = Searcher::open(&index_dir, Some(&model_dir), &dev)?;
    for query in [
        "Which moon of Jupiter is covered in craters?",
        "the French mathematician who built a calculating machine",
    ] {
        println!("{query}");
        for hit in &searcher.search(&[query], 3)?[0] {
            println!("  {:7.3}  {}", hit.score, hit.title);
        }
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// A small random retriever with the demo vocabulary, saved as a model folder.
fn untrained_retriever(dir: &Path, dev: &Device) -> realm::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("vocab.txt"), realm::data::demo::VOCAB)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )?;
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = BertTokenizer::from_dir(dir)?.vocab_size();
    bert.max_position_embeddings = 192;
    // Mean pooling: an untrained [CLS] pooler gives nearly the same vector for every input.
    let shape = RetrieverConfig {
        pooling: TowerPooling::Mean,
        ..RetrieverConfig::default()
    };
    Retriever::new_random(&bert, &shape, 0, dev)?.save(dir)?;
    Ok(dir.to_path_buf())
}
