//! The `realm` command line: one module per subcommand, each a clap `Args` struct and its `run`
//! function. The library does the work and holds the rules (defaults, limits); these modules turn
//! flags into library calls and results into the command's output.

pub mod ask;
pub mod bench;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod finetune;
pub mod ict;
pub mod import;
pub mod index;
pub mod pretrain;
pub mod report;
pub mod search;
pub mod selftest;
pub mod stage;
pub mod vocab;

use anyhow::{bail, Result};
use clap::Args;
use realm::device::{ComputeDevice, DeviceSpec};

/// A line on stdout. Unlike `println!`, a failed write (the reader closed the pipe, as `| head`
/// does) is an error returned to `main`, which ends quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        {
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), $($arg)*)?
        }
    };
}
pub(crate) use out;

/// `--device`, shared by every command that computes.
#[derive(Args, Clone, Debug)]
pub struct DeviceArg {
    /// auto, cpu, emulate (CUDA kernels on the CPU emulator) or cuda[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DeviceArg {
    /// The device, announced on stderr.
    pub fn resolve(&self) -> realm::Result<ComputeDevice> {
        self.resolve_for_rank(0)
    }

    /// The device of the process of local rank `local` on its machine: `cuda` and `auto` mean
    /// GPU `local` there (`cuda:N` is taken as given), announced on stderr.
    pub fn resolve_for_rank(&self, local: usize) -> realm::Result<ComputeDevice> {
        let dev = match self.device.parse()? {
            DeviceSpec::Cuda(0) if self.device == "cuda" => {
                ComputeDevice::resolve(DeviceSpec::Cuda(local))?
            }
            DeviceSpec::Auto if local > 0 => ComputeDevice::resolve(DeviceSpec::Cuda(local))
                .or_else(|_| ComputeDevice::resolve(DeviceSpec::Cpu))?,
            spec => ComputeDevice::resolve(spec)?,
        };
        eprintln!("device: {}", dev.description());
        Ok(dev)
    }
}

/// `--dtype f32|f16|bf16`.
pub fn parse_dtype(dtype: &str) -> Result<candle_core::DType> {
    Ok(match dtype {
        "f32" => candle_core::DType::F32,
        "f16" => candle_core::DType::F16,
        "bf16" => candle_core::DType::BF16,
        other => bail!("--dtype {other}: use f32, f16 or bf16"),
    })
}

/// Blocks read per query (`search -k`, `ask --beam`) by the library's rule, or an error naming
/// the flag.
pub fn blocks_per_query(flag: &str, n: Option<usize>, index_blocks: usize) -> Result<usize> {
    match realm::index::search::blocks_per_query(n, index_blocks) {
        Some(k) => Ok(k),
        None => bail!(
            "{flag} {}: must be between 1 and the index's {index_blocks} blocks",
            n.unwrap_or(0)
        ),
    }
}

/// Whether an error comes from writing to a pipe whose reader has gone.
pub fn closed_pipe(e: &anyhow::Error) -> bool {
    let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref::<realm::Error>(), Some(realm::Error::Io(io)) if broken(io))
    })
}
