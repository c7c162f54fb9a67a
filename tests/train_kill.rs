//! The `realm` training binary stopped in every way a user or a machine stops it — SIGKILL
//! mid-run, Ctrl-C (SIGINT) once or twice, and SIGKILL at each step of writing the run
//! directory's files and its checkpoints (`REALM_KILL_AT_FAILPOINT`, `realm::io::failpoint`) —
//! leaves either the old state or the new one, never a mix, and `--resume` (or starting again,
//! when no checkpoint was written yet) ends with exactly the files of a run that was never
//! interrupted.
//!
//! Every process runs with one rayon thread, so that two runs are comparable bit for bit.

#![cfg(unix)]

mod common;

use realm::index::live::RefreshPolicy;
use realm::model::BertConfig;
use realm::train::ict::IctConfig;
use realm::train::models::ModelInit;
use realm::train::pretrain::PretrainConfig;
use realm::train::run::{read_metrics, Metric};
use realm::train::state::{load_trainer, recover};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch_init(hidden: usize, layers: usize) -> ModelInit {
    let mut bert = BertConfig::new(hidden, layers, hidden / 32);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    common::scratch_init(bert)
}

/// 32 one-sentence documents about 32 people (pre-training).
fn people(dir: &Path) -> PathBuf {
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
    let path = dir.join("people.jsonl");
    std::fs::write(&path, docs).unwrap();
    path
}

/// 48 two-sentence documents (ICT needs two sentences per block).
fn biographies(dir: &Path) -> PathBuf {
    let mut docs = String::new();
    for i in 0..48 {
        let name = format!("Person {i}");
        let text = format!(
            "{name} was born in {}. {name} studied {}.",
            ["Paris", "London", "Rome", "Oslo"][i % 4],
            ["law", "art", "music"][i % 3]
        );
        docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": "", "text": text})
        );
    }
    let path = dir.join("bios.jsonl");
    std::fs::write(&path, docs).unwrap();
    path
}

/// A tiny pre-training configuration of `steps` steps: checkpoints every `every` steps and not by
/// time, a metrics line every step; index refreshes every `refresh` steps, each swapped in
/// `swap_after` steps after it started (a fixed policy: reproducible).
fn pretrain_config(dir: &Path, steps: u64, every: u64, refresh: u64, swap_after: u64) -> PathBuf {
    let mut cfg = PretrainConfig::new(scratch_init(32, 1), people(dir));
    cfg.retriever.proj_size = 16;
    cfg.top_k = 3;
    (cfg.query_len, cfg.doc_len, cfg.block_len) = (24, 24, 32);
    cfg.train.steps = steps;
    cfg.train.batch = 4;
    cfg.train.lr = 1e-3;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = every;
    cfg.train.checkpoint_minutes = 0.0;
    cfg.refresh = RefreshPolicy {
        every: refresh,
        swap_after: Some(swap_after),
        threads: 1,
    };
    let path = dir.join("pretrain.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

/// A tiny ICT configuration of `steps` steps that checkpoints only at the end (and when stopped).
fn ict_config(dir: &Path, steps: u64) -> PathBuf {
    let mut cfg = IctConfig::new(scratch_init(32, 1), biographies(dir));
    cfg.retriever.proj_size = 16;
    (cfg.query_len, cfg.doc_len, cfg.block_len) = (16, 24, 32);
    (cfg.heldout, cfg.eval_pool) = (8, 32);
    cfg.train.steps = steps;
    cfg.train.batch = 8;
    cfg.train.lr = 1e-3;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 0;
    cfg.train.checkpoint_minutes = 0.0;
    let path = dir.join("ict.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

/// `realm STAGE --run RUN` with the configuration file, or `--resume`.
fn realm(stage: &str, run: &Path, config: Option<&Path>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_realm"));
    c.args([stage, "--run"]).arg(run);
    match config {
        Some(path) => c.arg("--config").arg(path),
        None => c.arg("--resume"),
    };
    c.args(["--device", "cpu", "--quiet"])
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("REALM_KILL_AT_FAILPOINT")
        .stdout(Stdio::null());
    c
}

fn run_ok(mut c: Command) {
    let out = c.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn checkpoint_step(run: &Path) -> Option<u64> {
    load_trainer(&run.join("checkpoint"))
        .ok()
        .map(|(s, _)| s.step)
}

/// Every file of a folder, by path relative to it, with its bytes (trainer.json without the wall
/// time it records).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if path.file_name().unwrap() == "trainer.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v.as_object_mut().unwrap().remove("elapsed_s");
                bytes = v.to_string().into_bytes();
            }
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), bytes));
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// An assertion that two checkpoint folders hold the same files with the same bytes.
fn assert_same_checkpoint(a: &Path, b: &Path, context: &str) {
    let (fa, fb) = (files(a), files(b));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "{context}: different files");
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{context}: {} differs", name.display());
    }
}

