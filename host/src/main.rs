//! `kana-host up --listen 127.0.0.1:3000 --manifest spin.toml --state-dir .spin`

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kana_host::app::{UpOptions, up};
use kana_host::http::HttpLimits;
use kana_host::http::pool::PoolConfig;
use kana_host::limits::MemoryPolicy;

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
        /// Spin's runtime config: `[key_value_store.<label>]` tables of `type = "redis"` (`url`)
        /// or `type = "spin"` (SQLite `path`) [default: every store in <state-dir>/sqlite_key_value.db].
        #[arg(long)]
        runtime_config_file: Option<PathBuf>,
        /// Larger request bodies are refused with 413.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Requests handled at once per component [default: number of CPUs].
        #[arg(long)]
        instances: Option<usize>,
        /// Requests that may wait for a busy component; more are answered 503 with Retry-After.
        #[arg(long, default_value_t = 64)]
        max_queued: usize,
        /// Seconds an instance may sit idle before it is dropped (its memory returned).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        instance_idle_secs: u64,
        /// Requests one instance serves before a fresh one replaces it.
        #[arg(long, default_value_t = 100_000)]
        max_requests_per_instance: usize,
        /// Seconds from a request's arrival to its response headers (504 after).
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout_secs: u64,
        /// Seconds a component may keep working after its last response (a job run after its
        /// 202) before its instance is dropped.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
        background_timeout_secs: u64,
        /// Seconds a client has to send its request headers.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        header_timeout_secs: u64,
        /// Seconds a client has to send its body once the request is admitted (408 after).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        body_timeout_secs: u64,
        /// Open connections at once; more wait in the accept backlog.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
        max_connections: u64,
        /// A component instance's linear memory may not grow past this many MiB.
        #[arg(long, default_value_t = MemoryPolicy::default().max_bytes >> 20)]
        max_instance_memory_mib: usize,
        /// An instance whose memory grew past this many MiB is replaced after its requests.
        #[arg(long, default_value_t = MemoryPolicy::default().recycle_above_bytes >> 20)]
        recycle_instance_memory_mib: usize,
        /// Seconds a cron tick may run before it is stopped.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        cron_timeout_secs: u64,
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
        runtime_config_file,
        max_body_bytes,
        instances,
        max_queued,
        max_requests_per_instance,
        instance_idle_secs,
        request_timeout_secs,
        background_timeout_secs,
        header_timeout_secs,
        body_timeout_secs,
        max_connections,
        max_instance_memory_mib,
        recycle_instance_memory_mib,
        cron_timeout_secs,
    } = Cli::parse().command;
    let request_timeout = Duration::from_secs(request_timeout_secs);
    let pool = PoolConfig {
        max_queued,
        max_requests_per_instance,
        request_timeout,
        background_timeout: Duration::from_secs(background_timeout_secs),
        idle_timeout: Duration::from_secs(instance_idle_secs),
        ..PoolConfig::default()
    };
    let options = UpOptions {
        listen,
        manifest,
        state_dir,
        cache_dir,
        runtime_config: runtime_config_file,
        http: HttpLimits {
            max_body_bytes,
            max_connections: max_connections as usize,
            header_read_timeout: Duration::from_secs(header_timeout_secs),
            body_read_timeout: Duration::from_secs(body_timeout_secs),
            request_timeout,
        },
        pool: PoolConfig { instances: instances.unwrap_or(pool.instances), ..pool },
        memory: MemoryPolicy {
            max_bytes: max_instance_memory_mib << 20,
            recycle_above_bytes: recycle_instance_memory_mib << 20,
        },
        cron_timeout: Duration::from_secs(cron_timeout_secs),
    };
    tokio::runtime::Runtime::new()?.block_on(up(options))
}
