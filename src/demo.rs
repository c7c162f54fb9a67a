//! `realm demo`: the whole REALM pipeline on the embedded demo data set (`data/demo/`), from
//! nothing, on a laptop CPU: tokenizer → a small BERT from scratch (or `--init DIR`) → ICT warm
//! start → index → REALM pre-training on fact statements (the training questions' cloze forms,
//! the answer masked) with index refresh → open-QA fine-tuning → evaluation with retrieval and
//! with the null document only → the first three dev questions answered, with their evidence and
//! gold answers → a knowledge update (up to 25 facts changed in a copy of the corpus, only the
//! index rebuilt, the same model asked again).
use crate::ask::{Answer, Asker};
use crate::data::demo::{parse_demo_questions, write_demo_files, DemoFiles, DemoQuestion, DEV};
use crate::data::{contains_answer, exact_match, Answer as Gold};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalConfig, EvalReport};
use crate::index::build::{index_corpus, EmbedBlocks, IndexCorpus};
use crate::index::RetrieverModel;
use crate::model::{BertConfig, BertTokenizer, TowerPooling};
use crate::train::finetune::{run_finetune, FinetuneConfig};
use crate::train::ict::{run_ict, IctConfig};
use crate::train::models::{ModelInit, Origin};
use crate::train::pretrain::{run_pretrain, PretrainConfig};
use crate::train::{LoopConfig, RunOptions, Stage};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The run directory: `data/`, then one folder per stage, `summary.json` (and the marker of
    /// [`crate::demo_dir`]).
    pub out: PathBuf,
    /// Start from this BERT folder instead of a small BERT from scratch.
    pub init: Option<PathBuf>,
    /// The seed of every training stage (with the step, it determines every random draw).
    pub seed: u64,
    /// Multiplies every training stage's step count (1.0: sized for under 10 minutes on a
    /// 2-core CPU from scratch).
    pub scale: f64,
    /// No progress output from training, evaluation and re-indexing.
    pub quiet: bool,
}

/// Body wordpieces per block: every demo document fits one block (the longest has 220).
const BLOCK_LEN: usize = 224;
/// `[CLS] x [SEP]` for questions and ICT/pre-training queries.
const QUERY_LEN: usize = 48;
/// `[CLS] title [SEP] body [SEP]` for the document tower.
const DOC_LEN: usize = 128;

/// The pre-training stage's steps and learning rate: the ablation's cpu size (100 × 8) at the
/// demo's rate for a model from scratch (seed 0: recall@5 0.97 at 1e-3, 0.88 at 1e-4;
/// docs/realm-ablation.md).
const PRETRAIN_STEPS: u64 = 100;
const PRETRAIN_LR: f64 = 1e-3;

/// The from-scratch model: BERT's layout at a size a 2-core CPU trains in minutes (head dim 64,
/// which the fused attention supports).
pub fn scratch_config(vocab_size: usize) -> BertConfig {
    let mut c = BertConfig::new(128, 2, 2);
    c.intermediate_size = 512;
    c.max_position_embeddings = 320;
    c.vocab_size = vocab_size;
    c
}

/// One stage's wall time.
#[derive(Clone, Debug, Serialize)]
pub struct StageTime {
    /// The stage's name in `metrics.jsonl` and `summary.json` (`ict`, `pretrain`, ...).
    pub stage: &'static str,
    /// What it does, for the printed table.
    pub label: &'static str,
    /// Wall-clock seconds the stage took.
    pub seconds: f64,
}

/// One changed fact of the knowledge update and the question about it.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedFact {
    /// The dev question about the fact.
    pub question: String,
    /// The title of the document changed.
    pub document: String,
    /// The gold answer replaced in the document's text.
    pub old_fact: String,
    /// Its replacement: another question's answer of the same relation.
    pub new_fact: String,
    /// The model's answer before the change (right, by the selection rule).
    pub answer_before: String,
    /// The model's answer after the index was rebuilt over the changed text.
    pub answer_after: String,
}

