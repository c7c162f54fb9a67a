//! Exact MIPS top-k on the CPU against the plain candle composition it replaces (a full `[q, n]`
//! matmul, then a sort per row), over a 200k × 128 f16 index (1M is too slow for criterion on two
//! cores; `realm bench mips` measures that), Q ∈ {1, 64}, k ∈ {8, 2048}.

use candle_core::{DType, Device, Tensor, D};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use realm::ops::mips::random_index;
use realm::ops::{mips_top_k, MipsIndex};
use realm::rng::SplitMix64;
use std::time::Duration;

/// What the fused op replaces: every score materialised in f32, then the top k of each row.
fn composition(queries: &Tensor, index_t: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    queries
        .matmul(index_t)?
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, k)
}

fn bench(c: &mut Criterion) {
    // As the `realm` binary does: keep freed tensor buffers mapped (see realm::alloc).
    realm::alloc::tune_for_tensors();
    let (n, d) = (200_000, 128);
    let data = random_index(1, n, d);
    let embeddings = Tensor::from_vec(data, (n, d), &Device::Cpu).expect("index");
    let index = MipsIndex::new(&embeddings).expect("index");
    let index_t = embeddings
        .to_dtype(DType::F32)
        .and_then(|t| t.t())
        .and_then(|t| t.contiguous())
        .expect("transposed index");
    let mut group = c.benchmark_group("mips_cpu_200k_x128");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for q in [1usize, 64] {
        let values = SplitMix64::new(2).normal_vec(q * d, 1.0 / (d as f64).sqrt());
        let queries = Tensor::from_vec(values, (q, d), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .expect("queries");
        let id = format!("q={q}");
        for k in [8usize, 2048] {
            group.bench_function(BenchmarkId::new(format!("fused/k={k}"), &id), |b| {
                b.iter(|| mips_top_k(&queries, &index, k, None).expect("search"))
            });
        }
        // A full sort per row: the same cost for any k.
        group.bench_function(BenchmarkId::new("composition", &id), |b| {
            b.iter(|| composition(&queries, &index_t, 8).expect("composition"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
