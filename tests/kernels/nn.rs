//! LayerNorm and GELU on every execution mode (native CPU, the CUDA kernels on the emulator and
//! on a GPU): the registered checks against float64 and the plain composition, the kernels
//! against the CPU implementation, the shapes the model uses, and bad input.

use candle_core::{DType, Device, Tensor, Var};
use realm::ops::nn::{gelu, layer_norm, GeluForm, MAX_HIDDEN};
use realm::rng::SplitMix64;
use realm::selftest::max_rel_err;

fn f64s(x: &Tensor) -> Vec<f64> {
    x.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn randn(rng: &mut SplitMix64, shape: &[usize], dtype: DType, dev: &Device) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rng.normal_vec(n, 2.0), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

test_exec!(fn every_registered_check_passes(dev) {
    let rows = realm::selftest::run(dev, Some("layer_norm"))
        .into_iter()
        .chain(realm::selftest::run(dev, Some("gelu")))
        .collect::<Vec<_>>();
    crate::common::assert_selftest_passed(rows, 39);
});

/// Output and gradients of LayerNorm then GELU (as in BERT's feed-forward output), any rank.
fn ln_gelu(x: &Tensor, w: &Var, b: &Var, r: &Tensor, form: GeluForm) -> Vec<Vec<f64>> {
    let xv = Var::from_tensor(x).unwrap();
    let y = gelu(
        &layer_norm(xv.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
        form,
    )
    .unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut out = vec![f64s(&y)];
    for v in [&xv, w, b] {
        out.push(f64s(grads.get(v.as_tensor()).unwrap()));
    }
    out
}

// The kernels (emulated or on a GPU) agree with the CPU implementation on a [b, l, h] activation
// of the model's shape, in every dtype: both compute in f32, so to within a few f32 roundings
// (and one rounding of the storage type).
test_exec!(kernels fn kernels_match_the_cpu_implementation(dev) {
    for (dtype, bound) in [(DType::F32, 2e-5), (DType::F16, 2e-3), (DType::BF16, 1.6e-2)] {
        for form in [GeluForm::Erf, GeluForm::Tanh] {
            let mut rng = SplitMix64::new(9);
            let x = randn(&mut rng, &[2, 5, 96], dtype, &Device::Cpu);
            let w = randn(&mut rng, &[96], DType::F32, &Device::Cpu);
            let b = randn(&mut rng, &[96], DType::F32, &Device::Cpu);
            let r = randn(&mut rng, &[2, 5, 96], DType::F32, &Device::Cpu);
            let native = {
                let cpu = realm::device::ComputeDevice::resolve(realm::device::DeviceSpec::Cpu)
                    .unwrap();
                let _mode = cpu.enter().unwrap();
                let (w, b) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
                ln_gelu(&x, &w, &b, &r, form)
            };
            let on = |t: &Tensor| t.to_device(&dev.device).unwrap();
            let (wv, bv) = (Var::from_tensor(&on(&w)).unwrap(), Var::from_tensor(&on(&b)).unwrap());
            let kernels = ln_gelu(&on(&x), &wv, &bv, &on(&r), form);
            let launches = dev.exec.launches();
            assert!(launches > 0, "no kernel ran on {dev}");
            for (i, (k, n)) in kernels.iter().zip(&native).enumerate() {
                let err = max_rel_err(k, n) / n.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                assert!(err < bound, "{dtype:?} {form:?} output {i}: error {err:e}");
            }
        }
    }
});

test_exec!(fn layer_norm_of_constant_rows_is_the_shift(dev) {
    // Zero variance: x̂ = 0, y = b exactly, and dx = 0 (no NaN from 0 / 0).
    let x = Tensor::full(3.5f32, (4, 40), &dev.device).unwrap();
    let w = Var::from_tensor(&Tensor::full(2f32, 40, &dev.device).unwrap()).unwrap();
    let b = Tensor::arange(0f32, 40.0, &dev.device).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let y = layer_norm(xv.as_tensor(), w.as_tensor(), &b, 1e-5).unwrap();
    let want = f64s(&b.unsqueeze(0).unwrap().repeat((4, 1)).unwrap());
    assert_eq!(f64s(&y), want);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(f64s(grads.get(&xv).unwrap()).iter().all(|v| *v == 0.0));
    assert!(f64s(grads.get(&w).unwrap()).iter().all(|v| *v == 0.0));
});

test_exec!(fn bad_input_is_a_clear_error(dev) {
    let d = &dev.device;
    let x = Tensor::zeros((3, 8), DType::F32, d).unwrap();
    let w = Tensor::ones(8, DType::F32, d).unwrap();
    let err = |r: realm::Result<Tensor>| r.unwrap_err().to_string();
    let short = Tensor::ones(7, DType::F32, d).unwrap();
    assert!(err(layer_norm(&x, &short, &w, 1e-5)).contains("argument `w`"));
    let half = w.to_dtype(DType::F16).unwrap();
    assert!(err(layer_norm(&x, &w, &half, 1e-5)).contains("argument `b`"));
    assert!(err(layer_norm(&x, &w, &w, 0.0)).contains("argument `eps`"));
    assert!(err(layer_norm(&x, &w, &w, f64::NAN)).contains("argument `eps`"));
    let wide = Tensor::zeros((1, MAX_HIDDEN + 1), DType::F32, d).unwrap();
    let wide_w = Tensor::ones(MAX_HIDDEN + 1, DType::F32, d).unwrap();
    assert!(err(layer_norm(&wide, &wide_w, &wide_w, 1e-5)).contains("last dimension"));
    let ints = Tensor::zeros((3, 8), DType::U32, d).unwrap();
    assert!(err(layer_norm(&ints, &w, &w, 1e-5)).contains("dtype U32"));
    assert!(err(gelu(&ints, GeluForm::Erf)).contains("gelu: argument `x`"));
});
