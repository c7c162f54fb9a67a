//! Corpus and QA readers on the shared real data (skipped with a reason when ../shared is absent)
//! and on malformed files.

mod common;

use realm::data::{read_qa, CorpusReader};
use std::path::PathBuf;

fn shared(rel: &str) -> Option<PathBuf> {
    common::shared_with(&[rel]).map(|d| d.join(rel))
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realm-data-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn reads_the_whole_wiki_vital_corpus() {
    let Some(path) = shared("data/wiki-vital/docs.jsonl") else {
        return;
    };
    let mut reader = CorpusReader::open(&path, false).unwrap();
    let docs: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(docs.len(), 10_033);
    assert_eq!(reader.skipped(), 0);
    assert_eq!((docs[0].id.as_str(), docs[0].title.as_str()), ("0", "0"));
    assert!(docs.iter().all(|d| !d.text.is_empty()));
}

#[test]
fn reads_vital_facts_and_squad_shifts() {
    if let Some(path) = shared("data/qa/vital-facts.jsonl") {
        let qa = read_qa(path).unwrap();
        assert_eq!(qa.len(), 1_370);
        assert!(qa
            .iter()
            .all(|q| !q.answers.is_empty() && q.context.is_none()));
    }
    if let Some(path) = shared("data/qa/squadshifts-new_wiki.json") {
        let qa = read_qa(path).unwrap();
        assert!(qa.len() > 1000, "{} questions", qa.len());
        // Every gold span was located in its paragraph while loading.
        for q in &qa {
            let context: Vec<char> = q.context.as_ref().unwrap().chars().collect();
            for a in &q.answers {
                let start = a.char_start.unwrap();
                let span: String = context[start..start + a.text.chars().count()]
                    .iter()
                    .collect();
                assert_eq!(span, a.text);
            }
        }
    }
}

#[test]
fn malformed_corpus_lines_are_errors_with_file_and_line_or_skipped_and_counted() {
    let p = temp_file(
        "bad.jsonl",
        "{\"id\": 1, \"title\": \"A\", \"text\": \"a\"}\n\n{\"id\": 2, \"title\": \"B\"}\nnot json\n{\"id\": \"x\", \"text\": \"c\"}\n",
    );
    let err = CorpusReader::open(&p, false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.jsonl:3:"), "{err}");
    let mut reader = CorpusReader::open(&p, true).unwrap();
    let ids: Vec<String> = reader.by_ref().map(|d| d.unwrap().id).collect();
    assert_eq!(ids, ["1", "x"]);
    assert_eq!(reader.skipped(), 2);

    let tsv = temp_file(
        "psgs.tsv",
        "id\ttext\ttitle\n1\t\"He said \"\"hi\"\"\"\tGreeting\n2\tonly two\n",
    );
    let mut reader = CorpusReader::open(&tsv, false).unwrap();
    let first = reader.next().unwrap().unwrap();
    assert_eq!(
        (first.text.as_str(), first.title.as_str()),
        ("He said \"hi\"", "Greeting")
    );
    let err = reader.next().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("psgs.tsv:3:") && err.contains("3 tab-separated"),
        "{err}"
    );
}

/// A SQuAD file is a corpus of its paragraphs, pretty-printed or on one line; a `.json` file of
/// JSON lines stays JSON lines; a `.json` file that is neither says so.
#[test]
fn squad_paragraphs_are_a_corpus_and_json_lines_may_be_named_json() {
    let squad = r#"{"version": "1", "data": [
      {"title": "Vesper_Lake", "paragraphs": [
        {"context": "Vesper Lake is cold.", "qas": []},
        {"context": "It freezes in May.", "qas": []}]},
      {"title": "Ardent", "paragraphs": [{"context": "Ardent is a ship.", "qas": []}]}]}"#;
    let read = |name: &str, text: &str| -> Vec<(String, String, String)> {
        CorpusReader::open(temp_file(name, text), false)
            .unwrap()
            .map(|d| {
                let d = d.unwrap();
                (d.id, d.title, d.text)
            })
            .collect()
    };
    let docs = read("pretty.json", squad);
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        docs,
        [
            t("0:0", "Vesper Lake", "Vesper Lake is cold."),
            t("0:1", "Vesper Lake", "It freezes in May."),
            t("1:0", "Ardent", "Ardent is a ship."),
        ]
    );
    assert_eq!(read("one-line.json", &squad.replace('\n', " ")), docs);
    assert_eq!(
        read(
            "lines.json",
            "{\"id\": 4, \"title\": \"T\", \"text\": \"x\"}\n"
        ),
        [t("4", "T", "x")]
    );
    let err = CorpusReader::open(temp_file("neither.json", "{\"id\": 4,\n"), false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("neither.json") && err.contains("neither JSON lines"),
        "{err}"
    );
    if let Some(path) = shared("data/qa/squadshifts-nyt.json") {
        let docs: Vec<_> = CorpusReader::open(&path, false)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(docs.len(), 2_017, "the NYT file's paragraphs");
    }
}

#[test]
fn missing_files_and_unknown_formats_are_clear_errors() {
    let err = CorpusReader::open("/nonexistent/corpus.jsonl", false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/corpus.jsonl"), "{err}");
    let err = CorpusReader::open(temp_file("c.txt", ""), false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown corpus format"), "{err}");
    let bad_qa = temp_file("q.jsonl", "{\"question\": \"q\", \"answers\": []}\n");
    assert!(read_qa(bad_qa)
        .unwrap_err()
        .to_string()
        .contains("q.jsonl:1:"));
    let bad_span = temp_file(
        "s.json",
        r#"{"data":[{"paragraphs":[{"context":"abc","qas":[{"id":"1","question":"q","answers":[{"text":"d","answer_start":0}]}]}]}]}"#,
    );
    assert!(read_qa(bad_span)
        .unwrap_err()
        .to_string()
        .contains("does not occur"));
}

#[test]
fn salient_spans_cover_most_sentences_of_the_real_corpus() {
    use realm::data::{sentences, RuleTagger, SalientTagger};
    let Some(path) = shared("data/wiki-vital/docs.jsonl") else {
        return;
    };
    let all: Vec<_> = CorpusReader::open(&path, false)
        .unwrap()
        .map(|d| d.unwrap())
        .collect();
    let tagger = RuleTagger::new().with_gazetteer(all.iter().map(|d| d.title.as_str()));
    let docs = &all[..500];
    let (mut total, mut with_span) = (0, 0);
    for d in docs {
        let spans = tagger.tag(&d.text);
        for (s, e) in sentences(&d.text) {
            total += 1;
            let hit = spans.iter().any(|sp| sp.start >= s && sp.end <= e);
            with_span += usize::from(hit);
        }
        for sp in &spans {
            assert!(
                d.text.is_char_boundary(sp.start)
                    && d.text.is_char_boundary(sp.end)
                    && sp.start < sp.end
            );
        }
    }
    let rate = with_span as f64 / total as f64;
    eprintln!(
        "{with_span} of {total} sentences have a salient span ({:.1}%)",
        100.0 * rate
    );
    // Many lead-section sentences name nothing (definitions, general statements): REALM falls
    // back to random masking there. 69.5% when this test was written.
    assert!(
        rate > 0.65,
        "only {:.1}% of sentences have a salient span",
        100.0 * rate
    );
}
