//! Training REALM: the optimizer and schedule ([`optim`]), trainer state and atomic checkpoints
//! ([`state`]), the run directory with its metrics and progress bars ([`run`]), the loop
//! machinery every stage shares ([`trainer`]), where models come from ([`models`]) and training
//! examples ([`examples`]). Retrieval over the live index and its refresh are
//! [`crate::index::live`]; evaluation is [`crate::eval`].

pub mod batch;
pub mod examples;
pub mod finetune;
pub mod ict;
pub mod interrupt;
pub mod limits;
pub mod models;
pub mod optim;
pub mod pretrain;
pub mod run;
pub mod state;
pub mod trainer;

pub use optim::{AdamW, AdamWConfig, LinearSchedule};
pub use run::{Metric, MetricsLog, RunDir, Stage};
pub use state::{step_rng, TrainerState};
pub use trainer::{LoopConfig, RunOptions, Trainer};
