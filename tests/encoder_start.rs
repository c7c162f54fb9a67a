//! A retriever started from a pretrained encoder (a BERT folder) starts as that encoder's own
//! retrieval, as sentence-transformers uses it: mean pooling, cosine similarity. Its projection
//! to 128 dimensions keeps the top principal directions of the corpus the stage fits it to, so
//! on a corpus of fewer blocks than that every query ranks the blocks exactly as the encoder's
//! cosine does, and recall@1/@5 are the encoder's.

mod common;

use candle_core::{Device, Tensor};
use realm::data::Block;
use realm::index::RetrieverModel;
use realm::model::{
    doc_inputs, l2_normalize, pool, query_inputs, BertConfig, BertModel, BertTokenizer, Mode,
    Pooling, Retriever, TowerPooling,
};
use realm::train::ict::IctConfig;
use realm::train::models::{default_retriever_config, retriever, ModelInit, Origin, ProjectionFit};
use std::path::{Path, PathBuf};

const PEOPLE: [(&str, &str); 24] = [
    ("Anna Berg", "Oslo"),
    ("Bruno Costa", "Lisbon"),
    ("Carla Diaz", "Madrid"),
    ("David Eng", "Dublin"),
    ("Elena Fox", "Vienna"),
    ("Felix Gray", "Prague"),
    ("Greta Hahn", "Berlin"),
    ("Hugo Ito", "Tokyo"),
    ("Ines Jung", "Zurich"),
    ("Jonas Klein", "Munich"),
    ("Karin Lund", "Stockholm"),
    ("Luca Moretti", "Rome"),
    ("Maya Novak", "Warsaw"),
    ("Nils Olsen", "Bergen"),
    ("Olga Petrova", "Moscow"),
    ("Pablo Quiroga", "Lima"),
    ("Rosa Silva", "Santiago"),
    ("Sven Toft", "Copenhagen"),
    ("Tara Udall", "London"),
    ("Umar Vance", "Cairo"),
    ("Vera Weiss", "Geneva"),
    ("Walter Xu", "Beijing"),
    ("Yara Young", "Toronto"),
    ("Zoe Zeller", "Paris"),
];

fn blocks(tok: &BertTokenizer) -> Vec<Block> {
    PEOPLE
        .iter()
        .enumerate()
        .map(|(i, (name, city))| {
            let text = format!("{name} was born in {city}. {name} later worked as a teacher.");
            let tokens = tok.wordpieces(&[text.as_str()]).unwrap().remove(0);
            Block {
                doc_id: i.to_string(),
                title: name.to_string(),
                sentences: std::iter::once(0..tokens.len()).collect(),
                tokens,
            }
        })
        .collect()
}

fn questions() -> Vec<String> {
    PEOPLE
        .iter()
        .map(|(name, _)| format!("where was {name} born?"))
        .collect()
}

/// A random BERT folder (hidden 256, wider than the 127 directions a 128-d projection keeps),
/// with the demo vocabulary.
fn random_bert_folder(name: &str) -> PathBuf {
    let mut cfg = BertConfig::new(256, 1, 4);
    cfg.intermediate_size = 256;
    cfg.max_position_embeddings = 64;
    common::random_bert_folder(name, cfg)
}

