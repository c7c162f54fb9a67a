//! Kill-and-resume equality, the background index refresh, and clear errors for bad configs.

mod common;

use realm::data::Block;
use realm::device::ComputeDevice;
use realm::dist::Dist;
use realm::index::build::EmbedBlocks;
use realm::index::live::{Knowledge, LiveIndex, RefreshPolicy, Refresher};
use realm::index::IndexSlot;
use realm::model::{BertConfig, BertTokenizer, Retriever, RetrieverConfig};
use realm::train::pretrain::{run_pretrain, PretrainConfig};
use realm::train::run::read_metrics;
use realm::train::RunOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny(seed: u64, corpus: PathBuf) -> PretrainConfig {
    let mut cfg = common::tiny_pretrain(corpus);
    cfg.train.steps = 12;
    cfg.train.checkpoint_every = 4;
    cfg.train.seed = seed;
    // Refreshes start every 3 steps and are swapped in 2 steps later: some are in flight at the
    // checkpoints and at the kill.
    cfg.refresh = RefreshPolicy {
        every: 3,
        swap_after: Some(2),
        threads: 1,
    };
    cfg
}

fn quiet() -> RunOptions {
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    opts
}

fn bytes(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let dir = common::temp_dir("equal");
    let cfg = tiny(5, common::born_corpus(&dir));
    let whole = dir.join("whole");
    let report = run_pretrain(&cfg, &whole, &quiet()).unwrap();
    assert!(!report.interrupted && report.refreshes >= 3, "{report:?}");

    // Killed after step 6: the checkpoint of step 4 survives, steps 5 and 6 are lost.
    let killed = dir.join("killed");
    let mut opts = quiet();
    opts.stop_after = Some(6);
    assert!(run_pretrain(&cfg, &killed, &opts).unwrap().interrupted);
    let mut opts = quiet();
    opts.resume = true;
    let resumed = run_pretrain(&cfg, &killed, &opts).unwrap();
    assert_eq!(resumed.steps, 12);

    for file in [
        "model.safetensors",
        "trainer.safetensors",
        "index/embeddings.safetensors",
    ] {
        assert!(
            bytes(whole.join("checkpoint").join(file))
                == bytes(killed.join("checkpoint").join(file)),
            "{file} differs after resuming"
        );
    }
    // The same losses at every step, each step logged once.
    let losses = |run: &Path| -> Vec<(u64, Option<f64>)> {
        read_metrics(run.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .filter(|m| m.loss.is_some())
            .map(|m| (m.step, m.loss))
            .collect()
    };
    assert_eq!(losses(&whole), losses(&killed));
    assert_eq!(losses(&whole).len(), 12);
    // Every loss line also says where the retrieval mass sits (k = 3: entropy at most ln 3) and
    // how large each part's gradients were.
    for m in read_metrics(whole.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|m| m.loss.is_some())
    {
        let entropy = m.retrieval_entropy.unwrap();
        assert!((0.0..=3f64.ln() + 1e-9).contains(&entropy), "{m:?}");
        for p in [m.null_prior.unwrap(), m.null_posterior.unwrap()] {
            assert!((0.0..=1.0).contains(&p), "{m:?}");
        }
        for g in [m.grad_norm_query, m.grad_norm_doc, m.grad_norm_encoder] {
            assert!(g.unwrap().is_finite() && g.unwrap() > 0.0, "{m:?}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = common::temp_dir("bad");
    let docs = common::born_corpus(&dir);
    let err = |cfg: &PretrainConfig, run: &str, opts: &RunOptions| {
        run_pretrain(cfg, &dir.join(run), opts)
            .unwrap_err()
            .to_string()
    };

    let mut big_k = tiny(1, docs.clone());
    big_k.top_k = 40;
    let msg = err(&big_k, "k", &quiet());
    assert!(
        msg.contains("39 documents to retrieve") && msg.contains("32 blocks"),
        "{msg}"
    );

    let missing = tiny(1, dir.join("nope.jsonl"));
    let msg = err(&missing, "missing", &quiet());
    assert!(msg.contains("nope.jsonl"), "{msg}");

    // An index built by another model (seed 1) given to a run whose model is seed 2's.
    let mut one = tiny(1, docs.clone());
    one.train.steps = 1;
    run_pretrain(&one, &dir.join("one"), &quiet()).unwrap();
    let mut two = tiny(2, docs.clone());
    two.index = Some(dir.join("one/index"));
    let msg = err(&two, "two", &quiet());
    assert!(msg.contains("index was built by model"), "{msg}");

    // Resuming where there is nothing, or with another configuration.
    let mut resume = quiet();
    resume.resume = true;
    let msg = err(&tiny(1, docs.clone()), "empty", &resume);
    assert!(msg.contains("no checkpoint"), "{msg}");
    let mut other = one.clone();
    other.train.lr = 5e-4;
    let msg = err(&other, "one", &resume);
    assert!(
        msg.contains("different configuration") && msg.contains("train.lr"),
        "{msg}"
    );
    // Starting over a finished run.
    let msg = err(&one, "one", &quiet());
    assert!(msg.contains("--resume"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_refresh_runs_beside_training_and_swaps_whole() {
    let dev = ComputeDevice::cpu();
    let tok =
        Arc::new(BertTokenizer::from_vocab(repo().join("data/demo/vocab.txt"), true).unwrap());
    let mut bert = BertConfig::new(32, 1, 1);
    bert.vocab_size = tok.vocab_size();
    let rcfg = RetrieverConfig {
        proj_size: 16,
        ..RetrieverConfig::default()
    };
    let retriever = Retriever::new_random(&bert, &rcfg, 3, &dev.device).unwrap();
    // Enough blocks that embedding them takes a while.
    let blocks: Vec<Block> = (0..3000u32)
        .map(|i| Block {
            doc_id: i.to_string(),
            title: String::new(),
            tokens: (0..48).map(|t| 1000 + (i * 7 + t) % 5000).collect(),
            sentences: std::iter::once(0..48).collect(),
        })
        .collect();
    let knowledge = Knowledge::new(blocks, &tok).unwrap();
    let opts = EmbedBlocks {
        batch: 64,
        max_len: 64,
        progress: None,
    };
    let slot = IndexSlot::new(
        LiveIndex::build(
            retriever.doc_tower(),
            &tok,
            &knowledge.blocks[..10],
            &opts,
            &dev.device,
            &Dist::local(),
        )
        .unwrap(),
        0,
    );
    let policy = |swap_after| RefreshPolicy {
        every: 5,
        swap_after,
        threads: 1,
    };

    // Swapped when ready: polling never waits.
    let mut refresher = Refresher::new(
        policy(None),
        tok.clone(),
        &knowledge,
        opts.clone(),
        &dev,
        &Dist::local(),
    )
    .unwrap();
    assert!(!refresher.maybe_start(4, retriever.doc_tower()).unwrap());
    assert!(refresher.maybe_start(5, retriever.doc_tower()).unwrap());
    assert!(
        !refresher.maybe_start(10, retriever.doc_tower()).unwrap(),
        "one at a time"
    );
    let mut waited_polls = 0;
    let swapped = loop {
        let t = std::time::Instant::now();
        let polled = refresher.poll(6 + waited_polls, &slot).unwrap();
        assert!(
            t.elapsed().as_millis() < 100,
            "poll blocked for {:?}",
            t.elapsed()
        );
        if let Some(s) = polled {
            break s;
        }
        // The old index is still served, whole.
        assert_eq!(slot.get().index.mips.len(), 10);
        waited_polls += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(
        waited_polls > 0,
        "the refresh finished before training could go on"
    );
    assert_eq!(swapped.step, 5);
    assert_eq!(slot.get().index.mips.len(), 3000);
    assert_eq!(slot.staleness(9), 4);

    // Swapped at a fixed step: not before it, then waited for.
    let mut fixed = Refresher::new(
        policy(Some(3)),
        tok.clone(),
        &knowledge,
        opts,
        &dev,
        &Dist::local(),
    )
    .unwrap();
    assert!(fixed.maybe_start(10, retriever.doc_tower()).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(fixed.poll(12, &slot).unwrap().is_none());
    assert_eq!(slot.get().step, 5);
    assert_eq!(fixed.poll(13, &slot).unwrap().map(|s| s.step), Some(10));
    assert_eq!(slot.get().step, 10);
}

#[test]
fn a_damaged_trainer_state_is_a_clear_error_not_a_resume() {
    let dir = common::temp_dir("damaged");
    let mut cfg = tiny(1, common::born_corpus(&dir));
    cfg.train.steps = 2;
    let run = dir.join("run");
    run_pretrain(&cfg, &run, &quiet()).unwrap();
    let json = run.join("checkpoint/trainer.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    state["step"] = 500.into();
    std::fs::write(&json, state.to_string()).unwrap();
    let mut resume = quiet();
    resume.resume = true;
    let msg = run_pretrain(&cfg, &run, &resume).unwrap_err().to_string();
    assert!(
        msg.contains("trainer.json") && msg.contains("step 500 is past the run's 2 steps"),
        "{msg}"
    );
    // A state of another run's schedule (its steps) is refused too, naming what differs.
    state["step"] = 1.into();
    state["optimizer_steps"] = 1.into();
    state["total_steps"] = 3.into();
    state["schedule"]["total"] = 3.into();
    std::fs::write(&json, state.to_string()).unwrap();
    let msg = run_pretrain(&cfg, &run, &resume).unwrap_err().to_string();
    assert!(msg.contains("3 steps in all, not 2"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checkpoints_come_by_wall_time_and_on_a_stop_request() {
    use realm::train::interrupt::StopRequest;
    use realm::train::state::load_trainer;
    let dir = common::temp_dir("when");
    let docs = common::born_corpus(&dir);
    let step_of = |run: &Path| load_trainer(&run.join("checkpoint")).map(|(s, _)| s.step);

    // Not by steps, but after a tiny wall time: every step has one.
    let mut cfg = tiny(1, docs.clone());
    cfg.train.checkpoint_every = 0;
    cfg.train.checkpoint_minutes = 1e-9;
    let mut opts = quiet();
    opts.stop_after = Some(3);
    run_pretrain(&cfg, &dir.join("timed"), &opts).unwrap();
    assert_eq!(step_of(&dir.join("timed")).unwrap(), 3);
    // Neither by steps nor by time: nothing before the end.
    cfg.train.checkpoint_minutes = 0.0;
    run_pretrain(&cfg, &dir.join("untimed"), &opts).unwrap();
    assert!(step_of(&dir.join("untimed")).is_err());

    // A stop requested before the run: one step, its checkpoint, then the run returns.
    let stop = Arc::new(StopRequest::new());
    stop.request();
    let mut opts = quiet();
    opts.stop = Some(stop.clone());
    let report = run_pretrain(&cfg, &dir.join("stopped"), &opts).unwrap();
    assert!(report.interrupted && report.steps == 1, "{report:?}");
    assert_eq!(step_of(&dir.join("stopped")).unwrap(), 1);
    let mut resume = quiet();
    resume.resume = true;
    assert_eq!(
        run_pretrain(&cfg, &dir.join("stopped"), &resume)
            .unwrap()
            .steps,
        12
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_start_leaves_nothing_it_created() {
    let dir = common::temp_dir("failed");
    let missing = tiny(1, dir.join("nope.jsonl"));
    // A run folder (and its parent) that did not exist: gone again.
    let run = dir.join("new/run");
    assert!(run_pretrain(&missing, &run, &quiet()).is_err());
    assert!(!dir.join("new").exists());
    // A folder of the user's: kept, with what it held, and without what the start added.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    assert!(run_pretrain(&missing, &mine, &quiet()).is_err());
    let left: Vec<_> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    // Texts to mask and cloze questions together: refused before anything is written.
    let mut both = tiny(1, common::born_corpus(&dir));
    both.examples = Some(dir.join("docs.jsonl"));
    both.cloze_questions = Some(dir.join("questions.jsonl"));
    let msg = run_pretrain(&both, &dir.join("both"), &quiet())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("examples") && msg.contains("cloze"), "{msg}");
    assert!(!dir.join("both").exists());
    let _ = std::fs::remove_dir_all(dir);
}
