//! The portability layer's conformance suite under the emulator: every check must agree bit for
//! bit with its Rust model of CUDA and the PTX ISA (the same checks run on a GPU in selftest).
#![cfg(feature = "emulate")]

use realm::conformance::{self, Backend, CheckOutcome};

fn assert_passes(outcome: realm::Result<CheckOutcome>) {
    let o = outcome.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        o.passed,
        "{}: {} (max abs err {:e})",
        o.name, o.detail, o.max_abs_err
    );
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                assert_passes(conformance::$check(&Backend::Emulator));
            }
        )*
    };
}

conformance_tests!(
    shuffle,
    vote,
    reduce,
    barrier,
    dynamic_smem,
    atomics,
    convert,
    cp_async,
    ldmatrix,
    mma_f16,
    mma_bf16,
    indices,
);

#[test]
fn all_runs_every_check() {
    let outcomes = conformance::all(&Backend::Emulator);
    assert_eq!(outcomes.len(), 12);
    outcomes.into_iter().for_each(assert_passes);
}

#[test]
fn launches_from_several_threads_at_once_are_independent() {
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..3 {
                    assert_passes(conformance::reduce(&Backend::Emulator));
                    assert_passes(conformance::mma_f16(&Backend::Emulator));
                }
            });
        }
    });
}