/// `[queries, blocks]` scores: the encoder's cosine of mean-pooled hidden states, and the
/// retriever's relevance.
fn scores(
    dir: &Path,
    retriever: &Retriever,
    tok: &BertTokenizer,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dev = Device::Cpu;
    let blocks = blocks(tok);
    let titles = tok
        .wordpieces(&blocks.iter().map(|b| b.title.as_str()).collect::<Vec<_>>())
        .unwrap();
    let titles: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
    let bodies: Vec<&[u32]> = blocks.iter().map(|b| b.tokens.as_slice()).collect();
    let docs = doc_inputs(tok, &titles, &bodies, 48, &dev).unwrap();
    let q = questions();
    let pieces = tok
        .wordpieces(&q.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let pieces: Vec<&[u32]> = pieces.iter().map(Vec::as_slice).collect();
    let queries = query_inputs(tok, &pieces, 24, &dev).unwrap();

    let bert = BertModel::load(dir, &dev).unwrap();
    let sentence = |input| -> Tensor {
        let out = bert.forward(input, Mode::Eval).unwrap();
        l2_normalize(&pool(&out.last_hidden_state, input.lens().tensor(), Pooling::Mean).unwrap())
            .unwrap()
    };
    let cosine = sentence(&queries)
        .matmul(&sentence(&docs).t().unwrap())
        .unwrap();
    let qe = retriever.query_tower().embed(&queries, Mode::Eval).unwrap();
    let de = retriever.doc_tower().embed(&docs, Mode::Eval).unwrap();
    let relevance = qe.matmul(&de.t().unwrap()).unwrap();
    (cosine.to_vec2().unwrap(), relevance.to_vec2().unwrap())
}

/// Every pair of blocks the encoder ranks apart by more than `margin` is ranked the same way by
/// the retriever; returns the pairs that are not.
fn misordered(cosine: &[Vec<f32>], relevance: &[Vec<f32>], margin: f32) -> Vec<String> {
    let mut bad = Vec::new();
    for (q, (c, r)) in cosine.iter().zip(relevance).enumerate() {
        for i in 0..c.len() {
            for j in 0..c.len() {
                if c[i] > c[j] + margin && r[i] <= r[j] {
                    bad.push(format!(
                        "query {q}: blocks {i} > {j} ({} vs {})",
                        c[i], c[j]
                    ));
                }
            }
        }
    }
    bad
}

/// recall@k of the answer's block (block i answers question i).
fn recall(scores: &[Vec<f32>], k: usize) -> f64 {
    let hits = scores
        .iter()
        .enumerate()
        .filter(|(q, s)| s.iter().filter(|&&v| v > s[*q]).count() < k)
        .count();
    hits as f64 / scores.len() as f64
}

fn check_encoder_start(dir: &Path) {
    let init = ModelInit::Origin(Origin::Bert {
        dir: dir.to_path_buf(),
    });
    let cfg = default_retriever_config(&init);
    assert_eq!(cfg.pooling, TowerPooling::Mean);
    assert_eq!(cfg.proj_size, 128);
    let tok = BertTokenizer::from_dir(dir).unwrap();
    let blocks = blocks(&tok);
    let fit = ProjectionFit {
        tokenizer: &tok,
        blocks: &blocks,
        doc_len: 48,
    };
    let r = retriever(&init, &cfg, 5, &Device::Cpu, Some(&fit)).unwrap();
    let (cosine, relevance) = scores(dir, &r, &tok);
    let bad = misordered(&cosine, &relevance, 1e-4);
    assert!(
        bad.is_empty(),
        "{} pairs misordered: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    for k in [1, 5] {
        let (enc, ret) = (recall(&cosine, k), recall(&relevance, k));
        println!(
            "{}: recall@{k} encoder {enc:.3}, initialised retriever {ret:.3}",
            dir.display()
        );
        assert_eq!(enc, ret, "recall@{k}");
    }
}

#[test]
fn towers_from_a_random_bert_rank_as_its_mean_pooled_cosine() {
    let dir = random_bert_folder("ranking");
    check_encoder_start(&dir);
    // REALM's start (pooler, random projection) does not: what this replaces for BERT folders.
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    let realm_cfg = realm::model::RetrieverConfig::default();
    let plain = Retriever::from_bert_dir(&dir, &realm_cfg, 5, &Device::Cpu).unwrap();
    let (cosine, relevance) = scores(&dir, &plain, &tok);
    assert!(!misordered(&cosine, &relevance, 1e-4).is_empty());
    // Without a corpus to fit, a projection one wider than the encoder keeps all of it.
    let wide = realm::model::RetrieverConfig {
        proj_size: 257,
        pooling: TowerPooling::Mean,
        ..realm_cfg
    };
    let full = Retriever::from_bert_dir(&dir, &wide, 5, &Device::Cpu).unwrap();
    let (cosine, relevance) = scores(&dir, &full, &tok);
    let bad = misordered(&cosine, &relevance, 1e-4);
    assert!(bad.is_empty(), "{bad:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn towers_from_minilm_retrieve_as_minilm() {
    let Some(shared) = common::shared_with(&["models/all-minilm-l6-v2/model.safetensors"]) else {
        return;
    };
    check_encoder_start(&shared.join("models/all-minilm-l6-v2"));
}

#[test]
fn a_plain_bert_folder_is_a_mean_pooled_retriever_and_stages_default_to_it() {
    let dir = random_bert_folder("defaults");
    let model = RetrieverModel::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(model.retriever.config().pooling, TowerPooling::Mean);
    let init = ModelInit::from_args(Some(&dir), None, None).unwrap();
    let ict = IctConfig::new(init, "docs.jsonl".into());
    assert_eq!(ict.retriever.pooling, TowerPooling::Mean);
    let scratch = ModelInit::from_args(None, Some("tiny"), Some(&common::demo_vocab())).unwrap();
    assert_eq!(
        IctConfig::new(scratch, "docs.jsonl".into())
            .retriever
            .pooling,
        TowerPooling::Pooler
    );
    let _ = std::fs::remove_dir_all(&dir);
}
