//! The CUDA backend (feature `cuda`): the fatbins build.rs compiled from `kernels/*.cu`, loaded
//! once per device and module through cudarc, and launched on the device's stream with the
//! family's parameter struct as the kernel's one argument.

use super::abi::{CudaAbi, CudaPtr, CudaPtrMut, Kernel, Module, Params, Word};
use super::{find, Backend, Launch, Ptr, PtrMut};
use crate::device::Exec;
use crate::error::{Error, Result};
use candle_core::CudaDevice;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg, SyncOnDrop,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Dynamic shared memory every kernel may use without asking.
const DEFAULT_DYN_SMEM: u32 = 48 * 1024;

/// Runs kernels on one CUDA device's stream, counting launches in `exec`.
#[derive(Clone)]
pub struct Cuda {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    exec: Exec,
}

impl Cuda {
    pub fn new(dev: &CudaDevice, exec: Exec) -> Self {
        Cuda {
            stream: dev.cuda_stream(),
            dev: dev.clone(),
            exec,
        }
    }

    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Loads `kernel`'s module on this device (once) and looks the kernel up in it.
    fn function(&self, kernel: &Kernel) -> Result<CudaFunction> {
        type Key = (candle_core::cuda_backend::DeviceId, Module);
        static MODULES: OnceLock<Mutex<HashMap<Key, Arc<CudaModule>>>> = OnceLock::new();
        let module = kernel.module;
        let fatbin = module
            .fatbin()
            .ok_or_else(|| Error::Device(format!("{} has no GPU build", module.file())))?;
        let key = (self.dev.id(), module);
        let loaded = {
            let mut cache = MODULES
                .get_or_init(Mutex::default)
                .lock()
                .map_err(|_| Error::Device("kernel module cache poisoned".into()))?;
            match cache.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let image = cudarc::nvrtc::Ptx::from_binary(fatbin.to_vec());
                    let m =
                        self.stream.context().load_module(image).map_err(|e| {
                            Error::Device(format!("loading {}: {e}", module.file()))
                        })?;
                    cache.insert(key, m.clone());
                    m
                }
            }
        };
        loaded.load_function(kernel.name).map_err(|e| {
            Error::Device(format!(
                "kernel `{}` in {}: {e}",
                kernel.name,
                module.file()
            ))
        })
    }
}

/// The guards cudarc returns with each device pointer: dropped after the launch is queued, so
/// that the buffers' events (when cudarc manages synchronisation between streams) are recorded
/// after the kernel.
pub struct CudaBinder<'a> {
    stream: &'a CudaStream,
    guards: Vec<SyncOnDrop<'a>>,
}

/// A parameter struct passed by value as the kernel's one argument.
#[repr(transparent)]
struct ByValue<P>(P);

// SAFETY: `P` is a generated `#[repr(C)]` parameter struct of plain data (device addresses and
// scalars) whose layout build.rs asserts equal to the kernel's C++ struct.
unsafe impl<P> DeviceRepr for ByValue<P> {}

impl Backend for Cuda {
    type Abi = CudaAbi;
    type Buf<T: Word> = CudaSlice<T>;
    type View<'v, T: Word> = CudaView<'v, T>;
    type Binder<'a> = CudaBinder<'a>;

    fn exec(&self) -> &Exec {
        &self.exec
    }

