//! The REALM model: input layouts, the retriever (towers, snapshot, checkpoints), the
//! knowledge-augmented encoder and the marginal objective, compared with Hugging Face
//! transformers 4.40.2 on small random REALM checkpoints (tests/fixtures/hf-realm, made by
//! scripts/hf/realm_fixtures.py; skipped with a printed reason when absent), plus gradients,
//! round trips, bad inputs and a sanity check on real documents with MiniLM (../shared).

use candle_core::{Device, Tensor, Var};
use realm::model::*;
use realm::Error;
use std::path::PathBuf;

/// A scratch folder unique to this test process and `name`, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realm-model-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A WordPiece vocabulary of `n` tokens: the five specials at BERT's ids (0, 100–103 would need
/// 104 rows, so they come first here), then `w0`, `w1`, ...
fn tiny_tokenizer(n: usize) -> (BertTokenizer, PathBuf) {
    let dir = scratch(&format!("vocab{n}"));
    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend((words.len()..n).map(|i| format!("w{i}")));
    std::fs::write(dir.join("vocab.txt"), words.join("\n") + "\n").unwrap();
    (
        BertTokenizer::from_vocab(dir.join("vocab.txt"), true).unwrap(),
        dir,
    )
}

fn tiny_config(vocab: usize) -> BertConfig {
    let mut c = BertConfig::new(32, 2, 1);
    c.vocab_size = vocab;
    c.intermediate_size = 64;
    c.max_position_embeddings = 64;
    c
}

fn rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<u32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Inputs

#[test]
fn input_layouts_follow_the_released_featurizer() {
    let (tok, _) = tiny_tokenizer(40);
    let (cls, sep, pad) = (tok.cls_id(), tok.sep_id(), tok.pad_id());
    let dev = Device::Cpu;

    let q = query_inputs(&tok, &[&[10, 11, 12], &[13]], 64, &dev).unwrap();
    assert_eq!(
        rows(&q.input_ids),
        vec![vec![cls, 10, 11, 12, sep], vec![cls, 13, sep, pad, pad]]
    );
    assert_eq!(q.lens.to_vec1::<u32>().unwrap(), vec![5, 3]);
    // Truncated to max_len in all, the [SEP] kept.
    let q = query_inputs(&tok, &[&[10, 11, 12]], 4, &dev).unwrap();
    assert_eq!(rows(&q.input_ids), vec![vec![cls, 10, 11, sep]]);

    let d = doc_inputs(&tok, &[&[20, 21], &[]], &[&[30, 31, 32], &[]], 64, &dev).unwrap();
    assert_eq!(
        rows(&d.input_ids),
        vec![
            vec![cls, 20, 21, sep, 30, 31, 32, sep],
            vec![cls, sep, sep, pad, pad, pad, pad, pad]
        ]
    );
    assert_eq!(
        rows(d.token_type_ids.as_ref().unwrap()),
        vec![vec![0, 0, 0, 0, 1, 1, 1, 1], vec![0, 0, 1, 0, 0, 0, 0, 0]]
    );
    // bert_format: the title keeps what fits first, the body gets the rest.
    let d = doc_inputs(&tok, &[&[20, 21]], &[&[30, 31, 32]], 6, &dev).unwrap();
    assert_eq!(rows(&d.input_ids), vec![vec![cls, 20, 21, sep, 30, sep]]);
    let d = doc_inputs(&tok, &[&[20, 21, 22, 23]], &[&[30]], 5, &dev).unwrap();
    assert_eq!(rows(&d.input_ids), vec![vec![cls, 20, 21, sep, sep]]);

    // Two queries, two documents each (the first of each the null document).
    let (j, offsets) = joined_inputs(
        &tok,
        &[&[10, 11], &[12]],
        &[None, Some(&[30, 31]), None, Some(&[32, 33, 34, 35])],
        7,
        &dev,
    )
    .unwrap();
    assert_eq!(offsets, vec![4, 4, 3, 3]);
    assert_eq!(
        rows(&j.input_ids),
        vec![
            vec![cls, 10, 11, sep, sep, pad, pad],
            vec![cls, 10, 11, sep, 30, 31, sep],
            vec![cls, 12, sep, sep, pad, pad, pad],
            vec![cls, 12, sep, 32, 33, 34, sep],
        ]
    );
    assert_eq!(
        rows(j.token_type_ids.as_ref().unwrap()),
        vec![
            vec![0, 0, 0, 0, 1, 0, 0],
            vec![0, 0, 0, 0, 1, 1, 1],
            vec![0, 0, 0, 1, 0, 0, 0],
            vec![0, 0, 0, 1, 1, 1, 1],
        ]
    );
    assert_eq!(j.lens.to_vec1::<u32>().unwrap(), vec![5, 7, 4, 7]);
}

