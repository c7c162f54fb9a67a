//! The fused LayerNorm and GELU against the plain candle compositions they replace, on the CPU,
//! forward and forward+backward, on BERT-base's activations (32 × 128 tokens, h = 768; GELU on
//! the feed-forward's 3072).

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use realm::ops::nn::{gelu, gelu_composition, layer_norm, layer_norm_composition, GeluForm};
use realm::rng::SplitMix64;
use std::time::Duration;

const ROWS: usize = 32 * 128;

fn randn(rng: &mut SplitMix64, shape: &[usize]) -> Var {
    let n = shape.iter().product();
    let t = Tensor::from_vec(rng.normal_vec(n, 2.0), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .expect("tensor");
    Var::from_tensor(&t).expect("var")
}

fn bench(c: &mut Criterion) {
    // As the `realm` binary does: keep freed tensor buffers mapped (see realm::alloc).
    realm::alloc::tune_for_tensors();
    let mut group = c.benchmark_group("nn_cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    let mut rng = SplitMix64::new(1);
    let (x, w, b) = (
        randn(&mut rng, &[ROWS, 768]),
        randn(&mut rng, &[768]),
        randn(&mut rng, &[768]),
    );
    let inner = randn(&mut rng, &[ROWS, 3072]);
    type Op<'a> = Box<dyn Fn() -> realm::Result<Tensor> + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        (
            "layer_norm/fused",
            Box::new(|| layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12)),
        ),
        (
            "layer_norm/composition",
            Box::new(|| layer_norm_composition(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12)),
        ),
        (
            "gelu_erf/fused",
            Box::new(|| gelu(inner.as_tensor(), GeluForm::Erf)),
        ),
        (
            "gelu_erf/composition",
            Box::new(|| gelu_composition(inner.as_tensor(), GeluForm::Erf)),
        ),
        (
            "gelu_tanh/fused",
            Box::new(|| gelu(inner.as_tensor(), GeluForm::Tanh)),
        ),
        (
            "gelu_tanh/composition",
            Box::new(|| gelu_composition(inner.as_tensor(), GeluForm::Tanh)),
        ),
    ];
    for (name, op) in &ops {
        group.bench_function(BenchmarkId::new(*name, "fwd"), |bencher| {
            bencher.iter(|| op().expect("forward"))
        });
        group.bench_function(BenchmarkId::new(*name, "fwd+bwd"), |bencher| {
            bencher.iter(|| {
                let y = op().expect("forward");
                y.sum_all().and_then(|s| s.backward()).expect("backward")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
