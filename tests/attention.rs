//! Fused attention on the CPU: outputs and all three gradients against the plain composition in
//! f64 (within twice the error of the same composition in the inputs' precision), padding by
//! length, the dropout mask, determinism, and bad input.

use candle_core::{DType, Device, Tensor, Var};
use realm::device::ComputeDevice;
use realm::ops::attention as attn;
use realm::ops::attention::{
    accuracy, check_padding, composition, dropout_multipliers, forward_backward, random_qkv,
    CheckSpec, Dropout,
};
use realm::Error;

type Lens = Option<Vec<u32>>;

/// Ours and the same-precision composition against the f64 composition: each of out, dq, dk, dv
/// must be within twice the composition's error.
fn check_against_composition(
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
    let acc = accuracy(&Device::Cpu, &spec).unwrap();
    assert!(acc.passed(), "{spec:?}: {acc:?}");
}

#[test]
fn every_head_dim_dtype_and_length_matches_the_f64_composition() {
    let cases = [
        ((1, 1, 1, 32), None::<Vec<u32>>, 1.0),
        ((2, 3, 37, 32), Some(vec![37, 1]), 1.0),
        ((3, 2, 53, 64), Some(vec![0, 53, 29]), 3.0),
        ((2, 2, 97, 128), Some(vec![97, 48]), 1.0),
        ((2, 4, 64, 64), None, 1.0),
        // One head, many key blocks: the backward splits keys into groups with their own dq.
        ((1, 1, 200, 64), Some(vec![199]), 2.0),
        ((1, 2, 130, 32), Some(vec![130]), 1.0),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (i, (shape, lens, sharpness)) in cases.iter().enumerate() {
            check_against_composition(*shape, lens.clone(), *sharpness, None, dtype, i as u64);
        }
    }
}

#[test]
fn dropout_matches_the_composition_with_the_same_mask() {
    for (i, dtype) in [DType::F32, DType::F16, DType::BF16]
        .into_iter()
        .enumerate()
    {
        let d = Dropout {
            p: 0.1,
            seed: 42 + i as u64,
            offset: 7,
        };
        check_against_composition((2, 3, 45, 64), Some(vec![45, 22]), 1.0, Some(d), dtype, 9);
        check_against_composition(
            (1, 2, 70, 32),
            None,
            2.0,
            Some(Dropout { p: 0.5, ..d }),
            dtype,
            10,
        );
    }
}

/// With q = 0 every probability is 1/len, and with v = identity the output is the mask itself:
/// out[i, d] = m[i, d] / len.
#[test]
fn the_forward_applies_exactly_the_documented_mask() {
    let (b, h, l) = (2, 2, 32);
    let d = Dropout {
        p: 0.3,
        seed: 5,
        offset: 1 << 40,
    };
    let q = Tensor::zeros((b, h, l, l), DType::F32, &Device::Cpu).unwrap();
    let eye = Tensor::eye(l, DType::F32, &Device::Cpu).unwrap();
    let v = eye
        .broadcast_as((b, h, l, l))
        .unwrap()
        .contiguous()
        .unwrap();
    let out = attn::attention(&q, &q, &v, None, 1.0, Some(d)).unwrap();
    let got: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    let want = dropout_multipliers(b, h, l, d).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g * l as f32 - w).abs() < 1e-5, "{g} · {l} vs {w}");
    }
    assert!(want.contains(&0.0) && want.iter().any(|&x| x > 1.0));
}

#[test]
fn padding_is_never_read_and_its_rows_are_zero() {
    for dtype in [DType::F32, DType::BF16] {
        check_padding((3, 2, 40, 32), &[25, 0, 40], dtype, &Device::Cpu).unwrap();
    }
}

#[test]
fn the_backward_is_deterministic() {
    // One head with many key blocks takes the grouped backward (per-group dq summed in order).
    for shape in [(1, 1, 300, 64), (2, 4, 100, 32)] {
        let inputs = random_qkv(8, shape, DType::F32, &Device::Cpu).unwrap();
        let d = Some(Dropout {
            p: 0.2,
            seed: 1,
            offset: 2,
        });
        let run = || forward_backward(|q, k, v| attn::attention(q, k, v, None, 0.1, d), &inputs);
        assert_eq!(run().unwrap(), run().unwrap());
    }
}

#[test]
fn every_registered_cpu_check_passes() {
    let rows = realm::selftest::run(&ComputeDevice::cpu(), Some("attention/"));
    assert!(
        rows.len() >= 15,
        "expected the registered cases, got {}",
        rows.len()
    );
    for row in rows {
        match &row.outcome {
            Ok(o) => assert!(
                o.passed(),
                "{}: error {:e} > {:e}",
                row.name,
                o.max_rel_err,
                o.tolerance
            ),
            Err(e) => panic!("{}: {e}", row.name),
        }
    }
}

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

    let with = |lens: &Tensor| attn::attention(&q, &q, &q, Some(lens), 1.0, None);
    assert_eq!(
        bad_arg(with(&Tensor::new(&[8u32, 9], cpu).unwrap())),
        "key_lens"
    );
    assert_eq!(
        bad_arg(with(&Tensor::new(&[8u32], cpu).unwrap())),
        "key_lens"
    );
    assert_eq!(
        bad_arg(with(&Tensor::new(&[8i64, 8], cpu).unwrap())),
        "key_lens"
    );

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
