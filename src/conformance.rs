//! The conformance suite of the portability layer: the kernels of `kernels/conformance.cu` run on
//! the emulator or a GPU, each compared bit for bit with a Rust model of what CUDA and the PTX ISA
//! define (shuffle sources, vote results, ldmatrix and mma fragment layouts, round-to-nearest-even
//! conversions). Inputs are integers or otherwise exactly representable, so every result is exact
//! and the emulator and the hardware must agree to the bit.
//!
//! Every conformance kernel takes `(const unsigned* input, unsigned* out)` (one family,
//! [`Conformance`], the kernel chosen by its [`Variant`]); the output buffer starts as the check's
//! initial words (0xffffffff where the kernel must write). The checks run on any
//! [`Backend`]: the emulator, or a GPU.

use crate::error::Result;
use crate::kernels::abi::conformance::{Conformance, ConformanceAxpy, Variant};
use crate::kernels::{Backend, Element, Launch};
use crate::ops::elem::Elem;
use half::{bf16, f16};

/// The result of one conformance check.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    /// The check's name, e.g. `ldmatrix` or `mma_f16`.
    pub name: &'static str,
    /// Largest absolute difference over the words that differ, read as their check's type.
    pub max_abs_err: f64,
    /// Every output word equal to its expected bits.
    pub passed: bool,
    /// How many words matched, or how many differ and the first that does (index, got,
    /// expected).
    pub detail: String,
}

/// Runs kernel `variant` on `input` with the output buffer initialised to `init`; returns the
/// output.
fn run<B: Backend>(
    be: &B,
    variant: Variant,
    shape: Launch,
    input: &[u32],
    init: Vec<u32>,
) -> Result<Vec<u32>> {
    let input = be.upload(input, "conformance input")?;
    let mut out = be.upload(&init, "conformance output")?;
    let mut b = be.binder();
    let params = Conformance {
        input: B::read_buf(&mut b, &input),
        out: B::write(&mut b, &mut out),
    };
    be.launch(b, variant, shape, params)?;
    be.download(&out, "conformance output")
}

/// How an output word is read when measuring the size of a mismatch.
#[derive(Clone, Copy)]
enum Word {
    U32,
    I32,
    F32,
    F16x2,
    Bf16x2,
}

fn word_value(kind: Word, w: u32) -> [f64; 2] {
    match kind {
        Word::U32 => [f64::from(w), 0.0],
        Word::I32 => [f64::from(w as i32), 0.0],
        Word::F32 => [f64::from(f32::from_bits(w)), 0.0],
        Word::F16x2 => [
            f64::from(f16::from_bits(w as u16)),
            f64::from(f16::from_bits((w >> 16) as u16)),
        ],
        Word::Bf16x2 => [
            f64::from(bf16::from_bits(w as u16)),
            f64::from(bf16::from_bits((w >> 16) as u16)),
        ],
    }
}

/// Compares every word of `got` with `want` bit for bit; `kind(i)` says how word i is read.
fn compare(
    name: &'static str,
    got: &[u32],
    want: &[u32],
    kind: impl Fn(usize) -> Word,
) -> CheckOutcome {
    if got.len() != want.len() {
        return CheckOutcome {
            name,
            max_abs_err: f64::INFINITY,
            passed: false,
            detail: format!("{} output words, expected {}", got.len(), want.len()),
        };
    }
    let mut max_abs_err = 0.0f64;
    let mut differ = 0usize;
    let mut first = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        differ += 1;
        first.get_or_insert((i, g, w));
        let (gv, wv) = (word_value(kind(i), g), word_value(kind(i), w));
        for (a, b) in gv.iter().zip(&wv) {
            let err = (a - b).abs();
            max_abs_err = max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
        }
    }
    let detail = match first {
        None => format!("{} words bit-exact", want.len()),
        Some((i, g, w)) => format!(
            "{differ} of {} words differ; first: word {i} is {g:#010x}, expected {w:#010x}",
            want.len()
        ),
    };
    CheckOutcome {
        name,
        max_abs_err,
        passed: differ == 0,
        detail,
    }
}

