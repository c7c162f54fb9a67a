//! Fused attention on the CPU against the plain candle composition it replaces (matmul, masked
//! softmax, matmul), forward and forward+backward, f32, h = 12, dh = 64, b = 8 and l ∈ {128, 288}
//! (BERT-base heads over REALM's 288-token blocks). `realm bench attention` measures single shapes.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use realm::ops::attention::{composition, random_qkv};
use std::time::Duration;

type Op = fn(&Tensor, &Tensor, &Tensor, f64) -> realm::Result<Tensor>;

fn fused(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> realm::Result<Tensor> {
    realm::ops::attention(q, k, v, None, scale, None)
}

fn composed(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> realm::Result<Tensor> {
    composition(q, k, v, None, scale, None)
}

fn bench(c: &mut Criterion) {
    // As the `realm` binary does: keep freed tensor buffers mapped (see realm::alloc).
    realm::alloc::tune_for_tensors();
    let (b, h, dh) = (8, 12, 64);
    let scale = 1.0 / (dh as f64).sqrt();
    let ops: [(&str, Op); 2] = [("fused", fused), ("composition", composed)];
    let mut group = c.benchmark_group("attention_cpu_b8_h12_dh64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for l in [128usize, 288] {
        let [q, k, v, _] = random_qkv(1, (b, h, l, dh), DType::F32, &Device::Cpu).expect("inputs");
        let vars = [&q, &k, &v].map(|t| Var::from_tensor(t).expect("var"));
        for (name, op) in ops {
            group.bench_function(BenchmarkId::new(format!("{name}/fwd"), l), |bencher| {
                bencher.iter(|| op(&q, &k, &v, scale).expect("forward"))
            });
            group.bench_function(BenchmarkId::new(format!("{name}/fwd+bwd"), l), |bencher| {
                bencher.iter(|| {
                    let [q, k, v] = vars.each_ref().map(|x| x.as_tensor());
                    let out = op(q, k, v, scale).expect("forward");
                    out.sum_all().and_then(|s| s.backward()).expect("backward")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
