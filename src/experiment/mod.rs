//! Experiments that chain the training stages and compare their outcomes over seeds:
//! [`ablation`], the REALM paper's pre-training ablation in miniature (`realm experiment
//! ablation`).

pub mod ablation;
