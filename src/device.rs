//! Where and how to compute: `--device auto|cpu|emulate|cuda[:N]` resolves to a [`ComputeDevice`],
//! the candle device tensors live on plus the execution mode ([`Exec`]) as an explicit value.
//!
//! The execution mode says which implementation the fused ops run on CPU tensors (the native
//! Rust code or the CUDA kernels on the emulator), which vector instructions the native code may
//! use, whether kernel outputs are poisoned before a launch, and it counts kernel launches,
//! device→host reads and host→device uploads ([`read_vec1`], [`upload`], ...: every transfer of
//! the training step goes through these, so that a test can hold its budget). An op takes the mode of the thread that builds it ([`Exec::current`]) and
//! keeps it for its backward. A thread computes in a device's mode once it has entered it
//! ([`ComputeDevice::enter`]); threads a computation starts get it explicitly:
//! [`ComputeDevice::thread_pool`] builds a rayon pool whose every worker runs in the mode, and a
//! spawned thread enters it first. A thread that entered nothing computes natively.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor, WithDType};
use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A `--device` value, before it is resolved against this build and machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when this build has CUDA and a GPU is visible, else the CPU.
    Auto,
    /// The CPU with the native Rust ops (`cpu`).
    Cpu,
    /// The CPU with the CUDA kernels run by the emulator (`emulate`; needs feature `emulate`).
    Emulate,
    /// CUDA device N (`cuda` is 0, `cuda:N`; needs feature `cuda`).
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

/// Which implementation computes the fused ops on tensors that live on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuExec {
    /// The Rust implementation (multi-threaded, vectorised): the CPU fallback.
    #[default]
    Native,
    /// The CUDA kernels of `kernels/`, executed by the emulator.
    Emulator,
}

/// Which instruction sets the native CPU kernels (attention tiles, MIPS scans) may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuSimd {
    /// The best this CPU has (AVX2 + FMA, with F16C for MIPS), detected at run time.
    #[default]
    Auto,
    /// Plain Rust only, whatever the CPU: the summation order and rounding of a machine without
    /// AVX2, so that a test can check that its outcome does not depend on the kernel path.
    Portable,
}

/// The environment variable that chooses [`CpuSimd`]: `auto` (or unset) or `portable`.
pub const CPU_SIMD_ENV: &str = "REALM_CPU_SIMD";

impl CpuSimd {
    /// The native CPU kernels' instruction set under this choice, as a user would name it:
    /// `avx2` or `portable`.
    pub fn kernels(self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if self == CpuSimd::Auto
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
        "portable"
    }
}

/// The instruction set of candle's CPU matmuls, as the `gemm` crate picks it at run time (its
/// AVX-512 kernels are enabled in Cargo.toml): `avx512`, `avx2`, `neon` or `portable`.
/// `REALM_CPU_SIMD` does not reach it.
fn matmul_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return "neon";
    }
    "portable"
}

/// The process's [`CpuSimd`], from [`CPU_SIMD_ENV`] (read once): `Auto` when it is unset, or when
/// its value is not understood (which [`check_cpu_simd_env`] reports).
pub fn cpu_simd() -> CpuSimd {
    check_cpu_simd_env().unwrap_or_default()
}

/// An error naming [`CPU_SIMD_ENV`] when it is set to something other than `auto` or `portable`
/// (the binary checks this at start, and resolving a device does, so that a typo is not silently
/// the default).
pub fn check_cpu_simd_env() -> Result<CpuSimd> {
    static CHOICE: OnceLock<std::result::Result<CpuSimd, String>> = OnceLock::new();
    env_choice(
        &CHOICE,
        CPU_SIMD_ENV,
        "use `auto` or `portable`",
        |v| match v {
            "" | "auto" => Some(CpuSimd::Auto),
            "portable" => Some(CpuSimd::Portable),
            _ => None,
        },
    )
}

