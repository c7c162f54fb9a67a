//! The kernel emulator's own speed: how long the CUDA kernels take on the CPU, so the emulator
//! tests stay cheap. Measured: the conformance barrier kernel (64 blocks × 256 threads, 20
//! barriers) and doc_softmax forward on the emulator against the native CPU implementation.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use realm::conformance;
use realm::device::Exec;
use realm::kernels::Emulator;
use realm::ops::doc_softmax::random_logits;
use realm::ops::{doc_softmax, use_emulator};
use realm::rng::SplitMix64;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("emulator");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    group.bench_function("barrier_64x256_20_syncs", |b| {
        let emu = Emulator::new(Exec::emulator().expect("emulator"));
        b.iter(|| conformance::barrier(&emu).expect("barrier kernel"))
    });
    let mut rng = SplitMix64::new(1);
    let x = Tensor::from_vec(
        random_logits(&mut rng, 64, 1000, 3.0),
        (64, 1000),
        &Device::Cpu,
    )
    .and_then(|t| t.to_dtype(DType::F32))
    .expect("logits");
    group.bench_function("doc_softmax_64x1000/native", |b| {
        b.iter(|| doc_softmax(&x).expect("softmax"))
    });
    group.bench_function("doc_softmax_64x1000/emulated", |b| {
        let _emu = use_emulator().expect("emulator");
        b.iter(|| doc_softmax(&x).expect("softmax"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