const POISON: u32 = 0xffff_ffff;

fn poisoned(len: usize) -> Vec<u32> {
    vec![POISON; len]
}

#[derive(Clone, Copy, PartialEq)]
enum Shfl {
    Idx,
    Up,
    Down,
    Xor,
}

/// The lane a shuffle reads, per the PTX ISA's shfl.sync with CUDA's segment operand
/// `((32 - width) << 8) | clamp`: a source outside the lane's segment yields its own value.
fn shfl_source(mode: Shfl, lane: i64, b: i64, width: i64) -> usize {
    let seg = 32 - width;
    let clamp = if mode == Shfl::Up { 0 } else { 31 };
    let max_lane = (lane & seg) | (clamp & !seg);
    let min_lane = lane & seg;
    let (j, ok) = match mode {
        Shfl::Up => (lane - b, lane - b >= max_lane),
        Shfl::Down => (lane + b, lane + b <= max_lane),
        Shfl::Xor => (lane ^ b, (lane ^ b) <= max_lane),
        Shfl::Idx => {
            let j = min_lane | (b & 31 & !seg);
            (j, j <= max_lane)
        }
    };
    if ok && (0..32).contains(&j) {
        j as usize
    } else {
        lane as usize
    }
}

/// Every shuffle flavour on two warps, widths 32, 16 and 8, out-of-segment sources, a float and
/// an unsigned operand, and a partial mask.
pub fn shuffle<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let input: Vec<u32> = (0..64).map(|t| t * 37 + 1000).collect();
    let got = run(
        be,
        Variant::Shuffle,
        Launch::linear(1, 64),
        &input,
        poisoned(64 * 12),
    )?;
    let mut want = Vec::with_capacity(64 * 12);
    for t in 0..64usize {
        let (warp, lane) = (t / 32, (t % 32) as i64);
        let v = |mode, b, width| input[warp * 32 + shfl_source(mode, lane, b, width)];
        want.extend([
            v(Shfl::Idx, (lane * 7 + 3) % 32, 32),
            v(Shfl::Idx, lane + 5, 16),
            v(Shfl::Idx, 37 - lane, 8),
            v(Shfl::Xor, 5, 32),
            v(Shfl::Xor, 12, 8),
            v(Shfl::Down, 3, 32),
            v(Shfl::Down, 3, 8),
            v(Shfl::Up, 3, 32),
            v(Shfl::Up, 5, 16),
            (v(Shfl::Xor, 9, 32) as i32 as f32 * 0.5).to_bits(),
            v(Shfl::Down, 1, 32) ^ 0x8000_0000,
            if lane < 16 {
                v(Shfl::Xor, 3, 32) + 1
            } else {
                0xdead_beef
            },
        ]);
    }
    Ok(compare("shuffle", &got, &want, |i| {
        if i % 12 == 9 {
            Word::F32
        } else {
            Word::U32
        }
    }))
}

/// Ballot, any and all with the full mask, and a ballot with a partial mask.
pub fn vote<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let input: Vec<u32> = (0..64).map(|t| (t * 7) % 64).collect();
    let got = run(
        be,
        Variant::Vote,
        Launch::linear(1, 64),
        &input,
        poisoned(64 * 6),
    )?;
    let mut want = Vec::with_capacity(64 * 6);
    for t in 0..64usize {
        let (warp, lane) = (t / 32, t % 32);
        let x = &input[warp * 32..warp * 32 + 32];
        let ballot = |lanes: std::ops::Range<usize>, pred: &dyn Fn(u32) -> bool| {
            lanes.filter(|&l| pred(x[l])).fold(0u32, |b, l| b | 1 << l)
        };
        want.extend([
            ballot(0..32, &|v| v % 3 == 0),
            u32::from(x.contains(&40)),
            u32::from(x.iter().all(|&v| v < 50)),
            1,
            if (8..24).contains(&lane) {
                ballot(8..24, &|v| v & 1 == 1)
            } else {
                0xdead_beef
            },
            0,
        ]);
    }
    Ok(compare("vote", &got, &want, |_| Word::U32))
}

