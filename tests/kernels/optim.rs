//! The multi-tensor AdamW update on every execution mode (native CPU, the kernels on the
//! emulator and on a GPU): as accurate as the candle composition it replaced against f64, the
//! same result on every mode to f32 rounding, three launches and no read whatever the number of
//! parameters, nothing updated when a gradient is not finite, bad input named.

use candle_core::{DType, Device, Tensor};
use realm::device::{ComputeDevice, DeviceSpec};
use realm::ops::adamw::{adamw_step, selftest_cases, stats_len, AdamWParam, AdamWStep};

const STEP: AdamWStep = AdamWStep {
    lr: 0.01,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-6,
    weight_decay: 0.01,
    t: 1,
    max_norm: 1.0,
};

/// Parameters of `sizes` (values from their index), gradients, flat moments and stats on `dev`.
struct Setup {
    theta: Vec<Tensor>,
    grads: Vec<Tensor>,
    m: Tensor,
    v: Tensor,
    stats: Tensor,
}

impl Setup {
    fn new(dev: &Device, sizes: &[usize], grad: impl Fn(usize) -> f32) -> Setup {
        let values = |n: usize, f: &dyn Fn(usize) -> f32| {
            Tensor::new((0..n).map(f).collect::<Vec<f32>>(), dev).unwrap()
        };
        let total: usize = sizes.iter().sum();
        Setup {
            theta: sizes
                .iter()
                .map(|&n| values(n, &|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0))
                .collect(),
            grads: sizes.iter().map(|&n| values(n, &grad)).collect(),
            m: Tensor::zeros(total, DType::F32, dev).unwrap(),
            v: Tensor::zeros(total, DType::F32, dev).unwrap(),
            stats: Tensor::zeros(stats_len(sizes.iter().copied()), DType::F64, dev).unwrap(),
        }
    }

    fn params(&self) -> Vec<AdamWParam<'_>> {
        let mut offset = 0;
        self.theta
            .iter()
            .zip(&self.grads)
            .enumerate()
            .map(|(i, (theta, grad))| {
                let p = AdamWParam {
                    theta,
                    grad,
                    offset,
                    decay: i % 3 != 0,
                    lr_scale: [1.0, 0.5, 0.0, 2.0][i % 4],
                };
                offset += theta.elem_count();
                p
            })
            .collect()
    }

    fn step(&self, step: &AdamWStep) -> realm::Result<()> {
        adamw_step(&self.params(), &self.m, &self.v, &self.stats, step)
    }

    /// θ of every parameter, then m and v, flattened on the host.
    fn values(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for t in self.theta.iter().chain([&self.m, &self.v]) {
            out.extend(t.to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap());
        }
        out
    }
}

fn gradient(i: usize) -> f32 {
    ((i * 104_729) % 2001) as f32 / 1000.0 - 1.0
}

test_exec!(fn every_case_is_as_accurate_as_the_composition(dev) {
    for case in selftest_cases() {
        let outcome = (case.run)(dev).unwrap();
        assert!(outcome.passed(), "{}: {outcome:?}", case.name);
    }
});

test_exec!(fn the_mode_agrees_with_the_native_update_to_f32_rounding(dev) {
    let sizes = [5000, 1, 4096, 300];
    let ours = Setup::new(&dev.device, &sizes, gradient);
    let cpu = ComputeDevice::resolve(DeviceSpec::Cpu).unwrap();
    let native = Setup::new(&Device::Cpu, &sizes, gradient);
    for t in 1..=3 {
        let step = AdamWStep { t, ..STEP };
        ours.step(&step).unwrap();
        let _native = cpu.enter().unwrap();
        native.step(&step).unwrap();
    }
    let (a, b) = (ours.values(), native.values());
    let scale = b.iter().fold(0f32, |s, x| s.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 4.0 * f32::EPSILON * scale, "element {i}: {x} vs {y}");
    }
});

test_exec!(fn launches_do_not_grow_with_the_parameters_and_nothing_is_read(dev) {
    for sizes in [&[10][..], &[3; 40][..]] {
        let s = Setup::new(&dev.device, sizes, gradient);
        let before = dev.exec.transfers();
        s.step(&STEP).unwrap();
        let used = dev.exec.transfers() - before;
        assert_eq!(used.host_reads, 0, "{used:?}");
        if dev.is_emulated() || !dev.device.is_cpu() {
            assert_eq!((used.launches, used.uploads), (3, 1), "{used:?}");
        } else {
            assert_eq!((used.launches, used.uploads), (0, 0), "{used:?}");
        }
    }
});

