//! The open-QA reader of ORQA (Lee et al. 2019) and REALM's fine-tuning (Guu et al. 2020), as the
//! released code (`language/orqa/models/orqa_model.py`) and Hugging Face's `RealmReader`
//! (transformers ≤ 4.40) compute it.
//!
//! Rows are `[CLS] question [SEP] body [SEP]`, one per retrieved document. A candidate answer is a
//! span of at most `max_span_width` wordpieces inside the body; its score is
//! `w · LayerNorm(ReLU(P_start h_start + P_end h_end)) + b` over BERT's last hidden states, plus
//! (through [`SpanLogits::plus_relevance`]) the retriever's relevance of the row's document.
//!
//! The loss ([`qa_loss`]) is ORQA's: the negative log of the probability mass, under one softmax
//! over every candidate of every row, of the candidates matching a gold answer, plus the retriever
//! term, the negative log of the mass of the retrieved documents that contain an answer under the
//! softmax of the relevance over the whole beam; each term is zero when nothing matches.
//!
//! Candidates are numbered width-major (all spans of width 1, then 2, ...), in body coordinates
//! (wordpiece `0` is the first body token) and shared by all rows: every row has the candidates
//! of the longest body in the batch, and those past a row's own body score `-inf`.
//!
//! Checkpoint folder: `config.json` (HF's `RealmConfig` fields: the BERT ones plus
//! `span_hidden_size`, `max_span_width`, `reader_layer_norm_eps`) and `model.safetensors` in
//! `RealmReader`'s names: `realm.*` (BERT with its pooler), `qa_outputs.*` (the span scorer) and
//! `cls.predictions.*` (a masked-LM head HF's class carries but the reader never uses; kept so
//! that checkpoints round-trip and load in transformers).

use super::bert::{BertInput, BertModel, Mode};
use super::checkpoint::{self, Init, RandomInit};
use super::config::BertConfig;
use super::heads::{take, Dense, Norm, Source, TensorFile};
use super::retriever::ConfigFile;
use super::tokenizer::BertTokenizer;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::Path;

const OP: &str = "reader";

/// The reader's own settings (HF `RealmConfig` names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReaderConfig {
    /// Width of the start and end projections (256 in ORQA and HF).
    #[serde(default = "default_span_hidden_size")]
    pub span_hidden_size: usize,
    /// Longest candidate span in wordpieces (10 in ORQA and HF).
    #[serde(default = "default_max_span_width")]
    pub max_span_width: usize,
    /// Epsilon of the span LayerNorm (1e-3: Keras' default, which ORQA used).
    #[serde(default = "default_reader_layer_norm_eps")]
    pub reader_layer_norm_eps: f64,
    /// Longest `[CLS] question [SEP] block [SEP]` row read when answering (HF's
    /// `reader_seq_len`: 320 in the released REALM models; the pair is cut to it). None: the
    /// answering command's own limit. Absent from the checkpoints realm trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_seq_len: Option<usize>,
}

fn default_span_hidden_size() -> usize {
    256
}
fn default_max_span_width() -> usize {
    10
}
fn default_reader_layer_norm_eps() -> f64 {
    1e-3
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            span_hidden_size: default_span_hidden_size(),
            max_span_width: default_max_span_width(),
            reader_layer_norm_eps: default_reader_layer_norm_eps(),
            reader_seq_len: None,
        }
    }
}

impl ReaderConfig {
    /// Rejects a zero `span_hidden_size` or `max_span_width`, or a `reader_layer_norm_eps` that
    /// is not positive, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_input(OP, "config", msg));
        if self.span_hidden_size == 0 {
            return bad("span_hidden_size must be positive".into());
        }
        if self.max_span_width == 0 {
            return bad("max_span_width must be positive".into());
        }
        if !(self.reader_layer_norm_eps > 0.0 && self.reader_layer_norm_eps.is_finite()) {
            return bad(format!(
                "reader_layer_norm_eps = {} must be positive",
                self.reader_layer_norm_eps
            ));
        }
        Ok(())
    }
}