/// warp_reduce_{sum,max} and block_reduce_{sum,max} (collectives.cuh) on small integers.
pub fn reduce<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let values: Vec<f32> = (0..512).map(|i| ((i * 37) % 201) as f32 - 100.0).collect();
    let input: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    let got = run(
        be,
        Variant::Reduce,
        Launch::linear(2, 256),
        &input,
        poisoned(36 + 1024),
    )?;
    let sum = |xs: &[f32]| xs.iter().sum::<f32>();
    let max = |xs: &[f32]| xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut want = vec![0u32; 36 + 1024];
    for b in 0..2 {
        let block = &values[b * 256..(b + 1) * 256];
        want[b * 18] = sum(block).to_bits();
        want[b * 18 + 1] = max(block).to_bits();
        for w in 0..8 {
            want[b * 18 + 2 + w] = sum(&block[w * 32..w * 32 + 32]).to_bits();
            want[b * 18 + 10 + w] = max(&block[w * 32..w * 32 + 32]).to_bits();
        }
        for t in 0..256 {
            want[36 + 2 * (b * 256 + t)] = sum(block).to_bits();
            want[36 + 2 * (b * 256 + t) + 1] = max(block).to_bits();
        }
    }
    Ok(compare("reduce", &got, &want, |_| Word::F32))
}

/// 64 blocks of 256 threads exchanging values through shared memory across 20 barriers.
pub fn barrier<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let input: Vec<u32> = (0..64 * 256u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let got = run(
        be,
        Variant::Barrier,
        Launch::linear(64, 256),
        &input,
        poisoned(64 * 256),
    )?;
    let mut want = Vec::with_capacity(64 * 256);
    for block in input.chunks(256) {
        let mut v = block.to_vec();
        for round in 0..10 {
            v = (0..256)
                .map(|t| {
                    v[(t + 1 + round) % 256]
                        .wrapping_mul(3)
                        .wrapping_add(v[255 - t])
                })
                .collect();
        }
        want.extend(v);
    }
    Ok(compare("barrier", &got, &want, |_| Word::U32))
}

/// Dynamic shared memory (300 words) beside a static shared counter, with a shared atomic sum.
pub fn dynamic_smem<B: Backend>(be: &B) -> Result<CheckOutcome> {
    const N: usize = 300;
    let values: Vec<u32> = (0..N as u32).map(|i| i * 7 + 3).collect();
    let mut input = vec![N as u32];
    input.extend(&values);
    let shape = Launch::linear(3, 96).with_dyn_smem((N * 4) as u32);
    let got = run(
        be,
        Variant::DynamicSmem,
        shape,
        &input,
        poisoned(3 * (N + 1)),
    )?;
    let mut want = Vec::with_capacity(3 * (N + 1));
    for b in 0..3u32 {
        want.extend((0..N).map(|i| values[N - 1 - i] + b));
        want.push(
            values[..96]
                .iter()
                .map(|v| v + b)
                .fold(0u32, u32::wrapping_add),
        );
    }
    Ok(compare("dynamic_smem", &got, &want, |_| Word::U32))
}

/// Global and shared atomics: int sum and max, float sum, unsigned tickets (each thread must get
/// a distinct one, in any order).
pub fn atomics<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let values: Vec<i32> = (0..512).map(|i| (i * 97) % 1001 - 500).collect();
    let input: Vec<u32> = values.iter().map(|&v| v as u32).collect();
    let mut init = poisoned(12 + 512);
    init[..4].copy_from_slice(&[0, i32::MIN as u32, 0f32.to_bits(), 0]);
    let mut got = run(be, Variant::Atomics, Launch::linear(4, 128), &input, init)?;
    got[12..].sort_unstable();
    let mut want = vec![
        values.iter().fold(0i32, |s, &v| s.wrapping_add(v)) as u32,
        *values.iter().max().unwrap_or(&i32::MIN) as u32,
        values.iter().map(|&v| v as f32).sum::<f32>().to_bits(),
        512,
    ];
    let blocks: Vec<&[i32]> = values.chunks(128).collect();
    want.extend(
        blocks
            .iter()
            .map(|b| b.iter().fold(0i32, |s, &v| s.wrapping_add(v)) as u32),
    );
    want.extend(
        blocks
            .iter()
            .map(|b| *b.iter().max().unwrap_or(&i32::MIN) as u32),
    );
    want.extend(0..512u32);
    Ok(compare("atomics", &got, &want, |i| match i {
        2 => Word::F32,
        0 | 1 | 4..=11 => Word::I32,
        _ => Word::U32,
    }))
}

