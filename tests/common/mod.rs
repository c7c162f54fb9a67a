//! What several integration tests share: finding optional data, or saying why a test skips;
//! [`test_exec!`], one test body run on every execution mode; training outcomes over seeds
//! ([`outcome`]); a small fine-tuned run; rewriting an index manifest's checksums after a
//! deliberate edit.
#![allow(dead_code)] // each test binary uses a part

pub mod outcome;

use candle_core::Device;
use realm::device::{ComputeDevice, DeviceSpec};
use realm::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use realm::index::RetrieverModel;
use realm::model::{BertConfig, BertTokenizer, Reader, ReaderConfig, Retriever, RetrieverConfig};
use std::path::{Path, PathBuf};

/// An empty folder for one test, `realm-<test file>-<name>-<pid>` in the temporary directory
/// (anything a previous run left there is removed).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = temp_path(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The values of every tensor of `vars`, by name, on the host.
pub fn var_values(vars: &[(String, candle_core::Var)]) -> Vec<(String, Vec<f32>)> {
    vars.iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

/// A path for one test that does not exist yet, named as [`temp_dir`]'s folder.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "realm-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny BERT (hidden 32, two layers, one head) for tests that need a model, not its quality.
pub fn tiny_config(vocab: usize, positions: usize) -> BertConfig {
    let mut c = BertConfig::new(32, 2, 1);
    c.vocab_size = vocab;
    c.intermediate_size = 64;
    c.max_position_embeddings = positions;
    c
}

/// A Hugging Face BERT folder (`config.json`, `model.safetensors`, `vocab.txt`, lowercasing)
/// with random weights of `config`'s shape and the demo vocabulary: an `--init` for tests.
pub fn random_bert_folder(name: &str, mut config: BertConfig) -> PathBuf {
    let dir = temp_dir(name);
    let vocab = demo_vocab();
    config.vocab_size = BertTokenizer::from_vocab(&vocab, true)
        .unwrap()
        .vocab_size();
    realm::model::BertModel::new_random(&config, 11, &Device::Cpu)
        .unwrap()
        .save(&dir)
        .unwrap();
    std::fs::copy(&vocab, dir.join("vocab.txt")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )
    .unwrap();
    dir
}

/// Every row of a `realm selftest` run passed (at least `min_rows` of them, the registered
/// cases), else a panic naming the case, its error and its tolerance.
pub fn assert_selftest_passed(rows: Vec<realm::check::Row>, min_rows: usize) {
    assert!(
        rows.len() >= min_rows,
        "expected the registered cases, got {}",
        rows.len()
    );
    for row in rows {
        match &row.outcome {
            Ok(o) => assert!(
                o.passed(),
                "{}/{}: error {:e} > {:e}",
                row.op,
                row.name,
                o.max_rel_err,
                o.tolerance
            ),
            Err(e) => panic!("{}/{}: {e}", row.op, row.name),
        }
    }
}

/// `dir` when it holds every one of `needed` (relative paths); else None after printing which is
/// missing, so the test is skipped with a reason rather than passing silently. `hint` says how
/// to get it.
pub fn folder_with(dir: PathBuf, needed: &[&str], hint: &str) -> Option<PathBuf> {
    if let Some(missing) = needed.iter().find(|p| !dir.join(p).exists()) {
        eprintln!("skipping: {} not found{hint}", dir.join(missing).display());
        return None;
    }
    Some(dir)
}

/// `../shared` next to the crate when it holds every one of `needed`.
pub fn shared_with(needed: &[&str]) -> Option<PathBuf> {
    folder_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        needed,
        " (the shared data set is not next to this clone)",
    )
}

/// The device of an execution mode, or None (with the reason printed) when this machine has
/// none: `cpu`, `emulate` (in builds with the emulator) or `cuda` (in CUDA builds with a GPU).
pub fn exec_device(spec: DeviceSpec) -> Option<ComputeDevice> {
    match ComputeDevice::resolve(spec) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("skipping {spec:?}: {e}");
            None
        }
    }
}

