//! The kernels of `kernels/*.cu` as Rust sees them: the ABI that build.rs generates from their
//! declarations ([`abi`]), and one launch seam, [`Backend`], with two implementations: the
//! emulator ([`Emulator`], CPU memory) and a CUDA device (`Cuda`, with feature `cuda`).
//!
//! An op describes each launch once, generic over the backend (its `launch.rs`): allocate the
//! outputs, bind the buffers into the family's parameter struct, pick the variant and the shape:
//!
//! ```ignore
//! let mut p = be.alloc::<T>(rows * k, "doc_softmax")?;
//! let mut b = be.binder();
//! let params = abi::doc_softmax::DocSoftmaxFwd {
//!     x: B::read(&mut b, x),
//!     p: B::write(&mut b, &mut p),
//!     rows: rows as u32,
//!     k: k as u32,
//! };
//! be.launch(b, Variant::Warp, Launch::linear(blocks, THREADS), params)?;
//! ```
//!
//! The seam finds the kernel of (variant, element type), counts the launch in the execution
//! mode ([`crate::device::Exec::launches`]), poisons outputs when the mode asks, and reports a
//! failure as an error naming the kernel. A build without the emulator refuses emulated launches
//! here, and only here.

pub mod abi;
#[cfg(feature = "cuda")]
mod cuda;
mod emulator;

pub use abi::{Abi, Element, Params, Word};
#[cfg(feature = "cuda")]
pub use cuda::Cuda;
pub use emulator::Emulator;

use crate::device::Exec;
use crate::error::{Error, Result};

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks along x, y, z.
    pub grid: [u32; 3],
    /// Threads per block along x, y, z.
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory per block.
    pub dyn_smem: u32,
}

impl Launch {
    /// `blocks` blocks of `threads` threads along x.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Launch::grid([blocks, 1, 1], threads)
    }

    /// A grid of blocks of `threads` threads along x.
    pub fn grid(grid: [u32; 3], threads: u32) -> Self {
        Launch {
            grid,
            block: [threads, 1, 1],
            dyn_smem: 0,
        }
    }

    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_dyn_smem(self, bytes: u32) -> Self {
        Launch {
            dyn_smem: bytes,
            ..self
        }
    }
}

/// `gptr<const T>` on backend `B`.
pub type Ptr<'a, B, T> = <<B as Backend>::Abi as Abi>::Ptr<'a, T>;
/// `gptr<T>` on backend `B`.
pub type PtrMut<'a, B, T> = <<B as Backend>::Abi as Abi>::PtrMut<'a, T>;

/// Where kernels run: the one seam every op's launch goes through.
pub trait Backend {
    /// How pointers cross to the kernels.
    type Abi: Abi;
    /// Memory the backend owns: a host `Vec` under the emulator, device memory on a GPU.
    type Buf<T: Word>;
    /// Borrowed memory of a tensor: a slice under the emulator, a view on a GPU.
    type View<'v, T: Word>;
    /// Binds buffers into one launch's parameters and keeps what must live until it is queued.
    type Binder<'a>;

    /// The execution mode launches are counted in.
    fn exec(&self) -> &Exec;

    /// A buffer of `len` elements that a kernel will fill: poisoned when the mode says so.
    fn alloc<T: Word>(&self, len: usize, what: &'static str) -> Result<Self::Buf<T>>;
    /// A buffer holding `host`.
    fn upload<T: Word>(&self, host: &[T], what: &'static str) -> Result<Self::Buf<T>>;
    /// The contents of `buf` on the host (a synchronisation point on a GPU, counted).
    fn download<T: Word>(&self, buf: &Self::Buf<T>, what: &'static str) -> Result<Vec<T>>;

    /// Starts binding one launch's buffers.
    fn binder(&self) -> Self::Binder<'_>;
    /// A tensor's memory as a kernel input.
    fn read<'a, T: Word>(b: &mut Self::Binder<'a>, x: &'a Self::View<'_, T>) -> Ptr<'a, Self, T>;
    /// A buffer as a kernel input (the output of an earlier launch, or uploaded).
    fn read_buf<'a, T: Word>(b: &mut Self::Binder<'a>, x: &'a Self::Buf<T>) -> Ptr<'a, Self, T>;
    /// A buffer the kernel writes.
    fn write<'a, T: Word>(b: &mut Self::Binder<'a>, x: &'a mut Self::Buf<T>)
        -> PtrMut<'a, Self, T>;
    /// A buffer cut into `N` equal parts the kernel writes (the length is a multiple of `N`).
    fn write_parts<'a, T: Word, const N: usize>(
        b: &mut Self::Binder<'a>,
        x: &'a mut Self::Buf<T>,
    ) -> [PtrMut<'a, Self, T>; N];

    /// Launches the kernel of `variant` (for the parameters' element type) of `params`'
    /// family.
    fn launch<P: Params<Self::Abi>>(
        &self,
        b: Self::Binder<'_>,
        variant: P::Variant,
        shape: Launch,
        params: P,
    ) -> Result<()>;
}

/// The kernel of `variant` for `P`, or an error naming what is missing.
fn find<A: Abi, P: Params<A>>(variant: P::Variant) -> Result<&'static abi::Kernel> {
    P::kernel(variant).ok_or_else(|| {
        let dtype = P::DTYPE.map_or(String::new(), |d| format!(" for {d:?}"));
        Error::Device(format!(
            "kernel family `{}` has no kernel of variant {variant:?}{dtype}",
            P::FAMILY
        ))
    })
}