test_exec!(fn a_gradient_that_is_not_finite_updates_nothing(dev) {
    let s = Setup::new(&dev.device, &[7, 5000], |i| if i == 4321 { f32::NAN } else { 0.5 });
    let before = s.values();
    s.step(&STEP).unwrap();
    assert_eq!(s.values(), before);
    let sq = s.stats.to_device(&Device::Cpu).unwrap().to_vec1::<f64>().unwrap()[0];
    assert!(sq.is_nan(), "{sq}");
});

test_exec!(fn clipping_brings_the_norm_to_the_maximum(dev) {
    // 100 gradients of 1: norm 10; clipped to 1, each becomes 0.1, and the first moment
    // (1 − β₁) · 0.1.
    let s = Setup::new(&dev.device, &[60, 40], |_| 1.0);
    s.step(&STEP).unwrap();
    let stats = s.stats.to_device(&Device::Cpu).unwrap().to_vec1::<f64>().unwrap();
    assert!((stats[0] - 100.0).abs() < 1e-9 && (stats[1] - 1.0 / (10.0 + 1e-6)).abs() < 1e-12);
    let m = s.m.to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
    assert!(m.iter().all(|&x| (x - 0.01).abs() < 1e-8), "{:?}", &m[..4]);
});

test_exec!(fn bad_input_is_named(dev) {
    let d = &dev.device;
    let s = Setup::new(d, &[4, 4], gradient);
    let err = |params: &[AdamWParam], m: &Tensor, stats: &Tensor, step: &AdamWStep| {
        adamw_step(params, m, &s.v, stats, step).unwrap_err().to_string()
    };
    let mut params = s.params();
    params[1].offset = 2;
    let e = err(&params, &s.m, &s.stats, &STEP);
    assert!(e.contains("adamw") && e.contains("parameter 1") && e.contains("overlap"), "{e}");
    let short = Tensor::zeros(2, DType::F64, d).unwrap();
    let e = err(&s.params(), &s.m, &short, &STEP);
    assert!(e.contains("stats"), "{e}");
    let wide = Tensor::zeros(5, DType::F32, d).unwrap();
    let mut params = s.params();
    params[0].grad = &wide;
    let e = err(&params, &s.m, &s.stats, &STEP);
    assert!(e.contains("parameter 0") && e.contains("gradient"), "{e}");
    let half = s.theta[0].to_dtype(DType::F16).unwrap();
    let mut params = s.params();
    params[0].theta = &half;
    assert!(err(&params, &s.m, &s.stats, &STEP).contains("f32"));
    let e = err(&s.params(), &s.m, &s.stats, &AdamWStep { lr: f64::NAN, ..STEP });
    assert!(e.contains("step"), "{e}");
    let e = err(&s.params(), &s.m, &s.stats, &AdamWStep { t: 0, ..STEP });
    assert!(e.contains("step"), "{e}");
    let mut params = s.params();
    params[1].lr_scale = -0.5;
    let e = err(&params, &s.m, &s.stats, &STEP);
    assert!(e.contains("parameter 1") && e.contains("lr_scale"), "{e}");
});

test_exec!(fn a_parameter_moves_by_its_own_learning_rate(dev) {
    // One step from zero moments moves θ by −lr · g/(|g| + ε/…) ≈ −lr · sign(g): a parameter at
    // half the rate moves half as far, one at rate 0 (and no decay) not at all.
    let s = Setup::new(&dev.device, &[64, 64, 64], |_| 0.5);
    let before = s.values();
    let mut params = s.params();
    for p in &mut params {
        p.decay = false;
    }
    (params[0].lr_scale, params[1].lr_scale, params[2].lr_scale) = (1.0, 0.5, 0.0);
    adamw_step(&params, &s.m, &s.v, &s.stats, &AdamWStep { max_norm: 0.0, ..STEP }).unwrap();
    let after = s.values();
    let moved = |k: usize| before[64 * k] - after[64 * k];
    assert!((moved(0) - 0.01).abs() < 1e-6, "{}", moved(0));
    assert!((moved(1) - 0.005).abs() < 1e-6, "{}", moved(1));
    assert_eq!(moved(2), 0.0);
});
