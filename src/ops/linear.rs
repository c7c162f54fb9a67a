//! Dense layers `y = x wᵀ + b` as one differentiable op each, optionally writing or reading the
//! attention's head layout.
//!
//! Why an op and not the composition: candle's autograd accumulates the gradient of every node
//! into a freshly zeroed tensor (`zeros_like`, then `add`), so reshape → matmul → transpose →
//! broadcast_add → reshape, and the split of a fused q/k/v output into heads (reshape, permute,
//! copy, three narrows whose gradients are zero-padded and concatenated), cost a dozen passes
//! over the activations per layer in the backward. One op leaves one gradient per argument.
//!
//! Contract (every device; f32, f16 or bf16, the three arguments of one dtype):
//! - [`linear`]`(x, w, b, Heads::Keep)`: x `[.., in]`, w `[out, in]` (PyTorch's order), b
//!   `[out]` → `[.., out]`.
//! - `Heads::Split(n)`: x `[batch, l, in]` → `[batch, n, l, out / n]`, the q/k/v layout of
//!   [`mod@crate::ops::attention`].
//! - `Heads::Merge`: x `[batch, n, l, dh]` (the attention's output), read as
//!   `[batch, l, n · dh]`, → `[batch, l, out]`.
//!
//! The forward is the GEMM that candle's `matmul` runs (gemm on the CPU, cuBLAS on CUDA) and the
//! bias added in the output's dtype, so it equals the composition bit for bit. Gradients, in the
//! arguments' dtype: dx = dy w, dw = dyᵀ x, db = the sum of dy's rows (as 1ᵀ dy, a GEMM).

use crate::error::{Error, Result};
use crate::ops::elem::check_float;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::op::Add;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

const OP: &str = "linear";

/// How the op's rows map to the attention's heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    /// Rows in, rows out.
    Keep,
    /// The output split into this many heads: `[batch, l, in]` → `[batch, heads, l, dh]`.
    Split(usize),
    /// The input's heads merged: `[batch, heads, l, dh]` → `[batch, l, out]`.
    Merge,
}

/// `x wᵀ + b` (see the module's contract), differentiable in all three.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, heads: Heads) -> Result<Tensor> {
    check_float(OP, "x", x.dtype())?;
    for (arg, t) in [("w", w), ("b", b)] {
        if t.dtype() != x.dtype() {
            return Err(Error::bad_input(
                OP,
                arg,
                format!("dtype {:?} differs from x's {:?}", t.dtype(), x.dtype()),
            ));
        }
    }
    let (out, inputs) = w
        .dims2()
        .map_err(|_| Error::bad_input(OP, "w", format!("shape {:?}; need [out, in]", w.dims())))?;
    if b.dims() != [out] {
        return Err(Error::bad_input(
            OP,
            "b",
            format!("shape {:?}; need [{out}] (w's rows)", b.dims()),
        ));
    }
    let shape = Rows::of(x.dims(), heads)?;
    if shape.inputs != inputs {
        return Err(Error::bad_input(
            OP,
            "x",
            format!(
                "shape {:?} gives rows of {} values, but w {:?} takes {inputs}",
                x.dims(),
                shape.inputs,
                w.dims()
            ),
        ));
    }
    if let Heads::Split(n) = heads {
        if n == 0 || out % n != 0 {
            return Err(Error::bad_input(
                OP,
                "heads",
                format!("{out} outputs cannot be split into {n} heads"),
            ));
        }
    }
    let op = Linear {
        heads,
        shape,
        out,
        x_dims: x.dims().to_vec(),
    };
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?)
}

/// The rows `x` stands for.
#[derive(Clone, Copy, Debug)]
struct Rows {
    /// Leading dimensions: `[batch, l]` for the head layouts, all but the last otherwise
    /// (flattened, `l` = 1).
    batch: usize,
    l: usize,
    /// Heads of a `Merge` input (1 otherwise).
    heads: usize,
    inputs: usize,
}

impl Rows {
    fn of(dims: &[usize], heads: Heads) -> Result<Self> {
        let wrong = |need: &str| {
            Error::bad_input(
                OP,
                "x",
                format!("shape {dims:?}; need {need} for heads {heads:?}"),
            )
        };
        match (heads, dims) {
            (Heads::Keep, [lead @ .., inputs]) => Ok(Rows {
                batch: lead.iter().product(),
                l: 1,
                heads: 1,
                inputs: *inputs,
            }),
            (Heads::Split(_), &[batch, l, inputs]) => Ok(Rows {
                batch,
                l,
                heads: 1,
                inputs,
            }),
            (Heads::Merge, &[batch, n, l, dh]) => Ok(Rows {
                batch,
                l,
                heads: n,
                inputs: n * dh,
            }),
            (Heads::Keep, []) => Err(wrong("[.., in]")),
            (Heads::Split(_), _) => Err(wrong("[batch, l, in]")),
            (Heads::Merge, _) => Err(wrong("[batch, heads, l, dh]")),
        }
    }

