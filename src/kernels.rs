//! The compiled CUDA kernels (feature `cuda`): the fatbins build.rs produced from `kernels/*.cu`,
//! loaded once per device through cudarc and looked up by kernel name.

#[cfg(feature = "cuda")]
mod fatbins {
    /// A fatbin image with the alignment the CUDA driver and tools expect.
    #[repr(C, align(16))]
    pub struct Aligned<T: ?Sized>(pub T);

    include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));
}

/// One kernel family = one `kernels/<name>.cu` = one fatbin = one CUDA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    AttentionBwd,
    AttentionFwd,
    Conformance,
    DocSoftmax,
    Mips,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::AttentionBwd => "attention_bwd",
            Family::AttentionFwd => "attention_fwd",
            Family::Conformance => "conformance",
            Family::DocSoftmax => "doc_softmax",
            Family::Mips => "mips_topk",
        }
    }

    #[cfg(feature = "cuda")]
    fn fatbin(self) -> &'static [u8] {
        match self {
            Family::AttentionBwd => fatbins::ATTENTION_BWD,
            Family::AttentionFwd => fatbins::ATTENTION_FWD,
            Family::Conformance => fatbins::CONFORMANCE,
            Family::DocSoftmax => fatbins::DOC_SOFTMAX,
            Family::Mips => fatbins::MIPS_TOPK,
        }
    }
}

#[cfg(feature = "cuda")]
pub use cuda::{alloc_output, function, launch_config, Launcher};

use std::sync::atomic::{AtomicBool, Ordering};

static POISON_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// While on, kernel outputs on CUDA are filled with 0xFF bytes (NaN for floats) before each
/// launch, so a kernel that leaves an element unwritten fails its check instead of passing on
/// leftover memory. `realm selftest` turns it on; it costs a memset per launch.
pub fn set_poison_outputs(on: bool) {
    POISON_OUTPUTS.store(on, Ordering::Relaxed);
}

pub fn poison_outputs() -> bool {
    POISON_OUTPUTS.load(Ordering::Relaxed)
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::Family;
    use crate::error::{Error, Result};
    use candle_core::CudaDevice;
    use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    type ModuleKey = (candle_core::cuda_backend::DeviceId, Family);

    fn modules() -> &'static Mutex<HashMap<ModuleKey, Arc<CudaModule>>> {
        static MODULES: OnceLock<Mutex<HashMap<ModuleKey, Arc<CudaModule>>>> = OnceLock::new();
        MODULES.get_or_init(|| Mutex::new(HashMap::new()))
    }

    /// A kernel of `family` on `dev`'s stream, ready for `stream.launch_builder(&function)`.
    pub struct Launcher {
        pub function: CudaFunction,
        pub stream: Arc<CudaStream>,
    }

    /// Loads `family`'s fatbin on `dev` (once) and looks up kernel `name` in it.
    pub fn function(dev: &CudaDevice, family: Family, name: &str) -> Result<Launcher> {
        let stream = dev.cuda_stream();
        let key = (dev.id(), family);
        let module = {
            let mut cache = modules()
                .lock()
                .map_err(|_| Error::Device("kernel module cache poisoned".into()))?;
            match cache.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let image = cudarc::nvrtc::Ptx::from_binary(family.fatbin().to_vec());
                    let m = stream.context().load_module(image).map_err(|e| {
                        Error::Device(format!("loading kernels/{}.cu: {e}", family.name()))
                    })?;
                    cache.insert(key, m.clone());
                    m
                }
            }
        };
        let function = module.load_function(name).map_err(|e| {
            Error::Device(format!(
                "kernel `{name}` in kernels/{}.cu: {e}",
                family.name()
            ))
        })?;
        Ok(Launcher { function, stream })
    }

    /// Device memory for `len` outputs of a kernel on `stream`: uninitialised (every element is
    /// written by the kernel), or 0xFF bytes when output poisoning is on.
    pub fn alloc_output<T: cudarc::driver::DeviceRepr>(
        stream: &Arc<CudaStream>,
        len: usize,
        what: &str,
    ) -> Result<cudarc::driver::CudaSlice<T>> {
        use cudarc::driver::DevicePtrMut;
        let oom = |e: cudarc::driver::DriverError| {
            Error::Device(format!(
                "{what}: allocating {len} x {} bytes on the GPU: {e}",
                std::mem::size_of::<T>()
            ))
        };
        // SAFETY: the caller's kernel writes every element before anything reads it.
        let mut out = unsafe { stream.alloc::<T>(len) }.map_err(oom)?;
        if super::poison_outputs() && len > 0 {
            let bytes = len * std::mem::size_of::<T>();
            let (ptr, _sync) = out.device_ptr_mut(stream);
            // SAFETY: `ptr` addresses `bytes` bytes of the allocation just made on this stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream())
            }
            .map_err(oom)?;
        }
        Ok(out)
    }

    /// A 1-d launch of `blocks` blocks of `threads` threads with `smem` bytes of dynamic shared memory.
    pub fn launch_config(blocks: u32, threads: u32, smem: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: smem,
        }
    }
}
