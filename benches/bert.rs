//! The BERT encoder on the CPU: the `tiny` preset (2 layers, hidden 128) forward and
//! forward+backward, and all-MiniLM-L6-v2 forward when ../shared holds it. Short measurements;
//! `realm bench bert` gives the tokens/s figures of docs/bert.md.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use realm::model::{BertConfig, BertInput, BertModel, Mode};
use realm::rng::SplitMix64;
use std::path::Path;
use std::time::Duration;

fn input(model: &BertModel, b: usize, l: usize) -> BertInput {
    let mut rng = SplitMix64::new(1);
    let vocab = model.config().vocab_size as u64;
    let ids: Vec<u32> = (0..b * l).map(|_| rng.below(vocab) as u32).collect();
    // Every other example is 3/4 full, as in a batch of real text.
    let lens: Vec<u32> = (0..b)
        .map(|i| if i % 2 == 0 { l } else { 3 * l / 4 } as u32)
        .collect();
    BertInput::new(ids, None, &lens, &Device::Cpu).expect("input")
}

fn bench(c: &mut Criterion) {
    // As the `realm` binary does: keep freed tensor buffers mapped (see realm::alloc).
    realm::alloc::tune_for_tensors();
    let mut group = c.benchmark_group("bert_cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let tiny = BertConfig::preset("tiny").expect("preset");
    let model = BertModel::new_random(&tiny, 0, &Device::Cpu).expect("tiny model");
    let (b, l) = (16, 128);
    let x = input(&model, b, l);
    group.throughput(Throughput::Elements((b * l) as u64));
    group.bench_function(
        BenchmarkId::new("tiny/fwd", format!("{b}x{l}")),
        |bencher| bencher.iter(|| model.forward(&x, Mode::Eval).expect("forward")),
    );
    let mut step = 0;
    group.bench_function(
        BenchmarkId::new("tiny/fwd+bwd", format!("{b}x{l}")),
        |bencher| {
            bencher.iter(|| {
                step += 1;
                let out = model
                    .forward(&x, Mode::Train { seed: 0, step })
                    .expect("forward");
                out.last_hidden_state
                    .sum_all()
                    .and_then(|s| s.backward())
                    .expect("backward")
            })
        },
    );
    let minilm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/all-minilm-l6-v2");
    if minilm.join("model.safetensors").exists() {
        let model = BertModel::load(&minilm, &Device::Cpu).expect("MiniLM");
        let (b, l) = (8, 128);
        let x = input(&model, b, l);
        group.throughput(Throughput::Elements((b * l) as u64));
        group.bench_function(
            BenchmarkId::new("minilm/fwd", format!("{b}x{l}")),
            |bencher| bencher.iter(|| model.forward(&x, Mode::Eval).expect("forward")),
        );
    } else {
        eprintln!("skipping MiniLM: {} not found", minilm.display());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
