//! Encoder batches for REALM, built from wordpieces exactly as the released code's featurizer
//! (`language/realm/featurization.py`, `bert_format`) lays them out:
//!
//! - query tower: `[CLS] x [SEP]`, segment 0;
//! - document tower: `[CLS] title [SEP] body [SEP]`, segment 0 up to the first `[SEP]`, then 1;
//!   the null document is an empty title and body, `[CLS] [SEP] [SEP]`;
//! - knowledge-augmented encoder: `[CLS] x [SEP] body [SEP]` (the title is not used there), the
//!   null document being an empty body, `[CLS] x [SEP] [SEP]`.
//!
//! Rows are right-padded with `[PAD]` (segment 0) to the longest row; `BertInput::lens` marks the
//! real tokens.

use super::bert::BertInput;
use super::tokenizer::BertTokenizer;
use crate::error::{Error, Result};
use candle_core::Device;

const OP: &str = "realm_inputs";

/// One row: token ids and segment ids, without padding.
struct Row {
    ids: Vec<u32>,
    segments: Vec<u32>,
}

/// `[CLS] x [SEP]` for each query (segment 0), each truncated to `max_len` tokens in all.
pub fn query_inputs(
    tok: &BertTokenizer,
    queries: &[&[u32]],
    max_len: usize,
    dev: &Device,
) -> Result<BertInput> {
    check_len("max_len", max_len, 2)?;
    let rows = queries
        .iter()
        .map(|q| {
            let q = &q[..q.len().min(max_len - 2)];
            let mut ids = Vec::with_capacity(q.len() + 2);
            ids.push(tok.cls_id());
            ids.extend_from_slice(q);
            ids.push(tok.sep_id());
            Row {
                segments: vec![0; ids.len()],
                ids,
            }
        })
        .collect();
    pad(tok, rows, "queries", dev)
}

/// `[CLS] title [SEP] body [SEP]` for each document, segment 0 for `[CLS] title [SEP]` and 1 for
/// `body [SEP]`. Longer documents are truncated as `bert_format` does: the title keeps as much as
/// fits (at most `max_len - 3` tokens), the body gets the rest.
pub fn doc_inputs(
    tok: &BertTokenizer,
    titles: &[&[u32]],
    bodies: &[&[u32]],
    max_len: usize,
    dev: &Device,
) -> Result<BertInput> {
    check_len("max_len", max_len, 3)?;
    if titles.len() != bodies.len() {
        return Err(Error::bad_input(
            OP,
            "bodies",
            format!(
                "{} bodies for {} titles; need one body per title",
                bodies.len(),
                titles.len()
            ),
        ));
    }
    let rows = titles
        .iter()
        .zip(bodies)
        .map(|(title, body)| {
            let title = &title[..title.len().min(max_len - 3)];
            let body = &body[..body.len().min(max_len - 3 - title.len())];
            pair(tok, title, body)
        })
        .collect();
    pad(tok, rows, "titles", dev)
}

/// `[CLS] x [SEP] body [SEP]` for the knowledge-augmented encoder (and the reader). `bodies` are
/// grouped by query: with `b = queries.len()` and `bodies.len() = b · k`, rows `i·k .. (i+1)·k`
/// pair query `i` with its k documents (k = 1 when there are as many bodies as queries). `None`
/// is the null document (an empty body). The query is never truncated (a query that leaves no
/// room for the two `[SEP]`s is an error); bodies are cut to fit `max_len`.
///
/// Returns the batch and, per row, the position where the body starts (`query.len() + 2`), which
/// is also where it would start for the null document.
pub fn joined_inputs(
    tok: &BertTokenizer,
    queries: &[&[u32]],
    bodies: &[Option<&[u32]>],
    max_len: usize,
    dev: &Device,
) -> Result<(BertInput, Vec<usize>)> {
    if queries.is_empty() || bodies.is_empty() || !bodies.len().is_multiple_of(queries.len()) {
        return Err(Error::bad_input(
            OP,
            "bodies",
            format!(
                "{} bodies for {} queries; need k ≥ 1 bodies per query, grouped by query",
                bodies.len(),
                queries.len()
            ),
        ));
    }
    let k = bodies.len() / queries.len();
    let mut rows = Vec::with_capacity(bodies.len());
    let mut offsets = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.iter().enumerate() {
        let query = queries[i / k];
        if query.len() + 3 > max_len {
            return Err(Error::bad_input(
                OP,
                "queries",
                format!(
                    "query {} has {} wordpieces; with [CLS] and two [SEP] it exceeds max_len = \
                     {max_len} (queries are never truncated)",
                    i / k,
                    query.len()
                ),
            ));
        }
        let body = body.unwrap_or(&[]);
        let body = &body[..body.len().min(max_len - 3 - query.len())];
        offsets.push(query.len() + 2);
        rows.push(pair(tok, query, body));
    }
    Ok((pad(tok, rows, "queries", dev)?, offsets))
}

/// `[CLS] a [SEP] b [SEP]` with segments 0 then 1.
fn pair(tok: &BertTokenizer, a: &[u32], b: &[u32]) -> Row {
    let mut ids = Vec::with_capacity(a.len() + b.len() + 3);
    ids.push(tok.cls_id());
    ids.extend_from_slice(a);
    ids.push(tok.sep_id());
    let first = ids.len();
    ids.extend_from_slice(b);
    ids.push(tok.sep_id());
    let mut segments = vec![0; first];
    segments.resize(ids.len(), 1);
    Row { ids, segments }
}

fn check_len(arg: &'static str, max_len: usize, least: usize) -> Result<()> {
    if max_len < least {
        return Err(Error::bad_input(
            OP,
            arg,
            format!("{max_len} leaves no room for the {least} special tokens"),
        ));
    }
    Ok(())
}

/// Right-pads the rows with `[PAD]` (segment 0) into one batch on `dev`.
fn pad(tok: &BertTokenizer, rows: Vec<Row>, what: &'static str, dev: &Device) -> Result<BertInput> {
    if rows.is_empty() {
        return Err(Error::bad_input(OP, what, "the batch is empty"));
    }
    let b = rows.len();
    let l = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let lens: Vec<u32> = rows.iter().map(|r| r.ids.len() as u32).collect();
    let mut ids = Vec::with_capacity(b * l);
    let mut segments = Vec::with_capacity(b * l);
    for row in rows {
        let fill = l - row.ids.len();
        ids.extend(row.ids);
        ids.extend(std::iter::repeat_n(tok.pad_id(), fill));
        segments.extend(row.segments);
        segments.extend(std::iter::repeat_n(0, fill));
    }
    BertInput::new(ids, Some(segments), &lens, dev)
}
