//! REALM pre-training on a tiny synthetic corpus, over seeds: retrieval beats the null-document
//! baseline, and the masked-LM signal raises the retriever's recall of the right document.

use realm::device::ComputeDevice;
use realm::dist::Dist;
use realm::index::build::EmbedBlocks;
use realm::index::live::{Knowledge, LiveIndex};
use realm::model::{query_inputs, BertConfig, BertTokenizer, Mode, RealmModel, Retriever};
use realm::train::ict::{run_ict, IctConfig};
use realm::train::models::{ModelInit, Origin};
use realm::train::pretrain::{run_pretrain, PretrainConfig, PretrainReport};
use realm::train::RunOptions;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::outcome::{seeds, summarise};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const FIRST: [&str; 20] = [
    "John", "Mary", "Peter", "Anna", "James", "Paul", "George", "William", "Henry", "Charles",
    "Robert", "Thomas", "Edward", "Richard", "Louis", "Maria", "David", "Michael", "Joseph",
    "Frank",
];
const LAST: [&str; 13] = [
    "Smith", "Taylor", "Hall", "Young", "King", "Green", "Mitchell", "Cook", "Bell", "Wood",
    "Watson", "Gray", "Ross",
];
const SUBJECTS: [&str; 8] = [
    "music", "art", "history", "science", "law", "medicine", "poetry", "physics",
];

fn name(i: usize) -> String {
    format!(
        "{} {}",
        FIRST[i % FIRST.len()],
        LAST[i / FIRST.len() % LAST.len()]
    )
}

/// Distinct one-wordpiece answers: whole words of the demo vocabulary past its commonest, capitalised
/// (the tagger takes a capitalised word inside a sentence as a name; the tokenizer lower-cases).
fn answers(n: usize) -> Vec<String> {
    let vocab = std::fs::read_to_string(repo().join("data/demo/vocab.txt")).unwrap();
    let words: Vec<String> = vocab
        .lines()
        .skip(3000)
        .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_lowercase()))
        .take(n)
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect();
    assert_eq!(
        words.len(),
        n,
        "the vocabulary has too few words for {n} answers"
    );
    words
}

/// `places.len()` people (distinct names), person i born in `places[i]`: each fact is in exactly
/// one knowledge document, title = the name (lower case, so the salient-span tagger does not
/// pick it from the texts), body = the place. ICT learns name matching on longer documents about
/// the same people; the pre-training texts state the facts again under other ids (nothing is
/// excluded), and their place is the salient span that gets masked.
struct Synthetic {
    ict_docs: PathBuf,
    docs: PathBuf,
    texts: PathBuf,
    n: usize,
}

fn synthetic(dir: &Path, places: Vec<String>) -> Synthetic {
    let (mut docs, mut texts, mut ict_docs) = (String::new(), String::new(), String::new());
    let n = places.len();
    for (i, city) in places.iter().enumerate() {
        let (name, subject) = (name(i), SUBJECTS[i % SUBJECTS.len()]);
        let title = name.to_lowercase();
        let text = format!("{name} was born in {city}. {name} studied {subject}.");
        ict_docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": title, "text": text})
        );
        docs += &format!(
            "{}\n",
            serde_json::json!({"id": i, "title": title, "text": city})
        );
        let text = format!("{name} was born in {city}.");
        texts += &format!(
            "{}\n",
            serde_json::json!({"id": format!("x{i}"), "title": "", "text": text})
        );
    }
    let s = Synthetic {
        ict_docs: dir.join("ict_docs.jsonl"),
        docs: dir.join("docs.jsonl"),
        texts: dir.join("texts.jsonl"),
        n,
    };
    std::fs::write(&s.ict_docs, ict_docs).unwrap();
    std::fs::write(&s.docs, docs).unwrap();
    std::fs::write(&s.texts, texts).unwrap();
    s
}