/// The masked-LM head of HF's `RealmReader` (`cls.` + leaf): present in the layout, unused by the
/// reader. `predictions.decoder.bias` is the same tensor as `predictions.bias` in PyTorch.
const MLM_LEAVES: [(&str, MlmShape, Init); 7] = [
    ("predictions.bias", MlmShape::Vocab, Init::Zeros),
    (
        "predictions.transform.dense.weight",
        MlmShape::HiddenHidden,
        Init::Normal,
    ),
    (
        "predictions.transform.dense.bias",
        MlmShape::Hidden,
        Init::Zeros,
    ),
    (
        "predictions.transform.LayerNorm.weight",
        MlmShape::Hidden,
        Init::Ones,
    ),
    (
        "predictions.transform.LayerNorm.bias",
        MlmShape::Hidden,
        Init::Zeros,
    ),
    (
        "predictions.decoder.weight",
        MlmShape::VocabHidden,
        Init::Normal,
    ),
    ("predictions.decoder.bias", MlmShape::Vocab, Init::Zeros),
];

#[derive(Clone, Copy)]
enum MlmShape {
    Vocab,
    Hidden,
    HiddenHidden,
    VocabHidden,
}

/// ORQA's span reader: BERT and the span scorer (HF's `RealmReaderProjection`).
pub struct Reader {
    bert: BertModel,
    config: ReaderConfig,
    /// `[2 · span_hidden, hidden]`: the start projection in the first half of the outputs, the
    /// end projection in the second (HF's `dense_intermediate`, split by `chunk(2)`).
    intermediate: Dense,
    norm: Norm,
    /// `[1, span_hidden]`.
    output: Dense,
    /// Every parameter by `RealmReader` name.
    params: Vec<(String, Var)>,
}

impl Reader {
    /// BERT and both heads with HF's standard initialisation, reproducible from `seed`.
    pub fn new_random(
        bert_config: &BertConfig,
        config: &ReaderConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let bert = BertModel::new_random(bert_config, seed, device)?;
        Self::with_random_heads(bert, config, seed)
    }

    /// BERT from a Hugging Face folder (`config.json` + `model.safetensors`, any prefix: a plain
    /// BERT, `bert.*` of a BertForMaskedLM, `realm.*` of a knowledge-augmented encoder), the span
    /// scorer and the unused masked-LM head initialised from `seed`: how ORQA and REALM start
    /// fine-tuning.
    pub fn from_bert_dir(
        dir: impl AsRef<Path>,
        config: &ReaderConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let bert = BertModel::load(dir, device)?;
        Self::with_random_heads(bert, config, seed)
    }

