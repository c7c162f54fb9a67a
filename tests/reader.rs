//! The open-QA span reader: transformers' `RealmReader` outputs on a committed fixture
//! (tests/fixtures/hf-reader, made by scripts/hf/reader_fixture.py), gradients, the span-width and
//! body masks, decoding, checkpoints, bad inputs, and a run on real data (../shared).
//!
//! Error metric: relative error = max |ours − reference| / max |reference| over a tensor.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use realm::data::{answer_spans, normalize_answer, sentences, CorpusReader};
use realm::model::{
    joined_inputs, qa_loss, span_text, Activation, BertConfig, BertInput, BertTokenizer, Mode,
    Reader, ReaderConfig, SpanLogits, SpanPrediction,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rel_err(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    let diff = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = reference.iter().map(|v| v.abs()).fold(0f32, f32::max);
    diff / scale.max(f32::MIN_POSITIVE)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Transformers' RealmReader.

struct HfFixture {
    dir: PathBuf,
    inputs: HashMap<String, Tensor>,
    expected: HashMap<String, Tensor>,
}

impl HfFixture {
    fn load() -> Option<Self> {
        let dir = manifest().join("tests/fixtures/hf-reader");
        for f in [
            "model.safetensors",
            "inputs.safetensors",
            "expected.safetensors",
        ] {
            if !dir.join(f).exists() {
                eprintln!(
                    "skipping: {} not found (make it with scripts/hf/reader_fixture.py)",
                    dir.join(f).display()
                );
                return None;
            }
        }
        let read = |f: &str| {
            candle_core::safetensors::load(dir.join(f), &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect()
        };
        Some(HfFixture {
            inputs: read("inputs.safetensors"),
            expected: read("expected.safetensors"),
            dir,
        })
    }

    fn input(&self, name: &str) -> &Tensor {
        &self.inputs[name]
    }

    fn expected(&self, name: &str) -> &Tensor {
        &self.expected[name]
    }

    /// The batch, and each row's body offset from HF's `block_mask` (a run of ones ending just
    /// before the row's final [SEP]).
    fn batch(&self) -> (BertInput, Vec<usize>) {
        let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
        let input = BertInput::from_attention_mask(
            to_u32(self.input("input_ids")),
            Some(to_u32(self.input("token_type_ids"))),
            self.input("attention_mask"),
        )
        .unwrap();
        let lens = input.lens().host().to_vec();
        let block = self.input("block_mask").to_vec2::<u8>().unwrap();
        let offsets = block
            .iter()
            .zip(&lens)
            .map(|(row, &len)| {
                let offset = row.iter().position(|&m| m == 1).unwrap();
                let n = row.iter().filter(|&&m| m == 1).count();
                assert_eq!(offset + n, len as usize - 1, "block_mask is not the body");
                offset
            })
            .collect();
        (input, offsets)
    }

    /// Case `c`'s gold spans in body coordinates (HF: absolute inclusive, -1 = none).
    fn gold(&self, c: usize, offsets: &[usize]) -> Vec<Vec<(usize, usize)>> {
        let starts = self
            .input(&format!("start_positions_{c}"))
            .to_vec2::<i64>()
            .unwrap();
        let ends = self
            .input(&format!("end_positions_{c}"))
            .to_vec2::<i64>()
            .unwrap();
        starts
            .iter()
            .zip(&ends)
            .zip(offsets)
            .map(|((s, e), &offset)| {
                s.iter()
                    .zip(e)
                    .filter(|(&s, _)| s >= 0)
                    .map(|(&s, &e)| (s as usize - offset, e as usize - offset + 1))
                    .collect()
            })
            .collect()
    }

    fn has_answers(&self, c: usize) -> Vec<bool> {
        ints(self.input(&format!("has_answers_{c}")))
            .into_iter()
            .map(|v| v != 0)
            .collect()
    }
}

#[test]
fn matches_transformers_realm_reader() {
    let Some(fx) = HfFixture::load() else {
        return;
    };
    let reader = Reader::load(&fx.dir, &Device::Cpu).unwrap();
    assert_eq!(reader.config().max_span_width, 5);
    assert_eq!(reader.config().span_hidden_size, 16);
    let (input, offsets) = fx.batch();
    let rows = offsets.len();
    let relevance = Var::from_tensor(fx.input("relevance")).unwrap();
    // No dropout in the fixture's config, so a training pass computes what evaluation does and
    // records the graph for the gradients.
    let mode = Mode::Train { seed: 1, step: 0 };
    let spans = reader
        .span_logits(&input, &offsets, mode)
        .unwrap()
        .plus_relevance(&relevance.as_tensor().narrow(0, 0, rows).unwrap())
        .unwrap();

    // Logits: HF scores every (start, end) of the padded row and masks those outside the body
    // with float32's minimum; ours scores body spans only, -inf past a row's body.
    let hf = fx.expected("reader_logits").to_vec2::<f32>().unwrap();
    let hf_starts = ints(fx.expected("candidate_starts"));
    let hf_ends = ints(fx.expected("candidate_ends"));
    let block = fx.input("block_mask").to_vec2::<u8>().unwrap();
    let ours = spans.logits().to_vec2::<f32>().unwrap();
    let (mut ours_valid, mut reference) = (Vec::new(), Vec::new());
    for r in 0..rows {
        for (c, (&s, &e)) in hf_starts.iter().zip(&hf_ends).enumerate() {
            let (s, e) = (s as usize, e as usize);
            if block[r][s] == 1 && block[r][e] == 1 {
                let i = spans
                    .candidate(s - offsets[r], e - offsets[r] + 1)
                    .expect("an HF candidate inside the body is one of ours");
                assert!(spans.is_valid(r, i));
                ours_valid.push(ours[r][i]);
                reference.push(hf[r][c]);
            } else {
                assert!(hf[r][c] < -1e37, "HF masks row {r} candidate {c}");
            }
        }
    }
    let finite = ours.iter().flatten().filter(|v| v.is_finite()).count();
    assert_eq!(finite, reference.len(), "the same candidates are valid");
    assert!(ours
        .iter()
        .flatten()
        .all(|v| v.is_finite() || *v == f32::NEG_INFINITY));
    let err = rel_err(&ours_valid, &reference);
    println!(
        "reader logits: {} valid candidates, rel err {err:.2e}",
        reference.len()
    );
    assert!(err < 1e-5, "reader logits rel err {err}");

    // Prediction: HF's block_idx, start_pos, end_pos.
    let best = spans.best().unwrap();
    assert_eq!(best.row as i64, ints(fx.expected("block_idx"))[0]);
    let (first, last) = best.input_positions(&spans);
    assert_eq!(first as i64, ints(fx.expected("start_pos"))[0]);
    assert_eq!(last as i64, ints(fx.expected("end_pos"))[0]);

    // Loss and its terms, for the three labellings.
    let mut case0 = None;
    for c in 0..3 {
        let loss = qa_loss(
            &spans,
            &fx.gold(c, &offsets),
            relevance.as_tensor(),
            &fx.has_answers(c),
        )
        .unwrap();
        for (name, ours) in [
            ("loss", &loss.loss),
            ("reader_loss", &loss.reader),
            ("retriever_loss", &loss.retriever),
        ] {
            let ours = ours.to_scalar::<f32>().unwrap();
            let reference = flat(fx.expected(&format!("{name}_{c}")))[0];
            println!("case {c} {name}: ours {ours}, HF {reference}");
            if reference == 0.0 {
                assert_eq!(ours, 0.0, "case {c} {name} is zeroed");
            } else {
                let err = ((ours - reference) / reference).abs();
                assert!(err < 1e-5, "case {c} {name}: {ours} vs {reference}");
            }
        }
        if c == 0 {
            // Row 0 holds the answer twice, row 1 once; row 3's gold span is too wide.
            assert_eq!(loss.matching_spans, 3);
            assert_eq!(loss.matching_docs, 4);
            case0 = Some(loss);
        }
    }

    // Gradients of case 0's loss: the relevance (both terms reach it) and parameters of the
    // span scorer and of BERT.
    let grads = case0.unwrap().loss.backward().unwrap();
    let mut checked = vec![(
        "relevance".to_string(),
        grads.get(&relevance).unwrap().clone(),
    )];
    let names: Vec<String> = fx
        .expected
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
        .filter(|k| k != "relevance")
        .collect();
    assert!(names.len() >= 5);
    for name in names {
        let var = &reader
            .vars()
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .1;
        checked.push((name, grads.get(var).unwrap().clone()));
    }
    for (name, grad) in checked {
        let err = rel_err(&flat(&grad), &flat(fx.expected(&format!("grad.{name}"))));
        println!("grad {name}: rel err {err:.2e}");
        assert!(err < 1e-4, "gradient of {name}: rel err {err}");
    }
}

#[test]
fn hf_checkpoint_round_trips_in_hf_names() {
    let Some(fx) = HfFixture::load() else {
        return;
    };
    let reader = Reader::load(&fx.dir, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("realm-reader-rt-{}", std::process::id()));
    reader.save(&dir).unwrap();
    let original =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let saved =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut a: Vec<_> = original.keys().collect();
    let mut b: Vec<_> = saved.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the saved file has RealmReader's tensor names");
    for (name, t) in &original {
        assert_eq!(flat(t), flat(&saved[name]), "{name}");
    }
    let back = Reader::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), reader.config());
    assert_eq!(back.bert().config().hidden_act, Activation::GeluNew);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "realm");
    assert_eq!(config["max_span_width"], 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A tiny vocabulary and model for everything else.

const WORDS: [&str; 27] = [
    "the", "cat", "sat", "on", "mat", "who", "is", "a", "bat", "##man", ",", ".", "paris", "in",
    "france", "river", "seine", "flows", "through", "city", "capital", "of", "what", "'", "s", "?",
    "##s",
];

/// A tokenizer over [PAD] [UNK] [CLS] [SEP] [MASK], `WORDS` and filler up to 64 entries.
fn tokenizer() -> BertTokenizer {
    // One folder per call: tests run in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("realm-reader-vocab-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .chain(WORDS.iter())
        .map(|s| s.to_string())
        .collect();
    let mut i = 0;
    while vocab.len() < 64 {
        vocab.push(format!("w{i}"));
        i += 1;
    }
    let path = dir.join("vocab.txt");
    std::fs::write(&path, vocab.join("\n") + "\n").unwrap();
    BertTokenizer::from_vocab(&path, true).unwrap()
}

fn tiny(max_span_width: usize, seed: u64) -> Reader {
    let mut bert = BertConfig::new(32, 2, 1);
    bert.vocab_size = 64;
    bert.intermediate_size = 64;
    bert.max_position_embeddings = 64;
    let config = ReaderConfig {
        span_hidden_size: 16,
        max_span_width,
        reader_layer_norm_eps: 1e-3,
    };
    Reader::new_random(&bert, &config, seed, &Device::Cpu).unwrap()
}

fn pieces(tok: &BertTokenizer, text: &str) -> Vec<u32> {
    tok.wordpieces(&[text]).unwrap().remove(0)
}

/// `[CLS] question [SEP] body [SEP]` rows for one question.
fn rows(
    tok: &BertTokenizer,
    question: &[u32],
    bodies: &[Option<&[u32]>],
) -> (BertInput, Vec<usize>) {
    joined_inputs(tok, &[question], bodies, 64, &Device::Cpu).unwrap()
}

/// A tiny reader and one question's rows over `bodies` (None: the null document).
struct Case {
    tok: BertTokenizer,
    reader: Reader,
    bodies: Vec<Vec<u32>>,
    input: BertInput,
    offsets: Vec<usize>,
}

fn case(max_span_width: usize, seed: u64, question: &str, bodies: &[Option<&str>]) -> Case {
    let tok = tokenizer();
    let q = pieces(&tok, question);
    let pieces: Vec<Option<Vec<u32>>> = bodies.iter().map(|b| b.map(|b| pieces(&tok, b))).collect();
    let refs: Vec<Option<&[u32]>> = pieces.iter().map(|b| b.as_deref()).collect();
    let (input, offsets) = rows(&tok, &q, &refs);
    Case {
        reader: tiny(max_span_width, seed),
        bodies: pieces.into_iter().map(Option::unwrap_or_default).collect(),
        tok,
        input,
        offsets,
    }
}

#[test]
fn span_width_and_body_masks() {
    let tok = tokenizer();
    let q = pieces(&tok, "who is batman ?");
    let bodies: Vec<Vec<u32>> = ["cat", "the cat sat", "the cat sat on the mat ."]
        .iter()
        .map(|t| pieces(&tok, t))
        .collect();
    let lens: Vec<usize> = [0, 1, 3, 7].to_vec();
    let batch = [
        None,
        Some(&bodies[0][..]),
        Some(&bodies[1][..]),
        Some(&bodies[2][..]),
    ];
    let (input, offsets) = rows(&tok, &q, &batch);
    for (width, count) in [(3, 7 + 6 + 5), (1, 7), (10, 7 * 8 / 2)] {
        let reader = tiny(width, 3);
        let spans = reader.span_logits(&input, &offsets, Mode::Eval).unwrap();
        assert_eq!(spans.spans().len(), count, "max_span_width {width}");
        assert_eq!(spans.body_lens(), &lens[..]);
        let logits = spans.logits().to_vec2::<f32>().unwrap();
        for (r, row) in logits.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let (s, e) = spans.spans()[c];
                assert!(e - s <= width && s < e);
                assert_eq!(spans.is_valid(r, c), e <= lens[r]);
                assert_eq!(v.is_finite(), e <= lens[r], "row {r} span {s}..{e}");
                assert!(v.is_finite() || v == f32::NEG_INFINITY);
            }
        }
        // The null document (row 0) has no candidate at all.
        assert!(logits[0].iter().all(|&v| v == f32::NEG_INFINITY));
    }

    // A row's scores do not depend on the rest of the batch (padding, longer bodies).
    let reader = tiny(3, 3);
    let alone = rows(&tok, &q, &[Some(&bodies[1][..])]);
    let alone = reader.span_logits(&alone.0, &alone.1, Mode::Eval).unwrap();
    let batched = reader.span_logits(&input, &offsets, Mode::Eval).unwrap();
    let a = alone.logits().to_vec2::<f32>().unwrap();
    let b = batched.logits().to_vec2::<f32>().unwrap();
    for (c, &(s, e)) in alone.spans().iter().enumerate() {
        let i = batched.candidate(s, e).unwrap();
        assert!((a[0][c] - b[2][i]).abs() < 1e-5, "span {s}..{e}");
    }

    // Only null documents: nothing to read.
    let (input, offsets) = rows(&tok, &q, &[None, None]);
    let err = reader
        .span_logits(&input, &offsets, Mode::Eval)
        .unwrap_err();
    assert!(err.to_string().contains("no row has a body token"), "{err}");
}

