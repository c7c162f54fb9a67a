//! `realm experiment ablation` at its tiny size: every arm of every seed runs, is evaluated and
//! lands in the results files, which `realm report` renders. Measures nothing about REALM (a few
//! steps on 24 documents); docs/realm-ablation.md has the CPU-size results.

mod common;

use realm::device::ComputeDevice;
use realm::experiment::ablation::{run_ablation, AblationConfig, Arm, PretrainText, Size, Towers};

#[test]
fn tiny_ablation_runs_every_arm_and_writes_its_results() {
    let out = common::temp_dir("ablation").join("out");
    let cfg = AblationConfig {
        out: out.clone(),
        size: Size::Tiny,
        scale: 1.0,
        seeds: vec![0, 1],
        corpus: None,
        questions: None,
        text: PretrainText::Corpus,
        init: None,
        towers: Towers::default(),
        quiet: true,
    };
    let s = run_ablation(&cfg, &ComputeDevice::cpu()).unwrap();

    assert_eq!(s.runs.len(), 8, "4 arms x 2 seeds");
    assert_eq!(s.eval_questions, 6);
    assert!(s.blocks >= 6 && s.blocks <= 40, "{} blocks", s.blocks);
    for r in &s.runs {
        assert!((0.0..=1.0).contains(&r.recall_at_1) && r.recall_at_1 <= r.recall_at_k);
        // The ICT checkpoint has no masked-LM; every pre-trained arm has one and trained it.
        let pretrained = r.arm != Arm::Ict;
        assert_eq!(r.em_cloze_retrieval.is_some(), pretrained, "{:?}", r.arm);
        assert_eq!(r.pretrain_last_loss.is_some(), pretrained, "{:?}", r.arm);
    }
    // Arm (d) never refreshes within 2 steps (every 30); (b) refreshes every step.
    let refreshes = |arm| s.runs.iter().find(|r| r.arm == arm).unwrap().refreshes;
    assert_eq!(refreshes(Arm::Stale), Some(0));
    assert!(refreshes(Arm::Salient).unwrap() >= 1);
    for a in &s.arms {
        let r5 = a.recall_at_5.unwrap();
        assert!(r5.min <= r5.median && r5.median <= r5.max, "{:?}", a.arm);
    }
    // Two seeds give no verdict, whatever the gain: their spread is no measure of seed noise.
    let verdict = s.recall_at_5_b_vs_a.as_ref().unwrap();
    assert_eq!((verdict.seeds, verdict.beats), (2, false));
    assert!(realm::experiment::ablation::render(&s).contains("too few"));
    assert!(s.answerable.spans > 0 && s.answerable.in_other_document <= s.answerable.spans);

    for f in [
        "summary.json",
        "ablation.csv",
        "metrics.jsonl",
        "seed-1/stale/checkpoint",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "header + 8 runs");
    let report = realm::report::write_report(&out).unwrap();
    let md = std::fs::read_to_string(&report.readme).unwrap();
    assert!(md.contains("salient"), "the report names the arms:\n{md}");
    assert!(!report.images.is_empty());

    // A second run into the same folder is refused before anything is written.
    let err = run_ablation(&cfg, &ComputeDevice::cpu()).unwrap_err();
    assert!(format!("{err}").contains("new or empty"), "{err}");

    // Separate towers, the document tower kept as ICT left it: no arm refreshes its index.
    let untied = AblationConfig {
        out: out.with_file_name("untied"),
        seeds: vec![0],
        towers: Towers {
            separate: true,
            query_lr_scale: 1.0,
            doc_lr_scale: 0.0,
        },
        ..cfg.clone()
    };
    let s = run_ablation(&untied, &ComputeDevice::cpu()).unwrap();
    assert_eq!(s.towers, untied.towers);
    for r in s.runs.iter().filter(|r| r.arm != Arm::Ict) {
        assert_eq!(r.refreshes, Some(0), "{:?}", r.arm);
    }
    // Shared towers take one rate: refused before anything runs.
    let two_rates = AblationConfig {
        out: out.with_file_name("two-rates"),
        towers: Towers {
            separate: false,
            ..untied.towers
        },
        ..cfg.clone()
    };
    let err = run_ablation(&two_rates, &ComputeDevice::cpu()).unwrap_err();
    assert!(format!("{err}").contains("doc_lr_scale"), "{err}");
    assert!(!out.with_file_name("two-rates").exists());

    // Fact statements (the demo's training questions' cloze forms): every arm runs, masking
    // one answer span per statement, and nothing is excluded from their retrieval.
    let facts = AblationConfig {
        out: out.with_file_name("facts"),
        seeds: vec![0],
        text: PretrainText::Facts(None),
        ..cfg.clone()
    };
    let s = run_ablation(&facts, &ComputeDevice::cpu()).unwrap();
    assert_eq!(s.runs.len(), 4);
    assert_eq!(s.pretrain_text, "facts");
    assert!(s.examples.ends_with("train.jsonl"), "{}", s.examples);
    let train = std::fs::read_to_string(out.join("data/train.jsonl")).unwrap();
    assert_eq!(s.answerable.texts, train.lines().count());
    assert_eq!(
        s.answerable.spans, s.answerable.texts,
        "one answer span each"
    );
    assert_eq!(s.answerable.texts_without_span, 0);

    // A held-out question among the facts is refused: no arm trains on one.
    let leak = out.with_file_name("leak.jsonl");
    let held_out = std::fs::read_to_string(out.join("data/questions.jsonl")).unwrap();
    let first = held_out.lines().nth(3).unwrap();
    let lines = format!("{}\n{first}\n", train.lines().next().unwrap());
    std::fs::write(&leak, lines).unwrap();
    let leaking = AblationConfig {
        out: out.with_file_name("leaking"),
        text: PretrainText::Facts(Some(leak.clone())),
        ..facts
    };
    let err = format!(
        "{:#}",
        run_ablation(&leaking, &ComputeDevice::cpu()).unwrap_err()
    );
    assert!(
        err.contains("held-out") && err.contains("leak.jsonl"),
        "{err}"
    );
}