/// The knowledge update: facts changed in a copy of the corpus (one document each), the index
/// rebuilt once, the same model asked again.
#[derive(Clone, Debug, Serialize)]
pub struct KnowledgeUpdate {
    /// The changed facts, at most [`UPDATES`].
    pub facts: Vec<ChangedFact>,
    /// How many of the questions are now answered with the new fact.
    pub answered_new: usize,
    /// How many still get the old fact (from the model's weights: the new text no longer says it).
    pub answered_old: usize,
    /// `answered_new / facts.len()`; None when no fact could be changed.
    pub rate: Option<f64>,
    /// What limits the number of facts: the dev questions examined and why the others were not
    /// used.
    pub selection: UpdateSelection,
    /// Seconds to rebuild the index over the changed corpus (None: nothing changed).
    pub index_rebuild_s: Option<f64>,
}

/// How the knowledge update chose its facts: a fact can be changed only where the model answers
/// its question right from the fact's own document and no other block it reads states the answer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpdateSelection {
    /// Dev questions asked (in file order, until [`UPDATES`] facts were found).
    pub examined: usize,
    /// Answered wrong before any change.
    pub answered_wrong: usize,
    /// Answered right, but read from another document than the question's own.
    pub other_document: usize,
    /// Another block the model reads states the answer too.
    pub stated_elsewhere: usize,
    /// No other answer of the same relation, or the document does not contain the answer text.
    pub no_replacement: usize,
    /// A second question about a document already changed.
    pub same_document: usize,
}

/// One of the demo's answered questions: the first dev questions, with their gold answers.
#[derive(Clone, Debug, Serialize)]
pub struct DemoAnswer {
    /// The model's answer and evidence.
    #[serde(flatten)]
    pub answer: Answer,
    /// The gold answers of the dev question.
    pub gold: Vec<String>,
    /// Whether the answer matches one of them (exact match after SQuAD normalisation).
    pub correct: bool,
}

/// `summary.json`: the final table.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    /// The device that ran it (`cpu`, `emulate`, `cuda:0`).
    pub device: String,
    /// The `--init` folder, or "a small BERT from scratch".
    pub init: String,
    /// Held-out (dev) questions evaluated.
    pub questions: usize,
    /// Exact match of the masked-LM answers over retrieved documents (REALM's marginal).
    pub em_retrieval: Option<f64>,
    /// The same model with the null document only (retrieval switched off).
    pub em_null_doc: Option<f64>,
    /// Exact match of the fine-tuned reader (open-QA, as ORQA/REALM answer).
    pub em_reader: Option<f64>,
    /// Fraction of the questions with an answer in the top 5 retrieved blocks.
    pub recall_at_5: Option<f64>,
    /// Zero-shot retrieval recall@5 of the dev questions by the ICT-trained retriever (over
    /// the corpus indexed by its document tower).
    pub recall_at_5_ict: Option<f64>,
    /// The same after REALM pre-training (the index rebuilt by its final document tower).
    pub recall_at_5_pretrained: Option<f64>,
    /// The same after open-QA fine-tuning (over its fixed index, which the later stages keep).
    pub recall_at_5_finetuned: Option<f64>,
    /// Mean retrieval utility over the cloze questions, in nats (see [`crate::eval::EvalReport`]).
    pub retrieval_utility: Option<f64>,
    /// Seconds per stage, by stage name.
    pub seconds: BTreeMap<&'static str, f64>,
    /// The same, in the order the stages ran.
    #[serde(skip)]
    pub stages: Vec<StageTime>,
    /// Wall-clock seconds of the whole demo.
    pub total_seconds: f64,
    /// The first three dev questions, answered (right or wrong).
    pub answers: Vec<DemoAnswer>,
    /// The knowledge update's outcome.
    pub knowledge_update: KnowledgeUpdate,
}

/// A stage's loop: warm-up over the first tenth (the default's floor of 100 steps would be
/// most of a demo stage).
fn demo_loop(steps: u64, batch: usize, lr: f64, seed: u64) -> LoopConfig {
    let mut l = LoopConfig::new(steps, batch, lr);
    l.warmup = Some((steps / 10).max(1));
    l.seed = seed;
    l
}

