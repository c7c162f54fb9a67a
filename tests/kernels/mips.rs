//! mips_top_k on every execution mode (native CPU, the CUDA kernels on the emulator and on a GPU)
//! against the float64 brute-force reference (ids equal, scores bit-identical): large k, exact
//! ties and near-ties, exclusions at every rank, adversarial document orders, shapes that reach
//! every path of the kernels (partial tiles, slices, warps and query batches, compactions, the
//! exact near-tie fallback, padding), sharded indexes; and every bad input.

use candle_core::{DType, Device, Tensor};
use half::f16;
use realm::device::ComputeDevice;
use realm::ops::mips::{merge_top_k, random_index, reference_top_k, ShardHits};
use realm::ops::{mips_top_k, MipsIndex, ShardedIndex};
use realm::rng::SplitMix64;
use realm::Error;

fn index_on(dev: &Device, x: &[f16], d: usize) -> MipsIndex {
    MipsIndex::new(&Tensor::from_vec(x.to_vec(), (x.len() / d, d), dev).unwrap()).unwrap()
}

fn index_of(x: &[f16], d: usize) -> MipsIndex {
    index_on(&Device::Cpu, x, d)
}

fn queries_on(dev: &Device, v: &[f32], d: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len() / d, d), dev).unwrap()
}

fn queries_of(v: &[f32], d: usize) -> Tensor {
    queries_on(&Device::Cpu, v, d)
}

