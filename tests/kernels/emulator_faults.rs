//! The emulator itself. Deliberately broken kernels (kernels/emulator/faults/): each launch must
//! fail with a message naming the kernel, the block, the thread and the fault, never crash or hang.
//! Then its options: blocks at once on several threads, and the two `mma` rounding models.
#![cfg(feature = "emulate")]

use realm::conformance;
use realm::device::Exec;
use realm::kernels::abi::faults::{Fault, Variant};
use realm::kernels::{Backend, Emulator, Launch};

fn emulator() -> Emulator {
    Emulator::new(Exec::emulator().unwrap())
}

/// Launches `kernel` on 256 input words and `out_len` output words; returns its fault message.
fn fault(kernel: Variant, shape: Launch, out_len: usize) -> String {
    let emu = emulator();
    let input: Vec<u32> = (0..256).collect();
    let mut out = vec![0u32; out_len];
    let mut b = emu.binder();
    let params = Fault {
        input: Emulator::read_buf(&mut b, &input),
        out: Emulator::write(&mut b, &mut out),
    };
    match emu.launch(b, kernel, shape, params) {
        Err(realm::Error::Emulator(msg)) => msg,
        Err(other) => panic!("unexpected error: {other}"),
        Ok(()) => panic!("the broken kernel ran without a fault"),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "`{msg}` does not mention `{part}`");
    }
}

fn block_of_64() -> Launch {
    Launch::linear(1, 64)
}

#[test]
fn out_of_bounds_global_write() {
    let msg = fault(Variant::OobWrite, Launch::linear(2, 32), 48);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_oob_write`",
            "block (1,0,0)",
            "thread (16,0,0)",
            "out of bounds",
            "element 48 ",
            "buffer of 48 elements",
        ],
    );
}

#[test]
fn out_of_bounds_global_read_before_the_buffer() {
    let msg = fault(Variant::OobRead, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_oob_read`",
            "block (0,0,0)",
            "thread (0,0,0)",
            "out of bounds",
            "element -1 ",
        ],
    );
}

#[test]
fn missing_syncthreads_reads_uninitialised_shared_memory() {
    let msg = fault(Variant::MissingSync, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_missing_sync`",
            "block (0,0,0)",
            "thread (0,0,0)",
            "uninitialised shared memory",
            "element 1 ",
        ],
    );
}

#[test]
fn divergent_barrier_is_reported_not_hung() {
    let msg = fault(Variant::DivergentBarrier, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_divergent_barrier`",
            "block (0,0,0)",
            "thread (16,0,0)",
            "barrier not reached by every thread",
            "16 of the block's 64 threads",
            "faults.cu:",
        ],
    );
}

#[test]
fn threads_at_different_barriers() {
    let msg = fault(Variant::BarrierSites, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_barrier_sites`",
            "thread (1,0,0)",
            "barrier not reached by every thread",
            "different __syncthreads",
        ],
    );
}

#[test]
fn full_mask_shuffle_after_half_the_warp_exited() {
    let msg = fault(Variant::ShflExited, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_shfl_exited`",
            "block (0,0,0)",
            "thread (0,0,0)",
            "__shfl_xor_sync",
            "mask 0xffffffff",
            "lane(s) 16-31 never arrive",
            "thread (16,0,0) has exited",
        ],
    );
}

#[test]
fn partial_mask_shuffle_reading_outside_its_mask() {
    let msg = fault(Variant::ShflOutsideMask, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_shfl_outside_mask`",
            "thread (0,0,0)",
            "mask 0x0000ffff",
            "lane 0 reads lane 16, which is not in the mask",
        ],
    );
}

#[test]
fn lanes_at_different_collectives() {
    let msg = fault(Variant::MismatchedCollective, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_mismatched_collective`",
            "thread (1,0,0)",
            "mismatched warp collective",
            "__ballot_sync",
            "__shfl_xor_sync",
        ],
    );
}

