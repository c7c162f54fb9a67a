//! Exact maximum-inner-product search: the `k` documents of an f16 index with the largest inner
//! product with each query, checked here against a plain candle matmul + sort.
//!
//! ```sh
//! cargo run --release --example mips_top_k
//! ```

use candle_core::{DType, Device, Tensor};
use realm::ops::{mips_top_k, MipsIndex};

fn main() -> realm::Result<()> {
    let dev = Device::Cpu;
    // 10,000 documents and 4 queries, 128 dimensions (REALM's embedding size).
    let docs = Tensor::randn(0f32, 1.0, (10_000, 128), &dev)?;
    let queries = Tensor::randn(0f32, 1.0, (4, 128), &dev)?;
    let index = MipsIndex::new(&docs.to_dtype(DType::F16)?)?;

    // Query 0 may not retrieve document 7 (as REALM excludes an example's own document); the
    // others exclude nothing (u32::MAX).
    let exclude = [7, u32::MAX, u32::MAX, u32::MAX];
    let (scores, ids) = mips_top_k(&queries, &index, 5, Some(&exclude))?;
    let (scores, ids) = (scores.to_vec2::<f32>()?, ids.to_vec2::<u32>()?);

    // The same with plain tensor ops, over the f16-rounded documents the index holds.
    let rounded = docs.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
    let all = queries.matmul(&rounded.t()?)?.to_vec2::<f32>()?;
    for (q, row) in all.iter().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).filter(|&d| d as u32 != exclude[q]).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        println!("query {q}: top 5 {:?}, scores {:.3?}", ids[q], scores[q]);
        let expected: Vec<u32> = order[..5].iter().map(|&d| d as u32).collect();
        println!("         plain matmul + sort: {expected:?}");
    }
    Ok(())
}
