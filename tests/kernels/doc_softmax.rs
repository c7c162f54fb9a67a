//! doc_softmax and the marginal log-likelihood on every execution mode (native CPU, the CUDA
//! kernels on the emulator and on a GPU): against the candle composition in f64, at extreme
//! magnitudes, with absent candidates, by finite differences, long beams; the kernels (both
//! variants, every dtype) against the CPU implementation; and bad input.

use candle_core::{DType, Device, Tensor, Var};
use realm::device::ComputeDevice;
use realm::ops::doc_softmax::{mll_composition, random_logits, softmax_composition};
use realm::ops::{doc_softmax, marginal_log_likelihood};
use realm::rng::SplitMix64;
use realm::selftest::{max_rel_err, tolerance};

/// A tensor of `dtype` on `dev` from f64 values.
fn on(dev: &Device, values: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

fn t(values: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    on(&Device::Cpu, values, shape, dtype)
}

fn f64s(x: &Tensor) -> Vec<f64> {
    x.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

test_exec!(fn every_registered_check_passes(dev) {
    let rows = realm::selftest::run(dev, Some("doc_softmax"))
        .into_iter()
        .chain(realm::selftest::run(dev, Some("marginal_log_likelihood")))
        .collect::<Vec<_>>();
    crate::common::assert_selftest_passed(rows, 30);
});

test_exec!(fn large_magnitudes_match_the_f64_composition(dev) {
    let mut rng = SplitMix64::new(1);
    let (b, k, m) = (6, 40, 3);
    let x: Vec<f64> = rng.normal_vec(b * k, 1.0).iter().map(|v| v * 1e4).collect();
    let c: Vec<f64> = rng
        .normal_vec(b * k * m, 1.0)
        .iter()
        .map(|v| -v.abs() * 1e4)
        .collect();
    let x32 = on(&dev.device, x.clone(), &[b, k], DType::F32);
    let c32 = on(&dev.device, c.clone(), &[b, k, m], DType::F32);
    // The reference sees the same f32-rounded inputs.
    let x64 = x32.to_dtype(DType::F64).unwrap().to_device(&Device::Cpu).unwrap();
    let c64 = c32.to_dtype(DType::F64).unwrap().to_device(&Device::Cpu).unwrap();

    let p = doc_softmax(&x32).unwrap();
    let p_ref = softmax_composition(&x64).unwrap();
    assert!(max_rel_err(&f64s(&p), &f64s(&p_ref)) < 1e-5);

    let out = marginal_log_likelihood(&x32, &c32).unwrap();
    let out_ref = mll_composition(&x64, &c64).unwrap();
    assert_eq!(out.dims(), &[b, m]);
    assert!(max_rel_err(&f64s(&out), &f64s(&out_ref)) < 1e-5);
});

test_exec!(fn absent_candidates_give_minus_inf_and_zero_gradients_never_nan(dev) {
    let inf = f64::NEG_INFINITY;
    // Row 0: no candidate at all. Row 1: one candidate. Row 2: candidates whose conditionals are
    // all impossible for target 0 but not for target 1.
    let x = vec![inf, inf, inf, 0.5, inf, inf, 1.0, 2.0, 3.0];
    let c = vec![
        -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, //
        -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, //
        inf, -1.0, inf, -2.0, inf, -3.0,
    ];
    let xv = Var::from_tensor(&on(&dev.device, x, &[3, 3], DType::F32)).unwrap();
    let cv = Var::from_tensor(&on(&dev.device, c, &[3, 3, 2], DType::F32)).unwrap();

    let p = f64s(&doc_softmax(xv.as_tensor()).unwrap());
    assert_eq!(&p[..3], &[0.0, 0.0, 0.0]);
    assert_eq!(&p[3..6], &[1.0, 0.0, 0.0]);

    let out = marginal_log_likelihood(xv.as_tensor(), cv.as_tensor()).unwrap();
    let o = f64s(&out);
    assert_eq!(&o[..2], &[inf, inf], "no candidate: -inf");
    assert!(
        (o[2] - -1.0).abs() < 1e-6 && (o[3] - -2.0).abs() < 1e-6,
        "single candidate: its conditional"
    );
    assert_eq!(o[4], inf, "no candidate can produce target 0 of row 2");
    assert!(o[5].is_finite());

    // Only finite outputs feed the loss (as a training loop masks them), but the gradient of
    // every entry must be a number.
    let finite = Tensor::new(&[[0u8, 0], [1, 1], [0, 1]], &dev.device).unwrap();
    let loss = finite
        .where_cond(&out, &out.zeros_like().unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    for v in [&xv, &cv] {
        let g = f64s(grads.get(v).unwrap());
        assert!(
            g.iter().all(|v| v.is_finite()),
            "gradient has NaN/inf: {g:?}"
        );
    }
    let gx = f64s(grads.get(&xv).unwrap());
    assert_eq!(
        &gx[..3],
        &[0.0, 0.0, 0.0],
        "row without candidates has zero gradient"
    );
});

// Central finite differences of the op itself (f64 arithmetic on f32 inputs would be too noisy:
// use inputs whose f32 rounding is exact and a step of 1/64).
test_exec!(fn gradients_match_finite_differences(dev) {
    let (b, k, m) = (2, 5, 2);
    let mut rng = SplitMix64::new(3);
    let q = |v: f64| (v * 64.0).round() / 64.0;
    let x: Vec<f64> = rng.normal_vec(b * k, 1.0).into_iter().map(q).collect();
    let c: Vec<f64> = rng
        .normal_vec(b * k * m, 1.0)
        .into_iter()
        .map(|v| q(-v.abs()))
        .collect();
    let loss = |x: &[f64], c: &[f64]| -> f64 {
        let out = marginal_log_likelihood(
            &on(&dev.device, x.to_vec(), &[b, k], DType::F32),
            &on(&dev.device, c.to_vec(), &[b, k, m], DType::F32),
        )
        .unwrap();
        // A weighted sum so that each output has its own incoming gradient.
        f64s(&out)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + i as f64))
            .sum()
    };
    let xv = Var::from_tensor(&on(&dev.device, x.clone(), &[b, k], DType::F32)).unwrap();
    let cv = Var::from_tensor(&on(&dev.device, c.clone(), &[b, k, m], DType::F32)).unwrap();
    let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev.device).unwrap();
    let grads = (marginal_log_likelihood(xv.as_tensor(), cv.as_tensor()).unwrap() * w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gx = f64s(grads.get(&xv).unwrap());
    let gc = f64s(grads.get(&cv).unwrap());
    let h = 1.0 / 64.0;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp, &c) - loss(&xm, &c)) / (2.0 * h);
        assert!(
            (fd - gx[i]).abs() < 2e-3 * fd.abs().max(1.0),
            "d/dx[{i}]: fd {fd} vs {}",
            gx[i]
        );
    }
    for i in 0..c.len() {
        let (mut cp, mut cm) = (c.clone(), c.clone());
        cp[i] += h;
        cm[i] -= h;
        let fd = (loss(&x, &cp) - loss(&x, &cm)) / (2.0 * h);
        assert!(
            (fd - gc[i]).abs() < 2e-3 * fd.abs().max(1.0),
            "d/dc[{i}]: fd {fd} vs {}",
            gc[i]
        );
    }
});