    /// A folder written by [`Reader::save`] or transformers' `RealmReader.save_pretrained`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let (file, _) = ConfigFile::<ReaderConfig>::read(&dir.join("config.json"))?;
        Self::from_safetensors(
            &file.bert,
            &file.rest,
            dir.join("model.safetensors"),
            "",
            device,
        )
    }

    /// The `RealmReader` tensors under `prefix` (`""`, or `"reader."` in a `RealmForOpenQA`
    /// file). `realm.*` and `qa_outputs.*` must match the configuration exactly (missing,
    /// unexpected and misshapen tensors are one error naming each); `cls.predictions.*` is read
    /// as far as present, since converted ORQA checkpoints may lack it.
    pub fn from_safetensors(
        bert_config: &BertConfig,
        config: &ReaderConfig,
        path: impl AsRef<Path>,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = TensorFile::read(path)?;
        let bert = BertModel::from_safetensors(
            bert_config,
            path,
            Some(&format!("{prefix}realm.")),
            device,
        )?;
        Self::build(
            bert,
            config,
            &mut Source::File(&file, device.clone()),
            prefix,
        )
    }

    /// Writes `config.json` and `model.safetensors` (`RealmReader` names) into `dir`, each file
    /// atomically; loading them back gives bit-identical parameters.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        ConfigFile {
            bert: self.bert.config().clone(),
            retriever: Default::default(),
            rest: self.config.clone(),
        }
        .write(&dir.join("config.json"))?;
        checkpoint::save(&dir.join("model.safetensors"), &self.params)
    }

    fn with_random_heads(bert: BertModel, config: &ReaderConfig, seed: u64) -> Result<Self> {
        // Its own stream, so that the heads do not repeat BERT's first draws.
        let init = RandomInit::new(
            seed ^ 0x7265_6164_6572_0000,
            bert.config().initializer_range,
            bert.device(),
        );
        Self::build(bert, config, &mut Source::Random(init), "")
    }

    /// Puts the heads (from `src`, under `prefix`) on `bert`, parameters in HF's order.
    fn build(
        bert: BertModel,
        config: &ReaderConfig,
        src: &mut Source,
        prefix: &str,
    ) -> Result<Self> {
        config.validate()?;
        let (h, vocab) = (bert.config().hidden_size, bert.config().vocab_size);
        let span = config.span_hidden_size;
        let mut params: Vec<(String, Var)> = bert
            .vars()
            .iter()
            .map(|(n, v)| (format!("realm.{n}"), v.clone()))
            .collect();

        // Each head is one module: from a file, every tensor under `cls.` and `qa_outputs.` must
        // be one asked for here.
        let mlm = "cls.";
        let present: Vec<_> = MLM_LEAVES
            .iter()
            .filter(|(leaf, ..)| match src {
                Source::Random(_) => true,
                Source::File(file, _) => file.has(&format!("{prefix}{mlm}{leaf}")),
            })
            .collect();
        src.module(&format!("{prefix}{mlm}"), |s| {
            for &&(leaf, shape, init) in &present {
                let shape = match shape {
                    MlmShape::Vocab => vec![vocab],
                    MlmShape::Hidden => vec![h],
                    MlmShape::HiddenHidden => vec![h, h],
                    MlmShape::VocabHidden => vec![vocab, h],
                };
                take(s, mlm, leaf, &shape, init, &mut params)?;
            }
            Ok(())
        })?;

        let qa = "qa_outputs.";
        let eps = config.reader_layer_norm_eps;
        let (intermediate, output, norm) = src.module(&format!("{prefix}{qa}"), |s| {
            let mut p = |leaf, shape: &[usize], init| take(s, qa, leaf, shape, init, &mut params);
            let intermediate = Dense {
                weight: p("dense_intermediate.weight", &[2 * span, h], Init::Normal)?,
                bias: p("dense_intermediate.bias", &[2 * span], Init::Zeros)?,
            };
            let output = Dense {
                weight: p("dense_output.weight", &[1, span], Init::Normal)?,
                bias: p("dense_output.bias", &[1], Init::Zeros)?,
            };
            let norm = Norm {
                weight: p("layer_normalization.weight", &[span], Init::Ones)?,
                bias: p("layer_normalization.bias", &[span], Init::Zeros)?,
                eps,
            };
            Ok((intermediate, output, norm))
        })?;
        Ok(Reader {
            bert,
            config: config.clone(),
            intermediate,
            norm,
            output,
            params,
        })
    }

    /// The reader's BERT encoder.
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// The reader's own settings.
    pub fn config(&self) -> &ReaderConfig {
        &self.config
    }

    /// The device its parameters are on.
    pub fn device(&self) -> &Device {
        self.bert.device()
    }

    /// BERT's compute dtype (f32, f16 or bf16); the span scorer always computes in f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.bert.set_compute_dtype(dtype)
    }

    /// Every parameter by `RealmReader` name (f32 master weights), for an optimizer and for
    /// saving. `cls.predictions.*` never receives a gradient.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The span scores of a batch of `[CLS] question [SEP] body [SEP]` rows (right-padded, as
    /// `realm_inputs::joined_inputs` builds them): `body_offsets[r]` is where row `r`'s body
    /// starts, and it ends before the row's final `[SEP]` (at `lens[r] - 1`); an empty body (the
    /// null document) has no candidate. Differentiable in the parameters when `mode` is `Train`
    /// (which also applies BERT's dropout). At least one row must have a body token.
    pub fn span_logits(
        &self,
        input: &BertInput,
        body_offsets: &[usize],
        mode: Mode,
    ) -> Result<SpanLogits> {
        let (b, l) = input.input_ids().dims2().map_err(|_| {
            Error::bad_input(
                OP,
                "input_ids",
                format!("shape {:?} must be [b, l]", input.input_ids().dims()),
            )
        })?;
        let body_lens = body_lengths(input, b, body_offsets)?;
        let longest = body_lens.iter().copied().max().unwrap_or(0);
        if longest == 0 {
            return Err(Error::bad_input(
                OP,
                "body_offsets",
                "no row has a body token, so there is no candidate span",
            ));
        }
        let width = self.config.max_span_width.min(longest);
        let spans = candidates(longest, width);
        let c = spans.len();

        // Rows of the flattened [b·l, ·] hidden states that start and end each candidate; a
        // candidate past its row's body reads the row's [CLS] and is masked to -inf.
        let mut start_rows = Vec::with_capacity(b * c);
        let mut end_rows = Vec::with_capacity(b * c);
        let mut mask = Vec::with_capacity(b * c);
        for (r, (&offset, &len)) in body_offsets.iter().zip(&body_lens).enumerate() {
            let base = r * l;
            for &(s, e) in &spans {
                let inside = e <= len;
                start_rows.push((base + if inside { offset + s } else { 0 }) as u32);
                end_rows.push((base + if inside { offset + e - 1 } else { 0 }) as u32);
                mask.push(if inside { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let dev = self.device();
        let start_rows = Tensor::from_vec(start_rows, b * c, dev)?;
        let end_rows = Tensor::from_vec(end_rows, b * c, dev)?;
        let mask = Tensor::from_vec(mask, (b, c), dev)?;

        let train = matches!(mode, Mode::Train { .. });
        let h = self.bert.config().hidden_size;
        let span = self.config.span_hidden_size;
        let hidden = self
            .bert
            .forward(input, mode)?
            .last_hidden_state
            .to_dtype(DType::F32)?
            .reshape((b * l, h))?;
        let projected = self.intermediate.forward(&hidden, train)?;
        // Split before gathering: a candidate needs half of each position's projection.
        let half = |from: usize, rows: &Tensor| -> Result<Tensor> {
            Ok(projected
                .narrow(1, from, span)?
                .contiguous()?
                .index_select(rows, 0)?)
        };
        let starts = half(0, &start_rows)?;
        let ends = half(span, &end_rows)?;
        let joint = self.norm.forward(&(starts + ends)?.relu()?, train)?;
        let scores = self.output.forward(&joint, train)?.reshape((b, c))?;
        Ok(SpanLogits {
            logits: (scores + mask)?,
            spans,
            body_offsets: body_offsets.to_vec(),
            body_lens,
            max_width: width,
            with_relevance: false,
        })
    }
}

/// Body length of each row (`lens[r] - 1 - body_offsets[r]`), checked against the input.
fn body_lengths(input: &BertInput, b: usize, body_offsets: &[usize]) -> Result<Vec<usize>> {
    if body_offsets.len() != b {
        return Err(Error::bad_input(
            OP,
            "body_offsets",
            format!("{} offsets for {b} rows", body_offsets.len()),
        ));
    }
    let lens = input.lens().host();
    if lens.len() != b {
        return Err(Error::bad_input(
            OP,
            "lens",
            format!("{} lengths for {b} rows", lens.len()),
        ));
    }
    body_offsets
        .iter()
        .zip(lens.iter().copied())
        .enumerate()
        .map(|(r, (&offset, len))| {
            let len = len as usize;
            if offset == 0 || offset + 1 > len {
                return Err(Error::bad_input(
                    OP,
                    "body_offsets",
                    format!(
                        "row {r}: the body cannot start at {offset} in a row of {len} tokens \
                         ([CLS] question [SEP] body [SEP]: 1 ≤ offset ≤ len − 1)"
                    ),
                ));
            }
            Ok(len - 1 - offset)
        })
        .collect()
}

/// Every span `(start, end)` (end exclusive) of width 1..=`width` inside `0..longest`,
/// width-major.
fn candidates(longest: usize, width: usize) -> Vec<(usize, usize)> {
    (1..=width)
        .flat_map(|w| (0..=longest - w).map(move |s| (s, s + w)))
        .collect()
}

/// The scores of every candidate span of every row.
#[derive(Clone, Debug)]
pub struct SpanLogits {
    /// `[rows, candidates]` f32; `-inf` where a candidate is not inside the row's body.
    logits: Tensor,
    spans: Vec<(usize, usize)>,
    body_offsets: Vec<usize>,
    body_lens: Vec<usize>,
    max_width: usize,
    with_relevance: bool,
}

/// One scored answer span: body wordpieces `start..end` of row `row`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpanPrediction {
    /// The row of the reader's input (one per retrieved document).
    pub row: usize,
    /// First body wordpiece (0 = the first token after the question's `[SEP]`).
    pub start: usize,
    /// One past the last body wordpiece.
    pub end: usize,
    /// The span's logit (reader score, plus the relevance when added).
    pub score: f32,
}

impl SpanPrediction {
    /// Positions of the span in the row of the reader's input, `first..=last`.
    pub fn input_positions(&self, logits: &SpanLogits) -> (usize, usize) {
        let offset = logits.body_offsets[self.row];
        (offset + self.start, offset + self.end - 1)
    }

    /// The span's wordpieces in the row's body (the document's tokens as they were put in the
    /// input), or an error when the body is shorter than the span.
    pub fn wordpieces<'a>(&self, body: &'a [u32]) -> Result<&'a [u32]> {
        body.get(self.start..self.end).ok_or_else(|| {
            Error::bad_input(
                OP,
                "body",
                format!(
                    "{} wordpieces; the span is {}..{}",
                    body.len(),
                    self.start,
                    self.end
                ),
            )
        })
    }
}

