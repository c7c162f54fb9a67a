//! The document index: block records with their f16 embeddings, saved and loaded as a folder, and
//! refreshed in the background while training goes on.

pub mod refresh;
pub mod store;

pub use refresh::{IndexSlot, Refresh, Refreshed, Versioned};
pub use store::{Manifest, StoredIndex};