fn steps(base: u64, scale: f64) -> u64 {
    ((base as f64 * scale).round() as u64).max(2)
}

struct Clock {
    start: Instant,
    lap: Instant,
    times: Vec<StageTime>,
}

impl Clock {
    fn lap(&mut self, stage: &'static str, label: &'static str) {
        self.times.push(StageTime {
            stage,
            label,
            seconds: self.lap.elapsed().as_secs_f64(),
        });
        self.lap = Instant::now();
    }
}

/// The largest `--scale` (a thousand times the default run is days on a CPU).
pub const MAX_SCALE: f64 = 1000.0;

impl DemoConfig {
    /// Checks every argument without writing anything: the scale, and that `--init` is a BERT
    /// folder (its configuration and tokenizer load), with errors naming the argument as given.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale <= MAX_SCALE) {
            return Err(Error::bad_input(
                "demo",
                "scale",
                format!(
                    "--scale {}: must be a number above 0 and at most {MAX_SCALE}",
                    self.scale
                ),
            ));
        }
        if let Some(dir) = &self.init {
            let not_bert = |e: Error| {
                Error::file(
                    dir,
                    format!("--init: not a BERT model folder (config.json and a tokenizer): {e}"),
                )
            };
            if !dir.is_dir() {
                return Err(Error::file(dir, "--init: no such folder"));
            }
            let config = BertConfig::from_file(dir.join("config.json")).map_err(not_bert)?;
            BertTokenizer::from_dir(dir)
                .and_then(|t| t.check_vocab(&config))
                .map_err(not_bert)?;
        }
        Ok(())
    }
}