#[test]
fn loss_terms_are_zeroed_when_nothing_matches() {
    let Case {
        tok,
        reader,
        bodies,
        input,
        offsets,
    } = case(
        3,
        5,
        "what flows through paris ?",
        &[
            Some("the river seine flows through paris ."),
            Some("paris is the capital of france ."),
        ],
    );
    let (b0, b1) = (&bodies[0], &bodies[1]);
    let relevance = Tensor::new(&[1.0f32, -0.5, 0.25], &Device::Cpu).unwrap();
    let spans = reader
        .span_logits(&input, &offsets, Mode::Eval)
        .unwrap()
        .plus_relevance(&relevance.narrow(0, 0, 2).unwrap())
        .unwrap();
    let answer = [pieces(&tok, "river seine")];
    let gold = vec![answer_spans(b0, &answer, 3), answer_spans(b1, &answer, 3)];
    assert_eq!(gold, [vec![(1, 3)], vec![]]);

    // Both terms, checked against the definition on the host.
    let loss = qa_loss(&spans, &gold, &relevance, &[true, false, true]).unwrap();
    let logits = spans.logits().to_vec2::<f32>().unwrap();
    let lse = |v: &[f32]| {
        let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f32>().ln()
    };
    let all: Vec<f32> = logits.iter().flatten().cloned().collect();
    let i = spans.candidate(1, 3).unwrap();
    let reader_expected = lse(&all) - logits[0][i];
    let retriever_expected = lse(&[1.0, -0.5, 0.25]) - lse(&[1.0, 0.25]);
    let reader_term = loss.reader.to_scalar::<f32>().unwrap();
    let retriever_term = loss.retriever.to_scalar::<f32>().unwrap();
    assert!((reader_term - reader_expected).abs() < 1e-5 * reader_expected.abs().max(1.0));
    assert!((retriever_term - retriever_expected).abs() < 1e-5);
    assert_eq!(loss.matching_spans, 1);
    assert_eq!(loss.matching_docs, 2);

    // Nothing matches: each term is exactly zero, and the total is their sum.
    let none = qa_loss(&spans, &[vec![], vec![]], &relevance, &[true, false, false]).unwrap();
    assert_eq!(none.reader.to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(none.matching_spans, 0);
    assert!(
        (none.loss.to_scalar::<f32>().unwrap() - none.retriever.to_scalar::<f32>().unwrap()).abs()
            < 1e-7
    );
    let none = qa_loss(&spans, &gold, &relevance, &[false, false, false]).unwrap();
    assert_eq!(none.retriever.to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(none.matching_docs, 0);

    // Gold spans that are not candidates match nothing: too wide, or past a (truncated) body.
    let wide = qa_loss(
        &spans,
        &[vec![(0, 4)], vec![(6, 8), (4, 8)]],
        &relevance,
        &[false; 3],
    )
    .unwrap();
    assert_eq!(wide.matching_spans, 0);
    assert_eq!(wide.loss.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn gradients_reach_the_reader_and_the_relevance() {
    let Case {
        reader,
        input,
        offsets,
        ..
    } = case(
        3,
        7,
        "who is batman ?",
        &[
            Some("the batman sat on a mat ."),
            Some("a cat sat on the mat"),
        ],
    );
    let gold = vec![vec![(1, 3)], vec![]];
    let has = [true, false, true];
    let loss_at = |rel: &Tensor, mode| {
        let spans = reader
            .span_logits(&input, &offsets, mode)
            .unwrap()
            .plus_relevance(&rel.narrow(0, 0, 2).unwrap())
            .unwrap();
        qa_loss(&spans, &gold, rel, &has).unwrap()
    };
    let relevance = Var::new(&[0.3f32, 0.1, -0.2], &Device::Cpu).unwrap();
    let loss = loss_at(relevance.as_tensor(), Mode::Train { seed: 9, step: 0 });
    let grads = loss.loss.backward().unwrap();
    assert!(grads.get(&relevance).is_some());
    for (name, var) in reader.vars() {
        let g = grads.get(var);
        if name.starts_with("cls.") {
            assert!(g.is_none(), "{name} is not used by the reader");
        } else if name.starts_with("qa_outputs.") || name.contains("encoder.layer.1.") {
            let g = flat(g.unwrap_or_else(|| panic!("no gradient for {name}")));
            assert!(g.iter().any(|&v| v != 0.0), "{name} has a zero gradient");
            assert!(g.iter().all(|v| v.is_finite()), "{name}");
        }
    }
    // The relevance gradient against central differences, without dropout (Eval still
    // differentiates in the relevance, a Var).
    let loss = loss_at(relevance.as_tensor(), Mode::Eval);
    let g = flat(loss.loss.backward().unwrap().get(&relevance).unwrap());
    let base = [0.3f32, 0.1, -0.2];
    for i in 0..3 {
        let h = 1e-2f32;
        let at = |d: f32| {
            let mut v = base;
            v[i] += d;
            let t = Tensor::new(&v, &Device::Cpu).unwrap();
            loss_at(&t, Mode::Eval).loss.to_scalar::<f32>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - g[i]).abs() < 2e-3,
            "d loss / d relevance[{i}]: {} vs numeric {numeric}",
            g[i]
        );
    }
    // Rows past the reader's (index 2) get only the retriever term's gradient, which pushes up
    // a document with an answer.
    assert!(g[2] < 0.0);
}

#[test]
fn a_few_steps_of_training_find_the_answer() {
    let Case {
        tok,
        reader,
        bodies,
        input,
        offsets,
    } = case(
        3,
        11,
        "what flows through paris ?",
        &[
            Some("paris is the capital of france ."),
            Some("the river seine flows through the city ."),
        ],
    );
    let answer = [pieces(&tok, "seine")];
    let gold: Vec<_> = bodies.iter().map(|b| answer_spans(b, &answer, 3)).collect();
    let relevance = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let step = |i: u64| {
        let spans = reader
            .span_logits(&input, &offsets, Mode::Train { seed: 1, step: i })
            .unwrap()
            .plus_relevance(&relevance)
            .unwrap();
        let loss = qa_loss(&spans, &gold, &relevance, &[false, false]).unwrap();
        let grads = loss.loss.backward().unwrap();
        for (_, var) in reader.vars() {
            if let Some(g) = grads.get(var) {
                var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
                    .unwrap();
            }
        }
        loss.loss.to_scalar::<f32>().unwrap()
    };
    let first = step(0);
    let mut last = first;
    for i in 1..20 {
        last = step(i);
    }
    println!("loss {first} -> {last}");
    assert!(last < 0.2 * first, "loss {first} -> {last}");
    let best = reader
        .span_logits(&input, &offsets, Mode::Eval)
        .unwrap()
        .best()
        .unwrap();
    assert_eq!((best.row, best.start, best.end), (1, 2, 3));
    let text = span_text(&tok, best.wordpieces(&bodies[1]).unwrap()).unwrap();
    assert_eq!(text, "seine");
}

#[test]
fn decoding_picks_the_arg_max_and_joins_wordpieces() {
    let Case {
        tok,
        reader,
        bodies,
        input,
        offsets,
    } = case(
        4,
        13,
        "who is batman ?",
        &[Some("the batman sat on a mat ."), Some("the cat ' s mat")],
    );
    let (b0, b1) = (&bodies[0], &bodies[1]);
    let spans = reader.span_logits(&input, &offsets, Mode::Eval).unwrap();
    let relevance = Tensor::new(&[0.0f32, 0.5], &Device::Cpu).unwrap();
    let spans = spans.plus_relevance(&relevance).unwrap();
    let logits = spans.logits().to_vec2::<f32>().unwrap();
    let top = spans.top(1000).unwrap();
    let finite = logits.iter().flatten().filter(|v| v.is_finite()).count();
    assert_eq!(top.len(), finite, "every valid candidate, once");
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    let (mut br, mut bc) = (0, 0);
    for (r, row) in logits.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if v > logits[br][bc] {
                (br, bc) = (r, c);
            }
        }
    }
    let best = spans.best().unwrap();
    assert_eq!(best, top[0]);
    assert_eq!((best.row, (best.start, best.end)), (br, spans.spans()[bc]));
    assert_eq!(best.score, logits[br][bc]);
    for p in &top {
        assert!(spans.is_valid(p.row, spans.candidate(p.start, p.end).unwrap()));
    }

    assert_eq!(span_text(&tok, &b0[1..3]).unwrap(), "batman");
    assert_eq!(span_text(&tok, b1).unwrap(), "the cat's mat");
    assert_eq!(
        span_text(&tok, &b0[..]).unwrap(),
        "the batman sat on a mat."
    );
    let err = span_text(&tok, &[1000]).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let pred = SpanPrediction {
        row: 0,
        start: 7,
        end: 9,
        score: 0.0,
    };
    assert!(pred.wordpieces(b0).is_err());
}

#[test]
fn bad_inputs_are_named() {
    let Case {
        reader,
        input,
        offsets,
        ..
    } = case(3, 17, "who is batman ?", &[Some("the batman sat"), None]);
    let expect = |r: realm::Result<SpanLogits>, what: &str| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(what), "{e} should mention {what}");
    };
    expect(
        reader.span_logits(&input, &offsets[..1], Mode::Eval),
        "body_offsets",
    );
    expect(
        reader.span_logits(&input, &[0, 6], Mode::Eval),
        "body_offsets",
    );
    expect(reader.span_logits(&input, &[7, 8], Mode::Eval), "row 1");
    let bad = BertInput::from_tensors(
        input.input_ids().clone(),
        input.token_type_ids().cloned(),
        &[3, 3, 3],
    )
    .unwrap();
    expect(reader.span_logits(&bad, &offsets, Mode::Eval), "lens");
    let flat = Tensor::zeros(4, DType::U32, &Device::Cpu).unwrap();
    let bad = BertInput::from_tensors(flat, None, &[3, 3]).unwrap();
    expect(reader.span_logits(&bad, &offsets, Mode::Eval), "input_ids");

    let spans = reader.span_logits(&input, &offsets, Mode::Eval).unwrap();
    let rel2 = Tensor::new(&[0.1f32, 0.2], &Device::Cpu).unwrap();
    let rel3 = Tensor::new(&[0.1f32, 0.2, 0.3], &Device::Cpu).unwrap();
    expect(spans.plus_relevance(&rel3), "relevance");
    expect(
        spans.plus_relevance(&Tensor::new(&[1u32, 2], &Device::Cpu).unwrap()),
        "relevance",
    );
    let gold = vec![vec![(1, 3)], vec![]];
    let loss_err =
        |s: &SpanLogits, g: &[Vec<(usize, usize)>], r: &Tensor, h: &[bool], what: &str| {
            let e = qa_loss(s, g, r, h).unwrap_err().to_string();
            assert!(e.contains(what), "{e} should mention {what}");
        };
    loss_err(&spans, &gold, &rel2, &[true, true], "plus_relevance");
    let spans = spans.plus_relevance(&rel2).unwrap();
    expect(spans.plus_relevance(&rel2), "already include");
    loss_err(&spans, &gold[..1], &rel2, &[true, true], "gold");
    loss_err(
        &spans,
        &[vec![(2, 2)], vec![]],
        &rel2,
        &[true, true],
        "empty",
    );
    loss_err(&spans, &gold, &rel3, &[true, true], "has_answer");
    loss_err(
        &spans,
        &gold,
        &rel2.narrow(0, 0, 1).unwrap(),
        &[true],
        "shorter",
    );
    let nan = Tensor::new(&[0.1f32, f32::NAN], &Device::Cpu).unwrap();
    loss_err(&spans, &gold, &nan, &[true, true], "not finite");
    assert!(spans.top(0).is_err());

    let mut config = reader.config().clone();
    config.max_span_width = 0;
    let e = Reader::new_random(reader.bert().config(), &config, 0, &Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("max_span_width"), "{e}");
}

