//! Data: corpus readers, retrieval blocks, salient spans and their masking, ICT examples, and QA
//! formats with SQuAD's answer normalisation. The block, masking and ICT code works on wordpiece
//! ids and offsets, independent of the tokenizer.

pub mod answers;
pub mod blocks;
pub mod corpus;
pub mod demo;
pub mod ict;
pub mod masking;
pub mod qa;
pub mod salient;
mod squad;
pub mod tokenized;
pub mod vocab;

pub use answers::{answer_spans, contains_answer};
pub use blocks::{pack_blocks, Block};
pub use corpus::{CorpusFormat, CorpusReader, Document};
pub use ict::{ict_example, IctExample};
pub use masking::{mask_salient_spans, MaskConfig, MaskedExample};
pub use qa::{exact_match, normalize_answer, read_qa, Answer, QaExample};
pub use salient::{sentences, RuleTagger, SalientTagger, Span, SpanKind};