impl SpanLogits {
    /// `[rows, candidates]` f32, `-inf` for candidates outside a row's body.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Candidate `c` covers body wordpieces `spans()[c].0 .. spans()[c].1`.
    pub fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    /// Number of rows (retrieved documents) scored.
    pub fn rows(&self) -> usize {
        self.body_lens.len()
    }

    /// Where each row's body starts in its input: the position of the first wordpiece after the
    /// question's `[SEP]`.
    pub fn body_offsets(&self) -> &[usize] {
        &self.body_offsets
    }

    /// Body wordpieces present in each row.
    pub fn body_lens(&self) -> &[usize] {
        &self.body_lens
    }

    /// Whether candidate `c` lies inside row `row`'s body.
    pub fn is_valid(&self, row: usize, c: usize) -> bool {
        self.spans
            .get(c)
            .zip(self.body_lens.get(row))
            .is_some_and(|(&(_, e), &len)| e <= len)
    }

    /// The candidate index of body span `start..end`, if it is a candidate.
    pub fn candidate(&self, start: usize, end: usize) -> Option<usize> {
        let w = end.checked_sub(start)?;
        let longest = self.body_lens.iter().copied().max()?;
        if w == 0 || w > self.max_width || end > longest {
            return None;
        }
        // Widths 1..w come first, `longest - w' + 1` spans each.
        Some((1..w).map(|v| longest - v + 1).sum::<usize>() + start)
    }

