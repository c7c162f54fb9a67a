//! The float64 brute-force reference (the op's definition), the op's `realm selftest` cases and
//! its `realm bench` measurement.

use super::{mips_top_k, result_order, score_f64, MipsIndex};
use crate::check::{max_rel_err, Case, Outcome};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::measure::{self, Budget, Report};
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// The op by brute force: every score in f64 over the f16-rounded query (`queries`: `[q, d]`
/// values as f32) and index (`[n, d]`), sorted by score descending then id ascending, the excluded
/// document left out; the first k of each query as (f32 scores, ids), `[q, k]`.
pub fn reference_top_k(
    queries: &[f32],
    index: &[f16],
    d: usize,
    k: usize,
    exclude: Option<&[u32]>,
) -> (Vec<f32>, Vec<u32>) {
    let rows: Vec<(Vec<f32>, Vec<u32>)> = queries
        .par_chunks(d)
        .enumerate()
        .map(|(i, row)| {
            let q16: Vec<f32> = row.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let skip = exclude.map_or(u32::MAX, |e| e[i]);
            let mut all: Vec<(f64, u32)> = index
                .chunks(d)
                .zip(0u32..)
                .filter(|&(_, id)| id != skip)
                .map(|(x, id)| (score_f64(x, &q16), id))
                .collect();
            // The k best first (linear time), then only those sorted.
            if k < all.len() {
                all.select_nth_unstable_by(k, result_order);
                all.truncate(k);
            }
            all.sort_by(result_order);
            all.into_iter().map(|(s, id)| (s as f32, id)).unzip()
        })
        .collect();
    let (scores, ids): (Vec<Vec<f32>>, Vec<Vec<u32>>) = rows.into_iter().unzip();
    (scores.concat(), ids.concat())
}

/// `n × d` f16 values, normal with standard deviation 1/√d (rows of norm about 1, like normalised
/// embeddings); generated in parallel, the same for a seed on every machine.
pub fn random_index(seed: u64, n: usize, d: usize) -> Vec<f16> {
    let mut x = vec![f16::ZERO; n * d];
    let scale = 1.0 / (d as f64).sqrt();
    x.par_chunks_mut(4096 * d.max(1))
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = SplitMix64::new(seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for v in chunk {
                *v = f16::from_f64(rng.normal() * scale);
            }
        });
    x
}

/// An index whose rows are drawn from a pool of a few small-integer vectors: exact duplicates and
/// exact ties in every summation order.
fn tied_index(rng: &mut SplitMix64, n: usize, d: usize) -> Vec<f16> {
    let pool: Vec<f16> = (0..5 * d)
        .map(|_| f16::from_f64(rng.below(5) as f64 - 2.0))
        .collect();
    (0..n)
        .flat_map(|_| {
            let r = rng.below(5) as usize;
            pool[r * d..(r + 1) * d].to_vec()
        })
        .collect()
}

/// A case's shape: n documents of dimension d, q queries, top k.
#[derive(Clone, Copy, Debug)]
struct Shape {
    n: usize,
    d: usize,
    q: usize,
    k: usize,
    /// Small-integer vectors from a pool of five: exact ties everywhere.
    ties: bool,
    /// An excluded document for most queries (among them the best, the k-th and the (k+1)-th).
    exclude: bool,
}

/// Excluded documents: per query one of its true best, k-th, (k+1)-th, a random document, or none.
fn exclusions(rng: &mut SplitMix64, qvals: &[f32], index: &[f16], d: usize, k: usize) -> Vec<u32> {
    let n = index.len() / d;
    let (_, best) = reference_top_k(qvals, index, d, (k + 1).min(n), None);
    let per = (k + 1).min(n);
    (0..qvals.len() / d)
        .map(|i| {
            let row = &best[i * per..(i + 1) * per];
            match rng.below(5) {
                0 => row[0],
                1 => row[(k - 1).min(per - 1)],
                2 => row[per - 1],
                3 => rng.below(n as u64) as u32,
                _ => u32::MAX,
            }
        })
        .collect()
}

/// The op on `dev` against the reference: ids must be equal and scores bit-identical, so the
/// reported error is 0 or, when an id differs, infinite.
fn check(dev: &ComputeDevice, s: Shape, dtype: DType, seed: u64) -> Result<Outcome> {
    let _exec = dev.enter()?;
    let mut rng = SplitMix64::new(seed);
    let index = if s.ties {
        tied_index(&mut rng, s.n, s.d)
    } else {
        random_index(seed, s.n, s.d)
    };
    let qvals: Vec<f64> = if s.ties {
        (0..s.q * s.d).map(|_| rng.below(7) as f64 - 3.0).collect()
    } else {
        rng.normal_vec(s.q * s.d, 1.0)
    };
    let queries = Tensor::from_vec(qvals, (s.q, s.d), &Device::Cpu)?.to_dtype(dtype)?;
    // The reference sees the values the op sees (after the dtype's rounding).
    let qhost = queries
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let exclude = s
        .exclude
        .then(|| exclusions(&mut rng, &qhost, &index, s.d, s.k));
    let idx = MipsIndex::new(&Tensor::from_vec(index.clone(), (s.n, s.d), &dev.device)?)?;
    let (scores, ids) = mips_top_k(
        &queries.to_device(&dev.device)?,
        &idx,
        s.k,
        exclude.as_deref(),
    )?;
    let (ref_scores, ref_ids) = reference_top_k(&qhost, &index, s.d, s.k, exclude.as_deref());
    let ids = ids.flatten_all()?.to_vec1::<u32>()?;
    let scores = scores.flatten_all()?.to_vec1::<f32>()?;
    let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let err = if ids == ref_ids {
        max_rel_err(&as_f64(&scores), &as_f64(&ref_scores))
    } else {
        f64::INFINITY
    };
    Ok(Outcome {
        max_rel_err: err,
        tolerance: 0.0,
    })
}

