//! The REALM model: input layouts, the retriever (towers, snapshot, checkpoints), the
//! knowledge-augmented encoder and the marginal objective, compared with Hugging Face
//! transformers 4.40.2 on small random REALM checkpoints (tests/fixtures/hf-realm, made by
//! scripts/hf/realm_fixtures.py; skipped with a printed reason when absent), plus gradients,
//! round trips, bad inputs and a sanity check on real documents with MiniLM (../shared).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use realm::model::*;
use realm::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch folder unique to this call (tests run in parallel), emptied first.
fn scratch(name: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("realm-model-{}-{call}-{name}", std::process::id()));
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

fn rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<u32>().unwrap()
}

/// max |x| over a tensor.
fn max_abs(x: &Tensor) -> f32 {
    x.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// max |a − b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    max_abs_diff(a, b) / max_abs(b).max(f32::MIN_POSITIVE)
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
        rows(q.input_ids()),
        vec![vec![cls, 10, 11, 12, sep], vec![cls, 13, sep, pad, pad]]
    );
    assert_eq!(q.lens().tensor().to_vec1::<u32>().unwrap(), vec![5, 3]);
    // Truncated to max_len in all, the [SEP] kept.
    let q = query_inputs(&tok, &[&[10, 11, 12]], 4, &dev).unwrap();
    assert_eq!(rows(q.input_ids()), vec![vec![cls, 10, 11, sep]]);

    let d = doc_inputs(&tok, &[&[20, 21], &[]], &[&[30, 31, 32], &[]], 64, &dev).unwrap();
    assert_eq!(
        rows(d.input_ids()),
        vec![
            vec![cls, 20, 21, sep, 30, 31, 32, sep],
            vec![cls, sep, sep, pad, pad, pad, pad, pad]
        ]
    );
    assert_eq!(
        rows(d.token_type_ids().as_ref().unwrap()),
        vec![vec![0, 0, 0, 0, 1, 1, 1, 1], vec![0, 0, 1, 0, 0, 0, 0, 0]]
    );
    // bert_format: the title keeps what fits first, the body gets the rest.
    let d = doc_inputs(&tok, &[&[20, 21]], &[&[30, 31, 32]], 6, &dev).unwrap();
    assert_eq!(rows(d.input_ids()), vec![vec![cls, 20, 21, sep, 30, sep]]);
    let d = doc_inputs(&tok, &[&[20, 21, 22, 23]], &[&[30]], 5, &dev).unwrap();
    assert_eq!(rows(d.input_ids()), vec![vec![cls, 20, 21, sep, sep]]);

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
        rows(j.input_ids()),
        vec![
            vec![cls, 10, 11, sep, sep, pad, pad],
            vec![cls, 10, 11, sep, 30, 31, sep],
            vec![cls, 12, sep, sep, pad, pad, pad],
            vec![cls, 12, sep, 32, 33, 34, sep],
        ]
    );
    assert_eq!(
        rows(j.token_type_ids().as_ref().unwrap()),
        vec![
            vec![0, 0, 0, 0, 1, 0, 0],
            vec![0, 0, 0, 0, 1, 1, 1],
            vec![0, 0, 0, 1, 0, 0, 0],
            vec![0, 0, 0, 1, 1, 1, 1],
        ]
    );
    assert_eq!(
        j.lens().tensor().to_vec1::<u32>().unwrap(),
        vec![5, 7, 4, 7]
    );
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

#[test]
fn retriever_round_trip_snapshot_and_relevance() {
    let (tok, _) = tiny_tokenizer(48);
    let cfg = common::tiny_config(48, 64);
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
        assert_eq!(
            common::var_values(&back.vars()),
            common::var_values(&r.vars())
        );

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
    let cfg = common::tiny_config(48, 64);
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

// ---------------------------------------------------------------------------------------------
// Hugging Face comparison (tests/fixtures/hf-realm)

/// The HF fixture folder, or None after printing why the test is skipped.
fn hf_fixture() -> Option<PathBuf> {
    common::folder_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-realm"),
        &[
            "scorer/model.safetensors",
            "encoder/model.safetensors",
            "batch.json",
            "inputs.safetensors",
            "expected.safetensors",
        ],
        " (make it with scripts/hf/realm_fixtures.py)",
    )
}

