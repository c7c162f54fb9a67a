//! What several integration tests share: finding optional data, or saying why a test skips;
//! [`test_exec!`], one test body run on every execution mode; and training outcomes over seeds
//! ([`outcome`]).
#![allow(dead_code)] // each test binary uses a part

pub mod outcome;

use realm::device::{ComputeDevice, DeviceSpec};
use std::path::{Path, PathBuf};

/// `dir` when it holds every one of `needed` (relative paths); else None after printing which is
/// missing, so the test is skipped with a reason rather than passing silently. `hint` says how
/// to get it.
pub fn folder_with(dir: PathBuf, needed: &[&str], hint: &str) -> Option<PathBuf> {
    if let Some(missing) = needed.iter().find(|p| !dir.join(p).exists()) {
        eprintln!("skipping: {} not found{hint}", dir.join(missing).display());
        return None;
    }
    Some(dir)
}

/// `../shared` next to the crate when it holds every one of `needed`.
pub fn shared_with(needed: &[&str]) -> Option<PathBuf> {
    folder_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        needed,
        " (the shared data set is not next to this clone)",
    )
}

/// The device of an execution mode, or None (with the reason printed) when this machine has
/// none: `cpu`, `emulate` (in builds with the emulator) or `cuda` (in CUDA builds with a GPU).
pub fn exec_device(spec: DeviceSpec) -> Option<ComputeDevice> {
    match ComputeDevice::resolve(spec) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("skipping {spec:?}: {e}");
            None
        }
    }
}

/// Defines one test per execution mode around one body: `test_exec!(fn name(dev) { ... })`
/// gives a module `name` with the tests `native`, `emulator` (feature `emulate`) and `cuda`
/// (feature `cuda`; it skips with a reason on a machine without a GPU). The body gets
/// `dev: &ComputeDevice`, runs on a thread that computes in the device's mode, and makes its
/// tensors on `dev.device`. `test_exec!(kernels fn name(dev) { ... })` leaves out `native`, for
/// properties of the CUDA kernels themselves.
#[macro_export]
macro_rules! test_exec {
    (kernels fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn body($dev: &realm::device::ComputeDevice) $body

            $crate::test_exec!(@mode emulator, "emulate", Emulate);
            $crate::test_exec!(@mode cuda, "cuda", Cuda(0));
        }
    };
    (fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($dev: &realm::device::ComputeDevice) $body

            #[test]
            fn native() {
                let dev = realm::device::ComputeDevice::resolve(realm::device::DeviceSpec::Cpu)
                    .expect("the CPU");
                let _mode = dev.enter().expect("entering the CPU");
                body(&dev);
            }

            $crate::test_exec!(@mode emulator, "emulate", Emulate);
            $crate::test_exec!(@mode cuda, "cuda", Cuda(0));
        }
    };
    (@mode $test:ident, $feature:literal, $spec:ident $(($n:literal))?) => {
        #[cfg(feature = $feature)]
        #[test]
        fn $test() {
            if let Some(dev) =
                $crate::common::exec_device(realm::device::DeviceSpec::$spec $(($n))?)
            {
                let _mode = dev.enter().expect("entering the device");
                body(&dev);
            }
        }
    };
}