/// Atomic maxima, then each block reads its cell back with `load_cg` after a barrier: every
/// thread sees its block's maximum.
pub fn load_cg<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let values: Vec<i32> = (0..128).map(|i| (i * 37) % 101 - 50).collect();
    let input: Vec<u32> = values.iter().map(|&v| v as u32).collect();
    let mut init = poisoned(2 + 128);
    init[..2].fill(i32::MIN as u32);
    let got = run(be, Variant::LoadCg, Launch::linear(2, 64), &input, init)?;
    let maxima: Vec<u32> = values
        .chunks(64)
        .map(|b| *b.iter().max().unwrap_or(&i32::MIN) as u32)
        .collect();
    let mut want = maxima.clone();
    want.extend(maxima.iter().flat_map(|&m| [m; 64]));
    Ok(compare("load_cg", &got, &want, |_| Word::I32))
}

/// The values the conversion check rounds: ties, overflow, subnormals of both formats, then
/// pseudo-random values of many magnitudes.
fn conversion_inputs() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        -1.0 / 3.0,
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        2f32.powi(-14),
        2f32.powi(-14) - 2f32.powi(-25),
        2f32.powi(-24),
        2f32.powi(-25),
        1.5 * 2f32.powi(-24),
        2.5 * 2f32.powi(-24),
        2f32.powi(-26),
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2049.0,
        2051.0,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        -3.4e38,
        -6.1e-5,
    ];
    let mut state = 0x2545_f491u32;
    while v.len() < 64 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mantissa = (state >> 8) as f32 - 8_388_608.0;
        v.push(mantissa * 2f32.powi((state % 48) as i32 - 40));
    }
    v
}

/// f32 to f16 and bf16 (round to nearest even) through 16-bit global views, and back to f32.
pub fn convert<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let values = conversion_inputs();
    let input: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    let got = run(
        be,
        Variant::Convert,
        Launch::linear(1, 64),
        &input,
        poisoned(192),
    )?;
    let halves: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
    let bhalves: Vec<u16> = values
        .iter()
        .map(|&v| bf16::from_f32(v).to_bits())
        .collect();
    let pack = |h: &[u16]| -> Vec<u32> {
        h.chunks(2)
            .map(|p| u32::from(p[0]) | u32::from(p[1]) << 16)
            .collect()
    };
    let mut want = pack(&halves);
    want.extend(pack(&bhalves));
    want.extend(halves.iter().map(|&h| f16::from_bits(h).to_f32().to_bits()));
    want.extend(
        bhalves
            .iter()
            .map(|&h| bf16::from_bits(h).to_f32().to_bits()),
    );
    Ok(compare("convert", &got, &want, |i| match i {
        0..=31 => Word::F16x2,
        32..=63 => Word::Bf16x2,
        _ => Word::F32,
    }))
}

/// Two groups of 16-byte cp.async copies, awaited one group at a time.
pub fn cp_async<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let input: Vec<u32> = (0..512).map(|i| i * 3 + 7).collect();
    let got = run(
        be,
        Variant::CpAsync,
        Launch::linear(1, 64),
        &input,
        poisoned(128),
    )?;
    let mut want: Vec<u32> = (0..64).map(|t| input[(t * 5 + 7) % 256]).collect();
    want.extend((0..64).map(|t| input[256 + (t * 5 + 7) % 256]));
    Ok(compare("cp_async", &got, &want, |_| Word::U32))
}

