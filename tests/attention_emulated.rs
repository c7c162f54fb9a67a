//! attention's CUDA kernels run by the emulator: forward and all three gradients against the f64
//! composition (within twice the error of the same composition in f16/bf16), every head
//! dimension, odd lengths and lengths 0/1/l, the dropout mask identical to the CPU's, and refusal
//! of f32.
#![cfg(feature = "emulate")]

use candle_core::{DType, Device, Tensor};
use realm::device::{ComputeDevice, DeviceSpec};
use realm::ops::attention::{accuracy, check_padding, dropout_multipliers, CheckSpec, Dropout};
use realm::ops::{attention, use_emulator};
use realm::Error;

fn check(shape: (usize, usize, usize, usize), lens: Option<Vec<u32>>, dropout: Option<Dropout>) {
    for (i, dtype) in [DType::F16, DType::BF16].into_iter().enumerate() {
        let spec = CheckSpec {
            shape,
            lens: lens.clone(),
            sharpness: 1.5,
            dropout,
            dtype,
            seed: 70 + i as u64,
        };
        let acc = {
            let _emu = use_emulator().unwrap();
            accuracy(&Device::Cpu, &spec).unwrap()
        };
        assert!(acc.passed(), "{spec:?}: {acc:?}");
    }
}

#[test]
fn kernels_match_the_f64_composition_for_every_head_dim() {
    check((1, 1, 1, 32), None, None);
    check((2, 2, 37, 32), Some(vec![37, 5]), None);
    check((2, 1, 70, 64), Some(vec![0, 70]), None);
    check((2, 1, 45, 128), Some(vec![45, 1]), None);
    // Several key and query tiles per head: the double buffers are refilled.
    check((1, 2, 150, 64), Some(vec![150]), None);
}

#[test]
fn kernels_with_dropout_match_the_composition_with_the_host_mask() {
    let d = Dropout {
        p: 0.2,
        seed: 9,
        offset: 3,
    };
    check((2, 1, 40, 64), Some(vec![40, 23]), Some(d));
}

#[test]
fn padding_is_never_read_and_its_rows_are_zero() {
    let _emu = use_emulator().unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_padding((3, 1, 80, 64), &[70, 0, 80], dtype, &Device::Cpu).unwrap();
    }
}

/// With q = 0 every probability is 1/l, and with v = identity the output is the mask: the
/// emulated kernel and the CPU draw the same one.
#[test]
fn the_kernel_draws_the_cpu_mask() {
    let (b, h, l) = (1, 2, 32);
    let d = Dropout {
        p: 0.3,
        seed: 77,
        offset: 5,
    };
    let q = Tensor::zeros((b, h, l, l), DType::F16, &Device::Cpu).unwrap();
    let eye = Tensor::eye(l, DType::F16, &Device::Cpu).unwrap();
    let v = eye
        .broadcast_as((b, h, l, l))
        .unwrap()
        .contiguous()
        .unwrap();
    let out = {
        let _emu = use_emulator().unwrap();
        attention(&q, &q, &v, None, 1.0, Some(d)).unwrap()
    };
    let got: Vec<f32> = out
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = dropout_multipliers(b, h, l, d).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g * l as f32 - w).abs() < 1e-2, "{g} · {l} vs {w}");
    }
}

#[test]
fn the_kernels_refuse_f32() {
    let q = Tensor::zeros((1, 1, 8, 32), DType::F32, &Device::Cpu).unwrap();
    let _emu = use_emulator().unwrap();
    match attention(&q, &q, &q, None, 1.0, None) {
        Err(Error::BadInput { arg: "q", .. }) => {}
        other => panic!("expected a BadInput error for q, got {other:?}"),
    }
}

#[test]
fn every_registered_emulator_check_passes() {
    let dev = ComputeDevice::resolve(DeviceSpec::Emulate).unwrap();
    let rows = realm::selftest::run(&dev, Some("attention/"));
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