/// Shapes covering both CPU micro-kernels (1–2 queries and more), partial tiles and query blocks,
/// d not a multiple of 8, k of 1, large k and k = n − 1 with exclusions, and exact ties.
pub fn selftest_cases() -> Vec<Case> {
    let plain = |n, d, q, k| Shape {
        n,
        d,
        q,
        k,
        ties: false,
        exclude: true,
    };
    let shapes = [
        Shape {
            exclude: false,
            ..plain(1, 1, 1, 1)
        },
        plain(50, 12, 2, 10),
        plain(37, 5, 3, 7),
        plain(300, 16, 20, 50),
        plain(1000, 128, 5, 8),
        plain(700, 24, 3, 699),
        plain(2000, 64, 40, 600),
        Shape {
            ties: true,
            ..plain(500, 8, 17, 100)
        },
        Shape {
            ties: true,
            ..plain(400, 32, 2, 9)
        },
    ];
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let dtype = dtypes[i % dtypes.len()];
            Case {
                op: "mips_top_k",
                name: format!(
                    "n={} d={} q={} k={}{} {dtype:?}",
                    s.n,
                    s.d,
                    s.q,
                    s.k,
                    if s.ties { " ties" } else { "" }
                ),
                run: Box::new(move |dev| check(dev, s, dtype, 300 + i as u64)),
            }
        })
        .collect()
}

/// What `realm bench mips` measures: `queries` random queries of `dtype` against a random f16
/// index of `docs × dim`, top `k`.
#[derive(Clone, Copy, Debug)]
pub struct MipsBench {
    /// Rows (documents) of the index.
    pub docs: usize,
    /// Embedding dimension of the index and the queries.
    pub dim: usize,
    /// Queries searched at once.
    pub queries: usize,
    /// Best documents returned per query.
    pub k: usize,
    /// Element type of the queries (the index is f16).
    pub dtype: DType,
    /// Queries (the first ones) whose top k from the timed op is compared afterwards with the
    /// float64 reference: ids equal and scores bit-identical, as in the selftest, or an error
    /// naming the first difference. 0: no check.
    pub check: usize,
}

/// Median time of [`mips_top_k`] on `dev`, then the check of `spec.check` queries' results.
pub fn bench(dev: &ComputeDevice, spec: MipsBench, budget: Budget) -> Result<Report> {
    let _exec = dev.enter()?;
    let MipsBench {
        docs,
        dim,
        queries: q,
        k,
        dtype,
        check,
    } = spec;
    if check > q {
        return Err(Error::bad_input(
            "bench mips",
            "check",
            format!("{check} queries to check, but only {q} are searched"),
        ));
    }
    // The host values are kept (a copy made) only when a check needs them.
    let values = random_index(1, docs, dim);
    let (index, host_index) = if check > 0 {
        let index = Tensor::from_slice(&values, (docs, dim), &dev.device)?;
        (index, Some(values))
    } else {
        (Tensor::from_vec(values, (docs, dim), &dev.device)?, None)
    };
    let index = MipsIndex::new(&index)?;
    let mut rng = SplitMix64::new(2);
    let host_queries = Tensor::from_vec(
        rng.normal_vec(q * dim, 1.0 / (dim as f64).sqrt()),
        (q, dim),
        &Device::Cpu,
    )?
    .to_dtype(dtype)?;
    let queries = host_queries.to_device(&dev.device)?;
    let timing = measure::time(dev, budget, || {
        mips_top_k(&queries, &index, k, None)?;
        Ok(())
    })?;
    let shape = format!("n={docs} d={dim} q={q} k={k}");
    // One pass over the f16 index; 2·q·n·d flops.
    let report = Report::new("mips_top_k", shape, dtype, dev, &timing)
        .moving((docs * dim * 2) as f64)
        .computing(2.0 * (q * docs * dim) as f64);
    let Some(host_index) = host_index else {
        return Ok(report);
    };
    // The same call as timed (all q queries: the batch size picks the kernel's path).
    let (scores, ids) = mips_top_k(&queries, &index, k, None)?;
    let scores = scores
        .narrow(0, 0, check)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let ids = ids.narrow(0, 0, check)?.flatten_all()?.to_vec1::<u32>()?;
    let qhost = host_queries
        .narrow(0, 0, check)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (ref_scores, ref_ids) = reference_top_k(&qhost, &host_index, dim, k, None);
    let found = ids.iter().zip(&scores);
    let want = ref_ids.iter().zip(&ref_scores);
    if let Some((at, ((id, s), (rid, rs)))) = found
        .zip(want)
        .enumerate()
        .find(|(_, ((id, s), (rid, rs)))| id != rid || s.to_bits() != rs.to_bits())
    {
        return Err(Error::Device(format!(
            "bench mips: query {} rank {}: id {id} score {s:e}, but the float64 reference has \
             id {rid} score {rs:e} ({shape_desc})",
            at / k,
            at % k,
            shape_desc = report.shape,
        )));
    }
    Ok(report.checked(format!("{check} queries against float64")))
}
