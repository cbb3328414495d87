//! What one guest instance may use: a linear-memory cap (wasmtime `ResourceLimiter`) that also
//! flags instances grown past a recycle threshold, and the epoch ticker that makes running wasm
//! yield so deadlines and cancellations are checked while a guest computes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter};

/// How often the epoch advances; running wasm yields to the async runtime at each tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`] for the process' life.
pub fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning a thread at start-up");
}

/// Hands memory glibc's malloc holds free back to the kernel. Cranelift compiles, dropped
/// instances and large request bodies leave hundreds of MB free inside the heap otherwise,
/// which RSS keeps counting.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the kernel to reclaim the pages of compiled components mapped from the compile cache
/// (`*.cwasm`, ~40 MiB touched per tract component). They are file pages (and wasmtime's
/// relocated copies): reclaiming them loses nothing, the next call faults them back in. Called
/// when an idle instance is dropped, so a quiet host's RSS returns near its start-up size.
pub fn release_idle_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
        for line in maps.lines().filter(|line| line.ends_with(".cwasm")) {
            let Some((start, end)) = line.split_once(' ').and_then(|(range, _)| range.split_once('-')) else { continue };
            let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
            // SAFETY: MADV_PAGEOUT is a reclaim hint: it never changes what the memory holds.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// Memory rules for every instance of a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPolicy {
    /// A linear memory may not grow past this: the growth fails and the guest traps (Rust
    /// guests abort on allocation failure), so one request cannot take the host down.
    pub max_bytes: usize,
    /// An instance whose memory grew past this takes no new requests once its current ones
    /// finish, and is dropped: wasm memory never shrinks, so this is how RSS comes back.
    pub recycle_above_bytes: usize,
}

impl Default for MemoryPolicy {
    /// Sized from the shipped components' measured need (README "Limits"): a predict instance
    /// peaks at 24–27 MiB on 1,000 images with any shipped model; a jobs or batch-cron instance
    /// decoding a 38,547-image batch (the K49 test set) grows to ~400 MiB, and is recycled.
    fn default() -> Self {
        MemoryPolicy { max_bytes: 1024 << 20, recycle_above_bytes: 128 << 20 }
    }
}

/// Table elements are pointers; no component of ours needs more than a few thousand.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The per-store limiter; `oversized` is shared with the worker that decides on recycling.
pub struct GuestMemory {
    policy: MemoryPolicy,
    oversized: Arc<AtomicBool>,
    peak_bytes: usize,
}

impl GuestMemory {
    pub fn new(policy: MemoryPolicy) -> Self {
        GuestMemory { policy, oversized: Arc::new(AtomicBool::new(false)), peak_bytes: 0 }
    }

    /// Becomes true once any memory of the instance grew past the recycle threshold.
    pub fn oversized_flag(&self) -> Arc<AtomicBool> {
        self.oversized.clone()
    }

    /// The largest size any linear memory of this instance reached.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}

impl ResourceLimiter for GuestMemory {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.policy.max_bytes {
            tracing::warn!(
                "guest memory growth {} MiB → {} MiB refused (limit {} MiB)",
                current >> 20,
                desired >> 20,
                self.policy.max_bytes >> 20
            );
            self.oversized.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        if desired > self.policy.recycle_above_bytes {
            self.oversized.store(true, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_cap_is_refused_and_past_the_threshold_flags_recycling() {
        let mut memory = GuestMemory::new(MemoryPolicy { max_bytes: 100, recycle_above_bytes: 50 });
        let flag = memory.oversized_flag();
        assert!(memory.memory_growing(0, 40, None).unwrap());
        assert!(!flag.load(Ordering::Relaxed));
        assert!(memory.memory_growing(40, 60, None).unwrap());
        assert!(flag.load(Ordering::Relaxed), "past the recycle threshold");
        assert!(!memory.memory_growing(60, 101, None).unwrap(), "past the cap");
        assert_eq!(memory.peak_bytes(), 60);
    }
}
