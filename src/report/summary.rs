//! The Markdown page of a report: the run at a glance (device, data, times per stage, final
//! metrics), links to the plots, and the configuration.

use super::metrics::{stages, Field, Record};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

pub(super) struct Inputs<'a> {
    pub run_dir: &'a Path,
    pub records: &'a [Record],
    pub config: Option<&'a Value>,
    pub summary: Option<&'a Value>,
    /// (file name, title) of each plot written.
    pub images: &'a [(&'static str, &'static str)],
}

/// Keys of config entries that name data (paths or data set names).
const DATA_WORDS: [&str; 9] = [
    "corpus",
    "question",
    "qa",
    "data",
    "docs",
    "vocab",
    "train_file",
    "dev_file",
    "index",
];

pub(super) fn markdown(inp: &Inputs) -> String {
    let mut md = String::new();
    let name = inp
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| inp.run_dir.display().to_string());
    let _ = writeln!(md, "# Run report: {name}\n");
    let _ = writeln!(
        md,
        "Run directory `{}`: {} metric records; `config.json` {}, `summary.json` {}.\n",
        inp.run_dir.display(),
        inp.records.len(),
        if inp.config.is_some() {
            "read"
        } else {
            "absent"
        },
        if inp.summary.is_some() {
            "read"
        } else {
            "absent"
        },
    );
    run_section(&mut md, inp);
    times_section(&mut md, inp);
    metrics_section(&mut md, inp);
    if !inp.images.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        let _ = writeln!(
            md,
            "One colour per stage; a grey rule where a stage begins. A line of more than {} \
             records is drawn as the mean of each of {} equal step ranges, with their least and \
             greatest values as a pale band.\n",
            super::plot::DENSE,
            super::plot::SLICES
        );
        for (file, title) in inp.images {
            let _ = writeln!(md, "### {title}\n\n![{title}]({file})\n");
        }
    }
    if let Some(config) = inp.config {
        let _ = writeln!(md, "## Configuration (`config.json`)\n");
        table_of(&mut md, &flatten(config));
    }
    md
}

