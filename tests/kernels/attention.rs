//! Fused attention on every execution mode (native CPU, the CUDA kernels on the emulator and on
//! a GPU): outputs and all three gradients against the plain composition in f64 (within twice the
//! error of the same composition in the inputs' precision) for every head dimension, odd lengths
//! and lengths 0/1/l, padding by length, the dropout mask, determinism; the kernels' refusal of
//! f32; and bad input.

use candle_core::{DType, Device, Tensor, Var};
use realm::device::ComputeDevice;
use realm::ops::attention as attn;
use realm::ops::attention::{
    accuracy, check_padding, composition, dropout_multipliers, forward_backward, random_qkv,
    CheckSpec, Dropout,
};
use realm::Error;

type Lens = Option<Vec<u32>>;

/// The dtypes a mode computes attention in: the kernels take f16 and bf16, the CPU also f32.
fn dtypes(dev: &ComputeDevice) -> &'static [DType] {
    if dev.runs_kernels() {
        &[DType::F16, DType::BF16]
    } else {
        &[DType::F32, DType::F16, DType::BF16]
    }
}

/// Ours and the same-precision composition against the f64 composition: each of out, dq, dk, dv
/// must be within twice the composition's error.
fn check_against_composition(
    dev: &ComputeDevice,
    shape: (usize, usize, usize, usize),
    lens: Lens,
    sharpness: f64,
    dropout: Option<Dropout>,
    dtype: DType,
    seed: u64,
) {
    let spec = CheckSpec {
        shape,
        lens,
        sharpness,
        dropout,
        dtype,
        seed,
    };
    let acc = accuracy(&dev.device, &spec).unwrap();
    assert!(acc.passed(), "{dev} {spec:?}: {acc:?}");
}

test_exec!(fn every_head_dim_dtype_and_length_matches_the_f64_composition(dev) {
    let cases = [
        ((1, 1, 1, 32), None::<Vec<u32>>, 1.0),
        ((2, 3, 37, 32), Some(vec![37, 1]), 1.0),
        ((2, 2, 37, 32), Some(vec![37, 5]), 1.5),
        ((3, 2, 53, 64), Some(vec![0, 53, 29]), 3.0),
        ((2, 1, 70, 64), Some(vec![0, 70]), 1.5),
        ((2, 2, 97, 128), Some(vec![97, 48]), 1.0),
        ((2, 1, 45, 128), Some(vec![45, 1]), 1.5),
        ((2, 4, 64, 64), None, 1.0),
        // One head, many key blocks: the backward splits keys into groups with their own dq.
        ((1, 1, 200, 64), Some(vec![199]), 2.0),
        ((1, 2, 130, 32), Some(vec![130]), 1.0),
        // Several key and query tiles per head: the kernels' double buffers are refilled.
        ((1, 2, 150, 64), Some(vec![150]), 1.5),
    ];
    for &dtype in dtypes(dev) {
        for (i, (shape, lens, sharpness)) in cases.iter().enumerate() {
            check_against_composition(dev, *shape, lens.clone(), *sharpness, None, dtype, i as u64);
        }
    }
});

// What `realm bench attention|bert` and training compute in unless told: it must be a dtype the
// device's attention takes (f32 was the benches' default and failed at once on a GPU).
test_exec!(fn the_device_default_dtype_runs(dev) {
    let dtype = dev.default_dtype();
    assert!(dtypes(dev).contains(&dtype), "{dtype:?} on {dev}");
    assert!(dev.description().contains(&format!("default dtype {dtype:?}").to_lowercase()));
    let qkv = random_qkv(3, (1, 2, 16, 32), dtype, &dev.device).unwrap();
    forward_backward(|q, k, v| attn::attention(q, k, v, None, 0.2, None), &qkv).unwrap();
});

test_exec!(fn dropout_matches_the_composition_with_the_same_mask(dev) {
    for (i, &dtype) in dtypes(dev).iter().enumerate() {
        let d = Dropout {
            p: 0.1,
            seed: 42 + i as u64,
            offset: 7,
        };
        check_against_composition(dev, (2, 3, 45, 64), Some(vec![45, 22]), 1.0, Some(d), dtype, 9);
        check_against_composition(
            dev,
            (1, 2, 70, 32),
            None,
            2.0,
            Some(Dropout { p: 0.5, ..d }),
            dtype,
            10,
        );
        let d = Dropout {
            p: 0.2,
            seed: 9,
            offset: 3,
        };
        check_against_composition(dev, (2, 1, 40, 64), Some(vec![40, 23]), 1.5, Some(d), dtype, 70);
    }
});

