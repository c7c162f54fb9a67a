//! Data: corpus readers and QA formats with SQuAD's answer normalisation. (Blocks of wordpieces,
//! salient-span masking and ICT examples come with the REALM core.)

pub mod corpus;
pub mod qa;
pub mod salient;

pub use corpus::{CorpusFormat, CorpusReader, Document};
pub use qa::{exact_match, normalize_answer, read_qa, Answer, QaExample};
pub use salient::{sentences, RuleTagger, SalientTagger, Span, SpanKind};
