//! Compute kernels: each op is `<op>.wgsl` (GPU) beside `<op>.rs` (pipeline wrapper, CPU twin,
//! tests comparing the two on random data, finite-difference checks of the CPU backward).
pub mod adamw;
pub mod augment;
pub mod batchnorm;
pub mod conv2d;
pub mod dropout;
pub mod gap;
pub mod maxpool;
pub mod relu;
pub mod rng;
pub mod sgd;
pub mod softmax_xent;
pub mod bias;
pub mod elementwise;
pub mod matmul;
pub mod profile;
#[cfg(test)]
pub mod check;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::Gpu;

/// Every pipeline, compiled once per device (the shape-specialised ones when first bound).
pub struct Kernels {
    pub add: elementwise::AddKernel,
    pub adamw: adamw::AdamWKernel,
    pub augment: augment::AugmentKernel,
    pub bias: bias::BiasKernel,
    pub bn: batchnorm::BnKernel,
    pub conv: conv2d::ConvKernel,
    pub dropout: dropout::DropoutKernel,
    pub gap: gap::GapKernel,
    pub matmul: matmul::MatmulKernel,
    pub maxpool: maxpool::MaxPoolKernel,
    pub relu: relu::ReluKernel,
    pub sgd: sgd::SgdKernel,
    pub xent: softmax_xent::XentKernel,
}

impl Kernels {
    pub fn new(gpu: &Gpu) -> Self {
        Self {
            add: elementwise::AddKernel::new(gpu),
            adamw: adamw::AdamWKernel::new(gpu),
            augment: augment::AugmentKernel::new(gpu),
            bias: bias::BiasKernel::new(gpu),
            bn: batchnorm::BnKernel::new(gpu),
            conv: conv2d::ConvKernel::new(gpu),
            dropout: dropout::DropoutKernel::new(gpu),
            gap: gap::GapKernel::new(gpu),
            matmul: matmul::MatmulKernel::new(gpu),
            maxpool: maxpool::MaxPoolKernel::new(gpu),
            relu: relu::ReluKernel::new(gpu),
            sgd: sgd::SgdKernel::new(gpu),
            xent: softmax_xent::XentKernel::new(gpu),
        }
    }
}

/// Workgroup size of the 1-D kernels (WGSL `override WG`): 256 invocations is a safe, fast
/// default on desktop GPUs and lavapipe alike.
pub const WG: u32 = 256;

/// How a kernel binding is declared: every storage buffer is `read_write` in WGSL so the same
/// buffer can appear twice in a bind group without a usage conflict.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Uniform,
    Storage,
}

/// One compiled entry point of a WGSL file with an explicit bind-group layout (all bindings of
/// the file, in order, so every entry point of the file binds the same list).
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    label: Arc<str>,
}

/// A ready-to-record dispatch: pipeline, bound buffers, workgroup counts.
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// The kernel's label (profiles group by it).
    pub label: Arc<str>,
    /// Bytes of storage bound (an upper bound on what the dispatch reads and writes).
    pub bound_bytes: u64,
}

impl Dispatch {
    /// Invocation groups this dispatch launches.
    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        let [x, y, z] = self.workgroups;
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Records `dispatches` in one compute pass and submits it (does not wait for it).
pub fn submit<'a>(gpu: &Gpu, dispatches: impl IntoIterator<Item = &'a Dispatch>) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.record(&mut pass);
        }
    }
    gpu.queue.submit([enc.finish()]);
}

/// A buffer (or a 256-byte aligned range of one) passed to a kernel.
#[derive(Clone, Copy)]
pub struct Arg<'a> {
    pub buffer: &'a wgpu::Buffer,
    /// Bytes; must be a multiple of the adapter's storage offset alignment (256).
    pub offset: u64,
    pub size: Option<u64>,
}

impl<'a> From<&'a wgpu::Buffer> for Arg<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Arg { buffer, offset: 0, size: None }
    }
}

impl Kernel {
    /// Compiles `entry` of `source` with the `WG` override set to [`WG`] when the shader declares it.
    pub fn new(gpu: &Gpu, label: &str, source: &str, entry: &str, slots: &[Slot]) -> Self {
        Self::with_constants(gpu, label, source, entry, slots, &[])
    }

    /// [`Kernel::new`] with more override constants (e.g. a layer's shape, so the driver sees
    /// constant divisors and loop bounds).
    pub fn with_constants(gpu: &Gpu, label: &str, source: &str, entry: &str, slots: &[Slot], overrides: &[(&str, f64)]) -> Self {
        let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                        Slot::Storage => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        let pipeline_layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut constants = overrides.to_vec();
        if source.contains("override WG") {
            constants.push(("WG", WG as f64));
        }
        let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, zero_initialize_workgroup_memory: false },
            cache: None,
        });
        Kernel { pipeline, layout, label: label.into() }
    }

    /// Binds `args` (in binding order) for a dispatch of `workgroups`.
    pub fn bind(&self, gpu: &Gpu, args: &[Arg], workgroups: [u32; 3]) -> Dispatch {
        let entries: Vec<wgpu::BindGroupEntry> = args
            .iter()
            .enumerate()
            .map(|(i, a)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: a.buffer,
                    offset: a.offset,
                    size: a.size.and_then(wgpu::BufferSize::new),
                }),
            })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &self.layout, entries: &entries });
        let bound_bytes = args
            .iter()
            .filter(|a| a.buffer.usage().contains(wgpu::BufferUsages::STORAGE))
            .map(|a| a.size.unwrap_or(a.buffer.size() - a.offset))
            .sum();
        Dispatch { pipeline: self.pipeline.clone(), bind_group, workgroups, label: self.label.clone(), bound_bytes }
    }
}

/// One entry point of a WGSL file compiled once per set of override constants (a layer's
/// shape), on first use: the driver then sees constant divisors and loop bounds.
pub struct Specialized {
    label: &'static str,
    source: &'static str,
    entry: &'static str,
    slots: &'static [Slot],
    cache: Mutex<HashMap<Constants, Arc<Kernel>>>,
}

/// Override constants by name, values as f64 bits (a hashable cache key).
type Constants = Vec<(&'static str, u64)>;

impl Specialized {
    pub fn new(label: &'static str, source: &'static str, entry: &'static str, slots: &'static [Slot]) -> Self {
        Self { label, source, entry, slots, cache: Mutex::default() }
    }

    /// Binds `args` to the pipeline compiled with `constants` (compiling it the first time).
    pub fn bind(&self, gpu: &Gpu, constants: &[(&'static str, f64)], args: &[Arg], workgroups: [u32; 3]) -> Dispatch {
        let key = constants.iter().map(|&(name, v)| (name, v.to_bits())).collect();
        let kernel = self
            .cache
            .lock()
            .expect("pipeline cache")
            .entry(key)
            .or_insert_with(|| Arc::new(Kernel::with_constants(gpu, self.label, self.source, self.entry, self.slots, constants)))
            .clone();
        kernel.bind(gpu, args, workgroups)
    }
}

/// Workgroups for `n` invocations of a 1-D kernel; large counts wrap into the y dimension
/// (kernels index with `gid.x + gid.y * 65535 * WG`).
pub fn groups_1d(n: usize) -> [u32; 3] {
    let groups = (n as u32).div_ceil(WG);
    if groups <= 65535 { [groups, 1, 1] } else { [65535, groups.div_ceil(65535), 1] }
}

/// f32 as a uniform word.
pub fn f(v: f32) -> u32 {
    v.to_bits()
}