// With q = 0 every probability is 1/len, and with v = identity the output is the mask itself:
// out[i, d] = m[i, d] / len, the mask the host draws (so CPU, emulator and GPU draw the same).
test_exec!(fn the_forward_applies_exactly_the_documented_mask(dev) {
    let (b, h, l) = (2, 2, 32);
    let d = Dropout {
        p: 0.3,
        seed: 5,
        offset: 1 << 40,
    };
    // The kernels compute in f16: the multipliers 1/(1-p) and the 1/l are rounded there.
    let (dtype, tol) = if dev.runs_kernels() {
        (DType::F16, 1e-2)
    } else {
        (DType::F32, 1e-5)
    };
    let q = Tensor::zeros((b, h, l, l), dtype, &dev.device).unwrap();
    let eye = Tensor::eye(l, dtype, &dev.device).unwrap();
    let v = eye
        .broadcast_as((b, h, l, l))
        .unwrap()
        .contiguous()
        .unwrap();
    let out = attn::attention(&q, &q, &v, None, 1.0, Some(d)).unwrap();
    let got: Vec<f32> = out
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = dropout_multipliers(b, h, l, d).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g * l as f32 - w).abs() < tol, "{g} · {l} vs {w}");
    }
    assert!(want.contains(&0.0) && want.iter().any(|&x| x > 1.0));
});

test_exec!(fn padding_is_never_read_and_its_rows_are_zero(dev) {
    for &dtype in dtypes(dev).iter().filter(|&&d| d != DType::F16 || dev.runs_kernels()) {
        check_padding((3, 2, 40, 32), &[25, 0, 40], dtype, &dev.device).unwrap();
        check_padding((3, 1, 80, 64), &[70, 0, 80], dtype, &dev.device).unwrap();
    }
});

test_exec!(fn the_backward_is_deterministic(dev) {
    // One head with many key blocks takes the grouped backward (per-group dq summed in order).
    let dtype = dtypes(dev)[0];
    for shape in [(1, 1, 300, 64), (2, 4, 100, 32)] {
        let inputs = random_qkv(8, shape, dtype, &dev.device).unwrap();
        let d = Some(Dropout {
            p: 0.2,
            seed: 1,
            offset: 2,
        });
        let run = || forward_backward(|q, k, v| attn::attention(q, k, v, None, 0.1, d), &inputs);
        assert_eq!(run().unwrap(), run().unwrap());
    }
});

test_exec!(fn every_registered_check_passes(dev) {
    let rows = realm::selftest::run(dev, Some("attention/"));
    crate::common::assert_selftest_passed(rows, 15);
});

test_exec!(kernels fn the_kernels_refuse_f32(dev) {
    let q = Tensor::zeros((1, 1, 8, 32), DType::F32, &dev.device).unwrap();
    match attn::attention(&q, &q, &q, None, 1.0, None) {
        Err(Error::BadInput { arg: "q", .. }) => {}
        other => panic!("expected a BadInput error for q, got {other:?}"),
    }
});

