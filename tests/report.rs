//! `realm report` on a synthetic run directory: the plots appear as valid PNGs of the stated size,
//! only for metrics that have data, the summary links them and carries the final numbers, and bad
//! run directories are clear errors.

use realm::report::{plot, write_report};
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realm-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run as training writes it: ICT with held-out recall, pre-training with refreshes (steps
/// counted from 0 again), fine-tuning with EM, one evaluation record; an unknown field too.
fn synthetic_metrics() -> String {
    let mut s = String::new();
    let mut t = 0.0;
    for step in (0..=200).step_by(10) {
        t += 0.5;
        let x = step as f64 / 200.0;
        let _ = write!(
            s,
            r#"{{"stage":"ict","step":{step},"time_s":{t},"loss":{},"lr":1e-4"#,
            3.0 - 2.0 * x
        );
        if step % 50 == 0 {
            let _ = write!(
                s,
                r#","recall_at_1":{},"recall_at_5":{}"#,
                0.1 + 0.4 * x,
                0.3 + 0.5 * x
            );
        }
        s.push_str("}\n");
    }
    for step in (0..=300).step_by(5) {
        t += 0.3;
        let x = step as f64 / 300.0;
        let _ = writeln!(
            s,
            r#"{{"stage":"pretrain","step":{step},"time_s":{t},"loss":{},"lr":{},"retrieval_utility":{},"staleness":{},"tokens_per_s":{},"grad_norm":1.5}}"#,
            6.0 - 3.0 * x + 0.2 * (step as f64).sin(),
            3e-4 * (1.0 - x),
            -0.5 + 1.5 * x,
            step % 50,
            900.0 + 30.0 * (step as f64 / 7.0).cos()
        );
        if step % 50 == 0 && step > 0 {
            let _ = writeln!(
                s,
                r#"{{"stage":"pretrain","step":{step},"time_s":{t},"refresh_s":{}}}"#,
                4.0 + (step as f64 / 100.0)
            );
        }
    }
    for step in (0..=100).step_by(10) {
        t += 0.4;
        let x = step as f64 / 100.0;
        let _ = writeln!(
            s,
            r#"{{"stage":"finetune","step":{step},"time_s":{t},"loss":{},"em":{},"recall_at_5":{}}}"#,
            4.0 - 2.5 * x,
            0.05 + 0.3 * x,
            0.4 + 0.3 * x
        );
    }
    let _ = writeln!(
        s,
        r#"{{"stage":"eval","step":100,"time_s":{},"em":0.37,"recall_at_1":0.55,"recall_at_5":0.72}}"#,
        t + 5.0
    );
    s
}

/// Width and height from a PNG's signature and IHDR chunk, and a full decode with the png crate.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (w, h) = (be(&bytes[16..20]), be(&bytes[20..24]));
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    // Something was drawn: not one flat colour.
    let pixels = &buf[..info.buffer_size()];
    let distinct = pixels
        .chunks(3)
        .map(|p| (p[0], p[1], p[2]))
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert!(distinct > 20, "{}: {distinct} colours", path.display());
    (w, h)
}