    /// The reader logits of ORQA and HF: every span of row `r` plus `relevance[r]`, the
    /// retriever's score of the row's document (`[rows]`, any float dtype; differentiable, so the
    /// reader loss reaches the retriever).
    pub fn plus_relevance(&self, relevance: &Tensor) -> Result<SpanLogits> {
        if self.with_relevance {
            return Err(Error::bad_input(
                OP,
                "relevance",
                "these logits already include the relevance",
            ));
        }
        let rows = self.rows();
        let relevance = f32_vector(relevance, rows, "one score per row")?.reshape((rows, 1))?;
        Ok(SpanLogits {
            logits: self.logits.broadcast_add(&relevance)?,
            with_relevance: true,
            ..self.clone()
        })
    }

    /// The best span over all rows (ORQA's and HF's prediction: the arg-max of the logits; ties
    /// go to the first row, then the first candidate).
    pub fn best(&self) -> Result<SpanPrediction> {
        Ok(self.top(1)?.remove(0))
    }

    /// The `n` best spans over all rows, best first (fewer when there are fewer candidates).
    /// Logits that are NaN are an error; `-inf` ones are never returned.
    pub fn top(&self, n: usize) -> Result<Vec<SpanPrediction>> {
        if n == 0 {
            return Err(Error::bad_input(OP, "n", "asked for 0 spans"));
        }
        let logits = self.logits.to_vec2::<f32>()?;
        let mut found = Vec::new();
        for (row, scores) in logits.iter().enumerate() {
            for (c, &score) in scores.iter().enumerate() {
                if score.is_nan() {
                    return Err(Error::bad_input(
                        OP,
                        "logits",
                        format!("row {row}, candidate {c} is NaN"),
                    ));
                }
                if score > f32::NEG_INFINITY {
                    let (start, end) = self.spans[c];
                    found.push(SpanPrediction {
                        row,
                        start,
                        end,
                        score,
                    });
                }
            }
        }
        if found.is_empty() {
            return Err(Error::bad_input(
                OP,
                "logits",
                "no candidate has a finite score",
            ));
        }
        // Stable: equal scores keep row-major candidate order.
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(n);
        Ok(found)
    }
}