#[test]
fn out_of_bounds_shared_write() {
    let msg = fault(Variant::SharedOob, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_shared_oob`",
            "thread (32,0,0)",
            "shared memory access out of bounds",
            "element 32 ",
            "shared array of 32 elements",
        ],
    );
}

#[test]
fn cp_async_destination_read_before_its_wait() {
    let msg = fault(Variant::CpAsyncNoWait, block_of_64(), 64);
    assert_mentions(
        &msg,
        &[
            "kernel `fault_cp_async_no_wait`",
            "block (0,0,0)",
            "thread (",
            "before the cp.async",
            "cp_async_wait",
        ],
    );
}

#[test]
fn invalid_launch_configurations() {
    let kernel = Variant::OobWrite;
    let cases = [
        (Launch::linear(1, 2048), "2048 threads (at most 1024)"),
        (
            Launch::linear(1, 128),
            "exceeds the kernel's __launch_bounds__(64)",
        ),
        (
            Launch::linear(1, 32).with_dyn_smem(300 * 1024),
            "dynamic shared memory (at most 227 KiB",
        ),
        (Launch::linear(0, 32), "no zero dimension"),
    ];
    for (shape, what) in cases {
        let msg = fault(kernel, shape, 64);
        assert_mentions(&msg, &["kernel `fault_oob_write`", "invalid launch", what]);
    }
}

#[test]
fn faults_leave_nothing_behind() {
    for _ in 0..50 {
        fault(Variant::ShflExited, block_of_64(), 64);
        fault(Variant::DivergentBarrier, block_of_64(), 64);
        fault(Variant::OobWrite, Launch::linear(2, 32), 48);
    }
    let outcome = conformance::reduce(&emulator()).unwrap();
    assert!(outcome.passed, "{}", outcome.detail);
}

/// cp.async's 16-byte source must be 16-byte aligned in memory, not only relative to its
/// buffer: a view starting 4 bytes into an aligned allocation faults at its first element, and
/// the same kernel on an aligned view runs.
#[test]
fn cp_async_from_a_misaligned_address_faults_even_at_a_buffer_start() {
    use realm::kernels::abi::conformance::{Conformance, Variant as Conf};
    let emu = emulator();
    let storage: Vec<u32> = (0..520).collect();
    let at = |rem: usize| {
        (0..4)
            .find(|&o| (storage.as_ptr() as usize + 4 * o) % 16 == rem)
            .expect("a u32 at every 4-byte remainder")
    };
    let run = |start: usize| {
        let input = &storage[start..start + 512];
        let mut out = vec![0u32; 128];
        let mut b = emu.binder();
        let params = Conformance {
            input: Emulator::read(&mut b, &input),
            out: Emulator::write(&mut b, &mut out),
        };
        emu.launch(b, Conf::CpAsync, block_of_64(), params)
    };
    run(at(0)).expect("an aligned view");
    match run(at(4)) {
        Err(realm::Error::Emulator(msg)) => assert_mentions(
            &msg,
            &[
                "kernel `conformance_cp_async`",
                "thread (0,0,0)",
                "not 16-byte aligned",
            ],
        ),
        other => panic!("a misaligned cp.async source ran: {other:?}"),
    }
}

/// With `emu_block_threads` > 1 the blocks of a launch run at the same time, on OS threads with
/// real atomics (kernels/emulator/faults/blocks_meet.cu): two blocks that wait for each other
/// both see the other. Run one after another, the first gives up and the second sees it.
#[test]
fn blocks_run_at_the_same_time_with_several_block_threads() {
    use realm::kernels::abi::blocks_meet::BlocksMeet;
    let meet = |block_threads: u32| {
        let mut exec = Exec::emulator().unwrap();
        exec.emu_block_threads = block_threads;
        let emu = Emulator::new(exec);
        let mut flags = vec![0i32; 2];
        let mut met = vec![0u32; 2];
        let mut b = emu.binder();
        let params = BlocksMeet {
            flags: Emulator::write(&mut b, &mut flags),
            met: Emulator::write(&mut b, &mut met),
        };
        emu.launch(b, (), Launch::linear(2, 1), params).unwrap();
        assert_eq!(flags, [1, 1]);
        met
    };
    assert_eq!(meet(2), [1, 1], "blocks on two threads did not meet");
    let mut one_by_one = meet(1);
    one_by_one.sort_unstable();
    assert_eq!(one_by_one, [0, 1], "blocks run one after another met");
}

/// `mma` under the two rounding models: C = 1 plus the single product 1.5·2⁻²⁴ (three quarters
/// of an f32 ulp of 1) rounds up to 1 + 2⁻²³ when added exactly and rounded to nearest, and is
/// truncated away when aligned to C as the tensor cores of docs/emulator.md do.
#[test]
fn mma_rounds_as_its_model_says() {
    use realm::device::EmuMma;
    use realm::kernels::abi::conformance::{Conformance, Variant as Conf};
    let d00 = |model: EmuMma| {
        let mut exec = Exec::emulator().unwrap();
        exec.emu_mma = model;
        let emu = Emulator::new(exec);
        // A (16x16 f16, row-major, two per word), B (16x8), then C (16x8 f32).
        let mut input = vec![0u32; 128 + 64 + 128];
        input[0] = u32::from(half::f16::from_f32(1.5 * (-12f32).exp2()).to_bits());
        input[128] = u32::from(half::f16::from_f32((-12f32).exp2()).to_bits());
        input[192] = 1f32.to_bits();
        let mut out = vec![0u32; 256];
        let mut b = emu.binder();
        let params = Conformance {
            input: Emulator::read_buf(&mut b, &input),
            out: Emulator::write(&mut b, &mut out),
        };
        emu.launch(b, Conf::MmaF16, Launch::linear(1, 32), params)
            .unwrap();
        assert!(out[1..128].iter().all(|&w| w == 0), "{out:?}");
        f32::from_bits(out[0])
    };
    assert_eq!(d00(EmuMma::Exact), 1.0 + f32::EPSILON);
    assert_eq!(d00(EmuMma::Truncate), 1.0);
}
