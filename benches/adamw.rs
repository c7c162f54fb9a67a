//! The multi-tensor AdamW update against the composition it replaces (the norm read, candle ops
//! per parameter), on the CPU: 50 parameters, 5M elements in all, clipped.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use realm::ops::adamw::{adamw_step, clip_factor, composition, stats_len, AdamWParam, AdamWStep};
use std::time::Duration;

const TENSORS: usize = 50;
const EACH: usize = 100_000;

fn bench(c: &mut Criterion) {
    realm::alloc::tune_for_tensors();
    let mut group = c.benchmark_group("adamw_cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    let dev = Device::Cpu;
    let theta: Vec<Var> = (0..TENSORS)
        .map(|_| Var::ones(EACH, DType::F32, &dev).expect("θ"))
        .collect();
    let grads: Vec<Tensor> = (0..TENSORS)
        .map(|_| Tensor::full(1e-3f32, EACH, &dev).expect("g"))
        .collect();
    let m = Tensor::zeros(TENSORS * EACH, DType::F32, &dev).expect("m");
    let v = m.zeros_like().expect("v");
    let stats = Tensor::zeros(stats_len([EACH; TENSORS]), DType::F64, &dev).expect("stats");
    let step = AdamWStep {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        weight_decay: 0.01,
        t: 1,
        max_norm: 1.0,
    };
    group.bench_function("fused", |b| {
        let params: Vec<AdamWParam> = theta
            .iter()
            .zip(&grads)
            .enumerate()
            .map(|(i, (t, g))| AdamWParam {
                theta: t.as_tensor(),
                grad: g,
                offset: i * EACH,
                decay: true,
                lr_scale: 1.0,
            })
            .collect();
        b.iter(|| adamw_step(&params, &m, &v, &stats, &step).expect("step"))
    });
    let mut moments: Vec<(Tensor, Tensor)> = theta
        .iter()
        .map(|t| (t.zeros_like().expect("m"), t.zeros_like().expect("v")))
        .collect();
    group.bench_function("composition", |b| {
        b.iter(|| {
            let sums: Vec<Tensor> = grads
                .iter()
                .map(|g| g.sqr().and_then(|s| s.sum_all()).expect("Σg²"))
                .collect();
            let sq = Tensor::stack(&sums, 0)
                .and_then(|s| s.to_dtype(DType::F64))
                .and_then(|s| s.sum_all())
                .and_then(|s| s.to_scalar::<f64>())
                .expect("‖g‖²");
            let factor = clip_factor(sq.sqrt(), step.max_norm).expect("factor");
            for ((t, g), (m, v)) in theta.iter().zip(&grads).zip(&mut moments) {
                let (t2, m2, v2) =
                    composition((t.as_tensor(), g, m, v), &step, true, factor).expect("update");
                t.set(&t2).expect("set");
                (*m, *v) = (m2, v2);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
