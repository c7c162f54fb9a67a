//! doc_softmax's CUDA kernels run by the emulator: forward and backward match the CPU
//! implementation, on both kernel variants (warp per row, block per row) and every dtype.
#![cfg(feature = "emulate")]

use candle_core::{DType, Device, Tensor, Var};
use realm::device::{ComputeDevice, DeviceSpec};
use realm::ops::doc_softmax::random_logits;
use realm::ops::{doc_softmax, marginal_log_likelihood, use_emulator};
use realm::rng::SplitMix64;
use realm::selftest::{max_rel_err, tolerance};

fn f64s(x: &Tensor) -> Vec<f64> {
    x.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Outputs and gradients of doc_softmax and the marginal for one input, on the current CpuExec;
/// `gp` and `g` weight the two outputs so that each gets its own incoming gradient.
fn run_all(x: &Tensor, c: &Tensor, gp: &Tensor, g: &Tensor) -> Vec<Vec<f64>> {
    let xv = Var::from_tensor(x).unwrap();
    let cv = Var::from_tensor(c).unwrap();
    let p = doc_softmax(xv.as_tensor()).unwrap();
    let out = marginal_log_likelihood(xv.as_tensor(), cv.as_tensor()).unwrap();
    let weighted = |t: &Tensor, w: &Tensor| {
        (t.to_dtype(DType::F32).unwrap() * w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let loss = (weighted(&p, gp) + weighted(&out, g)).unwrap();
    let grads = loss.backward().unwrap();
    vec![
        f64s(&p),
        f64s(&out),
        f64s(grads.get(&xv).unwrap()),
        f64s(grads.get(&cv).unwrap()),
    ]
}

#[test]
fn emulated_kernels_match_the_cpu_implementation() {
    // k = 1, odd, at the warp limit (256), just past it (block variant), and a long beam.
    let shapes = [
        (1, 1, 1),
        (3, 7, 2),
        (9, 33, 1),
        (4, 256, 3),
        (3, 257, 2),
        (2, 1200, 2),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &(b, k, m)) in shapes.iter().enumerate() {
            let mut rng = SplitMix64::new(40 + i as u64);
            let x = Tensor::from_vec(random_logits(&mut rng, b, k, 3.0), (b, k), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let cond: Vec<f64> = rng
                .normal_vec(b * k * m, 2.0)
                .into_iter()
                .map(|v| -v.abs())
                .collect();
            let c = Tensor::from_vec(cond, (b, k, m), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let g = Tensor::from_vec(rng.normal_vec(b * m, 1.0), (b, m), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let gp = Tensor::from_vec(rng.normal_vec(b * k, 1.0), (b, k), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let native = run_all(&x, &c, &gp, &g);
            let emulated = {
                let _emu = use_emulator().unwrap();
                run_all(&x, &c, &gp, &g)
            };
            for (what, (n, e)) in ["p", "marginal", "d/dx", "d/dc"]
                .iter()
                .zip(native.iter().zip(&emulated))
            {
                let err = max_rel_err(e, n);
                assert!(
                    err <= tolerance(dtype),
                    "{dtype:?} b={b} k={k} m={m} {what}: emulator vs cpu error {err:e}"
                );
            }
        }
    }
}

#[test]
fn absent_candidates_behave_the_same_under_the_emulator() {
    let inf = f64::NEG_INFINITY;
    let x = Tensor::new(
        &[[inf as f32, inf as f32, inf as f32], [0.5, inf as f32, 1.0]],
        &Device::Cpu,
    )
    .unwrap();
    let c = Tensor::new(
        &[
            [[-1f32], [-2.0], [-3.0]],
            [[inf as f32], [-1.0], [inf as f32]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let _emu = use_emulator().unwrap();
    assert_eq!(f64s(&doc_softmax(&x).unwrap())[..3], [0.0, 0.0, 0.0]);
    assert_eq!(f64s(&marginal_log_likelihood(&x, &c).unwrap()), [inf, inf]);
}

#[test]
fn every_registered_check_passes_on_the_emulator() {
    let dev = ComputeDevice::resolve(DeviceSpec::Emulate).unwrap();
    let rows = realm::selftest::run(&dev, None);
    assert!(rows.iter().any(|r| r.op == "doc_softmax"));
    for row in rows {
        match &row.outcome {
            Ok(o) => assert!(
                o.passed(),
                "{}/{}: error {:e} > {:e}",
                row.op,
                row.name,
                o.max_rel_err,
                o.tolerance
            ),
            Err(e) => panic!("{}/{}: {e}", row.op, row.name),
        }
    }
}