/// The value of environment variable `var` as `parse` reads it (`parse("")` when it is unset),
/// read once into `cell`; an error naming the variable, its value and `expected` otherwise.
fn env_choice<T: Clone>(
    cell: &OnceLock<std::result::Result<T, String>>,
    var: &str,
    expected: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T> {
    cell.get_or_init(|| {
        let value = match std::env::var(var) {
            Err(std::env::VarError::NotPresent) => String::new(),
            Ok(v) => v,
            Err(e) => return Err(format!("{var}: {e}")),
        };
        parse(value.trim()).ok_or_else(|| format!("{var}={value:?}: {expected}"))
    })
    .clone()
    .map_err(Error::Device)
}

/// The environment variable that makes the emulator run several blocks of a launch at once, each
/// on its own OS thread: a count from 1 (unset: 1, one block after another) to 64.
pub const EMU_BLOCK_THREADS_ENV: &str = "REALM_EMU_BLOCK_THREADS";

/// The process's [`EMU_BLOCK_THREADS_ENV`] (read once), or an error naming it when its value is
/// not a count from 1 to 64.
pub fn emu_block_threads() -> Result<u32> {
    static CHOICE: OnceLock<std::result::Result<u32, String>> = OnceLock::new();
    env_choice(
        &CHOICE,
        EMU_BLOCK_THREADS_ENV,
        "use a count of threads from 1 to 64",
        |v| match v {
            "" => Some(1),
            v => v.parse().ok().filter(|n| (1..=64).contains(n)),
        },
    )
}

/// How the emulator's `mma.m16n8k16` adds its products (f16/bf16 in, f32 accumulate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmuMma {
    /// The exact products summed in f32 in k order, then C added (round to nearest).
    #[default]
    Exact,
    /// The coarse end of measured tensor cores: C and the products, in blocks of 8, aligned to
    /// the largest of them with the bits below its 24th truncated, and the sum truncated to f32
    /// (docs/emulator.md). CI runs the kernel tests with it, so that their bounds are shown to
    /// cover the tensor cores' rounding.
    Truncate,
}

impl EmuMma {
    /// The value the emulator's launch configuration carries.
    pub fn code(self) -> u32 {
        match self {
            EmuMma::Exact => 0,
            EmuMma::Truncate => 1,
        }
    }
}

/// The environment variable that chooses [`EmuMma`]: `exact` (or unset) or `truncate`.
pub const EMU_MMA_ENV: &str = "REALM_EMU_MMA";

/// The process's [`EMU_MMA_ENV`] (read once), or an error naming it when its value is neither
/// `exact` nor `truncate`.
pub fn emu_mma() -> Result<EmuMma> {
    static CHOICE: OnceLock<std::result::Result<EmuMma, String>> = OnceLock::new();
    env_choice(
        &CHOICE,
        EMU_MMA_ENV,
        "use `exact` or `truncate`",
        |v| match v {
            "" | "exact" => Some(EmuMma::Exact),
            "truncate" => Some(EmuMma::Truncate),
            _ => None,
        },
    )
}

/// What computations in one execution mode have done, shared by its clones.
#[derive(Debug, Default)]
struct Counters {
    launches: AtomicU64,
    host_reads: AtomicU64,
    uploads: AtomicU64,
}

/// What an execution mode has counted so far; the difference of two is what happened between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfers {
    /// Kernel launches (on the emulator or a GPU; the native CPU code launches none).
    pub launches: u64,
    /// Device→host reads: each a synchronisation point on a GPU.
    pub host_reads: u64,
    /// Host→device uploads.
    pub uploads: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;

    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            launches: self.launches - earlier.launches,
            host_reads: self.host_reads - earlier.host_reads,
            uploads: self.uploads - earlier.uploads,
        }
    }
}

/// The execution mode: an explicit value, owned by a [`ComputeDevice`] and carried into every
/// thread that computes (see the module documentation).
#[derive(Clone, Debug)]
pub struct Exec {
    /// How ops run on CPU tensors.
    pub cpu: CpuExec,
    /// The instruction sets the native CPU kernels may use: the process's `REALM_CPU_SIMD` in
    /// every mode today (the kernels read [`cpu_simd`]); carried here so that a mode can choose.
    pub simd: CpuSimd,
    /// Fill kernel outputs with NaN-like bytes before each launch, so that an element a kernel
    /// leaves unwritten fails its check instead of passing on leftover memory. Free on the
    /// emulator (on by default there), a memset per output on a GPU (`realm selftest` turns it
    /// on there).
    pub poison_outputs: bool,
    /// How many blocks of a launch the emulator runs at once, each on its own OS thread, with
    /// real atomics on global memory (1: one after another). From [`EMU_BLOCK_THREADS_ENV`];
    /// CI runs the kernel tests with 4, so that blocks race as on a GPU.
    pub emu_block_threads: u32,
    /// How the emulator's `mma` rounds its sums; from [`EMU_MMA_ENV`].
    pub emu_mma: EmuMma,
    counters: Arc<Counters>,
}