/// ORQA's training loss, in three scalar (rank-0, f32) tensors.
#[derive(Clone, Debug)]
pub struct QaLoss {
    /// `reader + retriever`.
    pub loss: Tensor,
    /// `−log Σ_{matching (row, span)} softmax(all reader logits)`, 0 when no candidate matches.
    pub reader: Tensor,
    /// `−log Σ_{documents with an answer} softmax(relevance)`, 0 when none has one.
    pub retriever: Tensor,
    /// (row, candidate) pairs that match a gold span.
    pub matching_spans: usize,
    /// Documents of the beam that contain an answer.
    pub matching_docs: usize,
}

/// ORQA's loss (HF `RealmReader`'s `loss`, `reader_loss`, `retriever_loss`).
///
/// - `logits`: the reader logits with the relevance added ([`SpanLogits::plus_relevance`]);
/// - `gold[r]`: row `r`'s gold answer spans in body coordinates, end exclusive
///   ([`crate::data::answer_spans`] on the row's body gives them). Spans that are not candidates
///   (wider than `max_span_width`, or past the body in this input, e.g. truncated away) match
///   nothing, as in HF; an empty span (start ≥ end) is an error;
/// - `relevance`: `[k]` retriever scores of the whole beam, `k ≥ rows` (the reader rows are its
///   first documents), differentiable;
/// - `has_answer[i]`: whether beam document `i` contains an answer (e.g.
///   [`crate::data::contains_answer`] on its text).
///
/// A term with nothing matching is zero and carries no gradient (ORQA multiplies it by 0).
pub fn qa_loss(
    logits: &SpanLogits,
    gold: &[Vec<(usize, usize)>],
    relevance: &Tensor,
    has_answer: &[bool],
) -> Result<QaLoss> {
    if !logits.with_relevance {
        return Err(Error::bad_input(
            OP,
            "logits",
            "the loss is on reader logits plus the relevance: call plus_relevance first",
        ));
    }
    let rows = logits.rows();
    if gold.len() != rows {
        return Err(Error::bad_input(
            OP,
            "gold",
            format!("{} gold span lists for {rows} rows", gold.len()),
        ));
    }
    let k = has_answer.len();
    let relevance = f32_vector(relevance, k, "as long as has_answer")?;
    if k < rows {
        return Err(Error::bad_input(
            OP,
            "relevance",
            format!("a beam of {k} documents is shorter than the {rows} reader rows"),
        ));
    }
    if let Some(i) = crate::device::read_vec1::<f32>(&relevance)?
        .iter()
        .position(|v| !v.is_finite())
    {
        return Err(Error::bad_input(
            OP,
            "relevance",
            format!("score {i} is not finite"),
        ));
    }

    let c = logits.spans.len();
    let mut correct = vec![f32::NEG_INFINITY; rows * c];
    for (r, spans) in gold.iter().enumerate() {
        for &(s, e) in spans {
            if s >= e {
                return Err(Error::bad_input(
                    OP,
                    "gold",
                    format!("row {r}: span {s}..{e} is empty"),
                ));
            }
            if let Some(i) = logits.candidate(s, e).filter(|&i| logits.is_valid(r, i)) {
                correct[r * c + i] = 0.0;
            }
        }
    }
    let dev = logits.logits.device();
    let reader = marginal_loss(&logits.logits.reshape((1, rows * c))?, correct)?;
    let answers = has_answer
        .iter()
        .map(|&a| if a { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let retriever = marginal_loss(&relevance.reshape((1, k))?, answers)?;
    let zero = || Tensor::zeros((), DType::F32, dev);
    let (reader, matching_spans) = match reader {
        Some((loss, n)) => (loss, n),
        None => (zero()?, 0),
    };
    let (retriever, matching_docs) = match retriever {
        Some((loss, n)) => (loss, n),
        None => (zero()?, 0),
    };
    Ok(QaLoss {
        loss: (&reader + &retriever)?,
        reader,
        retriever,
        matching_spans,
        matching_docs,
    })
}

/// A relevance vector of `n` scores, in f32.
fn f32_vector(relevance: &Tensor, n: usize, what: &str) -> Result<Tensor> {
    if relevance.dims() != [n] || !relevance.dtype().is_float() {
        return Err(Error::bad_input(
            OP,
            "relevance",
            format!(
                "{:?} {:?} must be a float vector {what} ([{n}])",
                relevance.dtype(),
                relevance.dims()
            ),
        ));
    }
    Ok(relevance.to_dtype(DType::F32)?)
}

/// `−log Σ_{i: cond_i = 0} softmax(logits)_i` for `logits` `[1, n]` and `cond` 0 (match) or
/// `-inf`, through the fused marginal; None (with the match count 0) when nothing matches.
fn marginal_loss(logits: &Tensor, cond: Vec<f32>) -> Result<Option<(Tensor, usize)>> {
    let matches = cond.iter().filter(|&&v| v == 0.0).count();
    if matches == 0 {
        return Ok(None);
    }
    let n = cond.len();
    let cond = Tensor::from_vec(cond, (1, n), logits.device())?;
    let mll = crate::ops::marginal_log_likelihood(logits, &cond)?;
    Ok(Some((mll.neg()?.reshape(())?, matches)))
}

/// The text of a span of wordpiece ids: [`join_wordpieces`] of their vocabulary entries.
pub fn span_text(tokenizer: &BertTokenizer, wordpieces: &[u32]) -> Result<String> {
    let pieces = wordpieces
        .iter()
        .map(|&id| {
            tokenizer.id_to_token(id).ok_or_else(|| {
                Error::bad_input(
                    OP,
                    "wordpieces",
                    format!("id {id} is outside the vocabulary"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join_wordpieces(&pieces))
}

/// Wordpieces back to text as transformers' `BertTokenizer.decode` does: a `##` piece continues
/// the previous word, other pieces are separated by a space, and the spaces BERT's pre-tokenizer
/// put before `.`, `,`, `?`, `!` and English contractions (`n't`, `'s`, ...) are removed.
pub fn join_wordpieces<S: AsRef<str>>(pieces: &[S]) -> String {
    let mut text = String::new();
    for piece in pieces {
        let piece = piece.as_ref();
        match piece.strip_prefix("##") {
            Some(rest) => text.push_str(rest),
            None => {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(piece);
            }
        }
    }
    for (from, to) in [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ] {
        text = text.replace(from, to);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_width_major_and_indexable() {
        let spans = candidates(4, 3);
        assert_eq!(
            spans,
            [
                (0, 1),
                (1, 2),
                (2, 3),
                (3, 4),
                (0, 2),
                (1, 3),
                (2, 4),
                (0, 3),
                (1, 4)
            ]
        );
        let logits = SpanLogits {
            logits: Tensor::zeros((2, spans.len()), DType::F32, &Device::Cpu).unwrap(),
            spans: spans.clone(),
            body_offsets: vec![3, 3],
            body_lens: vec![4, 2],
            max_width: 3,
            with_relevance: false,
        };
        for (c, &(s, e)) in spans.iter().enumerate() {
            assert_eq!(logits.candidate(s, e), Some(c));
            assert_eq!(logits.is_valid(1, c), e <= 2);
        }
        assert_eq!(logits.candidate(0, 4), None); // wider than max_width
        assert_eq!(logits.candidate(3, 5), None); // past the longest body
        assert_eq!(logits.candidate(2, 2), None);
    }

    #[test]
    fn wordpieces_join_like_hf_decode() {
        let text = join_wordpieces(&["the", "bat", "##man", ",", "inc", ".", "isn", "'", "t"]);
        assert_eq!(text, "the batman, inc. isn't");
        assert_eq!(join_wordpieces(&["##ing", "up"]), "ing up");
        assert_eq!(join_wordpieces::<&str>(&[]), "");
    }
}
