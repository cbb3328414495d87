//! `kana-host up --listen 127.0.0.1:3000 --manifest spin.toml --state-dir .spin`

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kana_host::app::{UpOptions, up};
use kana_host::http::pool::PoolConfig;

#[derive(Parser)]
#[command(version, about = "Runs a Spin application (spin.toml) on wasmtime, like `spin up`")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application's HTTP routes and run its cron triggers.
    Up {
        /// Address to listen on; port 0 picks a free port (the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
        /// Key-value database and compile cache [default: .spin beside the manifest].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Compiled-component cache [default: <state-dir>/cache].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Larger request bodies are refused with 413.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Requests handled at once per component [default: number of CPUs].
        #[arg(long)]
        instances: Option<usize>,
        /// Requests one instance serves before a fresh one replaces it.
        #[arg(long, default_value_t = 100_000)]
        max_requests_per_instance: usize,
        /// Seconds a component has to start its response before the request fails.
        #[arg(long, default_value_t = 120)]
        request_timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KANA_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Command::Up {
        listen,
        manifest,
        state_dir,
        cache_dir,
        max_body_bytes,
        instances,
        max_requests_per_instance,
        request_timeout_secs,
    } = Cli::parse().command;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = UpOptions {
        listen,
        manifest,
        state_dir,
        cache_dir,
        max_body_bytes,
        pool: PoolConfig {
            instances: instances.unwrap_or(cpus),
            max_requests_per_instance,
            request_timeout: Duration::from_secs(request_timeout_secs),
        },
    };
    tokio::runtime::Runtime::new()?.block_on(up(options))
}
