//! `realm selftest`: every registered kernel check, run on one device against a float64
//! reference on fresh random inputs, one table row per check.

pub use crate::check::{host_f64, max_rel_err, tolerance, Case, CheckFn, Outcome, Row};
use crate::device::ComputeDevice;

/// Every registered check. Ops add theirs here.
pub fn cases() -> Vec<Case> {
    let mut cases = crate::ops::doc_softmax::selftest_cases();
    cases.extend(crate::ops::mips::selftest_cases());
    cases.extend(crate::ops::attention::selftest_cases());
    cases.extend(crate::ops::nn::selftest_cases());
    cases.extend(crate::ops::dropout::selftest_cases());
    cases.extend(crate::ops::adamw::selftest_cases());
    cases.extend(conformance_cases());
    #[cfg(feature = "nccl")]
    cases.extend(crate::dist::nccl::selftest_cases());
    cases
}

/// The portability layer's conformance kernels, on the emulator or a GPU (they have no native
/// CPU form). One case runs the whole suite; a failure names the kernels that disagreed.
fn conformance_cases() -> Vec<Case> {
    vec![Case {
        op: "conformance",
        name: "portability layer (exact)".to_string(),
        run: Box::new(|dev: &ComputeDevice| {
            let outcomes = match &dev.device {
                #[cfg(feature = "cuda")]
                candle_core::Device::Cuda(d) => {
                    crate::conformance::all(&crate::kernels::Cuda::new(d, dev.exec.clone()))
                }
                _ if dev.is_emulated() => {
                    crate::conformance::all(&crate::kernels::Emulator::new(dev.exec.clone()))
                }
                _ => {
                    return Err(crate::Error::Device(format!(
                        "the conformance kernels run on the emulator or a GPU, not on {dev}"
                    )))
                }
            };
            let mut failed = Vec::new();
            for outcome in outcomes {
                let outcome = outcome?;
                if !outcome.passed {
                    failed.push(format!("{}: {}", outcome.name, outcome.detail));
                }
            }
            if !failed.is_empty() {
                return Err(crate::Error::Emulator(failed.join("; ")));
            }
            Ok(Outcome {
                max_rel_err: 0.0,
                tolerance: 0.0,
            })
        }),
    }]
}

/// Runs the cases whose `op/name` contains `filter` (all when `None`), in order, with kernel
/// outputs poisoned before each launch (so that an element a kernel leaves unwritten fails its
/// check; free on the emulator, a memset per output on a GPU). Only this call's device is
/// affected: the poisoning travels in its execution mode.
pub fn run(dev: &ComputeDevice, filter: Option<&str>) -> Vec<Row> {
    let dev = ComputeDevice {
        exec: dev.exec.with_poison_outputs(true),
        ..dev.clone()
    };
    cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| format!("{}/{}", c.op, c.name).contains(f)))
        .filter(|c| c.op != "conformance" || dev.runs_kernels())
        .filter(|c| c.op != "nccl" || dev.is_cuda())
        .map(|c| Row {
            op: c.op,
            outcome: (c.run)(&dev),
            name: c.name,
        })
        .collect()
}
