//! The document index: blocks cut from a corpus and embedded by a document tower ([`build`]),
//! saved and loaded as a folder ([`store`]), searched with the matching query tower ([`search`]),
//! and refreshed in the background while training goes on ([`refresh`]).

pub mod batch;
pub mod bench;
pub mod build;
pub mod live;
pub mod manifest;
pub mod mapped;
pub mod model;
pub mod refresh;
pub mod search;
pub mod store;
pub mod stream;
pub mod writer;

pub use build::{corpus_blocks, embed_blocks, index_corpus};
pub use mapped::BlockIndex;
pub use model::{weights_fingerprint, RetrieverModel};
pub use refresh::{IndexSlot, Refresh, Refreshed, Versioned};
pub use search::{Hit, Searcher};
pub use store::{Manifest, StoredIndex};