test_exec!(fn two_dimensional_conditionals_give_one_value_per_example(dev) {
    let x = t(vec![0.0, 1.0, 2.0, 3.0], &[2, 2], DType::F32);
    let c = t(vec![-1.0, -2.0, -3.0, -4.0], &[2, 2], DType::F32);
    let out = marginal_log_likelihood(
        &x.to_device(&dev.device).unwrap(),
        &c.to_device(&dev.device).unwrap(),
    )
    .unwrap();
    assert_eq!(out.dims(), &[2]);
    let reference = mll_composition(
        &x.to_dtype(DType::F64).unwrap(),
        &c.to_dtype(DType::F64).unwrap(),
    )
    .unwrap();
    assert!(max_rel_err(&f64s(&out), &f64s(&reference)) < 1e-6);
});

/// Outputs and gradients of doc_softmax and the marginal for one input, in the calling thread's
/// execution mode; `gp` and `g` weight the two outputs so that each gets its own incoming
/// gradient.
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

// The kernels against the native CPU implementation: k = 1, odd, at the warp limit (256), just
// past it (block variant), and a long beam, in every dtype.
test_exec!(kernels fn kernels_match_the_cpu_implementation(dev) {
    let shapes = [
        (1, 1, 1),
        (3, 7, 2),
        (9, 33, 1),
        (4, 256, 3),
        (3, 257, 2),
        (2, 1200, 2),
    ];
    let cpu = ComputeDevice::cpu();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, &(b, k, m)) in shapes.iter().enumerate() {
            let mut rng = SplitMix64::new(40 + i as u64);
            let x = t(random_logits(&mut rng, b, k, 3.0), &[b, k], dtype);
            let cond: Vec<f64> = rng
                .normal_vec(b * k * m, 2.0)
                .into_iter()
                .map(|v| -v.abs())
                .collect();
            let c = t(cond, &[b, k, m], dtype);
            let g = t(rng.normal_vec(b * m, 1.0), &[b, m], DType::F32);
            let gp = t(rng.normal_vec(b * k, 1.0), &[b, k], DType::F32);
            let native = {
                let _cpu = cpu.enter().unwrap();
                run_all(&x, &c, &gp, &g)
            };
            let [x, c, gp, g] = [&x, &c, &gp, &g].map(|t| t.to_device(&dev.device).unwrap());
            let kernels = run_all(&x, &c, &gp, &g);
            for (what, (n, e)) in ["p", "marginal", "d/dx", "d/dc"]
                .iter()
                .zip(native.iter().zip(&kernels))
            {
                let err = max_rel_err(e, n);
                assert!(
                    err <= tolerance(dtype),
                    "{dtype:?} b={b} k={k} m={m} {what}: {dev} vs cpu error {err:e}"
                );
            }
        }
    }
});