/// The register lane `lane` receives from an 8x8 b16 matrix `m` (`m[row][col]`), per the PTX
/// ISA's ldmatrix layout: row lane / 4, columns 2 (lane % 4) and the next, lower column in the
/// low half; `.trans` reads the transpose.
fn ldmatrix_word(m: &[[u16; 8]; 8], lane: usize, trans: bool) -> u32 {
    let (g, c) = (lane / 4, 2 * (lane % 4));
    let (lo, hi) = if trans {
        (m[c][g], m[c + 1][g])
    } else {
        (m[g][c], m[g][c + 1])
    };
    u32::from(lo) | u32::from(hi) << 16
}

/// Every ldmatrix form on four 8x8 matrices whose rows the lanes supply out of memory order.
pub fn ldmatrix<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let elems: Vec<u16> = (0..256u16).map(|k| 0x1000 + k * 3).collect();
    let input: Vec<u32> = elems
        .chunks(2)
        .map(|p| u32::from(p[0]) | u32::from(p[1]) << 16)
        .collect();
    let got = run(
        be,
        Variant::Ldmatrix,
        Launch::linear(1, 32),
        &input,
        poisoned(32 * 14),
    )?;
    // Matrix i's row r is the memory row lane 8 i + r points at: row (3 r) % 8 of block i.
    let mut m = [[[0u16; 8]; 8]; 4];
    for (i, matrix) in m.iter_mut().enumerate() {
        for (r, row) in matrix.iter_mut().enumerate() {
            let start = 64 * i + 8 * ((r * 3) % 8);
            row.copy_from_slice(&elems[start..start + 8]);
        }
    }
    let mut want = Vec::with_capacity(32 * 14);
    for lane in 0..32 {
        for trans in [false, true] {
            for count in [1, 2, 4] {
                want.extend(m[..count].iter().map(|mi| ldmatrix_word(mi, lane, trans)));
            }
        }
    }
    Ok(compare("ldmatrix", &got, &want, |_| Word::U32))
}

/// D = A B + C by mma.m16n8k16 (A 16x16 row-major, B 16x8, C and D 16x8 f32) on small integers,
/// with fragments built per the PTX layout and again loaded with ldmatrix.
fn mma<B: Backend>(be: &B, bf: bool) -> Result<CheckOutcome> {
    let a = |m: usize, k: usize| ((m * 7 + k * 3 + m * k) % 7) as f32 - 3.0;
    let b = |k: usize, n: usize| ((k * 5 + n * 3 + 1) % 7) as f32 - 3.0;
    let c = |m: usize, n: usize| ((m * 8 + n) % 11) as f32 - 5.0;
    let bits = |v: f32| {
        if bf {
            bf16::from_f32(v).to_bits()
        } else {
            f16::from_f32(v).to_bits()
        }
    };
    let mut b16: Vec<u16> = (0..256).map(|i| bits(a(i / 16, i % 16))).collect();
    b16.extend((0..128).map(|i| bits(b(i / 8, i % 8))));
    let mut input: Vec<u32> = b16
        .chunks(2)
        .map(|p| u32::from(p[0]) | u32::from(p[1]) << 16)
        .collect();
    input.extend((0..128).map(|i| c(i / 8, i % 8).to_bits()));
    let (name, k) = if bf {
        ("mma_bf16", Variant::MmaBf16)
    } else {
        ("mma_f16", Variant::MmaF16)
    };
    let got = run(be, k, Launch::linear(1, 32), &input, poisoned(256))?;
    let d: Vec<u32> = (0..128)
        .map(|i| {
            let (m, n) = (i / 8, i % 8);
            ((0..16).map(|k| a(m, k) * b(k, n)).sum::<f32>() + c(m, n)).to_bits()
        })
        .collect();
    let want = [d.clone(), d].concat();
    Ok(compare(name, &got, &want, |_| Word::F32))
}

/// D = A B + C by mma.m16n8k16 with f16 A and B and f32 C and D, against the exact product.
pub fn mma_f16<B: Backend>(be: &B) -> Result<CheckOutcome> {
    mma(be, false)
}

