//! Many queries per process: `realm search --queries FILE` reads one query per line (plain text,
//! or JSONL with a `"question"` field), runs the query tower on batches of them and reports the
//! throughput.

use super::search::{Hit, Searcher};
use crate::error::{Error, Result};
use crate::lines::Lines;
use std::path::Path;
use std::time::Instant;

/// The queries of a file: each non-empty line, or its `"question"` when the line is a JSON
/// object. A JSON line without a string `"question"` is an error naming the line.
pub fn read_queries(path: &Path) -> Result<Vec<String>> {
    let mut lines = Lines::open(path)?;
    let mut out = Vec::new();
    while let Some((line, text)) = lines.next() {
        let text = text.map_err(|e| lines.error(line, &e))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if !text.starts_with('{') {
            out.push(text.to_string());
            continue;
        }
        let parse_err = |msg: String| Error::Parse {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        match value.get("question").and_then(|q| q.as_str()) {
            Some(q) if !q.trim().is_empty() => out.push(q.trim().to_string()),
            _ => return Err(parse_err("no non-empty string \"question\"".into())),
        }
    }
    if out.is_empty() {
        return Err(Error::file(path, "holds no queries"));
    }
    Ok(out)
}

/// How a batch of searches went.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub queries: usize,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.queries as f64 / self.seconds.max(1e-9)
    }
}

/// Searches `queries` `batch` at a time (one query-tower pass and one index scan per batch),
/// handing each query's hits to `found` in order (whose errors, such as a closed output, end
/// the search).
pub fn search_all<E: From<Error>>(
    searcher: &Searcher,
    queries: &[String],
    k: usize,
    batch: usize,
    mut found: impl FnMut(&str, &[Hit]) -> std::result::Result<(), E>,
) -> std::result::Result<Throughput, E> {
    if batch == 0 {
        return Err(Error::bad_input("search", "batch", "must be at least 1").into());
    }
    let start = Instant::now();
    for chunk in queries.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (q, hits) in refs.iter().zip(searcher.search(&refs, k)?) {
            found(q, &hits)?;
        }
    }
    Ok(Throughput {
        queries: queries.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
