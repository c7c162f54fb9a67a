//! Index format 3 and the streaming build: the streamed folder holds the blocks and rows of the
//! in-memory build and searches the same; `realm index upgrade` converts an older folder;
//! damaged files are errors naming them; a build killed at any failpoint and resumed gives the
//! same bytes as one never interrupted; four shards merge into the whole, and one search through
//! the four shards equals one search over the whole; `realm search --queries` answers each line
//! as the single-query form does.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fine_tuned_run;
use realm::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use realm::index::stream::{build_index, merge, StreamOptions};
use realm::index::{BlockIndex, RetrieverModel, Searcher, StoredIndex};
use realm::ops::mips::{mips_top_k, ShardedIndex};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Twelve documents of one to four sentences (one empty).
fn corpus(dir: &Path) -> PathBuf {
    let words = [
        "river", "city", "composer", "mountain", "planet", "painter", "empire", "island",
    ];
    let mut text = String::new();
    for i in 0..12 {
        let sentences: Vec<String> = (0..(i % 4))
            .map(|j| {
                format!(
                    "The {} number {i} is near the {} of {j}.",
                    words[(i + j) % 8],
                    words[(3 * i + j) % 8]
                )
            })
            .collect();
        text.push_str(&format!(
            "{{\"id\": \"d{i}\", \"title\": \"Title {i}\", \"text\": \"{}\"}}\n",
            sentences.join(" ")
        ));
    }
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn stream_opts(docs_per_chunk: usize, shard: Option<(usize, usize)>) -> StreamOptions {
    StreamOptions {
        max_block_tokens: 12,
        skip_bad_lines: false,
        embed: EmbedBlocks {
            batch: 3,
            max_len: 64,
            progress: None,
        },
        step: 0,
        docs_per_chunk,
        checkpoint_every: 1,
        resume: false,
        shard,
        progress: None,
    }
}

fn all_blocks(index: &BlockIndex) -> Vec<realm::data::Block> {
    (0..index.len()).map(|i| index.block(i).unwrap()).collect()
}

#[test]
fn a_streamed_index_holds_the_in_memory_build_and_an_upgrade_gives_the_same() {
    let dir = common::temp_dir("stream");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let corpus = corpus(&dir);
    let model = RetrieverModel::load(&ckpt, &Device::Cpu).unwrap();
    // One chunk: the same embedding batches as the in-memory build.
    let stats = build_index(
        &model,
        &corpus,
        &dir.join("v3"),
        &stream_opts(1000, None),
        &Device::Cpu,
    )
    .unwrap();
    let (stored, _) = index_corpus(
        &model,
        &corpus,
        &IndexCorpus {
            max_block_tokens: 12,
            skip_bad_lines: false,
            embed: EmbedBlocks {
                batch: 3,
                max_len: 64,
                progress: None,
            },
            step: 0,
        },
        &Device::Cpu,
    )
    .unwrap();
    let mapped = BlockIndex::open(dir.join("v3")).unwrap();
    mapped.verify().unwrap();
    assert_eq!(stats.blocks, stored.blocks.len());
    assert_eq!(stats.documents, 12);
    assert_eq!(all_blocks(&mapped), stored.blocks);
    let rows = stored
        .embeddings
        .flatten_all()
        .unwrap()
        .to_vec1::<half::f16>()
        .unwrap();
    assert_eq!(mapped.embeddings(), rows.as_slice());
    assert_eq!(
        mapped.layout.token_bytes, 2,
        "an 8,000-piece vocabulary fits u16"
    );
    // Blocks of one document share its entry.
    assert_eq!(mapped.layout.num_docs, 9);
    // StoredIndex reads format 3 too (training's path).
    assert_eq!(
        StoredIndex::load(dir.join("v3"), None).unwrap().blocks,
        stored.blocks
    );

    // Format 2 upgraded in place: the same blocks and rows; the same search answers.
    stored.save(dir.join("v2")).unwrap();
    let before = Searcher::open(&dir.join("v2"), None, &Device::Cpu).unwrap();
    let queries = ["a composer near the river", "planet island"];
    let want = before.search(&queries, 4).unwrap();
    let n = realm::index::writer::upgrade(&dir.join("v2")).unwrap();
    assert_eq!(n, stored.blocks.len());
    let upgraded = BlockIndex::open(dir.join("v2")).unwrap();
    upgraded.verify().unwrap();
    assert_eq!(all_blocks(&upgraded), stored.blocks);
    assert_eq!(upgraded.embeddings(), rows.as_slice());
    assert!(realm::index::writer::upgrade(&dir.join("v2")).is_err());
    for folder in ["v2", "v3"] {
        let searcher = Searcher::open(&dir.join(folder), None, &Device::Cpu).unwrap();
        let got = searcher.search(&queries, 4).unwrap();
        for (g, w) in got.iter().zip(&want) {
            let g: Vec<_> = g.iter().map(|h| (h.block, &h.doc_id, h.score)).collect();
            let w: Vec<_> = w.iter().map(|h| (h.block, &h.doc_id, h.score)).collect();
            assert_eq!(g, w, "{folder}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damaged_files_are_errors_naming_them() {
    let dir = common::temp_dir("damage");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let corpus = corpus(&dir);
    let model = RetrieverModel::load(&ckpt, &Device::Cpu).unwrap();
    let good = dir.join("good");
    build_index(&model, &corpus, &good, &stream_opts(4, None), &Device::Cpu).unwrap();
    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    let err = |d: &Path| BlockIndex::open(d).unwrap_err().to_string();

    let cut = copy("cut");
    let tokens = std::fs::read(cut.join("tokens.u16")).unwrap();
    std::fs::write(cut.join("tokens.u16"), &tokens[..tokens.len() - 2]).unwrap();
    let e = err(&cut);
    assert!(e.contains("tokens.u16") && e.contains("truncated"), "{e}");

    let longer = copy("longer");
    let mut rows = std::fs::read(longer.join("embeddings.f16")).unwrap();
    rows.push(0);
    std::fs::write(longer.join("embeddings.f16"), &rows).unwrap();
    let e = err(&longer);
    assert!(e.contains("embeddings.f16"), "{e}");

    let missing = copy("missing");
    std::fs::remove_file(missing.join("block_docs.u32")).unwrap();
    let e = err(&missing);
    assert!(e.contains("block_docs.u32") && e.contains("missing"), "{e}");

    // A changed byte keeps the size: the checksum finds it, naming the file.
    let flipped = copy("flipped");
    let mut strings = std::fs::read(flipped.join("doc_strings.utf8")).unwrap();
    strings[0] ^= 1;
    std::fs::write(flipped.join("doc_strings.utf8"), &strings).unwrap();
    let e = BlockIndex::open(&flipped)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("doc_strings.utf8") && e.contains("checksum"),
        "{e}"
    );
    let e = StoredIndex::load(&flipped, None).unwrap_err().to_string();
    assert!(e.contains("doc_strings.utf8"), "{e}");

    // Offsets that point outside their file are errors when the block is read, not panics.
    let offsets = copy("offsets");
    let mut off = std::fs::read(offsets.join("token_offsets.u64")).unwrap();
    off[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(offsets.join("token_offsets.u64"), &off).unwrap();
    let index = BlockIndex::open(&offsets).unwrap();
    let e = index.block(0).unwrap_err().to_string();
    assert!(e.contains("token_offsets.u64"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn realm_index(model: &Path, corpus: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_realm"));
    c.args(["index", "--device", "cpu", "--model"])
        .arg(model)
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args([
            "--block-tokens",
            "12",
            "--batch",
            "3",
            "--chunk-docs",
            "2",
            "--checkpoint-every",
            "1",
        ])
        .args(extra)
        .stderr(Stdio::null());
    c
}

/// Every file of a folder, by name, with its CRC-32 and size.
fn files(dir: &Path) -> Vec<(String, u32, usize)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                crc32fast::hash(&bytes),
                bytes.len(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_build_killed_at_any_failpoint_and_resumed_gives_the_same_bytes() {
    let dir = common::temp_dir("resume");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let corpus = corpus(&dir);
    let reference = dir.join("reference");
    assert!(realm_index(&ckpt, &corpus, &reference, &[])
        .status()
        .unwrap()
        .success());
    let want = files(&reference);
    let target = dir.join("target");
    let mut resumed = 0;
    for at in 1.. {
        assert!(at < 200, "the build never finished");
        let _ = std::fs::remove_dir_all(&target);
        let status = realm_index(&ckpt, &corpus, &target, &[])
            .env(realm::io::KILL_AT_FAILPOINT, at.to_string())
            .status()
            .unwrap();
        if status.success() {
            assert_eq!(files(&target), want, "uninterrupted at failpoint {at}");
            break;
        }
        assert_eq!(status.signal(), Some(9), "{status:?}");
        let status = realm_index(&ckpt, &corpus, &target, &["--resume"])
            .status()
            .unwrap();
        assert!(status.success(), "resume after failpoint {at}: {status:?}");
        assert_eq!(files(&target), want, "killed at failpoint {at}, resumed");
        resumed += 1;
    }
    // Six chunks, a checkpoint after each: many failpoints fall in the middle of the build.
    assert!(resumed >= 12, "only {resumed} kills");
    // Resuming with other options is refused, naming the checkpoint.
    let _ = std::fs::remove_dir_all(&target);
    let status = realm_index(&ckpt, &corpus, &target, &[])
        .env(realm::io::KILL_AT_FAILPOINT, "5")
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    let out = realm_index(&ckpt, &corpus, &target, &["--resume", "--skip-bad-lines"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("checkpoint.json"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn four_shards_merge_into_the_whole_and_search_as_one() {
    let dir = common::temp_dir("shards");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let corpus = corpus(&dir);
    let model = RetrieverModel::load(&ckpt, &Device::Cpu).unwrap();
    let whole_dir = dir.join("whole");
    build_index(
        &model,
        &corpus,
        &whole_dir,
        &stream_opts(2, None),
        &Device::Cpu,
    )
    .unwrap();
    let shard_dirs: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("shard{i}"))).collect();
    for (i, d) in shard_dirs.iter().enumerate() {
        build_index(
            &model,
            &corpus,
            d,
            &stream_opts(2, Some((i, 4))),
            &Device::Cpu,
        )
        .unwrap();
    }
    let whole = BlockIndex::open(&whole_dir).unwrap();
    let shards: Vec<BlockIndex> = shard_dirs
        .iter()
        .map(|d| BlockIndex::open(d).unwrap())
        .collect();
    let d = whole.manifest.dim;
    let pairs = |index: &BlockIndex| {
        let mut v: Vec<_> = (0..index.len())
            .map(|i| {
                (
                    index.block(i).unwrap().tokens,
                    index.embeddings()[i * d..(i + 1) * d].to_vec(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };

    // The merge (shards given out of order) holds the whole's blocks and rows, shard after shard.
    let merged_dir = dir.join("merged");
    let reversed: Vec<PathBuf> = shard_dirs.iter().rev().cloned().collect();
    let n = merge(&reversed, &merged_dir).unwrap();
    let merged = BlockIndex::open(&merged_dir).unwrap();
    merged.verify().unwrap();
    assert_eq!(n, whole.len());
    assert_eq!(pairs(&merged), pairs(&whole));

    // One search through the four shards equals one search over the whole: the same scores,
    // and hits of the same blocks.
    let sharded = ShardedIndex::new(shards.iter().map(|s| s.mips().unwrap()).collect()).unwrap();
    let queries = Tensor::randn(0f32, 1.0, (5, d), &Device::Cpu).unwrap();
    let k = 6;
    let (ws, wi) = mips_top_k(&queries, &whole.mips().unwrap(), k, None).unwrap();
    let (ss, si) = sharded.search(&queries, k, None).unwrap();
    assert_eq!(
        ss.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
        ws.to_vec2::<f32>().unwrap()
    );
    let block_of_global = |id: u32| {
        let mut id = id as usize;
        for s in &shards {
            if id < s.len() {
                return s.block(id).unwrap();
            }
            id -= s.len();
        }
        panic!("id beyond the shards");
    };
    for (w, s) in wi
        .to_vec2::<u32>()
        .unwrap()
        .iter()
        .zip(si.to_vec2::<u32>().unwrap())
    {
        for (&a, b) in w.iter().zip(s) {
            assert_eq!(whole.block(a as usize).unwrap(), block_of_global(b));
        }
    }

    // A merge checks its shards: all of them, once each, of one build.
    let e = merge(&shard_dirs[..3], &dir.join("m1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 shards given of 4"), "{e}");
    let twice = [
        shard_dirs[0].clone(),
        shard_dirs[0].clone(),
        shard_dirs[2].clone(),
        shard_dirs[3].clone(),
    ];
    let e = merge(&twice, &dir.join("m2")).unwrap_err().to_string();
    assert!(e.contains("not exactly 0/4"), "{e}");
    let other = dir.join("other1");
    build_index(
        &model,
        &corpus,
        &other,
        &StreamOptions {
            max_block_tokens: 10,
            ..stream_opts(2, Some((1, 4)))
        },
        &Device::Cpu,
    )
    .unwrap();
    let mixed = [
        shard_dirs[0].clone(),
        other.clone(),
        shard_dirs[2].clone(),
        shard_dirs[3].clone(),
    ];
    let e = merge(&mixed, &dir.join("m3")).unwrap_err().to_string();
    assert!(e.contains("other options"), "{e}");
    let e = merge(std::slice::from_ref(&whole_dir), &dir.join("m4"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a shard"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn search_answers_a_file_of_queries_as_one_query_at_a_time() {
    let dir = common::temp_dir("batch");
    let ckpt = fine_tuned_run(&dir.join("run"));
    let corpus = corpus(&dir);
    let index = dir.join("index");
    assert!(realm_index(&ckpt, &corpus, &index, &[])
        .status()
        .unwrap()
        .success());
    let questions = ["the river near the city", "a painter", "planet number 7"];
    let file = dir.join("q.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{{\"question\": \"{}\", \"answers\": []}}\n\n{}\n",
            questions[0], questions[1], questions[2]
        ),
    )
    .unwrap();
    let search = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_realm"))
            .args(["search", "--device", "cpu", "--index"])
            .arg(&index)
            .args(["--json", "-k", "3"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let out = search(&["--queries", file.to_str().unwrap(), "--batch", "2"]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "one line per query");
    assert!(String::from_utf8_lossy(&out.stderr).contains("queries/s"));
    for (line, q) in lines.iter().zip(questions) {
        assert_eq!(line["query"], q);
        let single: Vec<serde_json::Value> = String::from_utf8(search(&[q]).stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let hits = line["hits"].as_array().unwrap();
        assert_eq!(hits.len(), single.len());
        for (h, s) in hits.iter().zip(&single) {
            assert_eq!(h["block"], s["block"]);
            assert_eq!(h["score"], s["score"]);
        }
    }
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "ok query\n{\"q\": 1}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_realm"))
        .args(["search", "--device", "cpu", "--index"])
        .arg(&index)
        .arg("--queries")
        .arg(&bad)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("bad.jsonl:2"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_synthetic_bench_index_is_a_valid_index_of_realistic_blocks() {
    use realm::index::bench::{
        bench_index, write_synthetic, write_synthetic_format2, BenchFormat, SyntheticSpec,
    };
    let dir = common::temp_dir("bench");
    let spec = SyntheticSpec {
        blocks: 3000,
        dim: 16,
        max_tokens: 288,
        vocab: 30_522,
        seed: 3,
    };
    write_synthetic(&dir.join("idx"), &spec).unwrap();
    let index = BlockIndex::open(dir.join("idx")).unwrap();
    index.verify().unwrap();
    let mean = index.layout.num_tokens as f64 / index.len() as f64;
    assert!((200.0..288.0).contains(&mean), "mean block length {mean}");
    let docs = index.layout.num_docs as f64;
    assert!(
        (2.0..3.0).contains(&(index.len() as f64 / docs)),
        "{docs} documents"
    );
    let report = bench_index(&dir.join("idx"), BenchFormat::Mapped, &[1, 5], 1, 3).unwrap();
    assert_eq!(report.blocks, 3000);
    assert_eq!(report.search.len(), 2);
    // The same index in format 2 for comparison: the same blocks and tokens.
    write_synthetic_format2(&dir.join("v2"), &spec).unwrap();
    assert_eq!(
        StoredIndex::load(dir.join("v2"), None).unwrap().blocks,
        all_blocks(&index)
    );
    let parsed = bench_index(&dir.join("v2"), BenchFormat::Parsed, &[1], 1, 3).unwrap();
    assert_eq!(parsed.tokens, report.tokens);
    let files: u64 = std::fs::read_dir(dir.join("idx"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(report.bytes_on_disk, files);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Bytes of a format-3 folder changed in place (sizes kept, so it opens): reading every block and
/// searching give results or errors, never a panic — the CRC is only read by `verify`, so
/// nothing of a block is trusted.
#[test]
fn a_mapped_index_with_changed_bytes_never_panics() {
    use realm::index::bench::{write_synthetic, SyntheticSpec};
    let dir = common::temp_dir("mutate");
    let good = dir.join("good");
    write_synthetic(
        &good,
        &SyntheticSpec {
            blocks: 200,
            dim: 8,
            max_tokens: 40,
            vocab: 1000,
            seed: 5,
        },
    )
    .unwrap();
    let mut rng = realm::rng::SplitMix64::new(11);
    let names: Vec<String> = std::fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    let queries = Tensor::randn(0f32, 1.0, (3, 8), &Device::Cpu).unwrap();
    for round in 0..64 {
        let case = dir.join(format!("case{round}"));
        std::fs::create_dir_all(&case).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), case.join(e.file_name())).unwrap();
        }
        let name = &names[round % names.len()];
        let original = std::fs::read(case.join(name)).unwrap();
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] = rng.below(256) as u8;
        }
        std::fs::write(case.join(name), &bytes).unwrap();
        let Ok(index) = BlockIndex::open(&case) else {
            continue;
        };
        for i in 0..index.len() {
            let _ = index.block(i);
        }
        if let Ok(mips) = index.mips() {
            let _ = mips_top_k(&queries, &mips, 5, None);
        }
        if bytes != original {
            assert!(
                index.verify().is_err(),
                "{name}: a changed byte passes verify"
            );
        }
        std::fs::remove_dir_all(&case).unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}