    fn alloc<T: Word>(&self, len: usize, what: &'static str) -> Result<CudaSlice<T>> {
        let oom = |e: cudarc::driver::DriverError| {
            Error::Device(format!(
                "{what}: allocating {len} x {} bytes on the GPU: {e}",
                std::mem::size_of::<T>()
            ))
        };
        // SAFETY: the caller's kernel writes every element before anything reads it.
        let mut out = unsafe { self.stream.alloc::<T>(len) }.map_err(oom)?;
        if self.exec.poison_outputs && len > 0 {
            let bytes = len * std::mem::size_of::<T>();
            let (ptr, _sync) = out.device_ptr_mut(&self.stream);
            // SAFETY: `ptr` addresses `bytes` bytes of the allocation just made on this stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream())
            }
            .map_err(oom)?;
        }
        Ok(out)
    }

    fn upload<T: Word>(&self, host: &[T], what: &'static str) -> Result<CudaSlice<T>> {
        self.exec.count_upload();
        self.stream
            .clone_htod(host)
            .map_err(|e| Error::Device(format!("{what}: copying to the GPU: {e}")))
    }

    fn download<T: Word>(&self, buf: &CudaSlice<T>, what: &'static str) -> Result<Vec<T>> {
        self.exec.count_host_read();
        self.stream
            .clone_dtoh(buf)
            .map_err(|e| Error::Device(format!("{what}: copying from the GPU: {e}")))
    }

    fn binder(&self) -> CudaBinder<'_> {
        CudaBinder {
            stream: &self.stream,
            guards: Vec::new(),
        }
    }

    fn read<'a, T: Word>(b: &mut CudaBinder<'a>, x: &'a CudaView<'_, T>) -> Ptr<'a, Self, T> {
        let (addr, guard) = x.device_ptr(b.stream);
        b.guards.push(guard);
        // SAFETY: the view borrows the tensor's memory for 'a.
        unsafe { CudaPtr::new(addr) }
    }

    fn read_buf<'a, T: Word>(b: &mut CudaBinder<'a>, x: &'a CudaSlice<T>) -> Ptr<'a, Self, T> {
        let (addr, guard) = x.device_ptr(b.stream);
        b.guards.push(guard);
        // SAFETY: the slice is borrowed for 'a.
        unsafe { CudaPtr::new(addr) }
    }

    fn write<'a, T: Word>(b: &mut CudaBinder<'a>, x: &'a mut CudaSlice<T>) -> PtrMut<'a, Self, T> {
        let (addr, guard) = x.device_ptr_mut(b.stream);
        b.guards.push(guard);
        // SAFETY: the slice is borrowed mutably for 'a.
        unsafe { CudaPtrMut::new(addr) }
    }

    fn write_parts<'a, T: Word, const N: usize>(
        b: &mut CudaBinder<'a>,
        x: &'a mut CudaSlice<T>,
    ) -> [PtrMut<'a, Self, T>; N] {
        let part_bytes = (x.len() / N * std::mem::size_of::<T>()) as u64;
        let (addr, guard) = x.device_ptr_mut(b.stream);
        b.guards.push(guard);
        // SAFETY: the parts are disjoint ranges of the slice, borrowed mutably for 'a.
        std::array::from_fn(|i| unsafe { CudaPtrMut::new(addr + i as u64 * part_bytes) })
    }

    fn launch<P: Params<CudaAbi>>(
        &self,
        b: CudaBinder<'_>,
        variant: P::Variant,
        shape: Launch,
        params: P,
    ) -> Result<()> {
        let kernel = find::<CudaAbi, P>(variant)?;
        let function = self.function(kernel)?;
        let fail = |e: cudarc::driver::DriverError| {
            Error::Device(format!("launching {}: {e}", kernel.name))
        };
        if shape.dyn_smem > DEFAULT_DYN_SMEM {
            function
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shape.dyn_smem as i32,
                )
                .map_err(fail)?;
        }
        let cfg = LaunchConfig {
            grid_dim: shape.grid.into(),
            block_dim: shape.block.into(),
            shared_mem_bytes: shape.dyn_smem,
        };
        let arg = ByValue(params);
        self.exec.count_launch();
        let mut builder = self.stream.launch_builder(&function);
        builder.arg(&arg);
        // SAFETY: the kernel's one parameter is its family's struct, which `P` mirrors (see
        // `ByValue`); the buffers it addresses are borrowed by `params` and `b` until the launch
        // is queued, and stream order keeps them alive until it runs.
        unsafe { builder.launch(cfg) }.map_err(fail)?;
        drop(b);
        Ok(())
    }
}
