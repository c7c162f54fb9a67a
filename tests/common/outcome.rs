//! Training outcomes measured over several seeds. A test's claim about training must hold for
//! reasons, not for one floating-point trajectory: another seed, another CPU (other rounding in
//! its kernels) or `REALM_CPU_SIMD=portable` gives another trajectory, so such tests assert on
//! the median over seeds, with a margin set against the spread measured by running them with
//! `REALM_TEST_SEEDS` (docs/training.md, "Tests of training outcomes").

/// The seeds a training-outcome test runs: `REALM_TEST_SEEDS` when set (`0-7`, `3` or `1,5,9`),
/// else `default`. A malformed value fails the test with the value it read.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    let Ok(text) = std::env::var("REALM_TEST_SEEDS") else {
        return default.to_vec();
    };
    let parse = |s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("REALM_TEST_SEEDS={text:?}: `{s}` is not a seed"))
    };
    let seeds: Vec<u64> = match text.split_once('-') {
        Some((a, b)) => (parse(a)..=parse(b)).collect(),
        None => text.split(',').map(parse).collect(),
    };
    assert!(!seeds.is_empty(), "REALM_TEST_SEEDS={text:?} names no seed");
    seeds
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    assert!(n > 0, "the median of nothing");
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints one value per seed and their median, minimum and maximum (what a sweep over
/// `REALM_TEST_SEEDS` records), and returns the median.
pub fn summarise(what: &str, seeds: &[u64], values: &[f64]) -> f64 {
    for (s, v) in seeds.iter().zip(values) {
        eprintln!("{what}: seed {s}: {v:.4}");
    }
    let m = median(values);
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    eprintln!(
        "{what}: median {m:.4}, min {lo:.4}, max {hi:.4} over {} seeds",
        values.len()
    );
    m
}