/// The argument an error names, or a panic when it is not `BadInput`.
fn bad_arg(r: realm::Result<Tensor>) -> &'static str {
    match r {
        Err(Error::BadInput { arg, .. }) => arg,
        Err(e) => panic!("expected BadInput, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let cpu = &Device::Cpu;
    let t = |dims: &[usize], dtype| Tensor::zeros(dims, dtype, cpu).unwrap();
    let q = t(&[2, 2, 8, 32], DType::F32);
    let f = |q: &Tensor, k: &Tensor, v: &Tensor| attn::attention(q, k, v, None, 1.0, None);
    assert_eq!(bad_arg(f(&t(&[2, 8, 32], DType::F32), &q, &q)), "q");
    assert_eq!(bad_arg(f(&q, &t(&[2, 2, 9, 32], DType::F32), &q)), "k");
    assert_eq!(bad_arg(f(&q, &q, &t(&[2, 2, 8, 32], DType::F16))), "v");
    let dh48 = t(&[2, 2, 8, 48], DType::F32);
    assert_eq!(bad_arg(f(&dh48, &dh48, &dh48)), "q");
    let f64s = t(&[2, 2, 8, 32], DType::F64);
    assert_eq!(bad_arg(f(&f64s, &f64s, &f64s)), "q");
    let empty = t(&[0, 2, 8, 32], DType::F32);
    assert_eq!(bad_arg(f(&empty, &empty, &empty)), "q");
    let strided = t(&[2, 8, 2, 32], DType::F32).transpose(1, 2).unwrap();
    assert_eq!(bad_arg(f(&strided, &q, &q)), "q");
    assert_eq!(bad_arg(f(&q, &q, &strided)), "v");

    let with = |lens: &[u32]| {
        let lens = attn::KeyLens::new(lens, cpu).unwrap();
        attn::attention(&q, &q, &q, Some(&lens), 1.0, None)
    };
    assert_eq!(bad_arg(with(&[8, 9])), "key_lens");
    assert_eq!(bad_arg(with(&[8])), "key_lens");

    assert_eq!(
        bad_arg(attn::attention(&q, &q, &q, None, f64::NAN, None)),
        "scale"
    );
    for p in [1.0, -0.5, f32::NAN] {
        let d = Dropout {
            p,
            seed: 0,
            offset: 0,
        };
        assert_eq!(
            bad_arg(attn::attention(&q, &q, &q, None, 1.0, Some(d))),
            "dropout"
        );
    }
}

#[test]
fn gradients_flow_through_a_surrounding_graph() {
    // The op composes with candle autograd: a loss on a function of the output, inputs that are
    // themselves computed from a variable.
    let x = Var::from_tensor(&random_qkv(4, (1, 2, 16, 32), DType::F32, &Device::Cpu).unwrap()[0])
        .unwrap();
    let q = (x.as_tensor() * 2.0).unwrap();
    let out = attn::attention(&q, x.as_tensor(), x.as_tensor(), None, 0.3, None).unwrap();
    let loss = out.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let ours: Vec<f32> = grads
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();

    let x64 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
    let q64 = (x64.as_tensor() * 2.0).unwrap();
    let out64 = composition(&q64, x64.as_tensor(), x64.as_tensor(), None, 0.3, None).unwrap();
    let grads64 = out64.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = grads64
        .get(&x64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (o, w) in ours.iter().zip(&want) {
        assert!(
            (f64::from(*o) - w).abs() < 1e-4 * w.abs().max(1.0),
            "{o} vs {w}"
        );
    }
}

// Views that start off a 16-byte boundary (narrowed from a larger tensor): the kernels' 16-byte
// cp.async reads need aligned addresses, so the op copies such a view (the emulator faults on a
// misaligned one); the result and the gradients equal those of the same values unshifted.
test_exec!(fn offset_views_give_the_same_result_as_their_values(dev) {
    let shape = (1, 2, 24, 32);
    let n = 2 * 24 * 32;
    for &dtype in dtypes(dev) {
        let [q, k, v, _] = random_qkv(5, shape, dtype, &dev.device).unwrap();
        let run = |offset: usize| {
            let vars: Vec<Var> = [&q, &k, &v]
                .iter()
                .map(|t| {
                    let pad = Tensor::zeros(offset, dtype, &dev.device).unwrap();
                    let flat = Tensor::cat(&[&pad, &t.flatten_all().unwrap()], 0).unwrap();
                    Var::from_tensor(&flat).unwrap()
                })
                .collect();
            let views: Vec<Tensor> = vars
                .iter()
                .map(|x| x.as_tensor().narrow(0, offset, n).unwrap().reshape(shape).unwrap())
                .collect();
            assert_eq!(views[0].layout().start_offset(), offset);
            let out = attn::attention(&views[0], &views[1], &views[2], None, 0.3, None).unwrap();
            let grads = out.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![out.to_dtype(DType::F32).unwrap().flatten_all().unwrap()];
            for x in &vars {
                let g = grads.get(x.as_tensor()).unwrap().narrow(0, offset, n).unwrap();
                all.push(g.to_dtype(DType::F32).unwrap());
            }
            Tensor::cat(&all, 0).unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(3), run(0), "{dev} {dtype:?}");
    }
});
