//! Fused attention `softmax(scale · q kᵀ) v` over `[b, h, l, dh]` tensors with per-example lengths
//! (padding skipped, never an l × l matrix in memory), forward and backward, checked here
//! against the plain candle composition.
//!
//! ```sh
//! cargo run --release --example attention
//! ```

use candle_core::{Device, Tensor, Var, D};
use realm::ops::attention;

fn main() -> realm::Result<()> {
    let dev = Device::Cpu;
    let (b, h, l, dh) = (2, 4, 64, 32);
    let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, l, dh), &dev)?)?;
    let k = Tensor::randn(0f32, 1.0, (b, h, l, dh), &dev)?;
    let v = Tensor::randn(0f32, 1.0, (b, h, l, dh), &dev)?;
    // Example 0 has all 64 tokens, example 1 only 40 (the rest is padding).
    let lens = realm::ops::KeyLens::new(&[64, 40], &dev)?;
    let scale = 1.0 / (dh as f64).sqrt();

    let out = attention(q.as_tensor(), &k, &v, Some(&lens), scale, None)?;
    let grad_q = out.sqr()?.sum_all()?.backward()?;
    let grad_q = grad_q.get(q.as_tensor()).expect("q has a gradient");

    // Example 0 with the plain composition (no padding there).
    let (q0, k0, v0) = (q.as_tensor().get(0)?, k.get(0)?, v.get(0)?);
    let probs = candle_nn::ops::softmax(&(q0.matmul(&k0.t()?)? * scale)?, D::Minus1)?;
    let plain = probs.matmul(&v0)?;
    let diff = (out.get(0)? - plain)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("output [b, h, l, dh] = {:?}", out.dims());
    println!("max |fused - plain| on example 0: {diff:.2e}");
    // Query rows past an example's length are zeros, and get zero gradients.
    let padded = out
        .get(1)?
        .narrow(1, 40, 24)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let padded_grad = grad_q
        .get(1)?
        .narrow(1, 40, 24)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("padding rows of example 1: max |out| {padded}, max |d q| {padded_grad}");
    Ok(())
}