#[test]
fn input_errors_name_the_argument() {
    let (tok, _) = tiny_tokenizer(40);
    let dev = Device::Cpu;
    let msg = |e: Error| e.to_string();
    assert!(msg(query_inputs(&tok, &[], 8, &dev).unwrap_err()).contains("empty"));
    assert!(msg(query_inputs(&tok, &[&[10]], 1, &dev).unwrap_err()).contains("max_len"));
    assert!(msg(doc_inputs(&tok, &[&[10]], &[], 8, &dev).unwrap_err()).contains("bodies"));
    let e = joined_inputs(&tok, &[&[10, 11, 12]], &[None], 5, &dev).unwrap_err();
    assert!(msg(e).contains("never truncated"));
    let e = joined_inputs(&tok, &[&[10], &[11]], &[None, None, None], 8, &dev).unwrap_err();
    assert!(msg(e).contains("3 bodies for 2 queries"));
}

// ---------------------------------------------------------------------------------------------
// Retriever

fn var_values(vars: &[(String, Var)]) -> Vec<(String, Vec<f32>)> {
    vars.iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

#[test]
fn retriever_round_trip_snapshot_and_relevance() {
    let (tok, _) = tiny_tokenizer(48);
    let cfg = tiny_config(48);
    let dev = Device::Cpu;
    for shared in [true, false] {
        let rcfg = RetrieverConfig {
            proj_size: 16,
            shared_towers: shared,
            ..Default::default()
        };
        let r = Retriever::new_random(&cfg, &rcfg, 7, &dev).unwrap();
        let names: Vec<String> = r.vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"embedder.cls.dense.weight".to_string()));
        assert!(names.contains(&"embedder.realm.pooler.dense.weight".to_string()));
        assert_eq!(
            names.iter().any(|n| n.starts_with("query_embedder.")),
            !shared
        );

        let dir = scratch(&format!("retriever-{shared}"));
        r.save(&dir).unwrap();
        let back = Retriever::load(&dir, &dev).unwrap();
        assert_eq!(back.config(), r.config());
        assert_eq!(var_values(&back.vars()), var_values(&r.vars()));

        let q = query_inputs(&tok, &[&[10, 11, 12], &[13, 14]], 32, &dev).unwrap();
        let d = doc_inputs(
            &tok,
            &[&[20], &[], &[21], &[22, 23]],
            &[&[30, 31], &[], &[32], &[33, 34, 35]],
            32,
            &dev,
        )
        .unwrap();
        let scores = r.score(&q, &d, Mode::Eval).unwrap();
        assert_eq!(scores.dims(), &[2, 2]);
        let qe = r.query_tower().embed(&q, Mode::Eval).unwrap();
        let de = r.doc_tower().embed(&d, Mode::Eval).unwrap();
        assert_eq!(qe.dims(), &[2, 16]);
        let by_hand = qe
            .unsqueeze(1)
            .unwrap()
            .broadcast_mul(&de.reshape((2, 2, 16)).unwrap())
            .unwrap()
            .sum(2)
            .unwrap();
        assert!(max_abs_diff(&scores, &by_hand) < 1e-5);
        assert_eq!(
            back.score(&q, &d, Mode::Eval)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            scores.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        // A snapshot keeps the weights it was taken with.
        let snap = r.doc_tower().snapshot().unwrap();
        let before = snap.embed(&d, Mode::Eval).unwrap();
        assert_eq!(max_abs_diff(&before, &de), 0.0);
        for (_, v) in r.doc_tower().vars() {
            v.set(&(v.as_tensor() * 1.5).unwrap()).unwrap();
        }
        assert_eq!(
            max_abs_diff(&snap.embed(&d, Mode::Eval).unwrap(), &before),
            0.0
        );
        assert!(max_abs_diff(&r.doc_tower().embed(&d, Mode::Eval).unwrap(), &before) > 1e-3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn towers_can_move_to_a_background_thread() {
    fn is_send<T: Send + 'static>() {}
    is_send::<Tower>();
    is_send::<Retriever>();
}

#[test]
fn retriever_checkpoint_errors_are_clear() {
    let cfg = tiny_config(48);
    let dev = Device::Cpu;
    let rcfg = RetrieverConfig {
        proj_size: 16,
        shared_towers: false,
        ..Default::default()
    };
    let r = Retriever::new_random(&cfg, &rcfg, 3, &dev).unwrap();
    let dir = scratch("retriever-errors");
    let missing = Retriever::load(&dir, &dev).err().unwrap().to_string();
    assert!(missing.contains("config.json"), "{missing}");
    r.save(&dir).unwrap();

    // config.json that disagrees with the tensors.
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["shared_towers"] = true.into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let e = Retriever::load(&dir, &dev).err().unwrap().to_string();
    assert!(e.contains("shared_towers"), "{e}");
    // A projection size the tensors do not have.
    json["shared_towers"] = false.into();
    json["retriever_proj_size"] = 8.into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let e = Retriever::load(&dir, &dev).err().unwrap().to_string();
    assert!(e.contains("embedder.cls.dense.weight"), "{e}");
    // A BERT the tensors do not fit.
    json["retriever_proj_size"] = 16.into();
    json["hidden_size"] = 64.into();
    json["num_attention_heads"] = 2.into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let e = Retriever::load(&dir, &dev).err().unwrap().to_string();
    assert!(
        e.contains("embedder.realm.embeddings.word_embeddings.weight"),
        "{e}"
    );
    // A safetensors file that holds no retriever.
    std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    assert!(Retriever::load(&dir, &dev).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}
