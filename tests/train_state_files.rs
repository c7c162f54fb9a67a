//! A run directory whose `config.json` or `checkpoint/trainer.json` was edited or damaged — any
//! field replaced by any JSON value, or removed — is resumed as `realm ict --resume` would: the
//! result is an error or a finished run, never a panic, a hang or an unbounded allocation.

mod common;

use proptest::prelude::*;
use realm::device::ComputeDevice;
use realm::model::BertConfig;
use realm::train::ict::{run_ict, IctConfig, IctReport};
use realm::train::run::RunDir;
use realm::train::RunOptions;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn quiet() -> RunOptions {
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    opts
}

/// A tiny ICT run stopped with the checkpoint of step 2 of 4 (made once per test process).
fn template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("realm-test-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut docs = String::new();
        for i in 0..24 {
            let text = format!("Person {i} was born in Rome. Person {i} studied law.");
            docs += &format!(
                "{}\n",
                serde_json::json!({"id": i, "title": "", "text": text})
            );
        }
        std::fs::write(dir.join("docs.jsonl"), docs).unwrap();
        let mut bert = BertConfig::new(32, 1, 1);
        bert.vocab_size = 8000;
        bert.max_position_embeddings = 64;
        let init = common::scratch_init(bert);
        let mut cfg = IctConfig::new(init, dir.join("docs.jsonl"));
        cfg.retriever.proj_size = 16;
        (cfg.query_len, cfg.doc_len, cfg.block_len) = (16, 24, 32);
        (cfg.heldout, cfg.eval_pool) = (4, 16);
        (cfg.train.steps, cfg.train.batch, cfg.train.checkpoint_every) = (4, 4, 2);
        let mut opts = quiet();
        opts.stop_after = Some(2);
        run_ict(&cfg, &dir.join("run"), &opts).unwrap();
        dir.join("run")
    })
}

/// The run resumed as `realm ict --run RUN --resume` does it.
fn resume(run: &Path) -> realm::Result<IctReport> {
    let mut opts = quiet();
    opts.resume = true;
    RunDir::open(run)
        .and_then(|r| r.config::<IctConfig>())
        .and_then(|cfg| run_ict(&cfg, run, &opts))
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let from = entry.unwrap().path();
        let to = dst.join(from.file_name().unwrap());
        if from.is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// The paths of every leaf (and every object member) of a JSON value.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            at.push(k.clone());
            out.push(at.clone());
            paths(child, at, out);
            at.pop();
        }
    }
}

/// Replaces (Some) or removes (None) the member at `path`.
fn mutate(root: &mut Value, path: &[String], new: Option<Value>) {
    let (last, parents) = path.split_last().unwrap();
    let mut v = root;
    for p in parents {
        v = &mut v[p.as_str()];
    }
    let map = v.as_object_mut().unwrap();
    match new {
        Some(value) => {
            map.insert(last.clone(), value);
        }
        None => {
            map.remove(last);
        }
    }
}

/// Numbers that break things: zero, one, small counts, powers of two at integer limits, huge and
/// tiny floats, negatives.
fn numbers() -> Vec<Value> {
    let mut v: Vec<Value> = [
        0i64,
        1,
        2,
        3,
        5,
        -1,
        64,
        4096,
        1 << 31,
        1 << 53,
        i64::MIN,
        i64::MAX,
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    v.push(Value::from(u64::MAX));
    v.extend([0.0f64, 0.5, 1e-300, 1e300, -1.5, 2.5].map(Value::from));
    v
}

const STRINGS: [&str; 7] = ["", "x", "f16", "bf16", "ict", "pretrain", "/nonexistent"];

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(numbers()),
        prop::sample::select(STRINGS.to_vec()).prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
    ]
}

/// What replaces `current`: mostly a value of the same kind (so that it passes the parser and
/// reaches the checks and the run), else any value, or nothing (the member removed).
fn replacement(
    current: &Value,
    same_kind: bool,
    pick: prop::sample::Index,
    other: Option<Value>,
) -> Option<Value> {
    match current {
        Value::Number(_) if same_kind => Some(pick.get(&numbers()).clone()),
        Value::String(_) if same_kind => Some(Value::from(*pick.get(&STRINGS))),
        Value::Bool(b) if same_kind => Some(Value::Bool(!b)),
        _ => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_config_or_trainer_state_resumes_or_is_an_error(
        trainer in any::<bool>(),
        which in any::<prop::sample::Index>(),
        same_kind in prop::bool::weighted(0.8),
        pick in any::<prop::sample::Index>(),
        other in prop::option::weighted(0.9, any_json()),
    ) {
        let run = template()
            .with_file_name(format!("case-{}", case_number()));
        copy_dir(template(), &run);
        let file = match trainer {
            true => run.join("checkpoint/trainer.json"),
            false => run.join("config.json"),
        };
        let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        let path = which.get(&all).clone();
        let current = path.iter().fold(&value, |v, p| &v[p.as_str()]).clone();
        mutate(&mut value, &path, replacement(&current, same_kind, pick, other));
        std::fs::write(&file, value.to_string()).unwrap();

        if let Ok(report) = resume(&run) {
            prop_assert_eq!(report.steps, 4);
        }
        let _ = std::fs::remove_dir_all(&run);
    }
}

/// A name for one case's folder, unique within the process.
fn case_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The integer limits in every numeric member, one at a time, deterministically (the random
/// cases above reach each pair only now and then): sums of a count with a limit must not
/// overflow.
#[test]
fn every_count_at_the_integer_limits_resumes_or_is_an_error() {
    for name in ["config.json", "checkpoint/trainer.json"] {
        let text = std::fs::read_to_string(template().join(name)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        for path in all {
            let current = path.iter().fold(&value, |v, p| &v[p.as_str()]);
            if !current.is_u64() {
                continue;
            }
            for limit in [Value::from(u64::MAX), Value::from(i64::MAX)] {
                let run = template().with_file_name(format!("limit-{}", case_number()));
                copy_dir(template(), &run);
                let mut edited = value.clone();
                mutate(&mut edited, &path, Some(limit));
                std::fs::write(run.join(name), edited.to_string()).unwrap();
                if let Ok(report) = resume(&run) {
                    assert_eq!(report.steps, 4, "{name} {path:?}");
                }
                let _ = std::fs::remove_dir_all(&run);
            }
        }
    }
}
