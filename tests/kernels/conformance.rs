//! The portability layer's conformance suite on the CUDA kernels' execution modes (the emulator,
//! and a GPU when present): every check must agree bit for bit with its Rust model of CUDA and
//! the PTX ISA. And the launch seam's per-mode state: output poisoning and the launch counters
//! belong to an execution mode, so threads (and parallel tests) never see each other's.

use realm::conformance::{self, CheckOutcome};
use realm::device::{ComputeDevice, DeviceSpec};
use realm::kernels::{Backend, Emulator};
use std::sync::Barrier;

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
    ($dev:expr, $check:path) => {
        on_kernels!($dev, |be| $check(be))
    };
    ($dev:expr, |$be:ident| $body:expr) => {{
        let dev: &ComputeDevice = $dev;
        match &dev.device {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(d) => {
                let $be = &realm::kernels::Cuda::new(d, dev.exec.clone());
                $body
            }
            _ => {
                let $be = &Emulator::new(dev.exec.clone());
                $body
            }
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
    load_cg,
    convert,
    cp_async,
    ldmatrix,
    mma_f16,
    mma_bf16,
    indices,
    axpy,
);

test_exec!(kernels fn all_runs_every_check(dev) {
    let outcomes = on_kernels!(dev, conformance::all);
    assert_eq!(outcomes.len(), 14);
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

/// Another device of the same kind as `dev`, with its own execution mode.
fn fresh(dev: &ComputeDevice) -> ComputeDevice {
    let spec = if dev.is_cuda() {
        DeviceSpec::Cuda(0)
    } else {
        DeviceSpec::Emulate
    };
    ComputeDevice::resolve(spec).unwrap()
}

/// 16 f32 outputs as the device's backend allocates them for a kernel, read back.
fn fresh_outputs(dev: &ComputeDevice) -> Vec<f32> {
    on_kernels!(dev, |be| {
        let buf = be.alloc::<f32>(16, "test output").unwrap();
        be.download(&buf, "test output").unwrap()
    })
}

// Two threads at once, one poisoning kernel outputs and one not, and a selftest (which poisons
// for its own run) beside them: each sees only its own mode's setting.
test_exec!(kernels fn output_poisoning_belongs_to_the_execution_mode(dev) {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for poison in [true, false] {
            let barrier = &barrier;
            s.spawn(move || {
                let mine = ComputeDevice {
                    exec: dev.exec.with_poison_outputs(poison),
                    ..dev.clone()
                };
                let _mode = mine.enter().unwrap();
                barrier.wait();
                for _ in 0..50 {
                    let out = fresh_outputs(&mine);
                    if poison {
                        assert!(out.iter().all(|v| v.is_nan()), "not poisoned: {out:?}");
                    } else if mine.is_emulated() {
                        // (A GPU leaves unpoisoned outputs uninitialised.)
                        assert!(out.iter().all(|&v| v == 0.0), "poisoned: {out:?}");
                    }
                }
            });
        }
        let clean = dev.exec.with_poison_outputs(false);
        let barrier = &barrier;
        s.spawn(move || {
            let quiet = ComputeDevice {
                exec: clean,
                ..dev.clone()
            };
            barrier.wait();
            let rows = realm::selftest::run(&quiet, Some("conformance"));
            assert!(rows.iter().all(|r| r.passed()));
            assert!(!quiet.exec.poison_outputs, "selftest changed the caller's mode");
        });
    });
});

// Launches and device-to-host reads are counted in the mode that made them, whichever thread.
test_exec!(kernels fn launches_are_counted_in_their_execution_mode(dev) {
    let (a, b) = (fresh(dev), fresh(dev));
    std::thread::scope(|s| {
        s.spawn(|| assert_passes(on_kernels!(&a, conformance::shuffle)));
        s.spawn(|| {
            for _ in 0..3 {
                assert_passes(on_kernels!(&b, conformance::vote));
            }
        });
    });
    assert_eq!((a.exec.launches(), a.exec.host_reads()), (1, 1));
    assert_eq!((b.exec.launches(), b.exec.host_reads()), (3, 3));
    // An op counts in the mode of the thread that builds it.
    let x = candle_core::Tensor::new(&[[0.5f32, 1.0, -1.0]], &a.device).unwrap();
    {
        let _mode = a.enter().unwrap();
        realm::ops::doc_softmax(&x).unwrap();
    }
    assert_eq!(a.exec.launches(), 2);
    assert_eq!(b.exec.launches(), 3);
});

/// The emulator runs a launch's blocks in a seeded order that is not always the index order (so
/// that a kernel relying on it shows it), the same on every run: the order in which the blocks
/// of the atomics kernel took their first ticket differs from 0, 1, 2, 3 in some of 8 launches,
/// and a fresh thread sees the same orders again.
#[cfg(feature = "emulate")]
#[test]
fn the_emulator_runs_blocks_out_of_index_order_reproducibly() {
    use realm::kernels::abi::conformance::{Conformance, Variant};
    use realm::kernels::Launch;
    let orders = || {
        // One block after another (whatever REALM_EMU_BLOCK_THREADS says): the order is the claim.
        let mut exec = realm::device::Exec::emulator().unwrap();
        exec.emu_block_threads = 1;
        let emu = Emulator::new(exec);
        (0..8)
            .map(|_| {
                let input = vec![1u32; 4 * 128];
                let mut out = vec![0u32; 12 + 4 * 128];
                let mut b = emu.binder();
                let params = Conformance {
                    input: Emulator::read_buf(&mut b, &input),
                    out: Emulator::write(&mut b, &mut out),
                };
                emu.launch(b, Variant::Atomics, Launch::linear(4, 128), params)
                    .unwrap();
                // Thread 0 of each block takes the block's first ticket.
                let mut blocks: Vec<usize> = (0..4).collect();
                blocks.sort_by_key(|&blk| out[12 + 128 * blk]);
                blocks
            })
            .collect::<Vec<_>>()
    };
    let first = std::thread::spawn(orders).join().unwrap();
    assert!(
        first.iter().any(|o| *o != (0..4).collect::<Vec<_>>()),
        "every launch ran its blocks in index order: {first:?}"
    );
    assert_eq!(std::thread::spawn(orders).join().unwrap(), first);
}