    fn rows(&self) -> usize {
        self.batch * self.l
    }
}

struct Linear {
    heads: Heads,
    shape: Rows,
    out: usize,
    x_dims: Vec<usize>,
}

impl Linear {
    /// The forward on any backend: the rows (`Merge`: the heads interleaved back into rows
    /// first), one GEMM against wᵀ, the bias, and (`Split`) the heads moved to the front.
    fn forward<S: BackendStorage<Device = D>, D: BackendDevice<Storage = S>>(
        &self,
        x: &S,
        lx: &Layout,
        w: &S,
        lw: &Layout,
        b: &S,
        lb: &Layout,
    ) -> candle_core::Result<(S, Shape)> {
        let Rows {
            batch,
            l,
            heads,
            inputs,
        } = self.shape;
        let (rows, out) = (self.shape.rows(), self.out);
        let dev = x.device();
        let merged;
        let (x, lx) = match self.heads {
            Heads::Merge => {
                let dh = inputs / heads;
                let view = Layout::contiguous_with_offset((batch, heads, l, dh), lx.start_offset())
                    .permute(&[0, 2, 1, 3])?;
                // SAFETY: copy_strided_src writes every element of the fresh buffer before it
                // is read.
                let mut dst = unsafe { dev.alloc_uninit(&Shape::from((rows, inputs)), x.dtype())? };
                x.copy_strided_src(&mut dst, 0, &view)?;
                merged = dst;
                (&merged, Layout::contiguous((rows, inputs)))
            }
            _ => (
                x,
                Layout::contiguous_with_offset((rows, inputs), lx.start_offset()),
            ),
        };
        let wt =
            Layout::contiguous_with_offset((out, inputs), lw.start_offset()).transpose(0, 1)?;
        let y = x.matmul(w, (1, rows, out, inputs), &lx, &wt)?;
        let ly = Layout::contiguous((rows, out));
        let lb =
            Layout::contiguous_with_offset(out, lb.start_offset()).broadcast_as((rows, out))?;
        let y = y.binary_impl::<Add>(b, &ly, &lb)?;
        match self.heads {
            Heads::Keep => {
                let mut dims = self.x_dims.clone();
                if let Some(last) = dims.last_mut() {
                    *last = out;
                }
                Ok((y, Shape::from(dims)))
            }
            Heads::Merge => Ok((y, Shape::from((batch, l, out)))),
            Heads::Split(n) => {
                let dh = out / n;
                let view = Layout::contiguous((batch, l, n, dh)).permute(&[0, 2, 1, 3])?;
                let shape = Shape::from((batch, n, l, dh));
                // SAFETY: as above.
                let mut dst = unsafe { dev.alloc_uninit(&shape, y.dtype())? };
                y.copy_strided_src(&mut dst, 0, &view)?;
                Ok((dst, shape))
            }
        }
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(x, lx, w, lw, b, lb)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        w: &candle_core::CudaStorage,
        lw: &Layout,
        b: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.forward(x, lx, w, lw, b, lb)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Rows {
            batch, l, heads, ..
        } = self.shape;
        let (rows, out, inputs) = (self.shape.rows(), self.out, self.shape.inputs);
        let (x, w) = (x.detach(), w.detach());
        let dy = match self.heads {
            Heads::Split(_) => dy.transpose(1, 2)?.contiguous()?,
            _ => dy.contiguous()?,
        }
        .reshape((rows, out))?;
        let x_rows = match self.heads {
            Heads::Merge => x.transpose(1, 2)?.contiguous()?,
            _ => x,
        }
        .reshape((rows, inputs))?;
        let dx = dy.matmul(&w)?;
        let dx = match self.heads {
            Heads::Merge => dx
                .reshape((batch, l, heads, inputs / heads))?
                .transpose(1, 2)?
                .contiguous()?,
            _ => dx.reshape(self.x_dims.as_slice())?,
        };
        let dw = dy.t()?.matmul(&x_rows)?;
        // The rows summed by a GEMM: candle's sum over the first dimension runs on one thread.
        let ones = Tensor::ones((1, rows), dy.dtype(), dy.device())?;
        let db = ones.matmul(&dy)?.reshape(out)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use candle_core::{DType, Device, Var};

    fn random(seed: u64, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        let v: Vec<f64> = SplitMix64::new(seed).normal_vec(n, 1.0);
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// What the op replaces: reshape, matmul, bias, reshape (and the head moves).
    fn composition(x: &Tensor, w: &Tensor, b: &Tensor, heads: Heads) -> Tensor {
        let (out, inputs) = w.dims2().unwrap();
        let x = match heads {
            Heads::Merge => {
                let (batch, _, l, _) = x.dims4().unwrap();
                let x = x.transpose(1, 2).unwrap().contiguous().unwrap();
                x.reshape((batch, l, inputs)).unwrap()
            }
            _ => x.clone(),
        };
        let lead = &x.dims()[..x.rank() - 1];
        let rows: usize = lead.iter().product();
        let y = x
            .reshape((rows, inputs))
            .unwrap()
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(b)
            .unwrap();
        match heads {
            Heads::Keep => y.reshape([lead, &[out]].concat()).unwrap(),
            Heads::Merge => y.reshape((lead[0], lead[1], out)).unwrap(),
            Heads::Split(n) => y
                .reshape((lead[0], lead[1], n, out / n))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap(),
        }
    }

    /// The output and the gradients of `Σ y · r` for x, w and b, as f64.
    fn run(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        args: &[Tensor; 3],
        r: &Tensor,
        dtype: DType,
    ) -> Vec<Vec<f64>> {
        let vars = args
            .each_ref()
            .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap());
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let loss = (y.to_dtype(DType::F64).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let mut out = vec![flat(&y)];
        out.extend(vars.iter().map(|v| flat(grads.get(v.as_tensor()).unwrap())));
        out
    }

    fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0f64, |m, (g, w)| m.max((g - w).abs()))
            / scale
    }

