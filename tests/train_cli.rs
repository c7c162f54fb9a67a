//! The training commands refuse flags that conflict or would be ignored, naming them, before
//! anything is written; a start that fails leaves no run folder behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("realm-test-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn realm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_realm"))
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .output()
        .unwrap()
}

/// An assertion that the command failed, and its stderr names every one of `words`.
fn refused(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "`{w}` not in: {stderr}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn conflicting_or_ignored_flags_are_errors_that_name_them() {
    let dir = temp("flags");
    let run = dir.join("run");
    let vocab = concat!(env!("CARGO_MANIFEST_DIR"), "/data/demo/vocab.txt");
    let scratch = ["--preset", "tiny", "--vocab", vocab];
    std::fs::write(dir.join("docs.jsonl"), "").unwrap();
    let docs = dir.join("docs.jsonl");

    // The cloze questions would replace the texts to mask.
    let mut args = vec!["pretrain", "--run", s(&run), "--corpus", s(&docs)];
    args.extend(["--cloze-questions", "q.jsonl", "--examples", "e.jsonl"]);
    args.extend(scratch);
    refused(&realm(&args), &["--cloze-questions", "--examples"]);
    // A frozen retriever never refreshes its index.
    let mut args = vec!["pretrain", "--run", s(&run), "--corpus", s(&docs)];
    args.extend(["--freeze-retriever", "--refresh-every", "5"]);
    args.extend(scratch);
    refused(&realm(&args), &["--refresh", "frozen"]);
    // --resume and --config take the whole configuration from elsewhere.
    refused(
        &realm(&["ict", "--run", s(&run), "--resume", "--steps", "5"]),
        &["--resume", "--steps"],
    );
    refused(
        &realm(&[
            "ict",
            "--run",
            s(&run),
            "--config",
            "c.json",
            "--lr",
            "1e-3",
        ]),
        &["--config", "--lr"],
    );
    // A checkpoint's retriever keeps its shape.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("origin.json"), "{}").unwrap();
    let args = [
        "ict",
        "--run",
        s(&run),
        "--corpus",
        s(&docs),
        "--init",
        s(&ckpt),
    ];
    refused(
        &realm(&[&args[..], &["--proj-size", "64"]].concat()),
        &["--proj-size", "checkpoint"],
    );
    // Fine-tuning over a checkpoint's index cuts no blocks.
    let args = ["finetune", "--run", s(&run), "--questions", "q.jsonl"];
    refused(
        &realm(&[&args[..], &["--init", s(&ckpt), "--block-len", "64"]].concat()),
        &["--block-len", "--corpus"],
    );
    assert!(!run.exists(), "a refused command wrote its run folder");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_start_leaves_no_run_folder() {
    let dir = temp("failed");
    let run = dir.join("runs/ict");
    let vocab = concat!(env!("CARGO_MANIFEST_DIR"), "/data/demo/vocab.txt");
    let missing = dir.join("missing.jsonl");
    let out = realm(&[
        "ict",
        "--run",
        s(&run),
        "--corpus",
        s(&missing),
        "--preset",
        "tiny",
        "--vocab",
        vocab,
    ]);
    refused(&out, &["missing.jsonl"]);
    assert!(!dir.join("runs").exists());
    let _ = std::fs::remove_dir_all(dir);
}