/// The fixture's batch, built with our input functions.
struct HfBatch {
    queries: BertInput,
    docs: BertInput,
    joined: BertInput,
    slots: MaskSlots,
    token_mask: Tensor,
    b: usize,
    k: usize,
    m: usize,
}

fn u32_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn hf_batch(dir: &Path, tok: &BertTokenizer) -> HfBatch {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("batch.json")).unwrap()).unwrap();
    let special = &json["special"];
    assert_eq!(special["cls"].as_u64().unwrap() as u32, tok.cls_id());
    assert_eq!(special["sep"].as_u64().unwrap() as u32, tok.sep_id());
    assert_eq!(special["pad"].as_u64().unwrap() as u32, tok.pad_id());
    let dev = Device::Cpu;
    let queries = u32_rows(&json["queries"]);
    let k = json["k"].as_u64().unwrap() as usize;
    let titles: Vec<Vec<u32>> = json["titles"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(u32_rows)
        .collect();
    let bodies: Vec<Vec<u32>> = json["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(u32_rows)
        .collect();
    let q: Vec<&[u32]> = queries.iter().map(Vec::as_slice).collect();
    let t: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
    let bo: Vec<&[u32]> = bodies.iter().map(Vec::as_slice).collect();
    // The null document is the empty body; HF was given `[CLS] x [SEP] [SEP]` for it.
    let joined_bodies: Vec<Option<&[u32]>> = bo
        .iter()
        .enumerate()
        .map(|(i, b)| (i % k != NULL_COLUMN).then_some(*b))
        .collect();
    let positions = u32_rows(&json["positions"]);
    let (b, m) = (positions.len(), positions[0].len());
    let tensor = |v: Vec<Vec<u32>>| Tensor::from_vec(v.concat(), (b, m), &dev).unwrap();
    HfBatch {
        queries: query_inputs(tok, &q, 40, &dev).unwrap(),
        docs: doc_inputs(tok, &t, &bo, 40, &dev).unwrap(),
        joined: joined_inputs(tok, &q, &joined_bodies, 40, &dev).unwrap().0,
        slots: MaskSlots::new(
            positions.concat(),
            u32_rows(&json["targets"]).concat(),
            u32_rows(&json["token_mask"])
                .concat()
                .into_iter()
                .map(|v| v as u8)
                .collect(),
            m,
            &dev,
        )
        .unwrap(),
        token_mask: tensor(u32_rows(&json["token_mask"])),
        b,
        k,
        m,
    }
}

/// Our batch equals what HF was given: ids and segments on real tokens, lengths from the masks.
fn assert_same_input(ours: &BertInput, hf: &HashMap<String, Tensor>, name: &str) {
    // [b, l] or [b, k, l] → rows.
    let get = |field: &str| {
        let t = &hf[&format!("{name}_{field}")];
        t.flatten_to(t.rank() - 2).unwrap()
    };
    let (ids, types, mask) = (
        get("input_ids"),
        get("token_type_ids"),
        get("attention_mask"),
    );
    let theirs = BertInput::from_attention_mask(
        ids.to_dtype(DType::U32).unwrap(),
        Some(types.to_dtype(DType::U32).unwrap()),
        &mask,
    )
    .unwrap();
    assert_eq!(
        ours.lens().tensor().to_vec1::<u32>().unwrap(),
        theirs.lens().tensor().to_vec1::<u32>().unwrap(),
        "{name} lens"
    );
    let lens = ours.lens().tensor().to_vec1::<u32>().unwrap();
    for (t_ours, t_theirs) in [
        (&ours.input_ids(), &theirs.input_ids()),
        (
            ours.token_type_ids().as_ref().unwrap(),
            theirs.token_type_ids().as_ref().unwrap(),
        ),
    ] {
        for (i, (a, b)) in rows(t_ours).iter().zip(rows(t_theirs)).enumerate() {
            let n = lens[i] as usize;
            assert_eq!(a[..n], b[..n], "{name} row {i}");
        }
    }
}

fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn matches_hugging_face_realm() {
    let Some(dir) = hf_fixture() else { return };
    let dev = Device::Cpu;
    let expected = load_tensors(&dir.join("expected.safetensors"));
    let inputs = load_tensors(&dir.join("inputs.safetensors"));
    let (tok, tok_dir) = tiny_tokenizer(128);
    let batch = hf_batch(&dir, &tok);
    assert_same_input(&batch.queries, &inputs, "query");
    assert_same_input(&batch.docs, &inputs, "candidate");
    assert_same_input(&batch.joined, &inputs, "joined");

    let retriever = Retriever::load(dir.join("scorer"), &dev).unwrap();
    assert!(!retriever.config().shared_towers);
    assert_eq!(retriever.config().proj_size, 16);
    let encoder = KnowledgeEncoder::load(dir.join("encoder"), &dev).unwrap();
    let (b, k, m) = (batch.b, batch.k, batch.m);

    // Relevance: both towers and their inner products.
    let q = retriever
        .query_tower()
        .embed(&batch.queries, Mode::Eval)
        .unwrap();
    let d = retriever
        .doc_tower()
        .embed(&batch.docs, Mode::Eval)
        .unwrap();
    let scores = retriever
        .score(&batch.queries, &batch.docs, Mode::Eval)
        .unwrap();
    for (name, ours, bound) in [
        ("query_score", &q, 1e-5),
        ("candidate_score", &d.reshape((b, k, 16)).unwrap(), 1e-5),
        ("relevance", &scores, 1e-5),
    ] {
        let err = rel_err(ours, &expected[name]);
        eprintln!("{name}: relative error {err:.2e}");
        assert!(err < bound, "{name}: relative error {err:.2e}");
    }

    // log p(y | z, x) at every mask slot, and the marginal loss with its gradients.
    let model =
        RealmModel::from_parts(retriever, encoder, &tok_dir, &RealmSettings::default()).unwrap();
    let mlm = MlmBatch {
        queries: &batch.queries,
        docs: &batch.docs,
        joined: &batch.joined,
        slots: &batch.slots,
        candidate_mask: None,
        doc_scores: None,
    };
    let out = model
        .mlm_forward(&mlm, Mode::Train { seed: 5, step: 0 })
        .unwrap();
    assert_eq!(out.cond_logprobs.dims(), &[b, k, m]);
    for (name, ours, bound) in [
        ("relevance", &out.doc_scores, 1e-5),
        ("cond_logprobs", &out.cond_logprobs, 1e-5),
        ("marginal", &out.marginal, 1e-5),
        ("loss", &out.loss.reshape(1).unwrap(), 1e-5),
    ] {
        let err = rel_err(ours, &expected[name]);
        eprintln!("{name}: relative error {err:.2e}");
        assert!(err < bound, "{name}: relative error {err:.2e}");
    }
    let grads = out.loss.backward().unwrap();
    let vars: HashMap<String, Var> = model.vars().into_iter().collect();
    let mut checked = 0;
    for (name, want) in &expected {
        let Some(rest) = name.strip_prefix("grad.") else {
            continue;
        };
        let got = match rest.split_once('.') {
            // candle keeps no gradients of intermediate tensors: the loss again, from the
            // scores as a leaf.
            _ if rest == "relevance" => {
                let scores = Var::from_tensor(&out.doc_scores.detach()).unwrap();
                let loss =
                    mlm_marginal(&scores, &out.cond_logprobs.detach(), &batch.token_mask).unwrap();
                loss.backward().unwrap().get(&scores).unwrap().clone()
            }
            Some(("scorer", param)) => grads.get(vars[param].as_tensor()).unwrap().clone(),
            Some(("encoder", param)) => grads
                .get(vars[&format!("encoder.{param}")].as_tensor())
                .unwrap()
                .clone(),
            _ => panic!("unknown gradient {name}"),
        };
        let err = rel_err(&got, want);
        eprintln!("{name}: relative error {err:.2e}");
        assert!(err < 1e-4, "{name}: relative error {err:.2e}");
        checked += 1;
    }
    assert_eq!(checked, 12);

    // The same checkpoint written by us reads back bit-identical and computes the same.
    let saved = scratch("hf-realm-model");
    model.save(&saved).unwrap();
    let back = RealmModel::load(&saved, &dev).unwrap();
    assert_eq!(
        common::var_values(&back.vars()),
        common::var_values(&model.vars())
    );
    let again = back.mlm_forward(&mlm, Mode::Eval).unwrap();
    assert_eq!(
        again.loss.to_scalar::<f32>().unwrap(),
        model
            .mlm_forward(&mlm, Mode::Eval)
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap()
    );
    // A realm folder is also a retriever folder.
    let r = Retriever::load(&saved, &dev).unwrap();
    assert_eq!(
        common::var_values(&r.vars()),
        common::var_values(&model.retriever().vars())
    );
    std::fs::remove_dir_all(saved).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Objectives, gradients, round trips and errors on small random models

/// A random RealmModel (separate towers) and a batch of 2 queries × 3 candidates × 3 slots.
fn random_model_and_batch(shared: bool) -> (RealmModel, Vec<BertInput>, MaskSlots) {
    let (tok, tok_dir) = tiny_tokenizer(60);
    let cfg = common::tiny_config(60, 64);
    let dev = Device::Cpu;
    let rcfg = RetrieverConfig {
        proj_size: 16,
        shared_towers: shared,
        ..Default::default()
    };
    let model = RealmModel::from_parts(
        Retriever::new_random(&cfg, &rcfg, 11, &dev).unwrap(),
        KnowledgeEncoder::new_random(&cfg, 12, &dev).unwrap(),
        &tok_dir,
        &RealmSettings {
            num_candidates: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let queries: [&[u32]; 2] = [&[10, 4, 4, 13], &[14, 15, 4]];
    let titles: [&[u32]; 6] = [&[], &[20], &[21, 22], &[], &[23], &[24]];
    let bodies: [&[u32]; 6] = [&[], &[30, 31, 32], &[33, 34], &[], &[35, 36, 37, 38], &[39]];
    let joined: Vec<Option<&[u32]>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (i % 3 != 0).then_some(*b))
        .collect();
    let inputs = vec![
        query_inputs(&tok, &queries, 32, &dev).unwrap(),
        doc_inputs(&tok, &titles, &bodies, 32, &dev).unwrap(),
        joined_inputs(&tok, &queries, &joined, 32, &dev).unwrap().0,
    ];
    let slots = MaskSlots::new(
        vec![2, 3, 0, 3, 0, 0],
        vec![11, 12, 0, 16, 0, 0],
        vec![1, 1, 0, 1, 0, 0],
        3,
        &dev,
    )
    .unwrap();
    (model, inputs, slots)
}

fn batch_of<'a>(inputs: &'a [BertInput], slots: &'a MaskSlots) -> MlmBatch<'a> {
    MlmBatch {
        queries: &inputs[0],
        docs: &inputs[1],
        joined: &inputs[2],
        slots,
        candidate_mask: None,
        doc_scores: None,
    }
}

#[test]
fn gradients_reach_both_towers_and_the_encoder() {
    for shared in [false, true] {
        let (model, inputs, slots) = random_model_and_batch(shared);
        let out = model
            .mlm_forward(&batch_of(&inputs, &slots), Mode::Train { seed: 1, step: 3 })
            .unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
        let grads = out.loss.backward().unwrap();
        let mut without = Vec::new();
        for (name, var) in model.vars() {
            let norm = grads.get(var.as_tensor()).map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            match norm {
                Some(n) if n > 0.0 && n.is_finite() => {}
                _ => without.push(name),
            }
        }
        // The encoder's pooler is the only part the masked-LM loss does not use.
        assert_eq!(
            without,
            vec![
                "encoder.realm.pooler.dense.weight",
                "encoder.realm.pooler.dense.bias"
            ],
            "shared towers: {shared}"
        );
        if !shared {
            assert!(model
                .vars()
                .iter()
                .any(|(n, _)| n.starts_with("query_embedder.")));
        }
    }
}

#[test]
fn marginal_objective_and_retrieval_utility_by_hand() {
    let dev = Device::Cpu;
    // One query, the null document and two retrieved, two mask slots (the second padding).
    let scores = Tensor::new(&[[0.0f32, 1.0, 2.0]], &dev).unwrap();
    let cond = Tensor::new(
        &[[[-3.0f32, f32::NEG_INFINITY], [-1.0, -2.0], [-2.0, -2.0]]],
        &dev,
    )
    .unwrap();
    let mask = Tensor::new(&[[1u8, 0]], &dev).unwrap();
    let prior: Vec<f64> = {
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|s| s.exp()).sum();
        [0.0f64, 1.0, 2.0].iter().map(|s| s.exp() / z).collect()
    };
    let want_marginal =
        (prior[0] * (-3.0f64).exp() + prior[1] * (-1.0f64).exp() + prior[2] * (-2.0f64).exp()).ln();
    let loss = mlm_marginal(&scores, &cond, &mask)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (f64::from(loss) + want_marginal).abs() < 1e-6,
        "{loss} vs {}",
        -want_marginal
    );

    let ru = retrieval_utility(&scores, &cond, &mask).unwrap();
    assert_eq!(ru.tokens, 1);
    assert!((ru.marginal - (want_marginal + 3.0)).abs() < 1e-6);
    // Top-scoring retrieved document: column 2.
    assert!((ru.top1 - (-2.0 + 3.0)).abs() < 1e-6);
    assert!((ru.retrieved_mean - ((-1.0 + 3.0) + (-2.0 + 3.0)) / 2.0).abs() < 1e-6);

    // An absent candidate (−inf score) takes no part; nothing masked gives 0, not NaN.
    let absent = Tensor::new(&[[0.0f32, 1.0, f32::NEG_INFINITY]], &dev).unwrap();
    let ru = retrieval_utility(&absent, &cond, &mask).unwrap();
    assert!((ru.top1 - 2.0).abs() < 1e-6 && (ru.retrieved_mean - 2.0).abs() < 1e-6);
    let none = Tensor::zeros((1, 2), DType::U8, &dev).unwrap();
    assert_eq!(
        mlm_marginal(&scores, &cond, &none)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );

    // Bad inputs.
    let e = mlm_marginal(&scores, &cond, &Tensor::new(&[[2u8, 0]], &dev).unwrap()).unwrap_err();
    assert!(e.to_string().contains("token_mask"), "{e}");
    let e = mlm_marginal(&scores, &cond.narrow(1, 0, 2).unwrap(), &mask).unwrap_err();
    assert!(e.to_string().contains("cond_logprobs"), "{e}");
    let e = retrieval_utility(
        &scores.narrow(1, 0, 1).unwrap(),
        &cond.narrow(1, 0, 1).unwrap(),
        &mask,
    )
    .unwrap_err();
    assert!(e.to_string().contains("k ≥ 2"), "{e}");
}

#[test]
fn absent_candidates_are_left_out_of_the_marginal() {
    let (model, inputs, slots) = random_model_and_batch(true);
    let present = Tensor::new(&[[1u8, 1, 0], [1, 1, 1]], &Device::Cpu).unwrap();
    let mut batch = batch_of(&inputs, &slots);
    batch.candidate_mask = Some(&present);
    let out = model.mlm_forward(&batch, Mode::Eval).unwrap();
    let scores = out.doc_scores.to_vec2::<f32>().unwrap();
    assert_eq!(scores[0][2], f32::NEG_INFINITY);
    assert!(scores[1].iter().all(|s| s.is_finite()));
    // The marginal of query 0 is over its first two candidates only.
    let two = marginal_log_probs(
        &out.doc_scores
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(1, 0, 2)
            .unwrap(),
        &out.cond_logprobs
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(1, 0, 2)
            .unwrap(),
    )
    .unwrap();
    assert!(max_abs_diff(&out.marginal.narrow(0, 0, 1).unwrap(), &two) < 1e-6);
    assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
}

#[test]
fn model_round_trip_is_bit_identical() {
    for shared in [false, true] {
        let (model, inputs, slots) = random_model_and_batch(shared);
        let dir = scratch(&format!("realm-round-trip-{shared}"));
        model.save(&dir).unwrap();
        assert!(dir.join("vocab.txt").exists());
        let back = RealmModel::load(&dir, &Device::Cpu).unwrap();
        assert_eq!(
            common::var_values(&back.vars()),
            common::var_values(&model.vars())
        );
        assert_eq!(back.settings(), model.settings());
        assert_eq!(back.retriever().config(), model.retriever().config());
        let batch = batch_of(&inputs, &slots);
        let a = model.mlm_forward(&batch, Mode::Eval).unwrap();
        let b = back.mlm_forward(&batch, Mode::Eval).unwrap();
        assert_eq!(
            a.loss.to_scalar::<f32>().unwrap(),
            b.loss.to_scalar::<f32>().unwrap()
        );

        // The encoder alone, in RealmKnowledgeAugEncoder's layout.
        let enc_dir = dir.join("encoder-only");
        model.encoder().save(&enc_dir).unwrap();
        let enc = KnowledgeEncoder::load(&enc_dir, &Device::Cpu).unwrap();
        assert_eq!(
            common::var_values(enc.vars()),
            common::var_values(model.encoder().vars())
        );
        assert!(enc
            .vars()
            .iter()
            .all(|(n, _)| n.starts_with("realm.") || n.starts_with("cls.predictions.")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn encoder_and_model_errors_are_clear() {
    let (model, inputs, slots) = random_model_and_batch(false);
    let dev = Device::Cpu;
    let enc = model.encoder();
    let joined = &inputs[2];
    let pos = |v: Vec<u32>| Tensor::from_vec(v, (6, 1), &dev).unwrap();
    let msg = |r: realm::Result<Tensor>| r.unwrap_err().to_string();
    // Row 0 ([CLS] 10 4 4 13 [SEP] [SEP]) has 7 tokens.
    let e = msg(enc.masked_log_probs(
        joined,
        &pos(vec![7, 0, 0, 0, 0, 0]),
        &pos(vec![5; 6]),
        Mode::Eval,
    ));
    assert!(e.contains("position 7 in row 0"), "{e}");
    let e = msg(enc.masked_log_probs(joined, &pos(vec![1; 6]), &pos(vec![60; 6]), Mode::Eval));
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = msg(enc.masked_log_probs(joined, slots.positions(), slots.targets(), Mode::Eval));
    assert!(e.contains("positions") && e.contains("[6, m]"), "{e}");
    let f = pos(vec![1; 6]).to_dtype(DType::F32).unwrap();
    let e = msg(enc.masked_log_probs(joined, &f, &pos(vec![5; 6]), Mode::Eval));
    assert!(e.contains("u32"), "{e}");

    // A batch whose parts disagree.
    let mut batch = batch_of(&inputs, &slots);
    batch.joined = &inputs[0];
    let e = model
        .mlm_forward(&batch, Mode::Eval)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("joined rows"), "{e}");
    let wrong = Tensor::ones((2, 2), DType::U8, &dev).unwrap();
    let mut batch = batch_of(&inputs, &slots);
    batch.candidate_mask = Some(&wrong);
    let e = model
        .mlm_forward(&batch, Mode::Eval)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("candidate_mask"), "{e}");

    // Checkpoint folders: missing files, a config the tensors do not fit.
    let dir = scratch("realm-errors");
    let e = RealmModel::load(&dir, &dev).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    model.save(&dir).unwrap();
    let config = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["encoder_bert"]["intermediate_size"] = 128.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let e = RealmModel::load(&dir, &dev).err().unwrap().to_string();
    assert!(
        e.contains("encoder.realm.encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );
    json["encoder_bert"]["intermediate_size"] = 64.into();
    json["num_candidates"] = 1.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let e = RealmModel::load(&dir, &dev).err().unwrap().to_string();
    assert!(e.contains("num_candidates"), "{e}");
    json["num_candidates"] = 3.into();
    std::fs::write(&config, json.to_string()).unwrap();
    RealmModel::load(&dir, &dev).unwrap();
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    assert!(RealmModel::load(&dir, &dev).is_err());
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = RealmModel::load(&dir, &dev).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stored_decoder_must_repeat_the_word_embeddings() {
    let Some(fixture) = hf_fixture() else { return };
    let dev = Device::Cpu;
    let mut tensors = load_tensors(&fixture.join("encoder/model.safetensors"));
    let words = tensors["realm.embeddings.word_embeddings.weight"].clone();
    let dir = scratch("tied-decoder");
    std::fs::copy(fixture.join("encoder/config.json"), dir.join("config.json")).unwrap();
    let write = |t: &HashMap<String, Tensor>| {
        candle_core::safetensors::save(t, dir.join("model.safetensors")).unwrap()
    };
    tensors.insert("cls.predictions.decoder.weight".into(), words.clone());
    write(&tensors);
    let tied = KnowledgeEncoder::load(&dir, &dev).unwrap();
    let reference = KnowledgeEncoder::load(fixture.join("encoder"), &dev).unwrap();
    assert_eq!(
        common::var_values(tied.vars()),
        common::var_values(reference.vars())
    );
    tensors.insert(
        "cls.predictions.decoder.weight".into(),
        (words + 1.0).unwrap(),
    );
    write(&tensors);
    let e = KnowledgeEncoder::load(&dir, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("untied"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// End to end on real documents with MiniLM (../shared)

/// `../shared` next to the crate with MiniLM and wiki-vital, or None after printing why not.
fn shared() -> Option<PathBuf> {
    common::shared_with(&[
        "models/all-minilm-l6-v2/model.safetensors",
        "data/wiki-vital/docs.jsonl",
    ])
}

#[test]
fn end_to_end_on_wiki_vital_with_minilm() {
    let Some(shared) = shared() else { return };
    let dev = Device::Cpu;
    let minilm = shared.join("models/all-minilm-l6-v2");
    let settings = RealmSettings {
        num_candidates: 3,
        query_seq_len: 32,
        candidate_seq_len: 64,
        ..Default::default()
    };
    let model = RealmModel::from_bert_dir(&minilm, &RetrieverConfig::default(), &settings, 3, &dev)
        .unwrap();
    let tok = model.tokenizer();
    // MiniLM has no masked-LM head: ours is fresh, named as HF's.
    assert!(model
        .vars()
        .iter()
        .any(|(n, _)| n == "encoder.cls.predictions.transform.dense.weight"));

    // Three documents: a query sentence from the first, the other two as candidates.
    let docs: Vec<_> =
        realm::data::CorpusReader::open(shared.join("data/wiki-vital/docs.jsonl"), false)
            .unwrap()
            .take(3)
            .map(|d| d.unwrap())
            .collect();
    let sentence = &docs[0].text[..realm::data::sentences(&docs[0].text)[0].1];
    let words = &tok.wordpieces(&[sentence]).unwrap()[0];
    let mask_id = tok.token_id("[MASK]").unwrap();
    // Mask the first wordpiece (the title "0" in wiki-vital's first document) and the third.
    let masked_at = [0usize, 2];
    let mut query = words.clone();
    for &i in &masked_at {
        query[i] = mask_id;
    }
    let query = &query[..query.len().min(settings.query_seq_len - 2)];
    let titles: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| tok.wordpieces(&[d.title.as_str()]).unwrap()[0].clone())
        .collect();
    let bodies: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| tok.wordpieces(&[d.text.as_str()]).unwrap()[0].clone())
        .collect();
    let empty: &[u32] = &[];
    let cand_titles = [empty, &titles[1], &titles[2]];
    let cand_bodies = [empty, &bodies[1], &bodies[2]];
    let queries = query_inputs(tok, &[query], settings.query_seq_len, &dev).unwrap();
    let candidates = doc_inputs(
        tok,
        &cand_titles,
        &cand_bodies,
        settings.candidate_seq_len,
        &dev,
    )
    .unwrap();
    let (joined, offsets) = joined_inputs(
        tok,
        &[query],
        &[None, Some(&bodies[1]), Some(&bodies[2])],
        settings.joined_seq_len(),
        &dev,
    )
    .unwrap();
    assert_eq!(offsets, vec![query.len() + 2; 3]);
    assert_eq!(candidates.lens().tensor().to_vec1::<u32>().unwrap()[1], 64);
    let positions = Tensor::new(
        &[[1u32 + masked_at[0] as u32, 1 + masked_at[1] as u32]],
        &dev,
    )
    .unwrap();
    let targets = Tensor::new(&[[words[masked_at[0]], words[masked_at[1]]]], &dev).unwrap();
    let token_mask = Tensor::new(&[[1u8, 1]], &dev).unwrap();
    let slots = MaskSlots::new(
        positions.flatten_all().unwrap().to_vec1().unwrap(),
        targets.flatten_all().unwrap().to_vec1().unwrap(),
        vec![1, 1],
        2,
        &dev,
    )
    .unwrap();
    let batch = MlmBatch {
        queries: &queries,
        docs: &candidates,
        joined: &joined,
        slots: &slots,
        candidate_mask: None,
        doc_scores: None,
    };

    let before = model.mlm_forward(&batch, Mode::Eval).unwrap();
    let loss0 = before.loss.to_scalar::<f32>().unwrap();
    // An untrained head: about the uniform log-likelihood over MiniLM's 30,522 wordpieces.
    assert!(
        loss0.is_finite() && (5.0..20.0).contains(&loss0),
        "loss {loss0}"
    );
    let ru = retrieval_utility(&before.doc_scores, &before.cond_logprobs, &token_mask).unwrap();
    assert!(ru.marginal.is_finite() && ru.top1.is_finite() && ru.retrieved_mean.is_finite());
    eprintln!(
        "MiniLM: loss {loss0:.4}, scores {:?}, RU {ru:?}",
        before.doc_scores.to_vec2::<f32>().unwrap()
    );

    // A plain gradient step on this batch lowers its loss.
    let vars = model.vars();
    {
        let out = model
            .mlm_forward(&batch, Mode::Train { seed: 9, step: 0 })
            .unwrap();
        let grads = out.loss.backward().unwrap();
        for (name, v) in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                assert!(
                    g.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        .is_finite(),
                    "{name}"
                );
                v.set(&(v.as_tensor() - (g * 1e-2).unwrap()).unwrap())
                    .unwrap();
            }
        }
    }
    let loss1 = model
        .mlm_forward(&batch, Mode::Eval)
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("MiniLM: loss after one step {loss1:.4}");
    assert!(loss1 < loss0, "{loss1} !< {loss0}");
}
