//! The fused doc_softmax / marginal ops against the plain candle composition they replace, on the
//! CPU, forward and forward+backward, b = 512 and k ∈ {8, 5000} (REALM's pre-training top-k and
//! ORQA's fine-tuning beam).

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use realm::ops::doc_softmax::{mll_composition, random_logits, softmax_composition};
use realm::ops::{doc_softmax, marginal_log_likelihood};
use realm::rng::SplitMix64;
use std::time::Duration;

type Op = fn(&Tensor, &Tensor) -> realm::Result<Tensor>;

fn fused_softmax(x: &Tensor, _c: &Tensor) -> realm::Result<Tensor> {
    doc_softmax(x)
}
fn composed_softmax(x: &Tensor, _c: &Tensor) -> realm::Result<Tensor> {
    softmax_composition(x)
}

fn bench(c: &mut Criterion) {
    // As the `realm` binary does: keep freed tensor buffers mapped (see realm::alloc).
    realm::alloc::tune_for_tensors();
    let b = 512;
    let m = 4;
    let ops: [(&str, Op); 4] = [
        ("doc_softmax/fused", fused_softmax),
        ("doc_softmax/composition", composed_softmax),
        ("marginal/fused", marginal_log_likelihood),
        ("marginal/composition", mll_composition),
    ];
    let mut group = c.benchmark_group("doc_softmax_cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for k in [8usize, 5000] {
        let mut rng = SplitMix64::new(1);
        let x = Tensor::from_vec(random_logits(&mut rng, b, k, 3.0), (b, k), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .expect("logits");
        let cond: Vec<f64> = rng
            .normal_vec(b * k * m, 2.0)
            .into_iter()
            .map(|v| -v.abs())
            .collect();
        let cond = Tensor::from_vec(cond, (b, k, m), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .expect("conditionals");
        let xv = Var::from_tensor(&x).expect("var");
        for (name, op) in ops {
            group.bench_function(BenchmarkId::new(format!("{name}/fwd"), k), |bencher| {
                bencher.iter(|| op(&x, &cond).expect("forward"))
            });
            group.bench_function(BenchmarkId::new(format!("{name}/fwd+bwd"), k), |bencher| {
                bencher.iter(|| {
                    let out = op(xv.as_tensor(), &cond).expect("forward");
                    out.sum_all().and_then(|s| s.backward()).expect("backward")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