fn tiny_origin(dropout: f32) -> ModelInit {
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = 8000;
    bert.max_position_embeddings = 64;
    bert.hidden_dropout_prob = dropout;
    bert.attention_probs_dropout_prob = dropout;
    ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab: repo().join("data/demo/vocab.txt"),
        lowercase: true,
    })
}

fn quiet() -> RunOptions {
    let mut opts = RunOptions::new(ComputeDevice::cpu());
    opts.quiet = true;
    opts
}

/// ICT on the longer documents from `init`; returns its checkpoint.
fn ict(data: &Synthetic, init: ModelInit, run: &Path, steps: u64, seed: u64) -> PathBuf {
    let mut cfg = IctConfig::new(init, data.ict_docs.clone());
    cfg.retriever.proj_size = 32;
    cfg.retriever.proj_dropout = 0.0;
    cfg.block_len = 32;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.heldout = 4;
    cfg.eval_pool = data.n;
    cfg.train.steps = steps;
    cfg.train.batch = 16;
    cfg.train.lr = 3e-3;
    cfg.train.warmup = Some(steps / 10);
    cfg.train.seed = seed;
    run_ict(&cfg, run, &quiet()).unwrap();
    run.join("checkpoint")
}

/// A warm start with headroom: ICT in rounds of [`ICT_ROUND`] steps until the retriever ranks
/// the right document first for at least [`WARM_RECALL`] of the people. A fixed step count lands
/// anywhere from recall 0.07 (ICT has not taken off) to 0.93 (nothing left to gain), depending on
/// the seed and the machine's rounding; pre-training can only show a gain in between.
fn warm_start(data: &Synthetic, dir: &Path, seed: u64) -> (PathBuf, Vec<f64>) {
    let (mut init, mut recalls) = (tiny_origin(0.0), Vec::new());
    loop {
        let round = recalls.len() as u64;
        let ckpt = ict(
            data,
            init,
            &dir.join(format!("ict{round}")),
            ICT_ROUND,
            seed * 100 + round,
        );
        let tok = BertTokenizer::from_dir(&ckpt).unwrap();
        let retriever = Retriever::load(&ckpt, &candle_core::Device::Cpu).unwrap();
        let recall = recall_at_1(&retriever, &tok, data);
        recalls.push(recall);
        if recall >= WARM_RECALL || round + 1 == ICT_ROUNDS {
            return (ckpt, recalls);
        }
        init = checkpoint(&ckpt);
    }
}

fn pretrain_config(
    data: &Synthetic,
    init: ModelInit,
    top_k: usize,
    steps: u64,
    seed: u64,
) -> PretrainConfig {
    let mut cfg = PretrainConfig::new(init, data.docs.clone());
    cfg.examples = Some(data.texts.clone());
    cfg.retriever.proj_size = 32;
    cfg.top_k = top_k;
    cfg.query_len = 16;
    cfg.doc_len = 24;
    cfg.block_len = 32;
    cfg.train.steps = steps;
    cfg.train.batch = 8;
    // REALM's recipe at this scale: a copy head, so that the tiny encoder reads the retrieved
    // block within a few hundred steps (without it the loss stalls at the answers' unigram
    // entropy and the retriever gets no signal), and a rate that does not wreck the ICT-trained
    // retriever (1e-3 does: recall@1 falls to ~0).
    cfg.copy_head = true;
    cfg.train.lr = 1e-4;
    cfg.train.warmup = Some(steps / 10);
    cfg.train.log_every = 10;
    cfg.refresh.every = 20;
    cfg.refresh.swap_after = Some(5);
    cfg.train.seed = seed;
    cfg
}

fn checkpoint(dir: &Path) -> ModelInit {
    ModelInit::Checkpoint {
        dir: dir.to_path_buf(),
    }
}

/// The pre-training query of person i: "NAME was born in [MASK] ."
fn query(tok: &BertTokenizer, i: usize) -> Vec<u32> {
    let mut q = tok
        .wordpieces(&[&format!("{} was born in", name(i))])
        .unwrap()
        .remove(0);
    q.push(tok.token_id("[MASK]").unwrap());
    q.extend(tok.wordpieces(&["."]).unwrap().remove(0));
    q
}

