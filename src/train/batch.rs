//! The tensors of one masked-LM batch over retrieved documents ([`MlmTensors`]), as
//! `RealmModel::mlm_forward` takes them: b masked queries, each with k candidates (the null
//! document in column [`NULL_COLUMN`], then the retrieved blocks), and the mask slots.

use crate::device;
use crate::error::{Error, Result};
use crate::index::live::Knowledge;
use crate::model::{doc_inputs, joined_inputs, query_inputs};
use crate::model::{BertInput, BertTokenizer, MaskSlots, MlmBatch, NULL_COLUMN};
use candle_core::{Device, Tensor};

const OP: &str = "mlm batch";

/// One masked query: its wordpieces with `[MASK]`s in place, and the masked positions (in the
/// wordpieces, without `[CLS]`) with their original ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedQuery {
    /// The query's wordpieces with `[MASK]` at the masked positions (no special tokens).
    pub input_ids: Vec<u32>,
    /// The masked positions, as indices into `input_ids`.
    pub positions: Vec<usize>,
    /// The original id at each of `positions`, in the same order.
    pub targets: Vec<u32>,
}

impl From<crate::data::MaskedExample> for MaskedQuery {
    fn from(m: crate::data::MaskedExample) -> Self {
        MaskedQuery {
            input_ids: m.input_ids,
            positions: m.positions,
            targets: m.targets,
        }
    }
}

/// Owned inputs of [`MlmBatch`].
pub struct MlmTensors {
    /// b rows `[CLS] x [SEP]`, the masked queries.
    pub queries: BertInput,
    /// b·k rows `[CLS] title [SEP] body [SEP]`, row i·k + z = candidate z of query i; the null
    /// document's and absent candidates' rows have an empty title and body.
    pub docs: BertInput,
    /// b·k rows `[CLS] x [SEP] body [SEP]`, in the same order as `docs`.
    pub joined: BertInput,
    /// The mask slots of the b queries: positions (`[CLS]` counted), original ids, real or padding.
    pub slots: MaskSlots,
    /// `[b, k]`, 0 where a query got fewer than k − 1 documents.
    pub candidate_mask: Option<Tensor>,
    /// Candidates per query, the null document included.
    pub k: usize,
    /// Wordpieces through the three BERT passes (padding included): for tokens/s.
    pub tokens: usize,
}

impl MlmTensors {
    /// `retrieved[i]`: block ids for query i, best first, at most k − 1 of them (k = 1: the null
    /// document alone). `query_len` bounds `[CLS] x [SEP]`, `doc_len` the document inputs; the
    /// joined input is at most `query_len + doc_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tok: &BertTokenizer,
        queries: &[MaskedQuery],
        retrieved: &[Vec<u32>],
        k: usize,
        knowledge: &Knowledge,
        query_len: usize,
        doc_len: usize,
        dev: &Device,
    ) -> Result<Self> {
        let b = queries.len();
        if b == 0 || retrieved.len() != b || k == 0 {
            return Err(Error::bad_input(
                OP,
                "queries",
                format!(
                    "{b} queries, {} retrieval lists, k = {k}: need one list per query and k ≥ 1",
                    retrieved.len()
                ),
            ));
        }
        for (i, q) in queries.iter().enumerate() {
            if q.input_ids.len() + 2 > query_len {
                return Err(Error::bad_input(
                    OP,
                    "queries",
                    format!(
                        "query {i} has {} wordpieces; [CLS] x [SEP] exceeds query_len = {query_len}",
                        q.input_ids.len()
                    ),
                ));
            }
            if q.positions.len() != q.targets.len()
                || q.positions.iter().any(|&p| p >= q.input_ids.len())
            {
                return Err(Error::bad_input(
                    OP,
                    "positions",
                    format!("query {i}: positions and targets differ or point past the query"),
                ));
            }
        }
        let m = queries
            .iter()
            .map(|q| q.positions.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut positions, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for q in queries {
            for j in 0..m {
                // [CLS] comes first in both the query and the joined rows.
                positions.push(q.positions.get(j).map_or(0, |&p| p as u32 + 1));
                targets.push(q.targets.get(j).copied().unwrap_or(0));
                mask.push(u8::from(j < q.positions.len()));
            }
        }
        let mut present = Vec::with_capacity(b * k);
        let mut titles: Vec<&[u32]> = Vec::with_capacity(b * k);
        let mut bodies: Vec<Option<&[u32]>> = Vec::with_capacity(b * k);
        for ids in retrieved {
            if ids.len() >= k {
                return Err(Error::bad_input(
                    OP,
                    "retrieved",
                    format!(
                        "{} documents for k = {k} candidates (one is the null document)",
                        ids.len()
                    ),
                ));
            }
            for z in 0..k {
                let block = (z != NULL_COLUMN)
                    .then(|| ids.get(z - 1))
                    .flatten()
                    .map(|&id| id as usize);
                if let Some(id) = block.filter(|&id| id >= knowledge.len()) {
                    return Err(Error::bad_input(
                        OP,
                        "retrieved",
                        format!("block {id} is not in the corpus of {}", knowledge.len()),
                    ));
                }
                present.push(u8::from(z == NULL_COLUMN || block.is_some()));
                titles.push(block.map_or(&[][..], |id| knowledge.titles[id].as_slice()));
                bodies.push(block.map(|id| knowledge.blocks[id].tokens.as_slice()));
            }
        }
        let query_ids: Vec<&[u32]> = queries.iter().map(|q| q.input_ids.as_slice()).collect();
        let q_in = query_inputs(tok, &query_ids, query_len, dev)?;
        let empty: Vec<&[u32]> = bodies.iter().map(|b| b.unwrap_or(&[])).collect();
        let d_in = doc_inputs(tok, &titles, &empty, doc_len, dev)?;
        let (j_in, _) = joined_inputs(tok, &query_ids, &bodies, query_len + doc_len, dev)?;
        let tokens = q_in.input_ids().elem_count()
            + d_in.input_ids().elem_count()
            + j_in.input_ids().elem_count();
        let all_present = present.iter().all(|&p| p == 1);
        Ok(MlmTensors {
            queries: q_in,
            docs: d_in,
            joined: j_in,
            slots: MaskSlots::new(positions, targets, mask, m, dev)?,
            candidate_mask: if all_present {
                None
            } else {
                Some(device::upload(present, (b, k), dev)?)
            },
            k,
            tokens,
        })
    }

    /// The borrowed batch that `RealmModel::mlm_forward` takes, with no `doc_scores` (the
    /// towers score the candidates).
    pub fn batch(&self) -> MlmBatch<'_> {
        MlmBatch {
            queries: &self.queries,
            docs: &self.docs,
            joined: &self.joined,
            slots: &self.slots,
            candidate_mask: self.candidate_mask.as_ref(),
            doc_scores: None,
        }
    }
}