/// Defines one test per execution mode around one body: `test_exec!(fn name(dev) { ... })`
/// gives a module `name` with the tests `native`, `emulator` (feature `emulate`) and `cuda`
/// (feature `cuda`; it skips with a reason on a machine without a GPU). The body gets
/// `dev: &ComputeDevice`, runs on a thread that computes in the device's mode, and makes its
/// tensors on `dev.device`. `test_exec!(kernels fn name(dev) { ... })` leaves out `native`, for
/// properties of the CUDA kernels themselves.
#[macro_export]
macro_rules! test_exec {
    (kernels fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn body($dev: &realm::device::ComputeDevice) $body

            $crate::test_exec!(@mode emulator, "emulate", Emulate);
            $crate::test_exec!(@mode cuda, "cuda", Cuda(0));
        }
    };
    (fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($dev: &realm::device::ComputeDevice) $body

            #[test]
            fn native() {
                let dev = realm::device::ComputeDevice::resolve(realm::device::DeviceSpec::Cpu)
                    .expect("the CPU");
                let _mode = dev.enter().expect("entering the CPU");
                body(&dev);
            }

            $crate::test_exec!(@mode emulator, "emulate", Emulate);
            $crate::test_exec!(@mode cuda, "cuda", Cuda(0));
        }
    };
    (@mode $test:ident, $feature:literal, $spec:ident $(($n:literal))?) => {
        #[cfg(feature = $feature)]
        #[test]
        fn $test() {
            if let Some(dev) =
                $crate::common::exec_device(realm::device::DeviceSpec::$spec $(($n))?)
            {
                let _mode = dev.enter().expect("entering the device");
                body(&dev);
            }
        }
    };
}

/// A three-document corpus for [`fine_tuned_run`].
pub const CORPUS: &str = r#"{"id": "1", "title": "Paris", "text": "Paris is the capital of France. It lies on the Seine."}
{"id": "2", "title": "Nile", "text": "The Nile is a river in Africa. It flows north."}
{"id": "3", "title": "Mozart", "text": "Mozart was a composer. He was born in Salzburg in 1756."}
"#;

/// A BERT trained from scratch on `config` with the demo vocabulary (uncased).
pub fn scratch_init(config: BertConfig) -> realm::train::models::ModelInit {
    realm::train::models::ModelInit::Origin(realm::train::models::Origin::Scratch {
        config,
        vocab: demo_vocab(),
        lowercase: true,
    })
}

/// The demo vocabulary (8,000 uncased wordpieces).
pub fn demo_vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt")
}

/// `run/checkpoint/` with a random retriever (1 layer, hidden 32, 128 positions, 8-d
/// projection), `reader/` and `index/` of [`CORPUS`] (also written to `run/docs.jsonl`), as
/// fine-tuning leaves it. Returns the checkpoint folder.
pub fn fine_tuned_run(run: &Path) -> PathBuf {
    let ckpt = run.join("checkpoint");
    let vocab = demo_vocab();
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
        embed: EmbedBlocks {
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

/// Rewrites the sizes and CRC-32s in an index folder's manifest to match its files as they are
/// now: the folder then looks as if written so, and what is checked is the files' contents.
pub fn reseal_index(dir: &Path) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for name in ["embeddings.safetensors", "blocks.jsonl"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        manifest["files"][name] = serde_json::json!({
            "bytes": bytes.len(),
            "crc32": crc32fast::hash(&bytes),
        });
    }
    std::fs::write(&path, manifest.to_string()).unwrap();
}

const PLACES: [&str; 8] = [
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Cairo", "Lima",
];
const NAMES: [&str; 8] = [
    "John", "Mary", "Peter", "Anna", "James", "Paul", "George", "William",
];

/// 32 one-sentence documents, `docs.jsonl` in `dir`: eight names born in eight cities.
pub fn born_corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..32 {
        let body = format!(
            "{} Smith was born in {} in {}.",
            NAMES[i % 8],
            PLACES[i / 4],
            1900 + i
        );
        text += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": NAMES[i % 8], "text": body})
        );
    }
    let path = dir.join("docs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// The tiny from-scratch REALM pre-training run of the training tests: BERT hidden 32, one layer,
/// one head, the demo vocabulary, 64 positions; a 16-d projection, k = 3, 24-token queries and
/// documents over 32-token blocks; batch 4 at lr 1e-3, the loss logged every step. Callers set
/// steps, checkpoints, refresh and dropout.
pub fn tiny_pretrain(corpus: PathBuf) -> realm::train::pretrain::PretrainConfig {
    let mut bert = BertConfig::new(32, 1, 1);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    let mut cfg = realm::train::pretrain::PretrainConfig::new(scratch_init(bert), corpus);
    cfg.retriever.proj_size = 16;
    cfg.top_k = 3;
    cfg.query_len = 24;
    cfg.doc_len = 24;
    cfg.block_len = 32;
    cfg.train.batch = 4;
    cfg.train.lr = 1e-3;
    cfg.train.log_every = 1;
    cfg
}