/// Fraction of the people whose own document `retriever` ranks first (a fresh index by its
/// document tower).
fn recall_at_1(retriever: &Retriever, tok: &BertTokenizer, data: &Synthetic) -> f64 {
    let dev = candle_core::Device::Cpu;
    let cut = realm::index::corpus_blocks(&data.docs, tok, 32, false).unwrap();
    let knowledge = Knowledge::new(cut.blocks, tok).unwrap();
    let opts = EmbedBlocks {
        batch: 64,
        max_len: 24,
        progress: None,
    };
    let live = LiveIndex::build(
        retriever.doc_tower(),
        tok,
        &knowledge.blocks,
        &opts,
        &dev,
        &Dist::local(),
    )
    .unwrap();
    let hits = (0..data.n)
        .filter(|&i| {
            let input = query_inputs(tok, &[&query(tok, i)], 16, &dev).unwrap();
            let emb = retriever.query_tower().embed(&input, Mode::Eval).unwrap();
            let found = knowledge.search(&emb, &live.mips, 1, &[None]).unwrap();
            knowledge.blocks[found[0][0] as usize].doc_id == i.to_string()
        })
        .count();
    hits as f64 / data.n as f64
}

/// The tokenizer, the retriever after ICT (`warm`) and the model after pre-training (`ckpt`).
fn before_and_after(warm: &Path, ckpt: &Path) -> (BertTokenizer, Retriever, RealmModel) {
    let dev = candle_core::Device::Cpu;
    (
        BertTokenizer::from_dir(warm).unwrap(),
        Retriever::load(warm, &dev).unwrap(),
        RealmModel::load(ckpt, &dev).unwrap(),
    )
}

fn pretrain(cfg: &PretrainConfig, run: &Path) -> PretrainReport {
    run_pretrain(cfg, run, &quiet()).unwrap()
}

/// What one seed measured: a short ICT warm start, then 200 pre-training steps from it with
/// retrieval (k = 8: seven retrieved blocks and the null document, the index refreshed every 20
/// steps) and the same steps with the null document alone.
#[derive(Debug)]
struct Outcome {
    /// Masked-token loss of the last logged window, with retrieval and with the null document.
    with_loss: f64,
    null_loss: f64,
    retrieval_utility: f64,
    /// recall@1 of the right document after ICT and after pre-training with retrieval.
    recall: (f64, f64),
}

fn pretraining(seed: u64) -> Outcome {
    let dir = common::temp_dir(&format!("run-{seed}"));
    let data = synthetic(&dir, answers(PEOPLE));
    let (warm, ict_recalls) = warm_start(&data, &dir, seed);
    eprintln!("seed {seed}: recall@1 after each ICT round {ict_recalls:?}");
    let with = pretrain(
        &pretrain_config(&data, checkpoint(&warm), 8, STEPS, seed),
        &dir.join("with"),
    );
    let null = pretrain(
        &pretrain_config(&data, checkpoint(&warm), 1, STEPS, seed),
        &dir.join("null"),
    );
    let (tok, start, end) = before_and_after(&warm, &dir.join("with/checkpoint"));
    let outcome = Outcome {
        with_loss: with.last_loss.unwrap(),
        null_loss: null.last_loss.unwrap(),
        retrieval_utility: with.retrieval_utility.unwrap(),
        recall: (
            recall_at_1(&start, &tok, &data),
            recall_at_1(end.retriever(), &tok, &data),
        ),
    };
    eprintln!("seed {seed}: {outcome:?} ({} refreshes)", with.refreshes);
    let _ = std::fs::remove_dir_all(dir);
    outcome
}

/// The seeds' outcomes, computed once for both tests (the second waits for the first).
fn outcomes() -> &'static (Vec<u64>, Vec<Outcome>) {
    static RUNS: OnceLock<(Vec<u64>, Vec<Outcome>)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let seeds = seeds(&[0, 1, 2, 3, 4]);
        let runs = seeds.iter().map(|&s| pretraining(s)).collect();
        (seeds, runs)
    })
}

