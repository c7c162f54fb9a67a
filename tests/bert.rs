//! The BERT encoder: Hugging Face's outputs for all-MiniLM-L6-v2 (../shared, skipped with a
//! printed reason when absent), gradients against finite differences, dropout determinism,
//! checkpoint round trips and every bad input the issue lists.
//!
//! Error metric throughout: relative error = max |ours − reference| / max |reference| over a
//! tensor (hidden states: real tokens only, since HF computes padding rows differently). Bounds:
//! f32 1e-4, f16 compute 5e-3, bf16 compute 3e-2 (measured: 1.0e-6, 1.2e-3, 8.8e-3 at worst).

mod common;

use common::temp_dir;

use candle_core::{DType, Device, Tensor, Var};
use realm::embed::{embed_file, EmbedFile};
use realm::model::*;
use realm::rng::SplitMix64;
use realm::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `../shared` next to the crate, or None after printing why the test is skipped.
fn shared() -> Option<PathBuf> {
    common::shared_with(&[
        "models/all-minilm-l6-v2/model.safetensors",
        "fixtures/minilm/reference.safetensors",
    ])
}

/// The HF reference: sentences and output tensors.
struct Fixture {
    model_dir: PathBuf,
    sentences: Vec<String>,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load() -> Option<Self> {
        let dir = shared()?;
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("fixtures/minilm/reference.json")).unwrap(),
        )
        .unwrap();
        let sentences = json["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let tensors = candle_core::safetensors::load(
            dir.join("fixtures/minilm/reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
        .into_iter()
        .collect();
        Some(Fixture {
            model_dir: dir.join("models/all-minilm-l6-v2"),
            sentences,
            tensors,
        })
    }

    fn sentences(&self) -> Vec<&str> {
        self.sentences.iter().map(String::as_str).collect()
    }

    fn get(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    fn ids(&self) -> Vec<Vec<u32>> {
        self.get("input_ids")
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    /// `[7, L, 1]` f32: 1 on real tokens.
    fn mask(&self) -> Tensor {
        self.get("attention_mask")
            .to_dtype(DType::F32)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// max |ours − want| / max |want|.
fn rel_err(ours: &Tensor, want: &Tensor) -> f64 {
    let ours = ours.to_dtype(DType::F32).unwrap();
    max_abs(&(ours - want).unwrap()) / max_abs(want)
}

fn encode(tok: &BertTokenizer, texts: &[&str]) -> Batch {
    tok.encode_batch(texts, 128, Overflow::Error, &Device::Cpu)
        .unwrap()
}

#[test]
fn tokenizer_json_and_vocab_txt_give_the_reference_ids() {
    let Some(fx) = Fixture::load() else { return };
    let from_json = BertTokenizer::from_file(fx.model_dir.join("tokenizer.json")).unwrap();
    // Without tokenizer.json, from_dir falls back to vocab.txt + tokenizer_config.json.
    let vocab_only = std::env::temp_dir().join(format!("realm-bert-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&vocab_only).unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(fx.model_dir.join(f), vocab_only.join(f)).unwrap();
    }
    let from_dir = BertTokenizer::from_dir(&vocab_only).unwrap();
    let from_vocab = BertTokenizer::from_vocab(fx.model_dir.join("vocab.txt"), true).unwrap();
    let want = fx.ids();
    let want_lens: Vec<u32> = fx
        .get("attention_mask")
        .sum(1)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (name, tok) in [
        ("tokenizer.json", &from_json),
        ("vocab.txt via from_dir", &from_dir),
        ("vocab.txt", &from_vocab),
    ] {
        let batch = encode(tok, &fx.sentences());
        assert_eq!(
            batch.input.input_ids().to_vec2::<u32>().unwrap(),
            want,
            "{name}"
        );
        assert_eq!(batch.lens, want_lens, "{name}");
        assert_eq!(tok.vocab_size(), 30_522, "{name}");
    }
    std::fs::remove_dir_all(vocab_only).unwrap();
}

#[test]
fn minilm_matches_transformers_in_f32_f16_and_bf16() {
    let Some(fx) = Fixture::load() else { return };
    let tok = BertTokenizer::from_dir(&fx.model_dir).unwrap();
    let batch = encode(&tok, &fx.sentences());
    let mut model = BertModel::load(&fx.model_dir, &Device::Cpu).unwrap();
    tok.check_vocab(model.config()).unwrap();
    let mask = fx.mask();
    for (dtype, bound) in [(DType::F32, 1e-4), (DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        model.set_compute_dtype(dtype).unwrap();
        let out = model.forward(&batch.input, Mode::Eval).unwrap();
        assert_eq!(out.last_hidden_state.dtype(), dtype);
        let hidden = out.last_hidden_state.to_dtype(DType::F32).unwrap();
        let mean = pool(&hidden, batch.input.lens().tensor(), Pooling::Mean).unwrap();
        let cases = [
            (
                "last_hidden_state",
                hidden.broadcast_mul(&mask).unwrap(),
                fx.get("last_hidden_state").broadcast_mul(&mask).unwrap(),
            ),
            (
                "pooler_output",
                out.pooler_output.clone(),
                fx.get("pooler_output").clone(),
            ),
            ("mean_pooled", mean.clone(), fx.get("mean_pooled").clone()),
            (
                "sentence_embedding",
                l2_normalize(&mean).unwrap(),
                fx.get("sentence_embedding").clone(),
            ),
        ];
        for (name, ours, want) in cases {
            let err = rel_err(&ours, &want);
            eprintln!("{dtype:?} {name}: relative error {err:.2e} (bound {bound:.0e})");
            assert!(err <= bound, "{dtype:?} {name}: {err:e} > {bound:e}");
        }
    }
}

#[test]
fn realm_embed_writes_mean_and_cls_embeddings_in_input_order() {
    let Some(fx) = Fixture::load() else { return };
    let dir = std::env::temp_dir().join(format!("realm-bert-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("texts.jsonl");
    let lines: Vec<String> = fx
        .sentences
        .iter()
        .map(|s| serde_json::json!({ "id": 1, "text": s }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let opts = EmbedFile {
        model: fx.model_dir.clone(),
        input,
        out: dir.join("emb.safetensors"),
        pooling: Pooling::Mean,
        normalize: true,
        // Batches of 3 of the length-sorted texts: the output must be back in input order.
        batch: 3,
        max_len: None,
        dtype: None,
    };
    let dev = realm::device::ComputeDevice::cpu();
    assert_eq!(embed_file(&dev, &opts).unwrap(), 7);
    let written = candle_core::safetensors::load(&opts.out, &Device::Cpu).unwrap();
    let err = rel_err(&written["embeddings"], fx.get("sentence_embedding"));
    assert!(err <= 1e-4, "relative error {err:e}");

    // Plain text lines, [CLS] pooling without normalisation: the reference's [CLS] states.
    let input = dir.join("texts.txt");
    std::fs::write(&input, fx.sentences.join("\n")).unwrap();
    let opts = EmbedFile {
        input,
        out: dir.join("cls.safetensors"),
        pooling: Pooling::Cls,
        normalize: false,
        ..opts
    };
    assert_eq!(embed_file(&dev, &opts).unwrap(), 7);
    let written = candle_core::safetensors::load(&opts.out, &Device::Cpu).unwrap();
    let cls = fx.get("last_hidden_state").get_on_dim(1, 0).unwrap();
    let err = rel_err(&written["embeddings"], &cls);
    assert!(err <= 1e-4, "relative error {err:e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A 2-layer encoder small enough for finite differences, with a vocabulary of 40.
fn small_config() -> BertConfig {
    let mut c = BertConfig::new(64, 2, 2);
    c.vocab_size = 40;
    c.max_position_embeddings = 16;
    c.intermediate_size = 96;
    c
}

/// Random ids (segment 1 on the second half) and the given lengths, padded to `l`.
fn tiny_input(lens: &[u32], l: usize, seed: u64) -> BertInput {
    let mut rng = SplitMix64::new(seed);
    let b = lens.len();
    let ids: Vec<u32> = (0..b * l).map(|_| 1 + rng.below(39) as u32).collect();
    let types: Vec<u32> = (0..b * l).map(|i| u32::from(i % l >= l / 2)).collect();
    BertInput::new(ids, Some(types), lens, &Device::Cpu).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn gradients_of_the_whole_encoder_match_finite_differences() {
    let mut config = small_config();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    // Larger weights than the 0.02 default, so that every non-linearity is exercised.
    config.initializer_range = 0.2;
    let model = BertModel::new_random(&config, 3, &Device::Cpu).unwrap();
    let input = tiny_input(&[7, 4], 7, 5);
    let mut rng = SplitMix64::new(9);
    let r_hidden: Vec<f32> = rng
        .normal_vec(2 * 7 * 64, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let r_pooled: Vec<f32> = rng
        .normal_vec(2 * 64, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let r_hidden_t = Tensor::from_vec(r_hidden.clone(), (2, 7, 64), &Device::Cpu).unwrap();
    let r_pooled_t = Tensor::from_vec(r_pooled.clone(), (2, 64), &Device::Cpu).unwrap();
    // The loss summed in f64 on the host, so that finite differences see little rounding.
    let loss = || -> f64 {
        let out = model.forward(&input, Mode::Eval).unwrap();
        let dot = |t: &Tensor, r: &[f32]| -> f64 {
            to_vec(t)
                .iter()
                .zip(r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        dot(&out.last_hidden_state, &r_hidden) + dot(&out.pooler_output, &r_pooled)
    };
    let out = model
        .forward(&input, Mode::Train { seed: 0, step: 0 })
        .unwrap();
    let analytic = ((out.last_hidden_state * &r_hidden_t)
        .unwrap()
        .sum_all()
        .unwrap()
        + (out.pooler_output * &r_pooled_t)
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap()
    .backward()
    .unwrap();
    // Central differences with step 1e-2: truncation error ~1e-4 of the gradients' scale (10–50
    // here), rounding of the f32 forward ~2e-3 absolute (also the noise on the key biases, whose
    // true gradient is zero: softmax ignores a per-query constant). Measured worst: 3.3e-4 of
    // the tensor's largest gradient.
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, var) in model.vars() {
        let grad = to_vec(analytic.get(var.as_tensor()).unwrap());
        let scale = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        assert!(
            scale > 0.0 || name.ends_with("attention.self.key.bias"),
            "{name}: no gradient"
        );
        // The three largest-gradient coordinates and one random one.
        let mut idx: Vec<usize> = (0..grad.len()).collect();
        idx.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        idx.truncate(3);
        idx.push(rng.below(grad.len() as u64) as usize);
        let base = to_vec(var.as_tensor());
        for i in idx {
            let at = |delta: f32| {
                let mut w = base.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let err = (fd - f64::from(grad[i])).abs();
            assert!(
                err <= 1e-3 * f64::from(scale) + 3e-3,
                "{name}[{i}]: analytic {} vs finite difference {fd} (largest {scale})",
                grad[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * model.vars().len());
}

#[test]
fn eval_is_deterministic_and_dropout_follows_the_seed() {
    let model = BertModel::new_random(&small_config(), 1, &Device::Cpu).unwrap();
    let input = tiny_input(&[9, 16, 3], 16, 2);
    let run = |mode| to_vec(&model.forward(&input, mode).unwrap().last_hidden_state);
    let eval = run(Mode::Eval);
    assert_eq!(eval, run(Mode::Eval));
    let train = |seed, step| run(Mode::Train { seed, step });
    let a = train(4, 0);
    assert_eq!(a, train(4, 0), "same seed and step, same masks");
    assert_ne!(a, eval, "dropout changes the output");
    assert_ne!(a, train(5, 0), "another seed draws other masks");
    assert_ne!(a, train(4, 1), "another step draws other masks");

    // Without dropout, training computes what evaluation does (up to the LayerNorm's summation
    // order: the composition in training, the fused kernel in evaluation).
    let mut config = small_config();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let model = BertModel::new_random(&config, 1, &Device::Cpu).unwrap();
    let eval = to_vec(&model.forward(&input, Mode::Eval).unwrap().last_hidden_state);
    let train = to_vec(
        &model
            .forward(&input, Mode::Train { seed: 4, step: 0 })
            .unwrap()
            .last_hidden_state,
    );
    let diff = eval
        .iter()
        .zip(&train)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff < 1e-5,
        "train without dropout differs from eval by {diff}"
    );
}

#[test]
fn padding_does_not_change_the_real_tokens() {
    let model = BertModel::new_random(&small_config(), 7, &Device::Cpu).unwrap();
    let batch = tiny_input(&[5, 12], 12, 3);
    let out = model.forward(&batch, Mode::Eval).unwrap();
    // The first example alone, unpadded.
    let first = |t: &Tensor| t.narrow(0, 0, 1).unwrap().narrow(1, 0, 5).unwrap();
    let alone = BertInput::from_tensors(
        first(batch.input_ids()),
        batch.token_type_ids().map(first),
        &[5],
    )
    .unwrap();
    let single = model.forward(&alone, Mode::Eval).unwrap();
    let padded_rows = out
        .last_hidden_state
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(1, 0, 5)
        .unwrap();
    assert!(rel_err(&padded_rows, &single.last_hidden_state) < 1e-5);
    let pooled = out.pooler_output.narrow(0, 0, 1).unwrap();
    assert!(rel_err(&pooled, &single.pooler_output) < 1e-5);
    let mean = pool(&out.last_hidden_state, batch.lens().tensor(), Pooling::Mean).unwrap();
    let mean_alone = pool(
        &single.last_hidden_state,
        alone.lens().tensor(),
        Pooling::Mean,
    )
    .unwrap();
    assert!(rel_err(&mean.narrow(0, 0, 1).unwrap(), &mean_alone) < 1e-5);
}

#[test]
fn activations_follow_the_config() {
    let input = tiny_input(&[6], 6, 1);
    let outputs: Vec<Vec<f32>> = [Activation::Gelu, Activation::GeluNew, Activation::Relu]
        .into_iter()
        .map(|act| {
            let mut c = small_config();
            c.hidden_act = act;
            c.initializer_range = 0.5;
            let model = BertModel::new_random(&c, 1, &Device::Cpu).unwrap();
            to_vec(&model.forward(&input, Mode::Eval).unwrap().last_hidden_state)
        })
        .collect();
    assert_ne!(outputs[0], outputs[1]);
    assert_ne!(outputs[0], outputs[2]);
    // The tanh approximation stays close to the exact GELU.
    let diff = outputs[0]
        .iter()
        .zip(&outputs[1])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 5e-2, "gelu vs gelu_new: {diff}");
}

#[test]
fn save_and_load_round_trip_exactly_with_or_without_a_prefix() {
    let model = BertModel::new_random(&small_config(), 11, &Device::Cpu).unwrap();
    let dir = temp_dir("roundtrip");
    model.save(&dir).unwrap();
    let back = BertModel::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(back.vars().len(), model.vars().len());
    for ((n1, v1), (n2, v2)) in model.vars().iter().zip(back.vars()) {
        assert_eq!(n1, n2);
        assert_eq!(to_vec(v1.as_tensor()), to_vec(v2.as_tensor()), "{n1}");
    }
    // The same tensors under "bert." next to a head's: found by prefix, the head ignored.
    let mut tensors: Vec<(String, Tensor)> = model
        .vars()
        .iter()
        .map(|(n, v)| (format!("bert.{n}"), v.as_tensor().clone()))
        .collect();
    tensors.push((
        "cls.predictions.bias".into(),
        Tensor::zeros(40, DType::F32, &Device::Cpu).unwrap(),
    ));
    let path = dir.join("prefixed.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let prefixed = BertModel::from_safetensors(model.config(), &path, None, &Device::Cpu).unwrap();
    let input = tiny_input(&[8, 5], 8, 4);
    let a = to_vec(&model.forward(&input, Mode::Eval).unwrap().last_hidden_state);
    let b = to_vec(
        &prefixed
            .forward(&input, Mode::Eval)
            .unwrap()
            .last_hidden_state,
    );
    assert_eq!(a, b);
    // No file is left behind but the two written.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "model.safetensors", "prefixed.safetensors"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn random_init_is_standard_and_reproducible() {
    let config = small_config();
    let a = BertModel::new_random(&config, 5, &Device::Cpu).unwrap();
    let b = BertModel::new_random(&config, 5, &Device::Cpu).unwrap();
    let c = BertModel::new_random(&config, 6, &Device::Cpu).unwrap();
    let get = |m: &BertModel, name: &str| {
        let (_, v) = m.vars().iter().find(|(n, _)| n == name).unwrap();
        to_vec(v.as_tensor())
    };
    let q = "encoder.layer.1.attention.self.query.weight";
    assert_eq!(get(&a, q), get(&b, q));
    assert_ne!(get(&a, q), get(&c, q));
    let w = get(&a, q);
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.002, "std {std}");
    assert!(get(&a, "encoder.layer.0.output.dense.bias")
        .iter()
        .all(|&v| v == 0.0));
    assert!(get(&a, "encoder.layer.0.output.LayerNorm.weight")
        .iter()
        .all(|&v| v == 1.0));
    // The padding token's embedding row is zero, as in HF.
    let words = get(&a, "embeddings.word_embeddings.weight");
    assert!(words[..64].iter().all(|&v| v == 0.0));
    assert!(words[64..128].iter().any(|&v| v != 0.0));
}

#[test]
fn checkpoint_problems_are_reported_by_name() {
    let model = BertModel::new_random(&small_config(), 2, &Device::Cpu).unwrap();
    let dir = temp_dir("broken");
    let mut tensors: Vec<(String, Tensor)> = model
        .vars()
        .iter()
        .filter(|(n, _)| n != "encoder.layer.1.output.dense.bias")
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    for (n, t) in tensors.iter_mut() {
        if n == "pooler.dense.weight" {
            *t = t.narrow(0, 0, 32).unwrap();
        }
    }
    tensors.push((
        "encoder.layer.2.output.dense.bias".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    ));
    // HF's position_ids buffer is not unexpected.
    tensors.push((
        "embeddings.position_ids".into(),
        Tensor::arange(0i64, 16, &Device::Cpu).unwrap(),
    ));
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let err = BertModel::from_safetensors(model.config(), &path, None, &Device::Cpu)
        .err()
        .expect("a broken checkpoint must not load");
    match &err {
        Error::Checkpoint {
            missing,
            unexpected,
            wrong_shape,
            ..
        } => {
            assert_eq!(missing, &["encoder.layer.1.output.dense.bias"]);
            assert_eq!(unexpected, &["encoder.layer.2.output.dense.bias"]);
            assert_eq!(wrong_shape.len(), 1);
            assert!(wrong_shape[0].starts_with("pooler.dense.weight: expected f32 [64, 64]"));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("encoder.layer.1.output.dense.bias") && msg.contains("[32, 64]"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A vocabulary of 20 wordpieces, BERT's special tokens first.
fn tiny_vocab(dir: &Path) -> PathBuf {
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
        "##s", "ran", ".", ",", "big", "red", "hat", "and",
    ];
    let path = dir.join("vocab.txt");
    std::fs::write(&path, words.join("\n")).unwrap();
    path
}

#[test]
fn pairs_get_segments_and_long_inputs_are_truncated_or_refused() {
    let dir = temp_dir("vocab");
    let tok = BertTokenizer::from_vocab(tiny_vocab(&dir), true).unwrap();
    let dev = Device::Cpu;
    let batch = tok
        .encode_pairs(&[("The cat sat.", "Dogs ran")], 32, Overflow::Error, &dev)
        .unwrap();
    let ids = batch.input.input_ids().to_vec2::<u32>().unwrap();
    assert_eq!(ids, [[2, 5, 6, 7, 14, 3, 11, 12, 13, 3]]);
    let types = batch
        .input
        .token_type_ids()
        .as_ref()
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    assert_eq!(types, [[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]]);
    // Unknown words become [UNK]; padding is [PAD] with segment 0.
    let batch = tok
        .encode_batch(&["zebra", "the big red hat"], 32, Overflow::Error, &dev)
        .unwrap();
    assert_eq!(
        batch.input.input_ids().to_vec2::<u32>().unwrap(),
        [[2, 1, 3, 0, 0, 0], [2, 5, 16, 17, 18, 3]]
    );
    assert_eq!(batch.lens, [3, 6]);

    let long = "the cat sat on the mat and the dog sat on a hat";
    let err = tok
        .encode_batch(&["a cat", long], 8, Overflow::Error, &dev)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("sequence 1 is longer than the limit of 8 tokens"),
        "{err}"
    );
    let cut = tok
        .encode_batch(&[long], 8, Overflow::Truncate, &dev)
        .unwrap();
    assert_eq!(
        cut.input.input_ids().to_vec2::<u32>().unwrap(),
        [[2, 5, 6, 7, 8, 5, 9, 3]]
    );
    // Pairs lose tokens from the longer segment first.
    let cut = tok
        .encode_pairs(&[("the cat", long)], 8, Overflow::Truncate, &dev)
        .unwrap();
    assert_eq!(
        cut.input.input_ids().to_vec2::<u32>().unwrap(),
        [[2, 5, 6, 3, 5, 6, 7, 3]]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = temp_dir("bad");
    let tok = BertTokenizer::from_vocab(tiny_vocab(&dir), true).unwrap();
    let mut config = small_config();
    let err = tok.check_vocab(&config).unwrap_err().to_string();
    assert!(
        err.contains("20 tokens") && err.contains("vocab_size is 40"),
        "{err}"
    );
    config.vocab_size = 20;
    tok.check_vocab(&config).unwrap();

    let model = BertModel::new_random(&config, 0, &Device::Cpu).unwrap();
    let run = |input: &BertInput| model.forward(input, Mode::Eval).unwrap_err().to_string();
    // Longer than max_position_embeddings (16).
    let long = BertInput::new(vec![0; 17], None, &[17], &Device::Cpu).unwrap();
    assert!(run(&long).contains("exceeds max_position_embeddings = 16"));
    let input = |ids: u32, types: Option<u32>, lens: &[u32]| {
        BertInput::new(vec![ids; 8], types.map(|t| vec![t; 8]), lens, &Device::Cpu).unwrap()
    };
    assert!(run(&input(20, None, &[4, 2])).contains("id 20 is outside the vocabulary of 20"));
    assert!(run(&input(19, None, &[4, 5])).contains("lens[1] = 5"));
    assert!(run(&input(19, None, &[4, 0])).contains("lens[1] = 0"));
    assert!(run(&input(19, Some(2), &[4, 1])).contains("outside the vocabulary of 2"));
    // Ids in tensors are checked once, when the input is made.
    let ids = Tensor::full(20u32, (2, 4), &Device::Cpu).unwrap();
    let from_tensors = BertInput::from_tensors(ids, None, &[4, 4]).unwrap();
    assert!(run(&from_tensors).contains("id 20 is outside the vocabulary of 20"));

    // Attention masks: right padding gives lengths; anything else is refused.
    let ids = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1i64, 1, 1, 0], [1, 1, 1, 1]], &Device::Cpu).unwrap();
    let ok = BertInput::from_attention_mask(ids.clone(), None, &mask).unwrap();
    assert_eq!(ok.lens().host(), [3, 4]);
    let left = Tensor::new(&[[0i64, 1, 1, 1], [1, 1, 1, 1]], &Device::Cpu).unwrap();
    let err = BertInput::from_attention_mask(ids, None, &left).unwrap_err();
    assert!(err.to_string().contains("row 0"), "{err}");

    // Configurations the encoder cannot run.
    let mut odd = small_config();
    odd.num_attention_heads = 3;
    assert!(BertModel::new_random(&odd, 0, &Device::Cpu).is_err());
    let err = BertModel::load(&dir, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The tiny encoder in f16 with dropout: the emulated CUDA kernels and the native CPU attention
/// draw the same masks and agree to f16 accuracy, outputs and parameter gradients.
#[cfg(feature = "emulate")]
#[test]
fn emulator_and_cpu_agree_with_dropout() {
    let mut model = BertModel::new_random(&small_config(), 8, &Device::Cpu).unwrap();
    model.set_compute_dtype(DType::F16).unwrap();
    let input = tiny_input(&[16, 9], 16, 6);
    // A random projection as the loss: a plain sum of LayerNorm outputs has zero gradient.
    let r: Vec<f32> = SplitMix64::new(1)
        .normal_vec(2 * 16 * 64, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let r = Tensor::from_vec(r, (2, 16, 64), &Device::Cpu).unwrap();
    let run = |seed| {
        let out = model
            .forward(&input, Mode::Train { seed, step: 2 })
            .unwrap();
        let grads = (out.last_hidden_state.to_dtype(DType::F32).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (_, q) = model
            .vars()
            .iter()
            .find(|(n, _)| n == "encoder.layer.0.attention.self.query.weight")
            .unwrap();
        let dq = grads.get(q.as_tensor()).unwrap().clone();
        (out.last_hidden_state, dq)
    };
    let (native, native_dq) = run(3);
    let ((emulated, emulated_dq), (other_seed, _)) = {
        let _emu = realm::ops::use_emulator().unwrap();
        (run(3), run(4))
    };
    // Masks matter: another seed moves the output by far more than f16 rounding.
    assert!(rel_err(&other_seed, &native.to_dtype(DType::F32).unwrap()) > 0.1);
    let err = rel_err(&emulated, &native.to_dtype(DType::F32).unwrap());
    eprintln!("emulator vs native: output relative error {err:.2e}");
    assert!(err < 5e-3, "outputs differ by {err:e}");
    assert!(max_abs(&native_dq) > 0.0);
    let err = rel_err(&emulated_dq, &native_dq);
    eprintln!("emulator vs native: gradient relative error {err:.2e}");
    assert!(err < 1e-2, "gradients differ by {err:e}");
}

#[test]
fn var_list_names_every_parameter_once() {
    let model = BertModel::new_random(&small_config(), 0, &Device::Cpu).unwrap();
    let names: std::collections::HashSet<&str> =
        model.vars().iter().map(|(n, _)| n.as_str()).collect();
    // 5 embedding tensors, 16 per layer, 2 for the pooler: HF's BertModel.
    assert_eq!(names.len(), 5 + 16 * 2 + 2);
    assert_eq!(model.vars().len(), names.len());
    let (h, i) = (64, 96);
    let layer = 4 * (h * h + h) + 2 * (i * h) + i + h + 4 * h;
    let want = (40 + 16 + 2) * h + 2 * h + 2 * layer + h * h + h;
    let total: usize = model
        .vars()
        .iter()
        .map(|(_, v): &(String, Var)| v.elem_count())
        .sum();
    assert_eq!(total, want);
}
