//! Hidden-state dropout on every execution mode (native CPU, the kernel on the emulator and on a
//! GPU): bit for bit the host-drawn Philox mask multiplied in (forward and backward), so every
//! mode draws the same masks; the dropped fraction and the kept scale; bad input.

use candle_core::{DType, Tensor};
use realm::ops::dropout::{composition, dropout, selftest_cases, DropoutMask};

test_exec!(fn every_size_and_dtype_equals_the_host_mask_bit_for_bit(dev) {
    for case in selftest_cases() {
        let outcome = (case.run)(dev).unwrap();
        assert!(outcome.passed(), "{}: {outcome:?}", case.name);
    }
});

test_exec!(fn a_mask_drops_p_and_depends_on_seed_stream_and_step_only(dev) {
    let x = Tensor::ones((64, 33), DType::F32, &dev.device).unwrap();
    let mask = DropoutMask { p: 0.25, seed: 7, stream: 3, step: 5 };
    let draw = |m: DropoutMask| -> Vec<f32> {
        dropout(&x, m).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    };
    let a = draw(mask);
    assert_eq!(a, draw(mask));
    for other in [
        DropoutMask { seed: 8, ..mask },
        DropoutMask { stream: 4, ..mask },
        DropoutMask { step: 6, ..mask },
        DropoutMask { step: 5 + (1 << 32), ..mask },
    ] {
        assert_ne!(a, draw(other));
    }
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
    assert!((dropped - 0.25).abs() < 0.05, "dropped fraction {dropped}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    // In bf16 the kept scale is 1/(1 − p) rounded to bf16, as `x * mask` in bf16 has it.
    let xb = x.to_dtype(DType::BF16).unwrap();
    let mask = DropoutMask { p: 0.1, ..mask };
    let ours = dropout(&xb, mask).unwrap().to_dtype(DType::F32).unwrap();
    let host = composition(&xb, mask).unwrap().to_dtype(DType::F32).unwrap();
    assert_eq!(
        ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        host.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
});

test_exec!(fn p_zero_is_the_identity_and_bad_p_is_an_error(dev) {
    let x = Tensor::ones(10, DType::F32, &dev.device).unwrap();
    let mask = |p| DropoutMask { p, seed: 1, stream: 0, step: 0 };
    let same = dropout(&x, mask(0.0)).unwrap();
    assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0; 10]);
    for p in [1.0, -0.1, f32::NAN] {
        let e = dropout(&x, mask(p)).unwrap_err().to_string();
        assert!(e.contains("dropout") && e.contains("p"), "{e}");
    }
    let ints = Tensor::ones(10, DType::U32, &dev.device).unwrap();
    assert!(dropout(&ints, mask(0.5)).is_err());
});