thread_local! {
    static CURRENT: RefCell<Option<Exec>> = const { RefCell::new(None) };
}

/// The mode of threads that entered none: native, with the process's own counters.
fn process_default() -> &'static Exec {
    static DEFAULT: OnceLock<Exec> = OnceLock::new();
    // An invalid REALM_CPU_SIMD is reported when a device is resolved.
    DEFAULT.get_or_init(|| Exec::new(CpuExec::Native, cpu_simd()))
}

impl Exec {
    fn new(cpu: CpuExec, simd: CpuSimd) -> Self {
        Exec {
            cpu,
            simd,
            poison_outputs: cpu == CpuExec::Emulator,
            emu_block_threads: emu_block_threads().unwrap_or(1),
            emu_mma: emu_mma().unwrap_or_default(),
            counters: Arc::default(),
        }
    }

    /// The native CPU implementation, with fresh counters; SIMD as `REALM_CPU_SIMD` says (an
    /// invalid value is an error).
    pub fn native() -> Result<Self> {
        Ok(Exec::new(CpuExec::Native, check_cpu_simd_env()?))
    }

    /// The CUDA kernels on the emulator, outputs poisoned, with fresh counters. An error in a
    /// build without the emulator.
    pub fn emulator() -> Result<Self> {
        if !cfg!(feature = "emulate") {
            return Err(Error::Device(
                "the kernel emulator is not in this build (rebuild with `--features emulate`)"
                    .into(),
            ));
        }
        let simd = check_cpu_simd_env()?;
        emu_block_threads()?;
        emu_mma()?;
        Ok(Exec::new(CpuExec::Emulator, simd))
    }

    /// The calling thread's mode: the one it entered last, else native.
    pub fn current() -> Exec {
        CURRENT
            .with(|c| c.borrow().clone())
            .unwrap_or_else(|| process_default().clone())
    }

    /// Makes this the calling thread's mode until the guard is dropped.
    pub fn enter(&self) -> ExecGuard {
        let previous = CURRENT.with(|c| c.replace(Some(self.clone())));
        ExecGuard { previous }
    }