/// Another corpus than the demo's (here the demo's documents in DPR's TSV with a document of its
/// own added, as wiki-vital holds the demo's 2,000 among its 10,033) is evaluated on the demo's
/// held-out questions when it holds their documents, and pre-trained on the demo's training
/// statements, from scratch with the demo's vocabulary or from a BERT folder. What it cannot use
/// is refused before anything runs.
#[test]
fn another_corpus_holding_the_demo_documents_uses_the_demo_questions() {
    let root = common::temp_dir("another-corpus");
    let demo = realm::data::demo::write_demo_files(root.join("demo")).unwrap();
    let docs: Vec<serde_json::Value> = std::fs::read_to_string(&demo.docs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // DPR's TSV has no escape for a tab or a line break: the few texts with one lose it.
    let tsv_line = |id: &str, title: &str, text: &str| {
        let text = text.replace(['\t', '\n'], " ").replace('"', "\"\"");
        format!("{id}\t\"{text}\"\t{title}\n")
    };
    let extra = tsv_line(
        "990001",
        "Vesper Lake",
        "Vesper Lake is a lake. Its water is cold.",
    );
    let field = |d: &serde_json::Value, k: &str| match &d[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let lines: String = docs
        .iter()
        .map(|d| tsv_line(&field(d, "id"), &field(d, "title"), &field(d, "text")))
        .collect();
    let corpus = root.join("wiki.tsv");
    std::fs::write(&corpus, format!("{lines}{extra}")).unwrap();
    let cfg = AblationConfig {
        out: root.join("out"),
        size: Size::Tiny,
        scale: 1.0,
        seeds: vec![0],
        corpus: Some(corpus.clone()),
        questions: None,
        text: PretrainText::Facts(None),
        init: None,
        towers: Towers::default(),
        quiet: true,
    };
    let s = run_ablation(&cfg, &ComputeDevice::cpu()).unwrap();
    assert_eq!(s.runs.len(), 4);
    assert_eq!(
        s.eval_questions, 6,
        "the first 6 of the demo's dev questions"
    );
    assert!(s.examples.ends_with("train.jsonl"), "{}", s.examples);

    let init = common::random_bert_folder("another-corpus-bert", common::tiny_config(0, 512));
    let from_bert = AblationConfig {
        out: root.join("from-bert"),
        init: Some(init.clone()),
        ..cfg.clone()
    };
    let s = run_ablation(&from_bert, &ComputeDevice::cpu()).unwrap();
    assert_eq!((s.runs.len(), s.eval_questions), (4, 6));
    assert_eq!(s.init, init.display().to_string());

    let refused = |name: &str, change: &dyn Fn(&mut AblationConfig)| -> String {
        let mut c = cfg.clone();
        c.out = root.join(name);
        change(&mut c);
        let err = format!("{:#}", run_ablation(&c, &ComputeDevice::cpu()).unwrap_err());
        assert!(
            !c.out.join("seed-0").exists(),
            "{name}: nothing runs: {err}"
        );
        err
    };
    // A corpus without the documents of the demo's held-out questions.
    let without = root.join("without.tsv");
    std::fs::write(
        &without,
        format!("{}\n{extra}", lines.lines().next().unwrap()),
    )
    .unwrap();
    let err = refused("without", &|c| c.corpus = Some(without.clone()));
    assert!(
        err.contains("held-out questions") && err.contains("without.tsv"),
        "{err}"
    );
    let err = refused("questions-no-corpus", &|c| {
        (c.corpus, c.questions) = (None, Some(demo.dev.clone()));
        c.text = PretrainText::Corpus;
    });
    assert!(err.contains("--corpus"), "{err}");
    let err = refused("own-questions-demo-facts", &|c| {
        c.questions = Some(demo.dev.clone())
    });
    assert!(err.contains("--facts FILE"), "{err}");
}