fn random_queries(seed: u64, q: usize, d: usize) -> Vec<f32> {
    SplitMix64::new(seed)
        .normal_vec(q * d, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// The op on `dev`: scores and ids, flattened.
fn run(
    dev: &ComputeDevice,
    queries: &[f32],
    index: &[f16],
    d: usize,
    k: usize,
    exclude: Option<&[u32]>,
) -> (Vec<f32>, Vec<u32>) {
    let idx = index_on(&dev.device, index, d);
    let (s, i) = mips_top_k(&queries_on(&dev.device, queries, d), &idx, k, exclude).unwrap();
    assert_eq!(s.dims(), &[queries.len() / d, k]);
    assert_eq!(s.dtype(), DType::F32);
    assert_eq!(i.dtype(), DType::U32);
    (
        s.flatten_all().unwrap().to_vec1().unwrap(),
        i.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

/// The op on `dev` and the reference agree exactly.
fn assert_matches_reference(
    dev: &ComputeDevice,
    queries: &[f32],
    index: &[f16],
    d: usize,
    k: usize,
    exclude: Option<&[u32]>,
) {
    let got = run(dev, queries, index, d, k, exclude);
    let want = reference_top_k(queries, index, d, k, exclude);
    assert!(got.1 == want.1, "{dev}: ids differ from the f64 reference");
    assert!(
        got.0
            .iter()
            .zip(&want.0)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{dev}: scores differ from the f64 reference"
    );
}

fn bad_input_arg(e: Error) -> &'static str {
    match e {
        Error::BadInput { arg, .. } => arg,
        other => panic!("expected BadInput, got {other}"),
    }
}

test_exec!(fn every_registered_check_passes(dev) {
    let rows = realm::selftest::run(dev, Some("mips_top_k"));
    crate::common::assert_selftest_passed(rows, 9);
});

test_exec!(fn many_tiles_and_query_blocks_match_the_reference(dev) {
    let (n, d) = (10_007, 128);
    let index = random_index(11, n, d);
    // 1 and 2 queries take the dot kernel, more the lanes kernel (37: a partial lane block).
    for q in [1, 2, 37] {
        assert_matches_reference(dev, &random_queries(q as u64, q, d), &index, d, 100, None);
    }
});

test_exec!(fn k_8192_matches_the_reference(dev) {
    let (n, d) = (20_000, 32);
    let index = random_index(12, n, d);
    for q in [1, 5] {
        let queries = random_queries(40 + q as u64, q, d);
        let exclude: Vec<u32> = (0..q as u32).map(|i| i * 997).collect();
        assert_matches_reference(dev, &queries, &index, d, 8192, Some(&exclude));
    }
});

test_exec!(fn k_equal_to_n_and_n_minus_one_with_an_exclusion(dev) {
    let (n, d) = (300, 10);
    let index = random_index(13, n, d);
    let queries = random_queries(14, 4, d);
    assert_matches_reference(dev, &queries, &index, d, n, None);
    let exclude = [0, 299, 150, u32::MAX];
    assert_matches_reference(dev, &queries, &index, d, n - 1, Some(&exclude));
    // A dimension that is a multiple of 8 (no padding); a shard smaller than k: the kernels' merge
    // pads its results with (−inf, u32::MAX), the sharded merge skips them.
    let (n, d) = (90, 8);
    let index = random_index(11, n, d);
    let qs = random_queries(12, 3, d);
    assert_matches_reference(dev, &qs, &index, d, n, None);
    assert_matches_reference(dev, &qs, &index, d, n - 1, Some(&[5, 89, 0]));
    let shard = |a: usize, b: usize| index_on(&dev.device, &index[a * d..b * d], d);
    let sharded = ShardedIndex::new(vec![shard(0, 10), shard(10, n)]).unwrap();
    let exclude = [3, 50, u32::MAX];
    let (s, i) = sharded
        .search(&queries_on(&dev.device, &qs, d), 40, Some(&exclude))
        .unwrap();
    let want = reference_top_k(&qs, &index, d, 40, Some(&exclude));
    assert_eq!(i.flatten_all().unwrap().to_vec1::<u32>().unwrap(), want.1);
    assert_eq!(s.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.0);
});

test_exec!(fn exact_ties_go_to_the_lower_id(dev) {
    // Every document identical: every score ties, so the results are ids 0, 1, 2, ... skipping the
    // excluded one.
    let (n, d, k) = (1000, 8, 20);
    let row: Vec<f16> = (0..d).map(|i| f16::from_f32(i as f32 - 3.0)).collect();
    let index: Vec<f16> = row.iter().copied().cycle().take(n * d).collect();
    let queries: Vec<f32> = (0..3 * d).map(|i| (i % 5) as f32 - 1.0).collect();
    let exclude = [5, u32::MAX, 0];
    let (scores, ids) = run(dev, &queries, &index, d, k, Some(&exclude));
    let want0: Vec<u32> = (0..=k as u32).filter(|&i| i != 5).collect();
    let want1: Vec<u32> = (0..k as u32).collect();
    let want2: Vec<u32> = (1..=k as u32).collect();
    assert_eq!(&ids[..k], &want0[..]);
    assert_eq!(&ids[k..2 * k], &want1[..]);
    assert_eq!(&ids[2 * k..], &want2[..]);
    for (qi, chunk) in scores.chunks(k).enumerate() {
        let expect: f32 = (0..d)
            .map(|i| (i as f32 - 3.0) * ((qi * d + i) % 5) as f32 - (i as f32 - 3.0))
            .sum();
        assert!(
            chunk.iter().all(|&s| s == expect),
            "query {qi}: {chunk:?} vs {expect}"
        );
    }
    assert_matches_reference(dev, &queries, &index, d, k, Some(&exclude));
});

test_exec!(fn small_integer_vectors_and_duplicates_match_the_reference(dev) {
    let mut rng = SplitMix64::new(15);
    let d = 6;
    let index: Vec<f16> = (0..3000 * d)
        .map(|_| f16::from_f32(rng.below(3) as f32 - 1.0))
        .collect();
    for q in [1, 2, 19] {
        let queries: Vec<f32> = (0..q * d).map(|_| rng.below(5) as f32 - 2.0).collect();
        let exclude: Vec<u32> = (0..q).map(|_| rng.below(3000) as u32).collect();
        for k in [1, 7, 64, 1000] {
            assert_matches_reference(dev, &queries, &index, d, k, Some(&exclude));
        }
    }
    // Five distinct small-integer rows repeated: hundreds of exact duplicates per score, far
    // more than a candidate list holds, so the kernels' scan must cut them with the exact
    // (f64, id) selection.
    let mut rng = SplitMix64::new(9);
    let d = 16;
    let pool: Vec<f16> = (0..5 * d)
        .map(|_| f16::from_f32(rng.below(5) as f32 - 2.0))
        .collect();
    let index: Vec<f16> = (0..1500)
        .flat_map(|_| {
            let r = rng.below(5) as usize;
            pool[r * d..(r + 1) * d].to_vec()
        })
        .collect();
    let qs: Vec<f32> = (0..6 * d).map(|_| rng.below(7) as f32 - 3.0).collect();
    for k in [1, 5, 100] {
        assert_matches_reference(dev, &qs, &index, d, k, Some(&[3, u32::MAX, 0, 1499, 700, 5]));
    }
});

/// `n` documents: a common O(1) vector of `d` dimensions plus, in 4 random coordinates of every
/// 4th, tiny entries ±m · 2^-24 (subnormal f16) with m < `max_m`; then `q` normal queries.
fn near_tie_index(seed: u64, n: usize, d: usize, max_m: u64, q: usize) -> (Vec<f16>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let tiny: Vec<usize> = (0..d).filter(|c| c % 4 == 1).collect();
    let base: Vec<f16> = (0..d)
        .map(|c| {
            if tiny.contains(&c) {
                f16::ZERO
            } else {
                f16::from_f64(rng.normal())
            }
        })
        .collect();
    let mut index = Vec::new();
    for _ in 0..n {
        let mut row = base.clone();
        for _ in 0..4 {
            let c = tiny[rng.below(tiny.len() as u64) as usize];
            let m = rng.below(max_m) as u16 | if rng.below(2) == 0 { 0 } else { 0x8000 };
            row[c] = f16::from_bits(m);
        }
        index.extend(row);
    }
    let queries = (0..q * d).map(|_| rng.normal() as f32).collect();
    (index, queries)
}

test_exec!(fn near_ties_below_f32_resolution_follow_the_f64_scores(dev) {
    // The documents' f64 scores differ by less than the f32 rounding of their ~10-sized sums, and
    // at different points of the summation, so f32 orders them arbitrarily. The op must still
    // return the f64 reference's order.
    let d = 128;
    let (index, queries) = near_tie_index(16, 4000, d, 64, 3);
    for k in [1, 10, 500] {
        assert_matches_reference(dev, &queries, &index, d, k, None);
        assert_matches_reference(dev, &queries[..d], &index, d, k, None);
    }
    // 64 dimensions, a few f32 ulps of the ~8-sized sums apart.
    let d = 64;
    let (index, queries) = near_tie_index(15, 2000, d, 8, 4);
    for k in [1, 10, 100] {
        assert_matches_reference(dev, &queries, &index, d, k, None);
    }
});

test_exec!(fn exclusion_at_every_rank(dev) {
    let (n, d, k) = (2000, 16, 12);
    let index = random_index(17, n, d);
    for q in [1, 20] {
        let queries = random_queries(18 + q as u64, q, d);
        let (_, top) = reference_top_k(&queries, &index, d, k + 1, None);
        for rank in 0..=k {
            let exclude: Vec<u32> = (0..q).map(|i| top[i * (k + 1) + rank]).collect();
            let (_, ids) = run(dev, &queries, &index, d, k, Some(&exclude));
            for i in 0..q {
                let want: Vec<u32> = top[i * (k + 1)..(i + 1) * (k + 1)]
                    .iter()
                    .copied()
                    .filter(|&id| id != exclude[i])
                    .collect();
                assert_eq!(
                    &ids[i * k..(i + 1) * k],
                    &want[..],
                    "rank {rank}, query {i}"
                );
            }
        }
    }
    // In one batch: one query repeated k + 1 times, query i excluding the document at rank i.
    let (n, d, k) = (400, 24, 12);
    let index = random_index(7, n, d);
    let one = random_queries(8, 1, d);
    let (_, top) = reference_top_k(&one, &index, d, k + 1, None);
    let qs: Vec<f32> = one.iter().copied().cycle().take((k + 1) * d).collect();
    assert_matches_reference(dev, &qs, &index, d, k, Some(&top));
});

test_exec!(fn adversarial_orders_keep_the_candidate_buffers_bounded_and_exact(dev) {
    let d = 16;
    let mut rng = SplitMix64::new(19);
    let dir: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    // Scores that increase with the id: every document beats the current threshold.
    let rising: Vec<f16> = (0..6000)
        .flat_map(|j| {
            dir.iter()
                .map(move |&v| f16::from_f64(v * (1.0 + j as f64 / 600.0)))
        })
        .collect();
    // Thousands of exact duplicates of the best document: f32 cannot thin them out.
    let mut dupes = random_index(20, 6000, d);
    for j in (0..6000).filter(|j| j % 3 == 0) {
        for (c, &v) in dir.iter().enumerate() {
            dupes[j * d + c] = f16::from_f64(v);
        }
    }
    let queries: Vec<f32> = (0..4)
        .flat_map(|i| dir.iter().map(move |&v| (v * (1.0 + i as f64)) as f32))
        .collect();
    for index in [&rising, &dupes] {
        for k in [3, 100] {
            assert_matches_reference(dev, &queries, index, d, k, Some(&[0, 3, u32::MAX, 5999]));
            assert_matches_reference(dev, &queries[..d], index, d, k, Some(&[3]));
        }
    }
    // Rising scores excluding the best document.
    let dir: Vec<f64> = SplitMix64::new(10).normal_vec(d, 1.0);
    let rising: Vec<f16> = (0..900)
        .flat_map(|j| {
            dir.iter()
                .map(move |&v| f16::from_f64(v * (1.0 + j as f64 / 90.0)))
        })
        .collect();
    let qs: Vec<f32> = dir.iter().map(|&v| v as f32).collect();
    assert_matches_reference(dev, &qs, &rising, d, 20, Some(&[899]));
});

test_exec!(fn f32_and_bf16_inputs_are_rounded_to_f16(dev) {
    let (n, d) = (500, 20);
    let index = random_index(21, n, d);
    let index32: Vec<f32> = index.iter().map(|v| v.to_f32()).collect();
    let idx32 = MipsIndex::new(&Tensor::from_vec(index32, (n, d), &dev.device).unwrap()).unwrap();
    let queries = random_queries(22, 6, d);
    let q32 = queries_on(&dev.device, &queries, d);
    let from_f32 = mips_top_k(&q32, &idx32, 9, None).unwrap();
    let from_f16 = mips_top_k(&q32, &index_on(&dev.device, &index, d), 9, None).unwrap();
    assert_eq!(
        from_f32.1.to_vec2::<u32>().unwrap(),
        from_f16.1.to_vec2::<u32>().unwrap()
    );
    // f32 queries give the same results as the same queries rounded to f16 first.
    let q16 = q32.to_dtype(DType::F16).unwrap();
    let rounded = mips_top_k(&q16, &idx32, 9, None).unwrap();
    assert_eq!(
        from_f32.0.to_vec2::<f32>().unwrap(),
        rounded.0.to_vec2::<f32>().unwrap()
    );
    let qb = q32.to_dtype(DType::BF16).unwrap();
    let qb_values = qb.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let got = mips_top_k(&qb, &idx32, 9, None).unwrap();
    let want = reference_top_k(&qb_values.to_vec1().unwrap(), &index, d, 9, None);
    assert_eq!(
        got.1.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        want.1
    );
});

test_exec!(fn an_empty_batch_gives_empty_results(dev) {
    let index = index_on(&dev.device, &random_index(23, 10, 4), 4);
    let q = Tensor::zeros((0, 4), DType::F32, &dev.device).unwrap();
    let (s, i) = mips_top_k(&q, &index, 3, None).unwrap();
    assert_eq!(s.dims(), &[0, 3]);
    assert_eq!(i.dims(), &[0, 3]);
});

test_exec!(fn sharded_search_equals_the_unsharded_one(dev) {
    let (n, d, k) = (3001, 24, 40);
    let index = random_index(24, n, d);
    // Uneven shards, one smaller than k.
    let bounds = [0, 1000, 1030, 2200, n];
    let shards: Vec<MipsIndex> = bounds
        .windows(2)
        .map(|w| index_on(&dev.device, &index[w[0] * d..w[1] * d], d))
        .collect();
    let sharded = ShardedIndex::new(shards).unwrap();
    assert_eq!(sharded.len(), n);
    let whole = index_on(&dev.device, &index, d);
    for q in [1, 9] {
        let queries = queries_on(&dev.device, &random_queries(25 + q as u64, q, d), d);
        // Exclusions inside the small shard, at shard edges and none.
        let exclude: Vec<u32> = [1010, 999, 1000, 2200, u32::MAX, 0, 3000, 1029, 5]
            .into_iter()
            .take(q)
            .collect();
        for ex in [None, Some(&exclude[..])] {
            let a = sharded.search(&queries, k, ex).unwrap();
            let b = mips_top_k(&queries, &whole, k, ex).unwrap();
            assert_eq!(a.1.to_vec2::<u32>().unwrap(), b.1.to_vec2::<u32>().unwrap());
            assert_eq!(a.0.to_vec2::<f32>().unwrap(), b.0.to_vec2::<f32>().unwrap());
        }
    }
    // k up to the whole index, across shards.
    let queries = queries_on(&dev.device, &random_queries(26, 2, d), d);
    let a = sharded.search(&queries, n - 1, Some(&[7, 2500])).unwrap();
    let b = mips_top_k(&queries, &whole, n - 1, Some(&[7, 2500])).unwrap();
    assert_eq!(a.1.to_vec2::<u32>().unwrap(), b.1.to_vec2::<u32>().unwrap());
});

test_exec!(fn partial_tiles_slices_warps_and_batches(dev) {
    // n not a multiple of the kernels' tile (64 or 32 documents); d padded to 8 (20), not a
    // multiple of 16 (40), and above 128 (136: the d256 scan); 1, 17 and 70 queries (a partial
    // warp, a partial second warp, two batches).
    for (n, d, q, k) in [
        (131, 20, 1, 5),
        (200, 40, 17, 30),
        (97, 136, 3, 7),
        (150, 16, 70, 9),
    ] {
        let index = random_index(n as u64, n, d);
        assert_matches_reference(dev, &random_queries(d as u64, q, d), &index, d, k, None);
    }
});

test_exec!(fn k_above_the_tile_with_compactions(dev) {
    // Slices of 256 documents with k = 70 > 64: the kernels' lists fill past 2k + 64 and are
    // compacted.
    let (n, d) = (1200, 32);
    let index = random_index(5, n, d);
    let qs = random_queries(6, 5, d);
    assert_matches_reference(dev, &qs, &index, d, 70, None);
    assert_matches_reference(dev, &qs, &index, d, 3, Some(&[0, 1, 2, 3, 4]));
});

test_exec!(fn near_duplicates_beyond_a_list_take_the_f64_fallback(dev) {
    // 3000 copies of one vector whose last coordinate grows with the id by subnormal steps: all
    // within the f32 error bound of each other, the best ones last in every slice. Only the exact
    // (f64, id) cut keeps the kernels' lists bounded without losing them.
    let d = 16;
    let n = 3000;
    let base: Vec<f16> = (0..d)
        .map(|c| f16::from_f32((c % 5) as f32 - 2.0))
        .collect();
    let index: Vec<f16> = (0..n)
        .flat_map(|j| {
            let mut row = base.clone();
            row[d - 1] = f16::from_bits((j * 64 / n) as u16);
            row
        })
        .collect();
    let qs: Vec<f32> = (0..2 * d).map(|i| 1.0 + (i % 3) as f32).collect();
    for k in [1, 5, 60] {
        assert_matches_reference(dev, &qs, &index, d, k, Some(&[n as u32 - 1, 7]));
    }
});

test_exec!(kernels fn dimensions_beyond_the_kernels_are_an_error(dev) {
    let d = 264;
    let index = index_on(&dev.device, &random_index(13, 10, d), d);
    let q = queries_on(&dev.device, &random_queries(14, 1, d), d);
    match mips_top_k(&q, &index, 1, None).unwrap_err() {
        Error::BadInput { arg, .. } => assert_eq!(arg, "index"),
        other => panic!("expected BadInput, got {other}"),
    }
});

#[test]
fn merge_is_exact_on_f64_scores_and_skips_padding() {
    // Two shards whose scores tie in f32 but not in f64, and padding entries.
    let base = 1.0f64;
    let tiny = base + 1e-12;
    let parts = [
        ShardHits {
            k: 2,
            scores: vec![base, f64::NEG_INFINITY],
            ids: vec![4, u32::MAX],
        },
        ShardHits {
            k: 2,
            scores: vec![tiny, base],
            ids: vec![9, 2],
        },
    ];
    let m = merge_top_k(&parts, 1, 3).unwrap();
    assert_eq!(m.ids, vec![9, 2, 4]);
    assert_eq!(m.scores, vec![tiny, base, base]);
    let bad = ShardHits {
        k: 2,
        scores: vec![0.0],
        ids: vec![1, 2],
    };
    assert_eq!(
        bad_input_arg(merge_top_k(&[bad], 1, 2).unwrap_err()),
        "parts"
    );
}

#[test]
fn bad_inputs_are_errors_naming_the_argument() {
    let (n, d) = (10, 4);
    let index = index_of(&random_index(27, n, d), d);
    let q = queries_of(&random_queries(28, 2, d), d);
    let err = |r: realm::Result<(Tensor, Tensor)>| bad_input_arg(r.unwrap_err());

    assert_eq!(err(mips_top_k(&q, &index, 0, None)), "k");
    assert_eq!(err(mips_top_k(&q, &index, n + 1, None)), "k");
    assert_eq!(err(mips_top_k(&q, &index, n, Some(&[3, u32::MAX]))), "k");
    assert!(mips_top_k(&q, &index, n, Some(&[u32::MAX, u32::MAX])).is_ok());

    let wrong_d = queries_of(&random_queries(29, 2, d + 1), d + 1);
    assert_eq!(err(mips_top_k(&wrong_d, &index, 1, None)), "queries");
    let rank1 = Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(err(mips_top_k(&rank1, &index, 1, None)), "queries");
    let ints = Tensor::zeros((2, d), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(err(mips_top_k(&ints, &index, 1, None)), "queries");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e5] {
        let mut v = random_queries(30, 2, d);
        v[5] = bad;
        assert_eq!(
            err(mips_top_k(&queries_of(&v, d), &index, 1, None)),
            "queries"
        );
    }

    assert_eq!(err(mips_top_k(&q, &index, 1, Some(&[1]))), "exclude");
    assert_eq!(
        err(mips_top_k(&q, &index, 1, Some(&[1, n as u32]))),
        "exclude"
    );

    let new = |t: Tensor| bad_input_arg(MipsIndex::new(&t).unwrap_err());
    assert_eq!(
        new(Tensor::zeros((0, d), DType::F16, &Device::Cpu).unwrap()),
        "embeddings"
    );
    assert_eq!(
        new(Tensor::zeros((3, 0), DType::F16, &Device::Cpu).unwrap()),
        "embeddings"
    );
    assert_eq!(
        new(Tensor::zeros(4, DType::F16, &Device::Cpu).unwrap()),
        "embeddings"
    );
    assert_eq!(
        new(Tensor::zeros((3, 4), DType::I64, &Device::Cpu).unwrap()),
        "embeddings"
    );
    for bad in [f32::NAN, f32::INFINITY, 1e6] {
        let mut v = vec![0.5f32; 12];
        v[7] = bad;
        assert_eq!(
            new(Tensor::from_vec(v, (3, 4), &Device::Cpu).unwrap()),
            "embeddings"
        );
    }

    let other = index_of(&random_index(31, 5, d + 2), d + 2);
    assert_eq!(
        bad_input_arg(ShardedIndex::new(vec![index.clone(), other]).unwrap_err()),
        "shards"
    );
    assert_eq!(
        bad_input_arg(ShardedIndex::new(vec![]).unwrap_err()),
        "shards"
    );
    let sharded = ShardedIndex::new(vec![index.clone(), index.clone()]).unwrap();
    assert_eq!(err(sharded.search(&q, 2 * n + 1, None)), "k");
    assert_eq!(err(sharded.search(&q, 2 * n, Some(&[15, u32::MAX]))), "k");
    assert_eq!(
        err(sharded.search(&q, 1, Some(&[2 * n as u32, 0]))),
        "exclude"
    );
}

// An index made from a view that starts inside its storage (2 bytes in, so every row is
// misaligned for the kernels' 16-byte copies) is searched exactly: the index copies it.
test_exec!(fn an_index_from_an_offset_view_is_searched_exactly(dev) {
    let (n, d, q, k) = (300, 16, 5, 7);
    let x = random_index(41, n + 1, d);
    let flat = Tensor::from_vec(x.clone(), x.len(), &dev.device).unwrap();
    let view = flat.narrow(0, 1, n * d).unwrap().reshape((n, d)).unwrap();
    let index = MipsIndex::new(&view).unwrap();
    let queries = random_queries(42, q, d);
    let (s, i) = mips_top_k(&queries_on(&dev.device, &queries, d), &index, k, None).unwrap();
    let got: (Vec<f32>, Vec<u32>) = (
        s.flatten_all().unwrap().to_vec1().unwrap(),
        i.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert_eq!(got, reference_top_k(&queries, &x[1..=n * d], d, k, None));
});

// `realm bench mips --check N`: the timed op's results of N queries against the reference, on
// both of the CPU kernel's paths (1 query, and a batch of 40) and on the kernels.
test_exec!(fn the_benchmark_checks_its_results(dev) {
    use realm::measure::Budget;
    use realm::ops::mips::{bench, MipsBench};
    let budget = Budget {
        warmup: 0,
        min_iters: 1,
        max_iters: 1,
        time: std::time::Duration::ZERO,
    };
    for (queries, check) in [(1, 1), (40, 6)] {
        let spec = MipsBench {
            docs: 3000,
            dim: 64,
            queries,
            k: 70,
            dtype: DType::F16,
            check,
        };
        let report = bench(dev, spec, budget).unwrap();
        assert_eq!(
            report.checked.as_deref(),
            Some(format!("{check} queries against float64").as_str())
        );
    }
    let spec = MipsBench {
        docs: 100,
        dim: 8,
        queries: 2,
        k: 3,
        dtype: DType::F32,
        check: 3,
    };
    assert_eq!(bad_input_arg(bench(dev, spec, budget).unwrap_err()), "check");
});
