//! kana-host: a small Spin-compatible runner on wasmtime 48. It reads the same `spin.toml` as
//! `spin up` and serves its WASIp3 HTTP components and cron components, with Spin's key-value
//! (SQLite or Redis, `runtime_config`) and variables interfaces. See `app::up` for the start-up sequence.

pub mod app;
pub mod bindings;
pub mod cron;
pub mod engine;
pub mod http;
pub mod key_value;
pub mod limits;
pub mod manifest;
pub mod runtime_config;
pub mod state;
pub mod variables;
