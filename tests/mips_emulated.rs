//! The CUDA kernels of kernels/mips_topk.cu run by the emulator, against the CPU implementation
//! and the f64 reference: ids equal and scores bit-identical, at small shapes chosen to reach every
//! path — partial tiles and slices, both scan variants, partial warps and query batches, k above
//! the tile, exclusions at every rank, compactions, the exact near-tie fallback, padding.
#![cfg(feature = "emulate")]

use candle_core::{Device, Tensor};
use half::f16;
use realm::device::{ComputeDevice, DeviceSpec};
use realm::ops::mips::{random_index, reference_top_k};
use realm::ops::{mips_top_k, use_emulator, MipsIndex, ShardedIndex};
use realm::rng::SplitMix64;
use realm::Error;

type Results = (Vec<f32>, Vec<u32>);

fn run(queries: &[f32], index: &[f16], d: usize, k: usize, exclude: Option<&[u32]>) -> Results {
    let idx = MipsIndex::new(
        &Tensor::from_vec(index.to_vec(), (index.len() / d, d), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let q = Tensor::from_vec(queries.to_vec(), (queries.len() / d, d), &Device::Cpu).unwrap();
    let (s, i) = mips_top_k(&q, &idx, k, exclude).unwrap();
    (
        s.flatten_all().unwrap().to_vec1().unwrap(),
        i.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

/// The emulated kernels, the CPU implementation and the reference all agree exactly.
fn check(queries: &[f32], index: &[f16], d: usize, k: usize, exclude: Option<&[u32]>) {
    let native = run(queries, index, d, k, exclude);
    let emulated = {
        let _emu = use_emulator().unwrap();
        run(queries, index, d, k, exclude)
    };
    let reference = reference_top_k(queries, index, d, k, exclude);
    assert!(
        emulated.1 == reference.1,
        "emulated ids differ from the reference"
    );
    assert!(
        native.1 == reference.1,
        "native ids differ from the reference"
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&emulated.0), bits(&reference.0), "emulated scores");
    assert_eq!(bits(&native.0), bits(&emulated.0), "native scores");
}

fn queries(seed: u64, q: usize, d: usize) -> Vec<f32> {
    SplitMix64::new(seed)
        .normal_vec(q * d, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

#[test]
fn every_registered_check_passes_on_the_emulator() {
    let dev = ComputeDevice::resolve(DeviceSpec::Emulate).unwrap();
    let rows = realm::selftest::run(&dev, Some("mips_top_k"));
    assert!(rows.len() >= 9);
    for row in rows {
        match &row.outcome {
            Ok(o) => assert!(o.passed(), "{}: error {:e}", row.name, o.max_rel_err),
            Err(e) => panic!("{}: {e}", row.name),
        }
    }
}

#[test]
fn partial_tiles_slices_warps_and_batches() {
    // n not a multiple of the tile (64 or 32 documents); d padded to 8 (20), not a multiple of
    // 16 (40), and above 128 (136: the d256 variant); 1, 17 and 70 queries (a partial warp, a
    // partial second warp, two batches).
    for (n, d, q, k) in [
        (131, 20, 1, 5),
        (200, 40, 17, 30),
        (97, 136, 3, 7),
        (150, 16, 70, 9),
    ] {
        let index = random_index(n as u64, n, d);
        check(&queries(d as u64, q, d), &index, d, k, None);
    }
}

#[test]
fn k_above_the_tile_with_compactions() {
    // Slices of 256 documents with k = 70 > 64: lists fill past 2k + 64 and are compacted.
    let (n, d) = (1200, 32);
    let index = random_index(5, n, d);
    let qs = queries(6, 5, d);
    check(&qs, &index, d, 70, None);
    check(&qs, &index, d, 3, Some(&[0, 1, 2, 3, 4]));
}

#[test]
fn exclusion_at_every_rank() {
    // One query repeated k + 1 times, query i excluding the document at rank i.
    let (n, d, k) = (400, 24, 12);
    let index = random_index(7, n, d);
    let one = queries(8, 1, d);
    let (_, top) = reference_top_k(&one, &index, d, k + 1, None);
    let qs: Vec<f32> = one.iter().copied().cycle().take((k + 1) * d).collect();
    check(&qs, &index, d, k, Some(&top));
}

#[test]
fn exact_ties_and_duplicates_take_the_f64_fallback() {
    // Five distinct small-integer rows repeated: hundreds of exact duplicates per score, far more
    // than a candidate list holds, so the scan must cut them with the exact (f64, id) selection.
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
        check(&qs, &index, d, k, Some(&[3, u32::MAX, 0, 1499, 700, 5]));
    }
}

#[test]
fn near_ties_below_f32_resolution() {
    // O(1) shared coordinates plus tiny (subnormal f16) entries in varying coordinates: the f32
    // sums cannot order the documents, only the f64 scores can.
    let d = 64;
    let mut rng = SplitMix64::new(15);
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
    for _ in 0..2000 {
        let mut row = base.clone();
        for _ in 0..4 {
            let c = tiny[rng.below(tiny.len() as u64) as usize];
            // ±m · 2^-24, m < 8: a few f32 ulps of the ~8-sized sums at most.
            let m = rng.below(8) as u16 | if rng.below(2) == 0 { 0 } else { 0x8000 };
            row[c] = f16::from_bits(m);
        }
        index.extend(row);
    }
    let qs: Vec<f32> = (0..4 * d).map(|_| rng.normal() as f32).collect();
    for k in [1, 10, 100] {
        check(&qs, &index, d, k, None);
    }
}

#[test]
fn near_duplicates_beyond_a_list_take_the_f64_fallback() {
    // 3000 copies of one vector whose last coordinate grows with the id by subnormal steps: all
    // within the f32 error bound of each other, the best ones last in every slice. Only the exact
    // (f64, id) cut keeps the lists bounded without losing them.
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
        check(&qs, &index, d, k, Some(&[n as u32 - 1, 7]));
    }
}

#[test]
fn adversarial_rising_scores() {
    // Every document beats every earlier one: every tile appends everything.
    let d = 16;
    let dir: Vec<f64> = SplitMix64::new(10).normal_vec(d, 1.0);
    let index: Vec<f16> = (0..900)
        .flat_map(|j| {
            dir.iter()
                .map(move |&v| f16::from_f64(v * (1.0 + j as f64 / 90.0)))
        })
        .collect();
    let qs: Vec<f32> = dir.iter().map(|&v| v as f32).collect();
    check(&qs, &index, d, 20, Some(&[899]));
}

#[test]
fn k_equal_to_n_and_padded_shards() {
    let (n, d) = (90, 8);
    let index = random_index(11, n, d);
    let qs = queries(12, 3, d);
    check(&qs, &index, d, n, None);
    check(&qs, &index, d, n - 1, Some(&[5, 89, 0]));
    // A shard smaller than k: the merge pads with (−inf, u32::MAX), the sharded merge skips them.
    let shard = |a: usize, b: usize| {
        MipsIndex::new(
            &Tensor::from_vec(index[a * d..b * d].to_vec(), (b - a, d), &Device::Cpu).unwrap(),
        )
        .unwrap()
    };
    let sharded = ShardedIndex::new(vec![shard(0, 10), shard(10, n)]).unwrap();
    let qt = Tensor::from_vec(qs.clone(), (3, d), &Device::Cpu).unwrap();
    let native = sharded.search(&qt, 40, Some(&[3, 50, u32::MAX])).unwrap();
    let _emu = use_emulator().unwrap();
    let emulated = sharded.search(&qt, 40, Some(&[3, 50, u32::MAX])).unwrap();
    assert_eq!(
        native.1.to_vec2::<u32>().unwrap(),
        emulated.1.to_vec2::<u32>().unwrap()
    );
    assert_eq!(
        native.0.to_vec2::<f32>().unwrap(),
        emulated.0.to_vec2::<f32>().unwrap()
    );
}

#[test]
fn dimensions_beyond_the_kernels_are_an_error() {
    let d = 264;
    let index = random_index(13, 10, d);
    let idx = MipsIndex::new(&Tensor::from_vec(index, (10, d), &Device::Cpu).unwrap()).unwrap();
    let q = Tensor::from_vec(queries(14, 1, d), (1, d), &Device::Cpu).unwrap();
    let _emu = use_emulator().unwrap();
    match mips_top_k(&q, &idx, 1, None).unwrap_err() {
        Error::BadInput { arg, .. } => assert_eq!(arg, "index"),
        other => panic!("expected BadInput, got {other}"),
    }
}
