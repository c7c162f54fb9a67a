//! The `realm` binary as a user meets it: a closed pipe ends a command quietly; `realm index`
//! killed at any point of a rebuild over an index leaves the old index or the new one, and
//! `realm search` answers from one of them; an index is searched from any working directory,
//! a training checkpoint's too; `realm demo` removes nothing it did not create; a single-line
//! document of megabytes is embedded and indexed with bounded memory and visible progress;
//! flags that cannot be honoured are errors naming them; `realm ask` reads stdin line by line.

mod common;

use common::{demo_vocab, fine_tuned_run};
use realm::index::StoredIndex;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn realm(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_realm"));
    c.args(args);
    c
}

/// `realm COMMAND --device cpu ARGS...`.
fn on_cpu(args: &[&str]) -> Command {
    let mut c = realm(&[args[0], "--device", "cpu"]);
    c.args(&args[1..]);
    c
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_closed_pipe_ends_search_ask_and_selftest_quietly() {
    let dir = common::temp_dir("pipe");
    let ckpt = fine_tuned_run(&dir);
    let index = ckpt.join("index");
    let cases: [(Vec<&str>, Option<&str>); 3] = [
        (
            vec![
                "search",
                "--device",
                "cpu",
                "--index",
                s(&index),
                "where is paris",
            ],
            None,
        ),
        (
            vec!["selftest", "--device", "cpu", "--filter", "doc_softmax"],
            None,
        ),
        (
            vec!["ask", "--device", "cpu", "--run", s(&dir)],
            Some("where is paris?\nwho was mozart?\n"),
        ),
    ];
    for (args, input) in cases {
        let mut child = realm(&args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // The command may be gone before it reads everything: that is the point.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{args:?}: {:?}\n{err}", out.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("Error"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

const OTHER_CORPUS: &str = r#"{"id": "7", "title": "Everest", "text": "Mount Everest is the highest mountain. It lies in the Himalayas."}
{"id": "8", "title": "Amazon", "text": "The Amazon is a river in South America. It is very long."}
{"id": "9", "title": "Bach", "text": "Bach was a composer. He was born in Eisenach in 1685."}
{"id": "10", "title": "Tokyo", "text": "Tokyo is the capital of Japan. It is a large city."}
"#;

/// Hits of `realm search --json` as (block, doc_id, score).
type Hits = Vec<(u64, String, f64)>;

fn hits(index: &Path) -> Hits {
    let out = succeeded(
        on_cpu(&[
            "search",
            "--index",
            s(index),
            "--json",
            "-k",
            "3",
            "a composer born in a city",
        ])
        .output()
        .unwrap(),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["block"].as_u64().unwrap(),
                v["doc_id"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// An index a kill may leave behind, and `realm search`'s answer from it.
struct Reference {
    name: &'static str,
    index: StoredIndex,
    hits: Hits,
}

/// Which of `refs` the folder at `target` is (after the repair loading does), whole: the same
/// blocks and the same search answer. Panics on anything else.
fn old_or_new(target: &Path, refs: &[Reference]) -> &'static str {
    let loaded = StoredIndex::load(target, None)
        .unwrap_or_else(|e| panic!("the index left behind does not load: {e}"));
    let reference = refs
        .iter()
        .find(|r| r.index.blocks == loaded.blocks)
        .unwrap_or_else(|| panic!("the blocks left behind are neither the old nor the new index"));
    let name = reference.name;
    assert_eq!(
        loaded.manifest.num_blocks,
        reference.index.manifest.num_blocks
    );
    let got = hits(target);
    assert_eq!(got.len(), reference.hits.len());
    for (g, want) in got.iter().zip(reference.hits.iter()) {
        assert_eq!((g.0, &g.1), (want.0, &want.1), "{name}: {got:?}");
        assert!((g.2 - want.2).abs() < 1e-4, "{name}: {got:?}");
    }
    // Nothing of an interrupted swap is left beside it (the build's own work folder,
    // `.target.build`, stays for `--resume`).
    let parent = target.parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".target.") && n != ".target.build")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    name
}

#[test]
fn realm_index_killed_anywhere_in_a_rebuild_leaves_the_old_or_the_new_index() {
    let dir = common::temp_dir("kill");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let (corpus_old, corpus_new) = (dir.join("run/docs.jsonl"), dir.join("other.jsonl"));
    std::fs::write(&corpus_new, OTHER_CORPUS).unwrap();
    let index = |corpus: &Path, out: &Path| {
        on_cpu(&[
            "index",
            "--model",
            s(&ckpt),
            "--corpus",
            s(corpus),
            "--out",
            s(out),
            "--batch",
            "2",
        ])
    };
    let (old, new, target) = (dir.join("old"), dir.join("new"), dir.join("target"));
    succeeded(index(&corpus_old, &old).output().unwrap());
    succeeded(index(&corpus_new, &new).output().unwrap());
    let refs = [("old", &old), ("new", &new)].map(|(name, dir)| Reference {
        name,
        index: StoredIndex::load(dir, None).unwrap(),
        hits: hits(dir),
    });
    assert_ne!(refs[0].hits, refs[1].hits);
    let reset = || {
        let _ = std::fs::remove_dir_all(&target);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".target.")
            {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        copy_dir(&old, &target);
    };

    // Killed at each failpoint of the rebuild in turn, until one run gets through.
    let mut seen = Vec::new();
    for at in 1.. {
        assert!(at < 100, "the rebuild never finished");
        reset();
        let status = index(&corpus_new, &target)
            .env(realm::io::KILL_AT_FAILPOINT, at.to_string())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let finished = status.success();
        assert!(finished || status.signal() == Some(9), "{status:?}");
        seen.push(old_or_new(&target, &refs));
        if finished {
            break;
        }
    }
    eprintln!("left behind at each failpoint: {seen:?}");
    // The manifest's atomic write and the swap: at least six.
    assert!(seen.len() >= 6, "only {} failpoints: {seen:?}", seen.len());
    assert_eq!(seen.first(), Some(&"old"));
    assert_eq!(seen.last(), Some(&"new"));

    // And killed from outside after various delays.
    for delay_ms in [0, 30, 100, 200, 400, 800] {
        reset();
        let mut child = index(&corpus_new, &target)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let which = old_or_new(&target, &refs);
        eprintln!("SIGKILL after {delay_ms} ms: {which}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_index_finds_its_model_from_any_working_directory() {
    let dir = common::temp_dir("cwd");
    fine_tuned_run(&dir.join("run"));
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // Built with relative paths in one folder...
    succeeded(
        on_cpu(&[
            "index",
            "--model",
            "../run/checkpoint",
            "--corpus",
            "../run/docs.jsonl",
            "--out",
            "idx",
        ])
        .current_dir(dir.join("a"))
        .output()
        .unwrap(),
    );
    // ... searched from another, without --model.
    let out = succeeded(
        on_cpu(&["search", "--index", "../a/idx", "-k", "2", "paris"])
            .current_dir(dir.join("b"))
            .output()
            .unwrap(),
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);

    // The index a training run keeps in its checkpoint, searched from elsewhere: with that
    // checkpoint's query tower.
    let cities = [
        "Paris", "London", "Rome", "Oslo", "Vienna", "Lisbon", "Prague", "Dublin",
    ];
    let docs: String = cities
        .iter()
        .enumerate()
        .map(|(i, city)| {
            let text = format!(
                "{city} was founded in {}. Many people live in {city}.",
                900 + i
            );
            format!(
                "{}\n",
                serde_json::json!({"id": i, "title": city, "text": text})
            )
        })
        .collect();
    std::fs::write(dir.join("cities.jsonl"), docs).unwrap();
    succeeded(
        on_cpu(&[
            "pretrain",
            "--quiet",
            "--run",
            "pre",
            "--preset",
            "tiny",
            "--vocab",
            s(&demo_vocab()),
            "--corpus",
            "cities.jsonl",
            "--steps",
            "2",
            "--batch",
            "2",
            "--query-len",
            "24",
            "--doc-len",
            "24",
            "--block-len",
            "32",
            "--top-k",
            "3",
            "--proj-size",
            "16",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .output()
        .unwrap(),
    );
    let out = succeeded(
        on_cpu(&[
            "search",
            "--index",
            "../pre/checkpoint/index",
            "-k",
            "3",
            "founded in 903",
        ])
        .current_dir(dir.join("b"))
        .output()
        .unwrap(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(cities.iter().any(|c| text.contains(c)), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

fn demo(out: &Path, extra: &[&str]) -> Output {
    on_cpu(&["demo", "--quiet", "--out", s(out)])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn realm_demo_removes_nothing_it_did_not_create() {
    use realm::demo_dir::{DemoDir, MARKER};
    // A folder of the user's that happens to look like a demo's.
    let proj = common::temp_dir("demo-user");
    for (file, text) in [
        ("eval/results.csv", "a,b\n1,2\n"),
        ("report/paper.md", "# My paper\n"),
        ("data/docs.jsonl", "{\"id\": 1, \"text\": \"mine\"}\n"),
    ] {
        std::fs::create_dir_all(proj.join(file).parent().unwrap()).unwrap();
        std::fs::write(proj.join(file), text).unwrap();
    }
    let before = snapshot(&proj);
    let bad: [&[&str]; 6] = [
        &["--scale", "0"],
        &["--scale", "NaN"],
        &["--scale", "-1"],
        &["--scale", "inf"],
        &["--init", "/nonexistent", "--scale", "0.01"],
        // Good arguments: the folder is still not the demo's.
        &["--scale", "0.01"],
    ];
    for args in bad {
        let out = demo(&proj, args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(snapshot(&proj), before, "{args:?} changed the folder");
    }
    let err = stderr(&demo(&proj, &["--init", "/nonexistent"]));
    assert!(
        err.contains("/nonexistent") && !err.contains("vocab.txt"),
        "{err}"
    );
    let err = stderr(&demo(&proj, &["--scale", "0.01"]));
    assert!(err.contains(MARKER) && err.contains("--out"), "{err}");

    // A previous demo's folder (its outputs stand in for a real run's): bad arguments remove
    // nothing of it either.
    let prev = common::temp_dir("demo-prev");
    let mut run = DemoDir::prepare(&prev).unwrap();
    for file in [
        "data/docs.jsonl",
        "ict/checkpoint/model.safetensors",
        "report/loss.png",
        "summary.json",
    ] {
        std::fs::create_dir_all(prev.join(file).parent().unwrap()).unwrap();
        std::fs::write(prev.join(file), "demo output").unwrap();
    }
    run.finish().unwrap();
    std::fs::write(prev.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&prev);
    for args in &bad[..5] {
        assert!(!demo(&prev, args).status.success(), "{args:?}");
        assert_eq!(snapshot(&prev), before, "{args:?} changed the folder");
    }
    // A file of the user's inside a folder the demo would replace: named, nothing removed.
    std::fs::write(prev.join("report/paper.md"), "mine").unwrap();
    let before = snapshot(&prev);
    let err = DemoDir::prepare(&prev).unwrap_err().to_string();
    assert!(err.contains("report/paper.md"), "{err}");
    assert_eq!(snapshot(&prev), before);
    // Without it, the demo's own outputs go and the user's file beside them stays.
    std::fs::remove_file(prev.join("report/paper.md")).unwrap();
    DemoDir::prepare(&prev).unwrap();
    let left: Vec<PathBuf> = snapshot(&prev).into_iter().map(|(p, _)| p).collect();
    assert_eq!(left, [prev.join(MARKER), prev.join("notes.txt")]);
    std::fs::remove_dir_all(proj).unwrap();
    std::fs::remove_dir_all(prev).unwrap();
}

/// Runs `cmd` and returns its output and peak resident memory in MB (from wait4).
// The child is reaped by wait4, which also gives its resource usage, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (Output, f64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut stdout, mut stderr) = (child.stdout.unwrap(), child.stderr.unwrap());
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).unwrap();
        buf
    });
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
    let err = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for; status and usage are valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out,
        stderr: err,
    };
    (output, usage.ru_maxrss as f64 / 1024.0)
}

/// The first `n` bytes of `text`, cut after a space.
fn prefix(text: &str, n: usize) -> &str {
    &text[..=text[..n].rfind(' ').unwrap()]
}

#[test]
fn a_single_line_document_of_megabytes_is_embedded_and_indexed_in_bounded_memory() {
    let dir = common::temp_dir("huge");
    let ckpt = fine_tuned_run(&dir.join("run"));
    // A plain BERT folder for `realm embed`: the retriever's query tower.
    let bert = dir.join("bert");
    let mut config = realm::model::BertConfig::new(32, 1, 1);
    config.vocab_size = 8000;
    config.max_position_embeddings = 128;
    realm::model::BertModel::new_random(&config, 5, &candle_core::Device::Cpu)
        .unwrap()
        .save(&bert)
        .unwrap();
    std::fs::copy(demo_vocab(), bert.join("vocab.txt")).unwrap();
    let sentence = "The river Nile flows north through Africa to the sea. ";
    let huge = sentence.repeat(16_000_000 / sentence.len());
    std::fs::write(dir.join("huge.txt"), format!("{huge}\n")).unwrap();
    std::fs::write(dir.join("head.txt"), format!("{}\n", prefix(&huge, 4000))).unwrap();
    let embed = |input: &str, out: &str| {
        run_measured(&mut on_cpu(&[
            "embed",
            "--model",
            s(&bert),
            "--input",
            s(&dir.join(input)),
            "--out",
            s(&dir.join(out)),
        ]))
    };
    let (out, huge_mb) = embed("huge.txt", "huge.safetensors");
    succeeded(out);
    let (out, head_mb) = embed("head.txt", "head.safetensors");
    succeeded(out);
    eprintln!("embed: peak {huge_mb:.0} MB for a 16 MB line, {head_mb:.0} MB for its first 4 kB");
    // Only the first 128 wordpieces count: the embedding is the one of the line's beginning.
    let load = |f: &str| {
        candle_core::safetensors::load(dir.join(f), &candle_core::Device::Cpu).unwrap()
            ["embeddings"]
            .to_vec2::<f32>()
            .unwrap()
    };
    assert_eq!(load("huge.safetensors"), load("head.safetensors"));
    // The line is read and held (16 MB, twice over while it is decoded), not tokenised whole
    // (which took about 120 bytes per byte of text).
    assert!(
        huge_mb < head_mb + 160.0,
        "{huge_mb:.0} MB for the 16 MB line against {head_mb:.0} MB for 4 kB"
    );

    // `realm index` on a 2 MB single-line document: every wordpiece in blocks, and progress as
    // plain lines on a stderr that is not a terminal.
    let text = sentence.repeat(2_000_000 / sentence.len());
    let doc = serde_json::json!({"id": "big", "title": "Nile", "text": text});
    std::fs::write(dir.join("big.jsonl"), format!("{doc}\n")).unwrap();
    let (out, index_mb) = run_measured(&mut on_cpu(&[
        "index",
        "--model",
        s(&ckpt),
        "--corpus",
        s(&dir.join("big.jsonl")),
        "--out",
        s(&dir.join("idx")),
        "--batch",
        "256",
        "--block-tokens",
        "120",
    ]));
    let out = succeeded(out);
    let err = stderr(&out);
    eprintln!("index: peak {index_mb:.0} MB\n{err}");
    for line in ["indexing: 0.0/2.0 MB", "blocks in"] {
        assert!(err.contains(line), "no {line:?} in:\n{err}");
    }
    let index = StoredIndex::load(dir.join("idx"), None).unwrap();
    let tok = realm::model::BertTokenizer::from_vocab(demo_vocab(), true).unwrap();
    let per_sentence = tok.wordpieces(&[sentence.trim()]).unwrap()[0].len();
    let sentences = text.matches(". ").count();
    let tokens: usize = index.blocks.iter().map(|b| b.tokens.len()).sum();
    assert_eq!(tokens, per_sentence * sentences);
    assert!(index.blocks.iter().all(|b| b.tokens.len() <= 120));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flags_that_cannot_be_honoured_are_errors_naming_them() {
    let dir = common::temp_dir("flags");
    let ckpt = fine_tuned_run(&dir);
    let corpus = dir.join("docs.jsonl");
    let failed = |args: &[&str], wants: &[&str]| {
        let out = realm(args).output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        for want in wants {
            assert!(err.contains(want), "{args:?}: no {want:?} in {err}");
        }
        assert!(
            !err.contains("Some(") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        err
    };
    let vocab = dir.join("vocab.txt");
    failed(
        &[
            "vocab",
            "--corpus",
            s(&corpus),
            "--size",
            "10",
            "--out",
            s(&vocab),
        ],
        &["--size 10", "or more"],
    );
    assert!(!vocab.exists());
    let idx = dir.join("idx");
    let index_fails = |out: &Path, extra: &[&str], wants: &[&str]| {
        let mut args = vec!["index", "--device", "cpu", "--model", s(&ckpt)];
        args.extend(["--corpus", s(&corpus), "--out", s(out)]);
        args.extend_from_slice(extra);
        failed(&args, wants)
    };
    index_fails(
        &idx,
        &["--block-tokens", "600"],
        &["--block-tokens 600", "128 positions"],
    );
    assert!(!idx.exists());
    // An output that is a file, or a folder of the user's: refused before any work.
    std::fs::write(dir.join("a-file"), "x").unwrap();
    let err = index_fails(&dir.join("a-file"), &[], &["--out"]);
    assert!(!err.contains("embedding"), "{err}");
    std::fs::create_dir_all(dir.join("mine")).unwrap();
    std::fs::write(dir.join("mine/notes.md"), "mine").unwrap();
    index_fails(&dir.join("mine"), &[], &["--out", "not an index folder"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("mine/notes.md")).unwrap(),
        "mine"
    );
    failed(
        &[
            "embed",
            "--model",
            s(&ckpt),
            "--input",
            s(&corpus),
            "--out",
            s(&dir),
        ],
        &["--out", "is a folder"],
    );
    failed(
        &["selftest", "--device", "cpu", "--filter", "zzzz"],
        &["--filter zzzz"],
    );
    // One rule for blocks per query: 1 to the index's size.
    failed(
        &[
            "ask",
            "--device",
            "cpu",
            "--run",
            s(&dir),
            "--beam",
            "99999",
            "q",
        ],
        &["--beam 99999: must be between 1 and the index's 3 blocks"],
    );
    let index = ckpt.join("index");
    for k in ["0", "51"] {
        failed(
            &[
                "search",
                "--device",
                "cpu",
                "--index",
                s(&index),
                "-k",
                k,
                "q",
            ],
            &[&format!(
                "-k {k}: must be between 1 and the index's 3 blocks"
            )],
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ask_echoes_each_question_from_stdin_and_names_a_bad_line() {
    let dir = common::temp_dir("stdin");
    fine_tuned_run(&dir);
    let mut child = on_cpu(&["ask", "--run", s(&dir), "--beam", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xEF\xBB\xBFwhere is paris?\n\xFF\xFEbad\n\nwho was mozart?\n")
        .unwrap();
    let out = succeeded(child.wait_with_output().unwrap());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let questions: Vec<&str> = text.lines().filter(|l| l.starts_with("Q: ")).collect();
    assert_eq!(
        questions,
        ["Q: where is paris?", "Q: who was mozart?"],
        "{text}"
    );
    // Each question is followed by its answer and its two blocks of evidence.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[4].starts_with("Q: who"), "{text}");
    let err = stderr(&out);
    assert!(err.contains("stdin:2: not UTF-8"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