fn run_section(md: &mut String, inp: &Inputs) {
    let flat_config = inp.config.map(flatten).unwrap_or_default();
    let flat_summary = inp.summary.map(flatten).unwrap_or_default();
    let device = flat_summary
        .iter()
        .chain(&flat_config)
        .find(|(k, _)| k == "device" || k.ends_with(".device"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "not recorded".to_string());
    let _ = writeln!(md, "## Run\n");
    let _ = writeln!(md, "- device: {device}");
    let data: Vec<&(String, String)> = flat_config
        .iter()
        .filter(|(k, v)| {
            let key = k.to_lowercase();
            v.parse::<f64>().is_err() && DATA_WORDS.iter().any(|w| key.contains(w))
        })
        .collect();
    if data.is_empty() {
        let _ = writeln!(md, "- data: not recorded in config.json");
    }
    for (k, v) in data {
        let _ = writeln!(md, "- {k}: `{v}`");
    }
    md.push('\n');
}

fn times_section(md: &mut String, inp: &Inputs) {
    let seconds = inp
        .summary
        .and_then(|s| s.get("seconds"))
        .and_then(Value::as_object);
    let mut names = stages(inp.records);
    if let Some(s) = seconds {
        names.extend(
            s.keys()
                .filter(|k| !names.contains(k))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let _ = writeln!(md, "## Stages and times\n");
    let _ = writeln!(
        md,
        "| stage | records | steps | time_s span (metrics) | seconds (summary.json) |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---:|");
    for stage in &names {
        let rs: Vec<&Record> = inp.records.iter().filter(|r| &r.stage == stage).collect();
        let (steps, span) = if rs.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let lo = rs.iter().map(|r| r.step).min().unwrap_or(0);
            let hi = rs.iter().map(|r| r.step).max().unwrap_or(0);
            let t0 = rs.iter().map(|r| r.time_s).fold(f64::INFINITY, f64::min);
            let t1 = rs
                .iter()
                .map(|r| r.time_s)
                .fold(f64::NEG_INFINITY, f64::max);
            (format!("{lo}–{hi}"), format!("{:.1}", t1 - t0))
        };
        let summary_s = seconds
            .and_then(|s| s.get(stage))
            .map(|v| {
                v.as_f64()
                    .map_or_else(|| v.to_string(), |x| format!("{x:.1}"))
            })
            .unwrap_or_else(|| "–".to_string());
        let _ = writeln!(
            md,
            "| {stage} | {} | {steps} | {span} | {summary_s} |",
            rs.len()
        );
    }
    md.push('\n');
}

fn metrics_section(md: &mut String, inp: &Inputs) {
    let _ = writeln!(md, "## Final metrics\n");
    if let Some(summary) = inp.summary {
        let rows: Vec<(String, String)> = flatten(summary)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("seconds."))
            .collect();
        if !rows.is_empty() {
            let _ = writeln!(md, "From `summary.json`:\n");
            table_of(md, &rows);
        }
        for (key, items) in lists_of_records(summary) {
            let _ = writeln!(md, "`{key}` from `summary.json`:\n");
            records_table(md, items);
        }
    }
    let fields: Vec<Field> = Field::ALL
        .into_iter()
        .filter(|f| inp.records.iter().any(|r| f.get(r).is_some()))
        .collect();
    if fields.is_empty() {
        let _ = writeln!(md, "No metric values in metrics.jsonl.\n");
        return;
    }
    let _ = writeln!(
        md,
        "The last value of each metric in each stage (metrics.jsonl):\n"
    );
    let header: Vec<&str> = fields.iter().map(|f| f.label()).collect();
    let _ = writeln!(md, "| stage | step | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(fields.len()));
    for stage in stages(inp.records) {
        let rs: Vec<&Record> = inp.records.iter().filter(|r| r.stage == stage).collect();
        let last_step = rs.iter().map(|r| r.step).max().unwrap_or(0);
        let cells: Vec<String> = fields
            .iter()
            .map(|f| {
                // The last record (by step, then by line) that has the metric.
                rs.iter()
                    .filter_map(|r| f.get(r).map(|v| (r.step, v)))
                    .max_by_key(|&(s, _)| s)
                    .map_or_else(|| "–".to_string(), |(_, v)| number(v))
            })
            .collect();
        let _ = writeln!(md, "| {stage} | {last_step} | {} |", cells.join(" | "));
    }
    md.push('\n');
}

fn table_of(md: &mut String, rows: &[(String, String)]) {
    let _ = writeln!(md, "| key | value |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
    }
    md.push('\n');
}

/// Scalars of a JSON value with dotted keys; arrays of scalars on one line. Arrays of objects
/// are left to [`lists_of_records`]: as one cell they would be a JSON blob.
fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&dotted(prefix, k), v, out);
                }
            }
            v if is_records(v) => {}
            other => out.push((prefix.to_string(), cell(other))),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A non-empty array whose items are all objects (`answers`, `knowledge_update.facts`).
fn is_records(v: &Value) -> bool {
    matches!(v, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
}

/// The arrays of objects in a JSON value, by dotted key, in document order.
fn lists_of_records(value: &Value) -> Vec<(String, &Vec<Value>)> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Vec<Value>)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&dotted(prefix, k), v, out);
                }
            }
            Value::Array(items) if is_records(v) => out.push((prefix.to_string(), items)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// One row per object, one column per field (in first-seen order: serde_json's maps sort their
/// keys); a nested list of records is shown by its length.
fn records_table(md: &mut String, items: &[Value]) {
    let mut columns: Vec<&str> = Vec::new();
    for item in items {
        for k in item.as_object().into_iter().flat_map(|m| m.keys()) {
            if !columns.contains(&k.as_str()) {
                columns.push(k);
            }
        }
    }
    let _ = writeln!(md, "| {} |", columns.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(columns.len()));
    for item in items {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match item.get(c) {
                None | Some(Value::Null) => "–".to_string(),
                Some(Value::Array(v)) if is_records(&item[c]) => format!("{} items", v.len()),
                Some(v) => cell(v).replace('|', "\\|").replace('\n', " "),
            })
            .collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md.push('\n');
}

/// A scalar (or an array of scalars) as table text.
fn cell(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), number),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Integers as they are, other numbers with four significant digits.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.3e}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(1e-5), "1.000e-5");
    }

    #[test]
    fn nested_json_flattens_to_dotted_keys() {
        let v: Value = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        assert_eq!(
            flatten(&v),
            [
                ("a.b".to_string(), "1".to_string()),
                ("a.c".to_string(), "[1,2]".to_string()),
                ("d".to_string(), "x".to_string())
            ]
        );
    }
}