#[test]
fn checkpoints_round_trip_and_misfits_are_named() {
    let reader = tiny(4, 19);
    let dir = std::env::temp_dir().join(format!("realm-reader-ckpt-{}", std::process::id()));
    reader.save(&dir).unwrap();
    let back = Reader::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), reader.config());
    assert_eq!(back.vars().len(), reader.vars().len());
    for ((n1, v1), (n2, v2)) in reader.vars().iter().zip(back.vars()) {
        assert_eq!(n1, n2);
        assert_eq!(flat(v1.as_tensor()), flat(v2.as_tensor()), "{n1}");
    }
    let names: Vec<&str> = reader.vars().iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "realm.embeddings.word_embeddings.weight",
        "realm.pooler.dense.weight",
        "cls.predictions.decoder.weight",
        "cls.predictions.bias",
        "qa_outputs.dense_intermediate.weight",
        "qa_outputs.dense_output.bias",
        "qa_outputs.layer_normalization.weight",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(!dir.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));

    // Inside a RealmForOpenQA-style file under "reader.", with a tensor missing and one extra.
    let mut tensors: HashMap<String, Tensor> = reader
        .vars()
        .iter()
        .filter(|(n, _)| n != "qa_outputs.dense_output.bias")
        .map(|(n, v)| (format!("reader.{n}"), v.as_tensor().clone()))
        .collect();
    tensors.insert(
        "reader.qa_outputs.extra".into(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "embedder.cls.dense.weight".into(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("open_qa.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = Reader::from_safetensors(
        reader.bert().config(),
        reader.config(),
        &path,
        "reader.",
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("reader.qa_outputs.dense_output.bias"), "{e}");
    assert!(e.contains("reader.qa_outputs.extra"), "{e}");
    assert!(!e.contains("embedder."), "{e}");

    // Without the unused masked-LM head (as in converted ORQA checkpoints) it loads.
    let tensors: HashMap<String, Tensor> = reader
        .vars()
        .iter()
        .filter(|(n, _)| !n.starts_with("cls."))
        .map(|(n, v)| (format!("reader.{n}"), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let loaded = Reader::from_safetensors(
        reader.bert().config(),
        reader.config(),
        &path,
        "reader.",
        &Device::Cpu,
    )
    .unwrap();
    assert!(loaded.vars().iter().all(|(n, _)| !n.starts_with("cls.")));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Real data: ../shared.

fn shared() -> Option<PathBuf> {
    common::shared_with(&[
        "models/all-minilm-l6-v2/model.safetensors",
        "data/wiki-vital/docs.jsonl",
        "data/qa/vital-facts.jsonl",
    ])
}

/// Vital-facts questions whose source document contains the answer: the reader from the
/// MiniLM BERT reads the answer's sentence, the gold span decodes to the answer, and the loss is
/// finite with the answer matched.
#[test]
fn reads_real_questions_and_decodes_gold_spans() {
    let Some(dir) = shared() else {
        return;
    };
    let model = dir.join("models/all-minilm-l6-v2");
    let tok = BertTokenizer::from_dir(&model).unwrap();
    let facts: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("data/qa/vital-facts.jsonl"))
            .unwrap()
            .lines()
            .take(40)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let wanted: HashMap<String, usize> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| (f["doc_id"].to_string(), i))
        .collect();
    let mut texts = HashMap::new();
    for doc in CorpusReader::open(dir.join("data/wiki-vital/docs.jsonl"), false).unwrap() {
        let doc = doc.unwrap();
        if wanted.contains_key(&doc.id) {
            texts.insert(doc.id.clone(), doc.text);
        }
    }

    // (question, answer, the sentence holding it) for the first few answerable facts.
    let mut found = Vec::new();
    for f in &facts {
        let answer = f["answers"][0].as_str().unwrap();
        let Some(text) = texts.get(&f["doc_id"].to_string()) else {
            continue;
        };
        let sentence = sentences(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .find(|s| answer_spans(&pieces(&tok, s), &[pieces(&tok, answer)], 10).len() == 1);
        if let Some(sentence) = sentence {
            found.push((f["question"].as_str().unwrap(), answer, sentence));
        }
        if found.len() == 3 {
            break;
        }
    }
    assert_eq!(found.len(), 3, "answerable facts among the first 40");

    let reader = Reader::from_bert_dir(&model, &ReaderConfig::default(), 0, &Device::Cpu).unwrap();
    for (question, answer, sentence) in found {
        let q = pieces(&tok, question);
        let body: Vec<u32> = pieces(&tok, sentence).into_iter().take(100).collect();
        let gold = answer_spans(&body, &[pieces(&tok, answer)], 10);
        if gold.is_empty() {
            continue; // the answer was past the first 100 wordpieces
        }
        let (s, e) = gold[0];
        let decoded = span_text(&tok, &body[s..e]).unwrap();
        assert_eq!(
            normalize_answer(&decoded),
            normalize_answer(answer),
            "{sentence}"
        );

        let other: Vec<u32> = pieces(&tok, "Nothing to see here.");
        let (input, offsets) = joined_inputs(
            &tok,
            &[&q[..]],
            &[Some(&body[..]), Some(&other[..])],
            256,
            &Device::Cpu,
        )
        .unwrap();
        let relevance = Tensor::new(&[2.0f32, 1.0], &Device::Cpu).unwrap();
        let spans = reader
            .span_logits(&input, &offsets, Mode::Eval)
            .unwrap()
            .plus_relevance(&relevance)
            .unwrap();
        let loss = qa_loss(&spans, &[gold.clone(), vec![]], &relevance, &[true, false]).unwrap();
        let value = loss.loss.to_scalar::<f32>().unwrap();
        assert!(value.is_finite() && value > 0.0, "{question}: loss {value}");
        assert_eq!(loss.matching_spans, gold.len());
        let best = spans.best().unwrap();
        let rows = [&body[..], &other[..]];
        let text = span_text(&tok, best.wordpieces(rows[best.row]).unwrap()).unwrap();
        println!(
            "{question} [{answer}] -> untrained reader says {text:?} ({:.3})",
            best.score
        );
    }
}
