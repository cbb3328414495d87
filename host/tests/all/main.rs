//! Host integration tests: the real `kana-host` binary serving the real built components over
//! real HTTP. One test binary; one module per area. Other crates' areas add a `mod` line here.

mod support;

mod browser;
mod cron;
mod http_trigger;
mod key_value;
mod jobs;
mod multi_host;
mod openapi;
mod predict;
mod reliability;
mod router_fuzz;
mod sheets;
mod shipped;
mod web;