    /// Makes this the calling thread's mode for the rest of its life (a pool's worker).
    fn adopt(&self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// The same mode with output poisoning on or off (sharing the counters).
    pub fn with_poison_outputs(&self, on: bool) -> Exec {
        Exec {
            poison_outputs: on,
            ..self.clone()
        }
    }

    /// Kernel launches made in this mode (by every clone, on every thread), on the emulator or
    /// a GPU.
    pub fn launches(&self) -> u64 {
        self.counters.launches.load(Ordering::Relaxed)
    }

    /// Reads of device memory by the host (each a synchronisation point on a GPU).
    pub fn host_reads(&self) -> u64 {
        self.counters.host_reads.load(Ordering::Relaxed)
    }

    /// Host→device uploads made in this mode.
    pub fn uploads(&self) -> u64 {
        self.counters.uploads.load(Ordering::Relaxed)
    }

    /// All three counts at once.
    pub fn transfers(&self) -> Transfers {
        Transfers {
            launches: self.launches(),
            host_reads: self.host_reads(),
            uploads: self.uploads(),
        }
    }

    pub(crate) fn count_upload(&self) {
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_launch(&self) {
        self.counters.launches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_host_read(&self) {
        self.counters.host_reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// Restores the thread's previous mode when dropped.
#[must_use = "the mode lasts as long as the guard"]
pub struct ExecGuard {
    previous: Option<Exec>,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// A resolved device: the candle device tensors live on, and the execution mode.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// The candle device tensors are created on.
    pub device: candle_core::Device,
    /// How ops run there (execution mode), entered with [`ComputeDevice::enter`].
    pub exec: Exec,
}

impl ComputeDevice {
    /// The CPU with the native implementation and fresh counters. An invalid `REALM_CPU_SIMD`
    /// falls back to the default here ([`ComputeDevice::resolve`] reports it).
    pub fn cpu() -> Self {
        ComputeDevice {
            device: candle_core::Device::Cpu,
            exec: Exec::new(CpuExec::Native, cpu_simd()),
        }
    }

    /// Resolves a spec; an unavailable device is an error that says why.
    pub fn resolve(spec: DeviceSpec) -> Result<Self> {
        match spec {
            DeviceSpec::Cpu => Ok(ComputeDevice {
                device: candle_core::Device::Cpu,
                exec: Exec::native()?,
            }),
            DeviceSpec::Emulate => {
                if !cfg!(feature = "emulate") {
                    return Err(Error::Device(
                        "`emulate` needs a build with `--features emulate`".into(),
                    ));
                }
                Ok(ComputeDevice {
                    device: candle_core::Device::Cpu,
                    exec: Exec::emulator()?,
                })
            }
            DeviceSpec::Cuda(n) => Self::cuda(n),
            DeviceSpec::Auto => match Self::cuda(0) {
                Ok(d) => Ok(d),
                Err(_) => Self::resolve(DeviceSpec::Cpu),
            },
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(ordinal: usize) -> Result<Self> {
        let device = candle_core::Device::new_cuda(ordinal)
            .map_err(|e| Error::Device(format!("cuda:{ordinal} is not usable: {e}")))?;
        Ok(ComputeDevice {
            device,
            exec: Exec::native()?,
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(ordinal: usize) -> Result<Self> {
        Err(Error::Device(format!(
            "cuda:{ordinal} requested, but this binary was built without `--features cuda`"
        )))
    }

    /// Makes the calling thread compute in this device's mode until the guard is dropped. (The
    /// mode was validated when the device was resolved; the `Result` lets callers write `?`
    /// whatever a device may need to become current.)
    pub fn enter(&self) -> Result<ExecGuard> {
        Ok(self.exec.enter())
    }

    /// A rayon pool of `threads` workers named `name-<i>`, each computing in this device's mode
    /// for its whole life (a pool's workers never entered the mode of the thread that uses it).
    pub fn thread_pool(&self, threads: usize, name: &str) -> Result<rayon::ThreadPool> {
        let exec = self.exec.clone();
        let prefix = name.to_string();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{prefix}-{i}"))
            .start_handler(move |_| exec.adopt())
            .build()
            .map_err(|e| Error::Device(format!("{name} thread pool: {e}")))
    }

    /// The device a background index refresh computes on. On CUDA, a second handle to the same
    /// GPU with its own stream, cuBLAS handle and random generator (candle's device issues on
    /// the calling thread's per-thread stream and shares one cuBLAS handle and workspace between
    /// threads). Nothing orders the two streams with each other: the refresh drains both around
    /// its snapshot (`index::live::Refresher`). On the CPU and the emulator, this device.
    pub fn refresh_device(&self) -> Result<ComputeDevice> {
        let device = match self.device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => {
                candle_core::Device::new_cuda_with_stream(gpu_id)?
            }
            _ => self.device.clone(),
        };
        Ok(ComputeDevice {
            device,
            exec: self.exec.clone(),
        })
    }

    /// Waits for queued GPU work (a no-op on the CPU), so timings cover the work itself.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.device.synchronize()?)
    }

    /// Whether tensors live on a CUDA GPU.
    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }

    /// The compute dtype a command uses unless told otherwise: see [`default_dtype`].
    pub fn default_dtype(&self) -> DType {
        default_dtype(self.runs_kernels())
    }

    /// Whether CPU tensors run the CUDA kernels on the emulator.
    pub fn is_emulated(&self) -> bool {
        !self.is_cuda() && self.exec.cpu == CpuExec::Emulator
    }

    /// Whether ops on this device run the CUDA kernels (on a GPU or the emulator).
    pub fn runs_kernels(&self) -> bool {
        self.is_cuda() || self.exec.cpu == CpuExec::Emulator
    }

    /// The device as a user reads it at start: `cuda:0`, or `cpu`/`emulate` with the native CPU
    /// kernels' instruction set (`REALM_CPU_SIMD` can force the portable one).
    pub fn description(&self) -> String {
        let dtype = format!("{:?}", self.default_dtype()).to_lowercase();
        if self.is_cuda() {
            format!("{self} (default dtype {dtype})")
        } else {
            format!(
                "{self} (CPU kernels: {}; matmuls: {}; default dtype {dtype})",
                self.exec.simd.kernels(),
                matmul_isa()
            )
        }
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.device, self.exec.cpu) {
            (candle_core::Device::Cuda(_), _) => match self.device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => write!(f, "cuda:{gpu_id}"),
                _ => write!(f, "cuda"),
            },
            (_, CpuExec::Emulator) => write!(f, "emulate"),
            _ => write!(f, "cpu"),
        }
    }
}

/// The compute dtype where nothing else is asked (`kernels`: whether the device runs the CUDA
/// kernels, on a GPU or the emulator): bf16 there, as the fused attention takes f16 or bf16 only
/// and bf16 needs no loss scaling; f32 on the native CPU, whose kernels are fastest and exact in
/// it.
pub fn default_dtype(kernels: bool) -> DType {
    if kernels {
        DType::BF16
    } else {
        DType::F32
    }
}

/// A tensor's elements on the host (flattened): one device→host read, counted in the calling
/// thread's mode ([`Exec::host_reads`]).
pub fn read_vec1<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    Exec::current().count_host_read();
    Ok(t.flatten_all()?.to_vec1()?)
}

/// The rows of a `[r, c]` tensor on the host: one read, counted.
pub fn read_vec2<T: WithDType>(t: &Tensor) -> Result<Vec<Vec<T>>> {
    Exec::current().count_host_read();
    Ok(t.to_vec2()?)
}

/// The rows of a `[a, b, c]` tensor on the host: one read, counted.
pub fn read_vec3<T: WithDType>(t: &Tensor) -> Result<Vec<Vec<Vec<T>>>> {
    Exec::current().count_host_read();
    Ok(t.to_vec3()?)
}

/// The value of a one-element tensor (any shape) on the host: one read, counted.
pub fn read_scalar<T: WithDType>(t: &Tensor) -> Result<T> {
    Exec::current().count_host_read();
    Ok(t.flatten_all()?.get(0)?.to_scalar()?)
}

/// A tensor of `shape` on `device` holding `data`: one upload, counted in the calling thread's
/// mode ([`Exec::uploads`]).
pub fn upload<T: WithDType, S: Into<Shape>>(
    data: Vec<T>,
    shape: S,
    device: &Device,
) -> Result<Tensor> {
    Exec::current().count_upload();
    Ok(Tensor::from_vec(data, shape, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_choice_is_read_once_and_a_bad_value_named() {
        fn count(v: &str) -> Option<u32> {
            v.parse().ok().filter(|n| (1..=64).contains(n))
        }
        let var = "REALM_TEST_ENV_CHOICE_COUNT";
        static BAD: OnceLock<std::result::Result<u32, String>> = OnceLock::new();
        std::env::set_var(var, "sixty");
        let err = env_choice(&BAD, var, "use a count from 1 to 64", count).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("device: {var}=\"sixty\": use a count from 1 to 64")
        );
        static GOOD: OnceLock<std::result::Result<u32, String>> = OnceLock::new();
        std::env::set_var(var, " 4 ");
        assert_eq!(env_choice(&GOOD, var, "", count).unwrap(), 4);
        std::env::set_var(var, "5");
        assert_eq!(env_choice(&GOOD, var, "", count).unwrap(), 4, "read once");
        std::env::remove_var(var);
    }

    #[test]
    fn the_default_dtype_is_bf16_where_the_kernels_run_and_f32_natively() {
        assert_eq!(default_dtype(true), DType::BF16);
        assert_eq!(default_dtype(false), DType::F32);
        let cpu = ComputeDevice::cpu();
        assert_eq!(cpu.default_dtype(), DType::F32);
        assert!(
            cpu.description().ends_with("; default dtype f32)"),
            "{}",
            cpu.description()
        );
        if let Ok(emu) = ComputeDevice::resolve(DeviceSpec::Emulate) {
            assert_eq!(emu.default_dtype(), DType::BF16);
        }
    }

    #[test]
    fn reads_and_uploads_are_counted_in_the_thread_s_mode() {
        let dev = ComputeDevice::cpu();
        let _mode = dev.enter().unwrap();
        let t = upload(vec![1u32, 2, 3, 4], (2, 2), &dev.device).unwrap();
        assert_eq!(read_vec2::<u32>(&t).unwrap(), [[1, 2], [3, 4]]);
        assert_eq!(read_vec1::<u32>(&t).unwrap(), [1, 2, 3, 4]);
        assert_eq!(
            read_scalar::<u32>(&t.max_keepdim(1).unwrap().max_keepdim(0).unwrap()).unwrap(),
            4
        );
        let counted = dev.exec.transfers();
        assert_eq!(
            counted,
            Transfers {
                launches: 0,
                host_reads: 3,
                uploads: 1
            }
        );
        // Another mode's counters are its own.
        assert_eq!(ComputeDevice::cpu().exec.transfers(), Transfers::default());
    }
}