#[test]
fn writes_valid_pngs_for_the_metrics_that_have_data_and_a_summary() {
    let dir = temp_dir("full");
    std::fs::write(dir.join("metrics.jsonl"), synthetic_metrics()).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"device":"cpu","corpus":"data/demo/docs.jsonl","train_questions":"data/demo/train.jsonl","pretrain":{"steps":300,"k":8}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("summary.json"),
        r#"{"em_retrieval":0.37,"em_null_doc":0.08,"recall_at_5":0.72,"seconds":{"ict":10.5,"pretrain":18.3,"finetune":4.4,"eval":5.0}}"#,
    )
    .unwrap();
    let report = write_report(&dir).unwrap();
    let names: Vec<String> = report
        .images
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "loss.png",
            "retrieval_utility.png",
            "staleness.png",
            "refresh_time.png",
            "exact_match.png",
            "recall.png",
            "learning_rate.png",
            "throughput.png"
        ]
    );
    for image in &report.images {
        assert_eq!(png_size(image), (plot::WIDTH, plot::HEIGHT));
    }
    let readme = std::fs::read_to_string(&report.readme).unwrap();
    for name in &names {
        assert!(readme.contains(&format!("]({name})")), "no link to {name}");
    }
    for needed in [
        "device: cpu",
        "data/demo/docs.jsonl",
        "| em_retrieval | 0.3700 |",
        "| em_null_doc | 0.08000 |",
        "| pretrain | 67 | 0–300 |",
        "18.3",
        "pretrain.k",
    ] {
        assert!(readme.contains(needed), "{needed:?} missing from\n{readme}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lists_of_records_in_the_summary_are_tables_of_their_own() {
    let dir = temp_dir("records");
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"stage\":\"eval\",\"step\":0,\"time_s\":0.1,\"loss\":5.0}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("summary.json"),
        r#"{"em_retrieval":0.5,
            "answers":[{"question":"Q1 is","answer":"paris","gold":["paris","Paris"],"correct":true,
                        "evidence":[{"title":"a"},{"title":"b"}]},
                       {"question":"Q2 | x","answer":"rome","gold":["oslo"],"correct":false}],
            "knowledge_update":{"answered_new":1,"facts":[{"old_fact":"a","new_fact":"b"}]}}"#,
    )
    .unwrap();
    let readme = std::fs::read_to_string(write_report(&dir).unwrap().readme).unwrap();
    for needed in [
        "| em_retrieval | 0.5000 |",
        "| knowledge_update.answered_new | 1 |",
        "`answers` from `summary.json`:",
        "| answer | correct | evidence | gold | question |",
        "| paris | true | 2 items | paris, Paris | Q1 is |",
        "| rome | false | – | oslo | Q2 \\| x |",
        "`knowledge_update.facts` from `summary.json`:",
        "| new_fact | old_fact |\n|---|---|\n| b | a |",
    ] {
        assert!(readme.contains(needed), "{needed:?} missing from\n{readme}");
    }
    assert!(
        !readme.contains("[{"),
        "a JSON blob in a table cell:\n{readme}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn only_metrics_with_data_are_plotted_and_optional_files_may_be_absent() {
    let dir = temp_dir("loss-only");
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"stage\":\"pretrain\",\"step\":0,\"time_s\":0.1,\"loss\":5.0}\n\n\
         {\"stage\":\"pretrain\",\"step\":1,\"time_s\":0.2,\"loss\":4.0}\n",
    )
    .unwrap();
    let report = write_report(&dir).unwrap();
    assert_eq!(report.images, [dir.join("report/loss.png")]);
    png_size(&report.images[0]);
    let readme = std::fs::read_to_string(&report.readme).unwrap();
    assert!(readme.contains("`summary.json` absent"), "{readme}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stages_in_folders_of_their_own_are_read_in_stage_order() {
    let dir = temp_dir("folders");
    for (folder, stage, lr) in [
        ("finetune", "finetune", 1e-5),
        ("ict", "ict", 1e-4),
        ("pretrain", "pretrain", 3e-4),
    ] {
        let sub = dir.join(folder);
        std::fs::create_dir_all(&sub).unwrap();
        let lines: String = (0..5)
            .map(|step| {
                format!(
                    "{{\"stage\":\"{stage}\",\"step\":{step},\"time_s\":{},\"loss\":{}}}\n",
                    step as f64,
                    5.0 - step as f64 * 0.5
                )
            })
            .collect();
        std::fs::write(sub.join("metrics.jsonl"), lines).unwrap();
        std::fs::write(
            sub.join("config.json"),
            format!("{{\"lr\":{lr},\"device\":\"cpu\"}}"),
        )
        .unwrap();
    }
    let report = write_report(&dir).unwrap();
    assert_eq!(report.records, 15);
    assert_eq!(report.images, [dir.join("report/loss.png")]);
    let readme = std::fs::read_to_string(&report.readme).unwrap();
    let at = |needle: &str| {
        readme
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from\n{readme}"))
    };
    assert!(at("| ict | 5 |") < at("| pretrain | 5 |"));
    assert!(at("| pretrain | 5 |") < at("| finetune | 5 |"));
    at("| ict.lr | 1.000e-4 |");
    at("device: cpu");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dense_noisy_lines_stay_inside_the_plot() {
    // Noise of a large amplitude at every step: wide polylines with sharp turns drew spikes far
    // outside the plot before lines were drawn as segments and dense ones as slice means.
    let dir = temp_dir("dense");
    let mut s = String::new();
    for step in 0..3000u64 {
        let noise = if step % 2 == 0 { 1.0 } else { -1.0 };
        let _ = writeln!(
            s,
            r#"{{"stage":"pretrain","step":{step},"time_s":{},"loss":{}}}"#,
            step as f64 * 0.01,
            3.0 + noise * (1.0 + (step % 7) as f64 * 0.1)
        );
    }
    std::fs::write(dir.join("metrics.jsonl"), s).unwrap();
    let report = write_report(&dir).unwrap();
    let bytes = std::fs::read(&report.images[0]).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    // The top rows above the title are white.
    let top = &buf[..8 * info.width as usize * 3];
    assert!(
        top.iter().all(|&b| b == 255),
        "something was drawn above the title"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_run_directories_are_clear_errors() {
    let missing = std::env::temp_dir().join("realm-report-no-such-run");
    let msg = write_report(&missing).unwrap_err().to_string();
    assert!(msg.contains("realm-report-no-such-run") && msg.contains("not a run directory"));

    let dir = temp_dir("bad");
    let msg = write_report(&dir).unwrap_err().to_string();
    assert!(msg.contains("metrics.jsonl"), "{msg}");

    let metrics = dir.join("metrics.jsonl");
    std::fs::write(
        &metrics,
        "{\"stage\":\"ict\",\"step\":0,\"time_s\":0.1}\n\n{\"stage\":\"ict\",\"step\":\"one\"}\n",
    )
    .unwrap();
    let msg = write_report(&dir).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}:3:", metrics.display())),
        "{msg}"
    );

    std::fs::write(&metrics, "{\"stage\":\"ict\",\"time_s\":0.1}\n").unwrap();
    let msg = write_report(&dir).unwrap_err().to_string();
    assert!(msg.contains(":1:") && msg.contains("step"), "{msg}");

    std::fs::write(&metrics, "\n\n").unwrap();
    let msg = write_report(&dir).unwrap_err().to_string();
    assert!(msg.contains("no metrics records"), "{msg}");

    std::fs::write(&metrics, "{\"stage\":\"ict\",\"step\":0,\"time_s\":0.1}\n").unwrap();
    std::fs::write(dir.join("summary.json"), "{\"em\": ").unwrap();
    let msg = write_report(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("summary.json") && msg.contains("not JSON"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn extreme_values_are_drawn_and_the_report_returns() {
    // Each of these once made `realm report` spin forever in the axis computation.
    let cases = [
        "{\"stage\":\"ict\",\"step\":0,\"time_s\":0,\"loss\":2.0}\n{\"stage\":\"ict\",\"step\":1,\"time_s\":1,\"loss\":1.7e308}\n{\"stage\":\"ict\",\"step\":2,\"time_s\":2,\"loss\":1.5}\n",
        "{\"stage\":\"ict\",\"step\":0,\"time_s\":0,\"loss\":-1e308}\n{\"stage\":\"ict\",\"step\":1,\"time_s\":1,\"loss\":1}\n{\"stage\":\"ict\",\"step\":2,\"time_s\":2,\"loss\":1e308}\n",
        "{\"stage\":\"ict\",\"step\":0,\"time_s\":0,\"loss\":1e16}\n{\"stage\":\"ict\",\"step\":1,\"time_s\":1,\"loss\":1.0000000000000002e16}\n",
        "{\"stage\":\"ict\",\"step\":18446744073709551615,\"time_s\":1.7e308,\"loss\":5e-324}\n{\"stage\":\"pretrain\",\"step\":0,\"time_s\":0,\"loss\":0}\n",
    ];
    for (i, metrics) in cases.iter().enumerate() {
        let dir = temp_dir(&format!("extreme-{i}"));
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        let report = write_report(&dir).unwrap();
        let loss = report
            .images
            .iter()
            .find(|p| p.ends_with("loss.png"))
            .unwrap();
        assert_eq!(png_size(loss), (plot::WIDTH, plot::HEIGHT));
        let _ = std::fs::remove_dir_all(dir);
    }
}