#[test]
fn bad_input_is_a_clear_error() {
    let x = t(vec![0.0; 6], &[2, 3], DType::F32);
    let err = |r: realm::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();

    assert!(err(doc_softmax(&t(vec![0.0; 6], &[6], DType::F32))).contains("must be [b, k]"));
    assert!(err(doc_softmax(&x.t().unwrap())).contains("contiguous"));
    assert!(err(doc_softmax(&x.to_dtype(DType::F64).unwrap())).contains("not supported"));
    assert!(err(doc_softmax(&t(vec![], &[2, 0], DType::F32))).contains("k = 0"));
    assert!(err(doc_softmax(&t(vec![0.0, f64::NAN], &[1, 2], DType::F32))).contains("NaN"));

    let c = t(vec![0.0; 6], &[2, 3], DType::F32);
    assert!(err(marginal_log_likelihood(
        &x,
        &c.to_dtype(DType::F16).unwrap()
    ))
    .contains("dtype"));
    assert!(err(marginal_log_likelihood(
        &x,
        &t(vec![0.0; 8], &[2, 4], DType::F32)
    ))
    .contains("must be [2, 3]"));
    assert!(err(marginal_log_likelihood(
        &x,
        &t(vec![0.0; 6], &[3, 2], DType::F32)
    ))
    .contains("cond_logprob"));
    let nan_c = t(vec![0.0, 0.0, f64::NAN, 0.0, 0.0, 0.0], &[2, 3], DType::F32);
    assert!(err(marginal_log_likelihood(&x, &nan_c)).contains("`cond_logprob`: contains NaN"));
}

test_exec!(fn large_beams_up_to_16384_candidates(dev) {
    let mut rng = SplitMix64::new(9);
    let k = 16384;
    let x = on(&dev.device, rng.normal_vec(2 * k, 5.0), &[2, k], DType::F32);
    let p = f64s(&doc_softmax(&x).unwrap());
    for row in p.chunks(k) {
        let total: f64 = row.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "row sums to {total}");
    }
});
