//! A pre-training run of the `realm` binary killed with SIGKILL mid-run (wherever it is, even in
//! the middle of writing a checkpoint) and resumed with `--resume` ends with exactly the weights
//! of a run that was never interrupted.

use realm::model::BertConfig;
use realm::train::models::{ModelInit, Origin};
use realm::train::pretrain::PretrainConfig;
use realm::train::search::RefreshPolicy;
use realm::train::state::load_trainer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-test-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path) -> PathBuf {
    let mut docs = String::new();
    for i in 0..32 {
        let text = format!(
            "Person {i} was born in {} in {}.",
            ["Paris", "London", "Rome", "Oslo"][i % 4],
            1900 + i
        );
        docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": format!("Person {i}"), "text": text})
        );
    }
    std::fs::write(dir.join("docs.jsonl"), docs).unwrap();
    let mut bert = BertConfig::new(32, 1, 1);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    let init = ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt"),
        lowercase: true,
    });
    let mut cfg = PretrainConfig::new(init, dir.join("docs.jsonl"));
    cfg.retriever.proj_size = 16;
    cfg.top_k = 3;
    cfg.query_len = 24;
    cfg.doc_len = 24;
    cfg.block_len = 32;
    cfg.train.steps = 40;
    cfg.train.batch = 4;
    cfg.train.lr = 1e-3;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 3;
    cfg.refresh = RefreshPolicy {
        every: 4,
        swap_after: Some(2),
        threads: 1,
    };
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

fn realm(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_realm"));
    c.args(args).args(["--device", "cpu", "--quiet"]);
    c.stdout(std::process::Stdio::null());
    c
}

fn checkpoint_step(run: &Path) -> u64 {
    load_trainer(&run.join("checkpoint")).map_or(0, |(s, _)| s.step)
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_weights() {
    let dir = temp("sigkill");
    let cfg = config(&dir);
    let cfg = cfg.to_str().unwrap();
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    let status = realm(&[
        "pretrain",
        "--run",
        whole.to_str().unwrap(),
        "--config",
        cfg,
    ])
    .status()
    .unwrap();
    assert!(status.success());

    let mut child = realm(&[
        "pretrain",
        "--run",
        killed.to_str().unwrap(),
        "--config",
        cfg,
    ])
    .spawn()
    .unwrap();
    let start = Instant::now();
    while checkpoint_step(&killed) < 12 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = checkpoint_step(&killed);
    eprintln!("killed with the checkpoint of step {at_kill} on disk");
    assert!(at_kill < 40, "the run had finished: {at_kill}");

    let status = realm(&["pretrain", "--run", killed.to_str().unwrap(), "--resume"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(checkpoint_step(&killed), 40);
    for file in ["model.safetensors", "trainer.safetensors"] {
        let a = std::fs::read(whole.join("checkpoint").join(file)).unwrap();
        let b = std::fs::read(killed.join("checkpoint").join(file)).unwrap();
        assert!(
            a == b,
            "{file} differs after kill (at step {at_kill}) and resume"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