/// Runs every stage; writes `summary.json` and returns it.
/// The run folder is a new or empty one, or a previous demo's (see [`crate::demo_dir`]):
/// every argument and the folder are checked before anything is written or removed.
pub fn run_demo(cfg: &DemoConfig, device: &ComputeDevice) -> Result<DemoSummary> {
    cfg.validate()?;
    crate::demo_dir::check(&cfg.out)?;
    let mut out_dir = crate::demo_dir::DemoDir::prepare(&cfg.out)?;
    let mut clock = Clock {
        start: Instant::now(),
        lap: Instant::now(),
        times: Vec::new(),
    };
    let files = write_demo_files(cfg.out.join("data"))?;
    let init = match &cfg.init {
        Some(dir) => ModelInit::Origin(Origin::Bert { dir: dir.clone() }),
        None => ModelInit::Origin(Origin::Scratch {
            config: scratch_config(BertTokenizer::from_vocab(&files.vocab, true)?.vocab_size()),
            vocab: files.vocab.clone(),
            lowercase: true,
        }),
    };
    let mut opts = RunOptions::new(device.clone());
    opts.quiet = cfg.quiet;
    clock.lap("data", "data + tokenizer");

    let ict_dir = cfg.out.join("ict");
    let mut ict = IctConfig::new(init, files.docs.clone());
    ict.train = demo_loop(steps(300, cfg.scale), 64, 1e-3, cfg.seed);
    if cfg.init.is_none() {
        // The untrained [CLS] pooler learns too slowly for a demo (docs/realm.md).
        ict.retriever.pooling = TowerPooling::Mean;
    }
    (ict.block_len, ict.query_len, ict.doc_len) = (BLOCK_LEN, QUERY_LEN, DOC_LEN);
    ict.heldout = 200;
    ict.eval_pool = 2000;
    run_ict(&ict, &ict_dir, &opts)?;
    clock.lap("ict", "ICT warm start");
    let recall_ict = question_recall(&ict_dir, Stage::Ict, true, &files, cfg, device)?;
    clock.lap("recall_ict", "recall of the dev questions after ICT");

    // REALM pre-training on fact statements, the training questions' cloze forms (the answer
    // masked): the retriever learns from the masked-LM's marginal alone, with no retrieval label.
    // On the corpus's own sentences it learns nothing useful at this size, and loses recall
    // (docs/realm-ablation.md). Each refresh is swapped in at a fixed step, so that a run does
    // not depend on the machine's load.
    let pre_dir = cfg.out.join("pretrain");
    let mut pre = PretrainConfig::new(checkpoint_of(&ict_dir), files.docs.clone());
    pre.cloze_questions = Some(files.train.clone());
    pre.train = demo_loop(steps(PRETRAIN_STEPS, cfg.scale), 8, PRETRAIN_LR, cfg.seed);
    (pre.block_len, pre.query_len, pre.doc_len) = (BLOCK_LEN, QUERY_LEN, DOC_LEN);
    (pre.top_k, pre.copy_head) = (8, true);
    pre.refresh.every = steps(10, cfg.scale);
    pre.refresh.swap_after = Some((pre.refresh.every / 2).max(1));
    run_pretrain(&pre, &pre_dir, &opts)?;
    clock.lap(
        "pretrain",
        "REALM pre-training on fact statements (index refreshes)",
    );
    let recall_pre = question_recall(&pre_dir, Stage::Pretrain, true, &files, cfg, device)?;
    clock.lap(
        "recall_pretrain",
        "recall of the dev questions after pre-training",
    );

    let ft_dir = cfg.out.join("finetune");
    let mut ft = FinetuneConfig::new(checkpoint_of(&pre_dir), files.train.clone());
    ft.train = demo_loop(steps(600, cfg.scale), 8, 3e-4, cfg.seed);
    (ft.block_len, ft.query_len, ft.doc_len) = (BLOCK_LEN, QUERY_LEN, DOC_LEN);
    (ft.retriever_beam, ft.reader_beam) = (50, 3);
    run_finetune(&ft, &ft_dir, &opts)?;
    clock.lap("finetune", "open-QA fine-tuning");
    let recall_ft = question_recall(&ft_dir, Stage::Finetune, false, &files, cfg, device)?;
    clock.lap(
        "recall_finetune",
        "recall of the dev questions after fine-tuning",
    );

    // The fine-tuned checkpoint is the one evaluated and asked: its masked-LM reads from
    // pre-training, and a further cloze stage (300 steps on the same forms over the fine-tuned
    // retriever, frozen) lowered its exact match (45.2% → 32.5%; README).
    let checkpoint = ft_dir.join("checkpoint");
    let mut eval = EvalConfig::new(&checkpoint, &files.dev);
    eval.top_k = 5;
    eval.query_len = QUERY_LEN;
    eval.doc_len = BLOCK_LEN;
    eval.quiet = cfg.quiet;
    let report = evaluate(&eval, device)?;
    crate::train::RunDir::start(cfg.out.join("eval"), &eval, false)?;
    crate::eval::log_metrics(&cfg.out.join("eval"), &report)?;
    clock.lap("eval", "evaluation");

    let _exec = device.enter()?;
    let asker = Asker::load(&checkpoint, None, &device.device)?;
    let dev_questions = parse_demo_questions(&files.dev, DEV)?;
    // The first three dev questions: a fixed rule, right or wrong.
    let answers = dev_questions
        .iter()
        .take(3)
        .map(|q| {
            let answer = asker.ask(&q.question)?;
            let correct = exact_match(&answer.answer, &golds(q));
            Ok(DemoAnswer {
                answer,
                gold: q.answers.clone(),
                correct,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    clock.lap("answering", "answering");

    let knowledge_update =
        knowledge_update(&asker, &checkpoint, &files, &dev_questions, cfg, device)?;
    clock.lap("update", "knowledge update");

    let recalls = [recall_ict, recall_pre, recall_ft];
    let summary = summarize(
        cfg,
        device,
        &report,
        &recalls,
        clock,
        answers,
        knowledge_update,
    );
    crate::io::write_json_atomic(cfg.out.join("summary.json"), &summary)?;
    crate::report::write_report(&cfg.out)?;
    out_dir.finish()?;
    Ok(summary)
}

fn checkpoint_of(stage_dir: &Path) -> ModelInit {
    ModelInit::Checkpoint {
        dir: stage_dir.join("checkpoint"),
    }
}

/// Zero-shot retrieval of the dev questions by a stage's checkpoint, logged into the stage's
/// metrics (`question_recall_at_*`, plotted through the stages by `realm report`): over the
/// corpus indexed by its final document tower when `fresh_index` (ICT has no index, and
/// pre-training's may be a refresh behind), else over the index it holds (fine-tuning's, fixed).
fn question_recall(
    stage_dir: &Path,
    stage: Stage,
    fresh_index: bool,
    files: &DemoFiles,
    cfg: &DemoConfig,
    device: &ComputeDevice,
) -> Result<EvalReport> {
    let checkpoint = stage_dir.join("checkpoint");
    let mut eval = EvalConfig::new(&checkpoint, &files.dev);
    if fresh_index {
        let model = RetrieverModel::load(&checkpoint, &device.device)?;
        let opts = IndexCorpus {
            max_block_tokens: BLOCK_LEN,
            skip_bad_lines: false,
            embed: EmbedBlocks {
                batch: 64,
                max_len: DOC_LEN,
                progress: (!cfg.quiet).then(|| format!("{} index", stage.name())),
            },
            step: 0,
        };
        let (index, _) = index_corpus(&model, &files.docs, &opts, &device.device)?;
        let dir = stage_dir.join("dev-index");
        index.save(&dir)?;
        eval.index = Some(dir);
    }
    eval.top_k = 5;
    eval.query_len = QUERY_LEN;
    eval.doc_len = BLOCK_LEN;
    eval.quiet = cfg.quiet;
    let report = evaluate(&eval, device)?;
    crate::eval::log_question_recall(stage_dir, stage, &report)?;
    Ok(report)
}

fn summarize(
    cfg: &DemoConfig,
    device: &ComputeDevice,
    report: &EvalReport,
    recalls: &[EvalReport; 3],
    clock: Clock,
    answers: Vec<DemoAnswer>,
    knowledge_update: KnowledgeUpdate,
) -> DemoSummary {
    DemoSummary {
        device: device.to_string(),
        init: cfg
            .init
            .as_ref()
            .map_or("a small BERT from scratch".into(), |d| {
                d.display().to_string()
            }),
        questions: report.questions,
        em_retrieval: report.em_cloze_retrieval,
        em_null_doc: report.em_cloze_null_doc,
        em_reader: report.em_reader,
        recall_at_5: report.recall_at_5,
        recall_at_5_ict: recalls[0].recall_at_5,
        recall_at_5_pretrained: recalls[1].recall_at_5,
        recall_at_5_finetuned: recalls[2].recall_at_5,
        retrieval_utility: report.retrieval_utility,
        total_seconds: clock.start.elapsed().as_secs_f64(),
        seconds: clock.times.iter().map(|t| (t.stage, t.seconds)).collect(),
        stages: clock.times,
        answers,
        knowledge_update,
    }
}

/// Facts the knowledge update changes (fewer when fewer questions qualify).
pub const UPDATES: usize = 25;

fn golds(q: &DemoQuestion) -> Vec<Gold> {
    q.answers
        .iter()
        .map(|a| Gold {
            text: a.clone(),
            char_start: None,
        })
        .collect()
}

/// REALM's promise: change facts in the corpus, rebuild only the index, and the same model
/// answers from the new text. The questions are the first dev questions (one per document) the
/// model answers correctly from their own document while no other block it reads states the
/// answer (editing one document cannot change a fact stated elsewhere); each fact is replaced by
/// another answer of the same relation.
fn knowledge_update(
    asker: &Asker,
    checkpoint: &Path,
    files: &DemoFiles,
    questions: &[DemoQuestion],
    cfg: &DemoConfig,
    device: &ComputeDevice,
) -> Result<KnowledgeUpdate> {
    let text = std::fs::read_to_string(&files.docs).map_err(|e| Error::file(&files.docs, e))?;
    let mut docs: Vec<serde_json::Value> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Parse {
                path: files.docs.clone(),
                line: i + 1,
                msg: e.to_string(),
            })
        })
        .collect::<Result<_>>()?;
    let id_of = |doc: &serde_json::Value| match &doc["id"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let position: HashMap<String, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (id_of(d), i))
        .collect();
    let text_of = |docs: &[serde_json::Value], id: &str| -> String {
        position
            .get(id)
            .and_then(|&i| docs[i]["text"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut changed: Vec<(&DemoQuestion, ChangedFact)> = Vec::new();
    let mut selection = UpdateSelection::default();
    for q in questions {
        if changed.len() == UPDATES {
            break;
        }
        selection.examined += 1;
        if changed.iter().any(|(c, _)| c.doc_id == q.doc_id) {
            selection.same_document += 1;
            continue;
        }
        let doc_id = q.doc_id.to_string();
        let answer = asker.ask(&q.question)?;
        if !exact_match(&answer.answer, &golds(q)) {
            selection.answered_wrong += 1;
            continue;
        }
        let own = answer.evidence.get(answer.from).map(|e| e.doc_id.as_str());
        if own != Some(doc_id.as_str()) {
            selection.other_document += 1;
            continue;
        }
        let elsewhere = answer.evidence.iter().enumerate().any(|(i, e)| {
            i != answer.from && contains_answer(&text_of(&docs, &e.doc_id), &q.answers)
        });
        if elsewhere {
            selection.stated_elsewhere += 1;
            continue;
        }
        let new_fact = questions
            .iter()
            .filter(|o| o.relation == q.relation)
            .flat_map(|o| o.answers.iter())
            .find(|a| {
                !q.answers
                    .iter()
                    .any(|g| contains_answer(a, std::slice::from_ref(g)))
            });
        let old_fact = &q.answers[0];
        let body = match (new_fact, position.get(&doc_id)) {
            (Some(new_fact), Some(&at)) => docs[at]["text"]
                .as_str()
                .filter(|t| t.contains(old_fact.as_str()))
                .map(|t| (at, new_fact, t.replace(old_fact.as_str(), new_fact))),
            _ => None,
        };
        let Some((at, new_fact, body)) = body else {
            selection.no_replacement += 1;
            continue;
        };
        docs[at]["text"] = body.into();
        changed.push((
            q,
            ChangedFact {
                question: q.question.clone(),
                document: docs[at]["title"].as_str().unwrap_or("").to_string(),
                old_fact: old_fact.clone(),
                new_fact: new_fact.clone(),
                answer_before: answer.answer,
                answer_after: String::new(),
            },
        ));
    }
    if changed.is_empty() {
        return Ok(KnowledgeUpdate {
            facts: Vec::new(),
            answered_new: 0,
            answered_old: 0,
            rate: None,
            selection,
            index_rebuild_s: None,
        });
    }
    let dir = cfg.out.join("update");
    let corpus = dir.join("docs.jsonl");
    let lines: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    crate::io::write_atomic(&corpus, |w| {
        w.write_all((lines.join("\n") + "\n").as_bytes())
    })?;
    let start = Instant::now();
    let model = RetrieverModel::load(checkpoint, &device.device)?;
    let opts = IndexCorpus {
        max_block_tokens: BLOCK_LEN,
        skip_bad_lines: false,
        embed: EmbedBlocks {
            batch: 64,
            max_len: DOC_LEN,
            progress: (!cfg.quiet).then(|| "re-index".to_string()),
        },
        step: 0,
    };
    let (index, _) = index_corpus(&model, &corpus, &opts, &device.device)?;
    index.save(dir.join("index"))?;
    let index_rebuild_s = start.elapsed().as_secs_f64();
    let updated = Asker::load(checkpoint, Some(&dir.join("index")), &device.device)?;
    let mut facts = Vec::with_capacity(changed.len());
    let (mut answered_new, mut answered_old) = (0, 0);
    for (q, mut fact) in changed {
        fact.answer_after = updated.ask(&q.question)?.answer;
        let gold = |text: &str| Gold {
            text: text.to_string(),
            char_start: None,
        };
        answered_new += usize::from(exact_match(&fact.answer_after, &[gold(&fact.new_fact)]));
        answered_old += usize::from(exact_match(&fact.answer_after, &golds(q)));
        facts.push(fact);
    }
    Ok(KnowledgeUpdate {
        rate: Some(answered_new as f64 / facts.len() as f64),
        facts,
        answered_new,
        answered_old,
        selection,
        index_rebuild_s: Some(index_rebuild_s),
    })
}

/// The final table, as printed.
pub fn render(summary: &DemoSummary) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let mut s = String::new();
    s += &format!(
        "\nREALM demo: {} held-out questions, {} on {}\n\n",
        summary.questions, summary.init, summary.device
    );
    s += "| held-out questions | exact match | recall@5 |\n|---|---:|---:|\n";
    s += &format!(
        "| with retrieval (masked-LM over the top 5 + null) | {} | {} |\n",
        pct(summary.em_retrieval),
        pct(summary.recall_at_5)
    );
    s += &format!(
        "| null document only (retrieval off) | {} | - |\n",
        pct(summary.em_null_doc)
    );
    s += &format!(
        "| fine-tuned reader over the top 5 | {} | - |\n\n",
        pct(summary.em_reader)
    );
    s += &format!(
        "Retrieval recall@5 of the held-out questions after each stage: ICT {}, pre-training {}, \
         fine-tuning {}, final {}.\n\n",
        pct(summary.recall_at_5_ict),
        pct(summary.recall_at_5_pretrained),
        pct(summary.recall_at_5_finetuned),
        pct(summary.recall_at_5)
    );
    s += "| stage | seconds |\n|---|---:|\n";
    for t in &summary.stages {
        s += &format!("| {} | {:.1} |\n", t.label, t.seconds);
    }
    s += &format!("| total | {:.1} |\n", summary.total_seconds);
    for DemoAnswer {
        answer: a,
        gold,
        correct,
    } in &summary.answers
    {
        s += &format!(
            "\nQ: {}\nA: {} (score {:.2}): {} (gold: {})\n",
            a.question,
            a.answer,
            a.score,
            if *correct { "right" } else { "wrong" },
            gold.join(" / ")
        );
        for (i, e) in a.evidence.iter().enumerate().take(3) {
            s += &format!(
                "   {} p={:.2} {}: {}\n",
                if i == a.from { "*" } else { " " },
                e.p,
                e.title,
                e.sentence
            );
        }
    }
    let u = &summary.knowledge_update;
    let sel = &u.selection;
    match (u.rate, u.index_rebuild_s) {
        (Some(rate), Some(rebuild_s)) => {
            s += &format!(
                "\nKnowledge update: {} facts changed in a copy of the corpus (one document each), \
                 index rebuilt in {rebuild_s:.1} s, model unchanged; {} of {} questions ({:.0}%) \
                 now get the new fact, {} still the old one.\n",
                u.facts.len(),
                u.answered_new,
                u.facts.len(),
                100.0 * rate,
                u.answered_old,
            );
        }
        _ => s += "\nKnowledge update: skipped, no fact could be changed.\n",
    }
    s += &format!(
        "Facts that could be changed: of {} dev questions asked, {} were answered wrong, {} from \
         another document, {} had the answer in another block read too, {} had no replacement \
         answer, {} asked about a document already changed.\n",
        sel.examined,
        sel.answered_wrong,
        sel.other_document,
        sel.stated_elsewhere,
        sel.no_replacement,
        sel.same_document
    );
    for f in &u.facts {
        s += &format!(
            "  \"{}\": {} -> {}\n  Q: {}\n     before: {}\n     after:  {}\n",
            f.document, f.old_fact, f.new_fact, f.question, f.answer_before, f.answer_after
        );
    }
    s
}
