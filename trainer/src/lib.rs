//! kana-trainer: trains the classifiers described in [`arch`] on wgpu (any adapter) or on the CPU
//! reference backend, then evaluates and exports them.
pub mod arch;
pub mod checkpoint;
pub mod cli;
pub mod cli_io;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod train;
pub mod data;
pub mod metrics;
pub mod export;
pub mod report;
