//! Training REALM: the optimizer and schedule ([`optim`]), trainer state and atomic checkpoints
//! ([`state`]), the run directory with its metrics and progress bars ([`run`]).

pub mod optim;
pub mod run;
pub mod state;

pub use optim::{AdamW, AdamWConfig, LinearSchedule};
pub use run::{Metric, MetricsLog, RunDir, Stage};
pub use state::{step_rng, TrainerState};