/// D = A B + C by mma.m16n8k16 with bf16 A and B and f32 C and D, against the exact product.
pub fn mma_bf16<B: Backend>(be: &B) -> Result<CheckOutcome> {
    mma(be, true)
}

/// threadIdx, blockIdx, blockDim and gridDim on a 3-d grid of 3-d blocks, and a shuffle across
/// the rows of a block (warps follow the linear thread index).
pub fn indices<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let shape = Launch {
        grid: [2, 3, 2],
        block: [8, 4, 2],
        dyn_smem: 0,
    };
    let got = run(be, Variant::Indices, shape, &[1000], poisoned(12 * 64 * 4))?;
    let mut want = Vec::with_capacity(12 * 64 * 4);
    for (bz, by, bx) in
        (0..2).flat_map(|z| (0..3).flat_map(move |y| (0..2).map(move |x| (z, y, x))))
    {
        for (tz, ty, tx) in
            (0..2).flat_map(|z| (0..4).flat_map(move |y| (0..8).map(move |x| (z, y, x))))
        {
            let t: u32 = tx + 8 * (ty + 4 * tz);
            want.extend([
                tx | ty << 8 | tz << 16,
                bx | by << 8 | bz << 16,
                8 | 4 << 8 | 2 << 16 | 2 << 20 | 3 << 24 | 2 << 28,
                (t ^ 9) + 1000,
            ]);
        }
    }
    Ok(compare("indices", &got, &want, |_| Word::U32))
}

/// `y = fma(alpha, x, y)` rounded to `T`, launched over a grid smaller than `n` (a grid-stride
/// loop), as the GPU computes it: one rounding of the exact a·x + y to f32, then to `T`.
fn axpy_of<B: Backend, T: Element + Elem + bytemuck::Pod>(
    be: &B,
    word: Word,
) -> Result<CheckOutcome> {
    let n = 1000;
    let alpha = 0.1f32;
    let x: Vec<T> = (0..n).map(|i| T::from_f32(i as f32 / 7.0 - 50.0)).collect();
    let y0: Vec<T> = (0..n)
        .map(|i| T::from_f32(3.0 - (i % 13) as f32 / 3.0))
        .collect();
    let xb = be.upload(&x, "axpy x")?;
    let mut yb = be.upload(&y0, "axpy y")?;
    let mut b = be.binder();
    let params = ConformanceAxpy {
        x: B::read_buf(&mut b, &xb),
        y: B::write(&mut b, &mut yb),
        alpha,
        n: n as u32,
    };
    be.launch(b, (), Launch::linear(3, 128), params)?;
    let got = be.download(&yb, "axpy y")?;
    let want: Vec<T> = x
        .iter()
        .zip(&y0)
        .map(|(&xi, &yi)| T::from_f32(alpha.mul_add(xi.to_f32(), yi.to_f32())))
        .collect();
    let words = |v: &[T]| bytemuck::cast_slice::<T, u32>(v).to_vec();
    Ok(compare("axpy", &words(&got), &words(&want), |_| word))
}

/// axpy on f32, f16 and bf16 (see `axpy_of`); the first that differs is reported.
pub fn axpy<B: Backend>(be: &B) -> Result<CheckOutcome> {
    let outcomes = [
        axpy_of::<B, f32>(be, Word::F32)?,
        axpy_of::<B, f16>(be, Word::F16x2)?,
        axpy_of::<B, bf16>(be, Word::Bf16x2)?,
    ];
    let failed = outcomes.iter().find(|o| !o.passed).cloned();
    Ok(failed.unwrap_or_else(|| outcomes[0].clone()))
}

/// Every conformance check, in order.
pub fn all<B: Backend>(be: &B) -> Vec<Result<CheckOutcome>> {
    let checks: [fn(&B) -> Result<CheckOutcome>; 14] = [
        shuffle,
        vote,
        reduce,
        barrier,
        dynamic_smem,
        atomics,
        load_cg,
        convert,
        cp_async,
        ldmatrix,
        mma_f16,
        mma_bf16,
        indices,
        axpy,
    ];
    checks.iter().map(|check| check(be)).collect()
}