/// The measured values of every metrics line (not the times, which differ from run to run).
fn measured(run: &Path) -> Vec<String> {
    read_metrics(run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|m| {
            let m = Metric {
                time_s: 0.0,
                tokens_per_s: None,
                refresh_s: None,
                ..m
            };
            serde_json::to_string(&m).unwrap()
        })
        .collect()
}

/// Sends `signal` to a child process.
fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) with the id of a child this test spawned and has not yet waited for.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Waits until the run's metrics show at least `step` steps done.
fn wait_for_step(run: &Path, step: u64, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        let done = read_metrics(run.join("metrics.jsonl"))
            .map(|m| m.iter().any(|m| m.step >= step))
            .unwrap_or(false);
        if done {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before step {step}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step {step} after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ctrl-C once while training: the step finishes, a checkpoint of it is written, the process
/// says where it stopped and exits with 130; `--resume` finishes the run with the uninterrupted
/// run's files and metrics.
fn sigint_then_resume(stage: &str, config: &Path, dir: &Path) -> u64 {
    let (whole, stopped) = (dir.join("whole"), dir.join("stopped"));
    run_ok(realm(stage, &whole, Some(config)));

    let mut child = realm(stage, &stopped, Some(config))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&stopped, 3, &mut child);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let step = checkpoint_step(&stopped).expect("a checkpoint written on Ctrl-C");
    let total = checkpoint_step(&whole).unwrap();
    assert!(step >= 3 && step < total, "stopped at {step} of {total}");
    assert!(
        stderr.contains(&format!("stopped by signal 2 at step {step} of {total}"))
            && stderr.contains("--resume"),
        "{stderr}"
    );
    // The checkpoint is of the last step the metrics show: the step in progress was finished.
    let last = read_metrics(stopped.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|m| m.step)
        .max();
    assert_eq!(last, Some(step));

    run_ok(realm(stage, &stopped, None));
    assert_same_checkpoint(
        &whole.join("checkpoint"),
        &stopped.join("checkpoint"),
        &format!("{stage} after Ctrl-C at step {step} and --resume"),
    );
    assert_eq!(measured(&whole), measured(&stopped));
    step
}

#[test]
fn ctrl_c_stops_ict_with_a_checkpoint_and_resume_completes_it_bit_for_bit() {
    let dir = common::temp_dir("sigint-ict");
    let config = ict_config(&dir, 150);
    sigint_then_resume("ict", &config, &dir);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ctrl_c_stops_pretrain_with_a_running_refresh_recorded_and_resume_completes_it_bit_for_bit() {
    let dir = common::temp_dir("sigint-pretrain");
    // A refresh starts every 4 steps and is swapped in 4 steps later: from step 4 on one is
    // always running, so the checkpoint written on Ctrl-C records one.
    let config = pretrain_config(&dir, 80, 0, 4, 4);
    let step = sigint_then_resume("pretrain", &config, &dir);
    assert!(step >= 4, "stopped at step {step}, before any refresh");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_leaves_a_resumable_run() {
    let dir = common::temp_dir("sigint-twice");
    let config = ict_config(&dir, 150);
    let run = dir.join("run");
    let mut child = realm("ict", &run, Some(&config))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&run, 3, &mut child);
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    // Wherever the second signal fell, the run continues from a checkpoint or starts again.
    match checkpoint_step(&run) {
        Some(_) => run_ok(realm("ict", &run, None)),
        None => run_ok(realm("ict", &run, Some(&config))),
    }
    assert_eq!(checkpoint_step(&run), Some(150));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_weights() {
    let dir = common::temp_dir("sigkill");
    let config = pretrain_config(&dir, 40, 3, 4, 2);
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    run_ok(realm("pretrain", &whole, Some(&config)));

    let mut child = realm("pretrain", &killed, Some(&config)).spawn().unwrap();
    let start = Instant::now();
    while checkpoint_step(&killed).unwrap_or(0) < 12 {
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
    child.kill().unwrap(); // SIGKILL, wherever it is: a checkpoint write included
    child.wait().unwrap();
    let at_kill = checkpoint_step(&killed).unwrap();
    assert!(at_kill < 40, "the run had finished");

    run_ok(realm("pretrain", &killed, None));
    assert_same_checkpoint(
        &whole.join("checkpoint"),
        &killed.join("checkpoint"),
        &format!("SIGKILL with the checkpoint of step {at_kill} on disk, then --resume"),
    );
    assert_eq!(measured(&whole), measured(&killed));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let dir = common::temp_dir("finished");
    let config = ict_config(&dir, 6);
    let run = dir.join("run");
    run_ok(realm("ict", &run, Some(&config)));
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let before = files(&run.join("checkpoint"));
    run_ok(realm("ict", &run, None));
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);
    assert!(before == files(&run.join("checkpoint")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_kill_after_any_file_operation_leaves_the_old_or_the_new_state_and_the_run_finishes() {
    let dir = common::temp_dir("failpoints");
    // Checkpoints at steps 2 and 4; a refresh runs from step 1 to step 3, so the first
    // checkpoint records it and the second (the last) holds the refreshed index.
    let config = pretrain_config(&dir, 4, 2, 1, 2);
    let whole = dir.join("whole");
    run_ok(realm("pretrain", &whole, Some(&config)));
    // The first checkpoint (step 2), as the first kill after it was swapped in left it.
    let mut first: Option<PathBuf> = None;
    // The step of the checkpoint a kill left never goes back: once written, a checkpoint is
    // only ever replaced by a later one.
    let mut newest = None;
    for n in 1.. {
        // Killed (SIGKILL) at the n-th failpoint: a step of writing a file or a folder of the run
        // directory (its configuration, tokenizer, starting index, metrics) or of a checkpoint.
        let run = dir.join(format!("killed-{n}"));
        let out: Output = realm("pretrain", &run, Some(&config))
            .env("REALM_KILL_AT_FAILPOINT", n.to_string())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        if out.status.success() {
            assert!(n > 40, "only {} failpoints", n - 1);
            eprintln!("killed at each of {} failpoints", n - 1);
            break;
        }
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "failpoint {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let at = format!("killed at failpoint {n}");
        // What the next command finds: the configuration whole or absent ...
        if let Ok(text) = std::fs::read_to_string(run.join("config.json")) {
            let parsed = serde_json::from_str::<PretrainConfig>(&text);
            assert!(parsed.is_ok(), "{at}: config.json half-written");
        }
        // ... and the old checkpoint or the new one, whole, and nothing half-written beside it.
        let ckpt = run.join("checkpoint");
        recover(&ckpt).unwrap();
        let step = checkpoint_step(&run);
        assert!(step >= newest, "{at}: checkpoint {step:?} after {newest:?}");
        newest = step;
        match step {
            None => assert!(
                !ckpt.exists(),
                "{at}: a checkpoint folder without its state"
            ),
            Some(2) => match &first {
                Some(reference) => assert_same_checkpoint(reference, &ckpt, &at),
                None => {
                    assert!(ckpt.join("refresh/tower.safetensors").exists());
                    let keep = dir.join("first");
                    realm::train::state::link_dir(&ckpt, &keep).unwrap();
                    first = Some(keep);
                }
            },
            Some(4) => assert_same_checkpoint(&whole.join("checkpoint"), &ckpt, &at),
            Some(other) => panic!("{at}: a checkpoint of step {other}"),
        }
        let stray: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".checkpoint"))
            .collect();
        assert!(stray.is_empty(), "{at}: {stray:?}");
        // Finished from there: resumed from its checkpoint, or started again over what the
        // kill left when it had none; the result is the uninterrupted run's.
        match step {
            Some(_) => run_ok(realm("pretrain", &run, None)),
            None => run_ok(realm("pretrain", &run, Some(&config))),
        }
        assert_same_checkpoint(
            &whole.join("checkpoint"),
            &ckpt,
            &format!("{at}, then finished"),
        );
        assert_eq!(measured(&whole), measured(&run), "{at}, then finished");
        let _ = std::fs::remove_dir_all(&run);
    }
    assert!(first.is_some(), "no kill left the first checkpoint");
    let _ = std::fs::remove_dir_all(dir);
}
