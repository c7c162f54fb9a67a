//! The emulator backend: kernels of `kernels/*.cu`, compiled as host C++ against
//! `kernels/emulator/` (feature `emulate`), run on the CPU on host buffers. Every pointer carries
//! its buffer's bounds ([`EmuPtr`]), so an access out of bounds is a fault reported as
//! [`Error::Emulator`] (kernel, block, thread, what), never memory corruption.

use super::abi::{EmuAbi, EmuPtr, EmuPtrMut, Params, Word};
use super::{find, Backend, Launch, Ptr, PtrMut};
use crate::device::Exec;
use crate::error::{Error, Result};
use std::marker::PhantomData;

/// Runs kernels on the emulator, counting launches in `exec`.
#[derive(Clone, Debug)]
pub struct Emulator {
    exec: Exec,
}

impl Emulator {
    /// An emulator backend that counts its launches in `exec`.
    pub fn new(exec: Exec) -> Self {
        Emulator { exec }
    }
}

impl Backend for Emulator {
    type Abi = EmuAbi;
    type Buf<T: Word> = Vec<T>;
    type View<'v, T: Word> = &'v [T];
    type Binder<'a> = PhantomData<&'a ()>;

    fn exec(&self) -> &Exec {
        &self.exec
    }

    fn alloc<T: Word>(&self, len: usize, _what: &'static str) -> Result<Vec<T>> {
        let fill = if self.exec.poison_outputs {
            T::POISON
        } else {
            T::ZERO
        };
        Ok(vec![fill; len])
    }

    fn upload<T: Word>(&self, host: &[T], _what: &'static str) -> Result<Vec<T>> {
        self.exec.count_upload();
        Ok(host.to_vec())
    }

    fn download<T: Word>(&self, buf: &Vec<T>, _what: &'static str) -> Result<Vec<T>> {
        // Counted as on a GPU, so that tests see the same counts without one.
        self.exec.count_host_read();
        Ok(buf.clone())
    }

    fn binder(&self) -> PhantomData<&()> {
        PhantomData
    }

    fn read<'a, T: Word>(_: &mut PhantomData<&'a ()>, x: &'a &[T]) -> Ptr<'a, Self, T> {
        EmuPtr::new(x)
    }

    fn read_buf<'a, T: Word>(_: &mut PhantomData<&'a ()>, x: &'a Vec<T>) -> Ptr<'a, Self, T> {
        EmuPtr::new(x)
    }

    fn write<'a, T: Word>(_: &mut PhantomData<&'a ()>, x: &'a mut Vec<T>) -> PtrMut<'a, Self, T> {
        EmuPtrMut::new(x)
    }

    fn write_parts<'a, T: Word, const N: usize>(
        _: &mut PhantomData<&'a ()>,
        x: &'a mut Vec<T>,
    ) -> [PtrMut<'a, Self, T>; N] {
        let part = x.len() / N;
        let mut rest: &'a mut [T] = x;
        std::array::from_fn(|_| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(part);
            rest = tail;
            EmuPtrMut::new(head)
        })
    }

    fn launch<P: Params<EmuAbi>>(
        &self,
        _: PhantomData<&()>,
        variant: P::Variant,
        shape: Launch,
        params: P,
    ) -> Result<()> {
        let kernel = find::<EmuAbi, P>(variant)?;
        self.exec.count_launch();
        run(kernel, shape, &self.exec, &params)
    }
}

/// One launch on the emulator; a fault becomes [`Error::Emulator`] with the runtime's message.
#[cfg(feature = "emulate")]
fn run<P>(kernel: &super::abi::Kernel, shape: Launch, exec: &Exec, params: &P) -> Result<()> {
    use super::abi::EmuLaunch;
    use std::ffi::{c_char, c_void, CStr};
    let mut err = vec![0 as c_char; 4096];
    let cfg = EmuLaunch {
        grid: shape.grid,
        block: shape.block,
        dyn_smem: shape.dyn_smem,
        block_threads: exec.emu_block_threads,
        mma_model: exec.emu_mma.code(),
        err: err.as_mut_ptr(),
        err_len: err.len(),
    };
    // SAFETY: `kernel.emu` is the launcher of the family whose C parameter struct `P` mirrors:
    // build.rs generates both from one declaration and asserts their sizes and offsets on both
    // sides. The kernel reaches memory only through the bounds-checked pointers in `params`,
    // which borrow live buffers for the duration of this call.
    let rc = unsafe { (kernel.emu)(&cfg, (params as *const P).cast::<c_void>()) };
    if rc == 0 {
        return Ok(());
    }
    // The runtime writes a NUL-terminated message within err_len bytes; the last byte is forced
    // to NUL in case it did not.
    let last = err.len() - 1;
    err[last] = 0;
    let msg = CStr::from_bytes_until_nul(bytemuck::cast_slice(&err))
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("kernel `{}` failed", kernel.name));
    Err(Error::Emulator(msg))
}

#[cfg(not(feature = "emulate"))]
fn run<P>(kernel: &super::abi::Kernel, _: Launch, _: &Exec, _: &P) -> Result<()> {
    Err(Error::Device(format!(
        "kernel `{}`: the kernel emulator is not in this build (rebuild with `--features emulate`)",
        kernel.name
    )))
}
