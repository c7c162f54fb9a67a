//! Keeping freed tensor buffers inside the process.
//!
//! candle allocates every op's output afresh (and in a backward pass also the contiguous copy of
//! each incoming gradient and every accumulated gradient). glibc serves blocks above its mmap
//! threshold (128 KiB at start, adapting up to 32 MiB) with fresh `mmap`s and hands a freed heap
//! top back to the kernel beyond its trim threshold, so each training step page-faults its whole
//! working set back in: 20–30% of the CPU attention forward+backward at l = 128 (docs/attention.md).
//! Fixing both thresholds keeps those pages mapped and reused.

/// Largest mmap threshold glibc accepts on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// How much free memory at the heap's top is kept rather than returned to the kernel.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Tunes the C allocator for tensor workloads: blocks up to 32 MiB come from the heap, and up to
/// 1 GiB of freed heap stays mapped. Call once at start-up, before spawning threads (the `realm`
/// binary and the benches do). Returns whether the allocator took the settings: always false
/// where the C library is not glibc.
pub fn tune_for_tensors() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are in glibc's range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::tune_for_tensors(), glibc);
    }
}
