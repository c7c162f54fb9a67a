//! The retriever's `retriever_pooling` option: mean pooling feeds the projection the mean of the
//! real tokens' hidden states (padding ignored), survives a save/load round trip, and the REALM
//! default (the pooler) is what a config without the field means.

use candle_core::Device;
use realm::model::realm_inputs::query_inputs;
use realm::model::{BertConfig, BertTokenizer, Mode, Retriever, RetrieverConfig, TowerPooling};
use std::path::Path;

fn tokenizer() -> BertTokenizer {
    BertTokenizer::from_vocab(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt"),
        true,
    )
    .unwrap()
}

fn retriever(pooling: TowerPooling) -> Retriever {
    let mut cfg = BertConfig::new(32, 1, 1);
    cfg.vocab_size = tokenizer().vocab_size();
    cfg.intermediate_size = 64;
    let rc = RetrieverConfig {
        proj_size: 8,
        pooling,
        ..RetrieverConfig::default()
    };
    Retriever::new_random(&cfg, &rc, 3, &Device::Cpu).unwrap()
}

fn embed(r: &Retriever, texts: &[&str]) -> Vec<Vec<f32>> {
    let tok = tokenizer();
    let pieces = tok.wordpieces(texts).unwrap();
    let refs: Vec<&[u32]> = pieces.iter().map(Vec::as_slice).collect();
    let input = query_inputs(&tok, &refs, 32, &Device::Cpu).unwrap();
    r.query_tower()
        .embed(&input, Mode::Eval)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn mean_pooling_ignores_padding_and_round_trips() {
    let r = retriever(TowerPooling::Mean);
    // A short text embeds the same alone and beside a longer one (which pads it).
    let alone = embed(&r, &["paris"]);
    let padded = embed(&r, &["paris", "the nile is a river in africa"]);
    for (a, b) in alone[0].iter().zip(&padded[0]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let pooler = embed(&retriever(TowerPooling::Pooler), &["paris"]);
    assert!(
        alone[0]
            .iter()
            .zip(&pooler[0])
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "mean pooling must differ from the pooler"
    );

    let dir = std::env::temp_dir().join(format!("realm-pooling-{}", std::process::id()));
    r.save(&dir).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(
        config.contains("\"retriever_pooling\": \"mean\""),
        "{config}"
    );
    let back = Retriever::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config().pooling, TowerPooling::Mean);
    assert_eq!(embed(&back, &["paris"]), alone);

    // HF configs have no such field: the pooler, as REALM.
    let mut value: serde_json::Value = serde_json::from_str(&config).unwrap();
    value.as_object_mut().unwrap().remove("retriever_pooling");
    std::fs::write(dir.join("config.json"), value.to_string()).unwrap();
    let hf = Retriever::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(hf.config().pooling, TowerPooling::Pooler);
    std::fs::remove_dir_all(dir).unwrap();
}
