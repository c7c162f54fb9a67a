//! The kernel ops and the portability layer on every execution mode, as one test binary (one
//! link instead of eight): fused attention, conformance, doc_softmax, dropout, the emulator's
//! fault reports, MIPS, LayerNorm/GELU and AdamW. Each module's own documentation says what it
//! checks; `cargo test --test kernels <module>::` runs one of them.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod attention;
mod conformance;
mod doc_softmax;
mod dropout;
mod emulator_faults;
mod mips;
mod nn;
mod optim;
