//! Where to compute: `auto`, `cpu`, `emulate` (CPU tensors, CUDA kernels run by the emulator) or
//! `cuda[:N]`, as accepted by every subcommand's `--device`.

use crate::error::{Error, Result};
use crate::ops::{set_cpu_exec, CpuExec, CpuExecGuard};
use std::fmt;
use std::str::FromStr;

/// A `--device` value, before it is resolved against this build and machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when this build has CUDA and a GPU is visible, else the CPU.
    Auto,
    Cpu,
    Emulate,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "emulate" => Ok(DeviceSpec::Emulate),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(Error::Device(format!(
                    "unknown device `{other}`: use auto, cpu, emulate, cuda or cuda:N"
                ))),
            },
        }
    }
}

/// A resolved device: the candle device tensors live on, and how CPU ops execute.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    pub device: candle_core::Device,
    pub exec: CpuExec,
}

impl ComputeDevice {
    pub fn cpu() -> Self {
        ComputeDevice {
            device: candle_core::Device::Cpu,
            exec: CpuExec::Native,
        }
    }

    /// Resolves a spec; an unavailable device is an error that says why.
    pub fn resolve(spec: DeviceSpec) -> Result<Self> {
        match spec {
            DeviceSpec::Cpu => Ok(Self::cpu()),
            DeviceSpec::Emulate => {
                if !cfg!(feature = "emulate") {
                    return Err(Error::Device(
                        "`emulate` needs a build with `--features emulate`".into(),
                    ));
                }
                Ok(ComputeDevice {
                    device: candle_core::Device::Cpu,
                    exec: CpuExec::Emulator,
                })
            }
            DeviceSpec::Cuda(n) => Self::cuda(n),
            DeviceSpec::Auto => Ok(Self::cuda(0).unwrap_or_else(|_| Self::cpu())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(ordinal: usize) -> Result<Self> {
        let device = candle_core::Device::new_cuda(ordinal)
            .map_err(|e| Error::Device(format!("cuda:{ordinal} is not usable: {e}")))?;
        Ok(ComputeDevice {
            device,
            exec: CpuExec::Native,
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(ordinal: usize) -> Result<Self> {
        Err(Error::Device(format!(
            "cuda:{ordinal} requested, but this binary was built without `--features cuda`"
        )))
    }

    /// Makes the calling thread's CPU ops follow this device's execution choice.
    pub fn enter(&self) -> Result<CpuExecGuard> {
        set_cpu_exec(self.exec)
    }

    /// Waits for queued GPU work (a no-op on the CPU), so timings cover the work itself.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.device.synchronize()?)
    }

    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }

    /// The device as a user reads it at start: `cuda:0`, or `cpu`/`emulate` with the native CPU
    /// kernels' instruction set (`REALM_CPU_SIMD` can force the portable one).
    pub fn description(&self) -> String {
        if self.is_cuda() {
            self.to_string()
        } else {
            format!("{self} (CPU kernels: {})", crate::ops::cpu_kernels())
        }
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.device, self.exec) {
            (candle_core::Device::Cuda(_), _) => match self.device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => write!(f, "cuda:{gpu_id}"),
                _ => write!(f, "cuda"),
            },
            (_, CpuExec::Emulator) => write!(f, "emulate"),
            _ => write!(f, "cpu"),
        }
    }
}
