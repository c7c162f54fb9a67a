//! The portability layer's conformance suite on the CUDA kernels' execution modes (the emulator,
//! and a GPU when present): every check must agree bit for bit with its Rust model of CUDA and
//! the PTX ISA.

mod common;

use realm::conformance::{self, CheckOutcome};
use realm::device::ComputeDevice;
use realm::kernels::Emulator;

fn assert_passes(outcome: realm::Result<CheckOutcome>) {
    let o = outcome.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        o.passed,
        "{}: {} (max abs err {:e})",
        o.name, o.detail, o.max_abs_err
    );
}

/// `$check(backend)` on the device's kernels: a GPU, or the emulator.
macro_rules! on_kernels {
    ($dev:expr, $check:path) => {{
        let dev: &ComputeDevice = $dev;
        match &dev.device {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(d) => $check(&realm::kernels::Cuda::new(d, dev.exec.clone())),
            _ => $check(&Emulator::new(dev.exec.clone())),
        }
    }};
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        $(
            test_exec!(kernels fn $check(dev) {
                assert_passes(on_kernels!(dev, conformance::$check));
            });
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

test_exec!(kernels fn all_runs_every_check(dev) {
    let outcomes = on_kernels!(dev, conformance::all);
    assert_eq!(outcomes.len(), 12);
    outcomes.into_iter().for_each(assert_passes);
});

test_exec!(kernels fn the_selftest_case_passes(dev) {
    let rows = realm::selftest::run(dev, Some("conformance"));
    assert_eq!(rows.len(), 1);
    for row in rows {
        assert!(row.passed(), "{}: {:?}", row.name, row.outcome.err());
    }
});

test_exec!(kernels fn launches_from_several_threads_at_once_are_independent(dev) {
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..3 {
                    assert_passes(on_kernels!(dev, conformance::reduce));
                    assert_passes(on_kernels!(dev, conformance::mma_f16));
                }
            });
        }
    });
});
