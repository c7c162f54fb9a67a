//! The models. [`bert`]: the BERT encoder (Hugging Face-compatible weights) on the fused
//! attention, with its tokenizer, pooling, `realm embed` and `realm bench bert`.

pub mod bert;
mod checkpoint;
pub mod config;
mod copy_head;
pub mod encoder;
mod heads;
pub mod loss_scale;
pub mod mask_slots;
pub mod pooling;
pub mod projection;
pub mod reader;
mod realm;
pub mod realm_inputs;
pub mod retriever;
pub mod tokenizer;
mod train_rng;

/// The trainer's state in a training checkpoint folder (written by `train::state`): what tells a
/// checkpoint of a training run from a plain model folder.
pub const TRAINER_JSON: &str = "trainer.json";

pub use bert::{BertInput, BertModel, BertOutput, Mode};
pub use config::{Activation, BertConfig};
pub use encoder::KnowledgeEncoder;
pub use loss_scale::DynamicLossScaler;
pub use mask_slots::MaskSlots;
pub use pooling::{l2_normalize, pool, Pooling};
pub use reader::{
    join_wordpieces, qa_loss, span_text, QaLoss, Reader, ReaderConfig, SpanLogits, SpanPrediction,
};
pub use realm::{
    marginal_log_probs, marginal_utility_sum, mlm_marginal, retrieval_mass_sums, retrieval_utility,
    MlmBatch, MlmOutput, RealmModel, RealmSettings, RetrievalUtility, NULL_COLUMN,
};
pub use realm_inputs::{doc_inputs, joined_inputs, query_inputs};
pub use retriever::{relevance, Retriever, RetrieverConfig, SharedTowers, Tower, TowerPooling};
pub use tokenizer::{Batch, BertTokenizer, Overflow};
