//! wgpu plumbing: adapter listing and selection (`--backend`, `--adapter`), the device/queue pair
//! every kernel takes, and buffer helpers. Knows nothing of kernels (`crate::kernels` builds on it).

use anyhow::{Context, Result, bail};
use wgpu::util::DeviceExt;

/// An opened adapter: what every kernel wrapper takes.
#[derive(Clone, Debug)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Parses a `--backend` name (everything but `cpu`, which is not a wgpu backend).
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" => wgpu::Backends::VULKAN,
        "metal" => wgpu::Backends::METAL,
        "dx12" => wgpu::Backends::DX12,
        "gl" => wgpu::Backends::GL,
        "all" => wgpu::Backends::all(),
        other => bail!("unknown backend {other:?} (vulkan|metal|dx12|gl|cpu)"),
    })
}

/// Every adapter wgpu finds on the enabled backends.
pub fn list_adapters(backends: wgpu::Backends) -> Vec<wgpu::AdapterInfo> {
    pollster::block_on(instance(backends).enumerate_adapters(backends)).iter().map(|a| a.get_info()).collect()
}

/// One line per adapter: backend, name, type.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{:?}\t{}\t{:?}", info.backend, info.name, info.device_type)
}

/// Opens the first adapter on `backends` whose name contains `adapter` (case-insensitive), or
/// wgpu's high-performance default when no substring is given. Discrete GPUs win over
/// integrated, and real GPUs over software rasterisers, when several match.
pub fn open(backends: wgpu::Backends, adapter: Option<&str>) -> Result<Gpu> {
    let inst = instance(backends);
    let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
    if let Some(sub) = adapter {
        let sub = sub.to_ascii_lowercase();
        adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&sub));
    }
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    adapters.sort_by_key(rank);
    let Some(adapter) = adapters.into_iter().next() else {
        let known: Vec<String> = list_adapters(wgpu::Backends::all()).iter().map(describe).collect();
        bail!("no wgpu adapter matches (backends {backends:?}, adapter {adapter:?}); found: {known:?}");
    };
    let info = adapter.get_info();
    // Ask for what the adapter offers: big activations need large storage bindings.
    let limits = adapter.limits();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("kana-trainer"),
        // Timestamps let `kernels::profile` time dispatches on the device itself.
        required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
        required_limits: limits,
        ..Default::default()
    }))
    .with_context(|| format!("opening {}", describe(&info)))?;
    Ok(Gpu { device, queue, info })
}

impl Gpu {
    /// A storage buffer initialised with `data` (readable back, writable from the host).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let contents: &[u8] = bytemuck::cast_slice(data);
        if contents.is_empty() {
            return self.zeros(label, 4);
        }
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// A zeroed storage buffer of `bytes` (rounded up to 4).
    pub fn zeros(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer with kernel parameters (u32 words; f32 passed as bits), padded to 16 bytes.
    pub fn uniform(&self, label: &str, words: &[u32]) -> wgpu::Buffer {
        let mut padded = words.to_vec();
        padded.resize(words.len().next_multiple_of(4).max(4), 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Copies `bytes` bytes of `src` from `offset` back to the host (blocking).
    pub fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Vec<u8> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map readback buffer"));
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("device lost");
        let data = staging.get_mapped_range(..).expect("mapped").to_vec();
        staging.unmap();
        data
    }

    pub fn read_f32(&self, src: &wgpu::Buffer) -> Vec<f32> {
        bytemuck::cast_slice(&self.read_bytes(src, 0, src.size())).to_vec()
    }

    pub fn read_u32(&self, src: &wgpu::Buffer) -> Vec<u32> {
        bytemuck::cast_slice(&self.read_bytes(src, 0, src.size())).to_vec()
    }
}
