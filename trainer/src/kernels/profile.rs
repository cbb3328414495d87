//! Where a recorded step spends its time: every dispatch timed on its own, then summed per kernel.
//! GPU timestamps bracket each dispatch (one compute pass each) where the device has
//! `TIMESTAMP_QUERY`; elsewhere each dispatch is submitted alone and waited for, timed by the host
//! clock (fine on lavapipe, whose dispatches take milliseconds; on a real GPU the submit overhead
//! would swamp short kernels, hence timestamps there).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::Dispatch;
use crate::gpu::Gpu;

/// How the times were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Timestamps,
    HostWallClock,
}

/// One dispatch of a profiled step.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    pub label: Arc<str>,
    pub seconds: f64,
    pub bound_bytes: u64,
    pub workgroups: [u32; 3],
}

/// Runs `dispatches` once, in order (so buffers end as a normal run leaves them), timing each.
pub fn time_dispatches(gpu: &Gpu, dispatches: &[&Dispatch]) -> (Clock, Vec<DispatchTime>) {
    let seconds = if gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        (Clock::Timestamps, timestamps(gpu, dispatches))
    } else {
        (Clock::HostWallClock, wall_clock(gpu, dispatches))
    };
    let times = dispatches
        .iter()
        .zip(seconds.1)
        .map(|(d, s)| DispatchTime { label: d.label.clone(), seconds: s, bound_bytes: d.bound_bytes, workgroups: d.workgroups() })
        .collect();
    (seconds.0, times)
}

fn wall_clock(gpu: &Gpu, dispatches: &[&Dispatch]) -> Vec<f64> {
    let wait = || gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("device lost");
    wait();
    dispatches
        .iter()
        .map(|d| {
            let start = Instant::now();
            super::submit(gpu, [*d]);
            wait();
            start.elapsed().as_secs_f64()
        })
        .collect()
}

fn timestamps(gpu: &Gpu, dispatches: &[&Dispatch]) -> Vec<f64> {
    // Two queries per dispatch; a query set holds at most 4096.
    const PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;
    let period_ns = gpu.queue.get_timestamp_period() as f64;
    let mut out = Vec::with_capacity(dispatches.len());
    for chunk in dispatches.chunks(PER_SET) {
        let count = 2 * chunk.len() as u32;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile"),
            size: 8 * count as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (i, d) in chunk.iter().enumerate() {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            };
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
            d.record(&mut pass);
        }
        enc.resolve_query_set(&set, 0..count, &resolved, 0);
        gpu.queue.submit([enc.finish()]);
        // Decoded, not cast in place: the read-back bytes need not be 8-byte aligned.
        let bytes = gpu.read_bytes(&resolved, 0, 8 * count as u64);
        let ticks: Vec<u64> = bytes.chunks_exact(8).map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes"))).collect();
        out.extend(ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period_ns * 1e-9));
    }
    out
}

/// Dispatches summed per kernel label.
#[derive(Clone, Debug)]
pub struct KernelTotal {
    pub label: Arc<str>,
    pub calls: usize,
    pub seconds: f64,
    pub bound_bytes: u64,
}

/// Per-kernel totals, slowest first.
pub fn by_kernel(times: &[DispatchTime]) -> Vec<KernelTotal> {
    let mut map: BTreeMap<&str, KernelTotal> = BTreeMap::new();
    for t in times {
        let e = map.entry(&t.label).or_insert_with(|| KernelTotal { label: t.label.clone(), calls: 0, seconds: 0.0, bound_bytes: 0 });
        e.calls += 1;
        e.seconds += t.seconds;
        e.bound_bytes += t.bound_bytes;
    }
    let mut rows: Vec<KernelTotal> = map.into_values().collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows
}

/// A Markdown table of [`by_kernel`] with shares of the total and a total row.
pub fn table(times: &[DispatchTime]) -> String {
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let bytes: u64 = times.iter().map(|t| t.bound_bytes).sum();
    let mut s = String::from("| kernel | dispatches | ms | share | MB bound |\n|---|---|---|---|---|\n");
    for r in by_kernel(times) {
        let share = if total > 0.0 { 100.0 * r.seconds / total } else { 0.0 };
        s += &format!("| {} | {} | {:.1} | {:.1}% | {:.1} |\n", r.label, r.calls, r.seconds * 1e3, share, r.bound_bytes as f64 / 1e6);
    }
    s += &format!("| **total** | {} | {:.1} | 100% | {:.1} |\n", times.len(), total * 1e3, bytes as f64 / 1e6);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::test_gpu;
    use crate::kernels::elementwise::AddKernel;

    #[test]
    fn every_dispatch_is_timed_and_totals_group_by_kernel() {
        let Some(gpu) = test_gpu() else { return };
        let add = AddKernel::new(&gpu);
        let n = 1000;
        let (a, b, c) = (gpu.upload("a", &vec![1.0f32; n]), gpu.upload("b", &vec![2.0f32; n]), gpu.zeros("c", 4 * n as u64));
        let ds = [add.add(&gpu, (&a).into(), (&b).into(), (&c).into(), n), add.add(&gpu, (&c).into(), (&b).into(), (&a).into(), n)];
        let (_, times) = time_dispatches(&gpu, &ds.iter().collect::<Vec<_>>());
        assert_eq!(times.len(), 2);
        assert!(times.iter().all(|t| t.seconds.is_finite() && t.seconds >= 0.0 && t.bound_bytes == 3 * 4 * n as u64));
        // The dispatches really ran, in order: c = 1 + 2, then a = c + 2.
        assert_eq!(gpu.read_f32(&a)[n - 1], 5.0);
        let totals = by_kernel(&times);
        assert_eq!((totals.len(), totals[0].calls, totals[0].label.as_ref()), (1, 2, "add"));
        assert!(table(&times).contains("| add | 2 |"));
    }
}
