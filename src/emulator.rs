//! The Rust side of the kernel emulator (feature `emulate`): the ABI shared with
//! `kernels/include/realm/device_emu.hpp`, and a checked launch.
//!
//! Every kernel `NAME` declared with `REALM_KERNEL` gets, under the emulator, a launcher
//! `extern "C" int realm_emu_launch_NAME(const RealmEmuLaunch*, params...)` where each `gptr<T>`
//! parameter is passed as [`EmuPtr`] (the buffer's bounds travel with the pointer) and scalars as
//! themselves. It returns 0, or non-zero with a message (kernel, block, thread, fault) in `err`.

use crate::error::{Error, Result};
use std::ffi::{c_char, CStr};
use std::marker::PhantomData;

/// Launch configuration, as `RealmEmuLaunch` in device_emu.hpp.
#[repr(C)]
pub struct EmuLaunch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dyn_smem: u32,
    pub err: *mut c_char,
    pub err_len: usize,
}

/// A bounds-carrying global pointer, layout-identical to `gptr<T>` in device_emu.hpp:
/// the current position and the `[begin, end)` range of the buffer it points into.
#[repr(C)]
pub struct EmuPtr<'a, T> {
    ptr: *const T,
    begin: *const T,
    end: *const T,
    _borrow: PhantomData<&'a T>,
}

impl<'a, T> EmuPtr<'a, T> {
    /// A read-only view of a buffer.
    pub fn new(data: &'a [T]) -> Self {
        let range = data.as_ptr_range();
        EmuPtr {
            ptr: range.start,
            begin: range.start,
            end: range.end,
            _borrow: PhantomData,
        }
    }

    /// A writable view of a buffer (the kernel writes through it).
    pub fn new_mut(data: &'a mut [T]) -> Self {
        let range = data.as_mut_ptr_range();
        EmuPtr {
            ptr: range.start,
            begin: range.start,
            end: range.end,
            _borrow: PhantomData,
        }
    }
}

/// Grid and block shape of one launch.
#[derive(Clone, Copy, Debug)]
pub struct LaunchShape {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dyn_smem: u32,
}

impl LaunchShape {
    pub fn linear(blocks: u32, threads: u32, dyn_smem: u32) -> Self {
        LaunchShape {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            dyn_smem,
        }
    }
}

/// Runs one emulated launch: `call` invokes the kernel's `realm_emu_launch_*` with the prepared
/// configuration. A fault becomes [`Error::Emulator`] carrying the runtime's message.
pub fn launch(shape: LaunchShape, call: impl FnOnce(&EmuLaunch) -> i32) -> Result<()> {
    let mut err = vec![0 as c_char; 4096];
    let cfg = EmuLaunch {
        grid: shape.grid,
        block: shape.block,
        dyn_smem: shape.dyn_smem,
        err: err.as_mut_ptr(),
        err_len: err.len(),
    };
    if call(&cfg) == 0 {
        return Ok(());
    }
    // SAFETY: the runtime writes a NUL-terminated message within err_len bytes; the last byte is
    // forced to NUL in case it did not.
    let last = err.len() - 1;
    err[last] = 0;
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
    Err(Error::Emulator(msg.to_string_lossy().into_owned()))
}