    /// (x dims, heads, w [out, in]) for each layout.
    fn cases() -> Vec<(Vec<usize>, Heads, usize, usize)> {
        vec![
            (vec![3, 5, 24], Heads::Keep, 40, 24),
            (vec![7, 24], Heads::Keep, 16, 24),
            (vec![2, 5, 24], Heads::Split(4), 32, 24),
            (vec![2, 4, 5, 6], Heads::Merge, 16, 24),
        ]
    }

    #[test]
    fn equals_the_composition_and_its_gradients_match_f64() {
        for (seed, (dims, heads, out, inputs)) in cases().into_iter().enumerate() {
            let seed = 10 * seed as u64;
            let args = [
                random(seed, &dims),
                random(seed + 1, &[out, inputs]),
                random(seed + 2, &[out]),
            ];
            let y_dims = composition(&args[0], &args[1], &args[2], heads)
                .dims()
                .to_vec();
            let r = random(seed + 3, &y_dims);
            let op = |x: &Tensor, w: &Tensor, b: &Tensor| linear(x, w, b, heads).unwrap();
            let comp = |x: &Tensor, w: &Tensor, b: &Tensor| composition(x, w, b, heads);
            let want = run(comp, &args, &r, DType::F64);
            for (dtype, bound) in [(DType::F32, 1e-6), (DType::F16, 2e-3), (DType::BF16, 2e-2)] {
                let got = run(op, &args, &r, dtype);
                let plain = run(comp, &args, &r, dtype);
                // The forward is the composition's, bit for bit.
                assert_eq!(got[0], plain[0], "{heads:?} {dtype:?}: forward");
                for (i, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
                    let err = max_rel_err(&got[i], &want[i]);
                    let plain_err = max_rel_err(&plain[i], &want[i]);
                    assert!(
                        err <= bound && err <= 2.0 * plain_err + bound / 10.0,
                        "{heads:?} {dtype:?} {name}: error {err:e}, the composition's {plain_err:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_arguments_name_what_is_wrong() {
        let x = random(1, &[2, 5, 24]).to_dtype(DType::F32).unwrap();
        let w = random(2, &[32, 24]).to_dtype(DType::F32).unwrap();
        let b = random(3, &[32]).to_dtype(DType::F32).unwrap();
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        let cases = [
            (
                err(linear(
                    &x,
                    &w.to_dtype(DType::F16).unwrap(),
                    &b,
                    Heads::Keep,
                )),
                "w",
            ),
            (
                err(linear(&x.narrow(2, 0, 20).unwrap(), &w, &b, Heads::Keep)),
                "rows of 20",
            ),
            (
                err(linear(&x, &w, &b.narrow(0, 0, 5).unwrap(), Heads::Keep)),
                "[32]",
            ),
            (
                err(linear(&x, &w.flatten_all().unwrap(), &b, Heads::Keep)),
                "[out, in]",
            ),
            (err(linear(&x, &w, &b, Heads::Split(5))), "5 heads"),
            (
                err(linear(&x, &w, &b, Heads::Merge)),
                "[batch, heads, l, dh]",
            ),
            (
                err(linear(
                    &x.to_dtype(DType::U32).unwrap(),
                    &w,
                    &b,
                    Heads::Keep,
                )),
                "U32",
            ),
        ];
        for (msg, want) in cases {
            assert!(msg.contains("linear") && msg.contains(want), "{msg}");
        }
    }
}