fn series(f: impl Fn(&Outcome) -> f64) -> Vec<f64> {
    outcomes().1.iter().map(f).collect()
}

#[test]
fn retrieval_drives_the_masked_loss_below_the_null_document_baseline() {
    let seeds = &outcomes().0;
    // 128 facts, each seen ~12 times: the null-document model cannot look them up; with
    // retrieval the copy head reads the answer from the person's document once it is among
    // the candidates.
    let gap = summarise(
        "null-document loss − retrieval loss",
        seeds,
        &series(|o| o.null_loss - o.with_loss),
    );
    let ru = summarise("retrieval utility", seeds, &series(|o| o.retrieval_utility));
    assert!(gap > 1.0, "median loss gap {gap}");
    assert!(ru > 1.0, "median retrieval utility {ru}");
}

#[test]
fn pretraining_raises_the_retrievers_recall_of_the_right_document() {
    let seeds = &outcomes().0;
    summarise("recall@1 after ICT", seeds, &series(|o| o.recall.0));
    summarise(
        "recall@1 after pre-training",
        seeds,
        &series(|o| o.recall.1),
    );
    let gain = summarise(
        "recall@1 gain from pre-training",
        seeds,
        &series(|o| o.recall.1 - o.recall.0),
    );
    // Among 7 retrieved candidates, the marginal likelihood moves probability to the one whose
    // document predicts the masked answer, and the refreshed index follows: the masked-LM signal
    // trains the retriever.
    assert!(gain > 0.03, "median recall@1 gain {gain}");
}

/// People, each with a distinct answer: with an answer shared by several people, the marginal
/// rewards any document with the right answer, and the query tower learns name → answer rather
/// than name → the person's own document.
const PEOPLE: usize = 128;
/// ICT steps per warm-start round, and the most rounds (docs/training.md, "What the tests show").
const ICT_ROUND: u64 = 15;
const ICT_ROUNDS: u64 = 10;
/// The warm start's recall@1: the retriever finds some people's documents, not most.
const WARM_RECALL: f64 = 0.25;
const STEPS: u64 = 200;

/// Per-tower learning rates: shared towers refuse two rates; separated from the shared ICT
/// checkpoint (REALM's two embedders start from one module), the document tower at rate 0 keeps
/// the checkpoint's weights, so its index is never stale nor refreshed, while the query tower
/// learns.
#[test]
fn towers_learn_at_their_own_rates() {
    let dir = common::temp_dir("tower-rates");
    let data = synthetic(&dir, answers(PEOPLE));
    let warm = ict(&data, tiny_origin(0.0), &dir.join("ict"), 4, 5);
    let mut cfg = pretrain_config(&data, checkpoint(&warm), 4, 6, 5);
    cfg.refresh.every = 2;
    cfg.doc_lr_scale = 0.5;
    let e = run_pretrain(&cfg, &dir.join("shared"), &quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("doc_lr_scale") && e.contains("shared"), "{e}");
    cfg.doc_lr_scale = -1.0;
    let e = run_pretrain(&cfg, &dir.join("negative"), &quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("doc_lr_scale") && e.contains("-1"), "{e}");

    cfg.retriever.shared_towers = false;
    cfg.doc_lr_scale = 0.0;
    let report = pretrain(&cfg, &dir.join("untied"));
    assert_eq!((report.refreshes, report.max_staleness), (0, 0));
    let (_, start, end) = before_and_after(&warm, &dir.join("untied/checkpoint"));
    let r = end.retriever();
    assert!(!r.config().shared_towers);
    let warm_tower = common::var_values(start.doc_tower().vars());
    assert_eq!(common::var_values(r.doc_tower().vars()), warm_tower);
    let moved = common::var_values(r.query_tower().vars())
        .iter()
        .zip(&warm_tower)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        moved > warm_tower.len() / 2,
        "{moved} of {} moved",
        warm_tower.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
