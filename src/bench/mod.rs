//! `realm bench`: the benchmarks of whole models, the BERT encoder ([`bert`]) and one REALM
//! pre-training step ([`train_step`]), beside the ops' own (`ops::*::bench`); all measured by
//! [`crate::measure`], whose items are re-exported here.

pub mod bert;
pub mod train_step;

pub use crate::measure::{time, Budget, Report, Timing};
