//! `kana-host up`: load the manifest, compile components, start the HTTP and cron triggers,
//! serve until Ctrl-C/SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::cron::CronTrigger;
use crate::engine::{Compiled, load_component, new_engine, new_linker};
use crate::http::pool::{ComponentPool, PoolConfig};
use crate::http::router::{Route, Router};
use crate::http::{HttpApp, HttpLimits, serve};
use crate::key_value::KeyValueAccess;
use crate::limits::MemoryPolicy;
use crate::manifest::Manifest;
use crate::runtime_config::RuntimeConfig;
use crate::state::ComponentEnv;
use crate::variables::{resolve_app_variables, resolve_component_variables};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub listen: SocketAddr,
    pub manifest: PathBuf,
    /// Defaults to `.spin` beside the manifest, as in Spin.
    pub state_dir: Option<PathBuf>,
    /// Defaults to `<state_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Spin's runtime config (key-value stores); None: every store in `<state_dir>`'s SQLite file.
    pub runtime_config: Option<PathBuf>,
    pub http: HttpLimits,
    pub pool: PoolConfig,
    pub memory: MemoryPolicy,
    /// A cron tick running longer is stopped and its instance replaced.
    pub cron_timeout: Duration,
}

pub async fn up(options: UpOptions) -> Result<()> {
    let started = Instant::now();
    let manifest = Manifest::load(&options.manifest)?;
    let runtime_config = options.runtime_config.as_deref().map(RuntimeConfig::load).transpose()?.unwrap_or_default();
    let state_dir = options.state_dir.clone().unwrap_or_else(|| manifest.base_dir.join(".spin"));
    std::fs::create_dir_all(&state_dir).with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    let app_variables = resolve_app_variables(&manifest.variables, |name| std::env::var(name).ok())?;
    let known_stores: Arc<BTreeSet<String>> = Arc::new(
        manifest.components.values().flat_map(|c| c.key_value_stores.iter().cloned()).chain(["default".to_owned()]).collect(),
    );
    let stores = Arc::new(runtime_config.open_stores(&known_stores, &state_dir).await?);

    let engine = new_engine()?;
    let linker = new_linker(&engine)?;
    let cache_dir = options.cache_dir.clone().unwrap_or_else(|| state_dir.join("cache"));

    // Only components some trigger uses are compiled.
    let used: BTreeSet<&str> = manifest
        .http_triggers
        .iter()
        .map(|t| t.component.as_str())
        .chain(manifest.cron_triggers.iter().map(|t| t.component.as_str()))
        .collect();
    let mut compiled: BTreeMap<String, (Component, ComponentEnv)> = BTreeMap::new();
    for id in used {
        let decl = &manifest.components[id];
        let t0 = Instant::now();
        let (component, how) = load_component(&engine, &manifest.source_path(decl), &cache_dir)?;
        let how = if how == Compiled::FromCache { "from cache" } else { "compiled" };
        tracing::info!("component {id}: {how} in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        let env = ComponentEnv {
            id: id.to_owned(),
            mounts: manifest.dir_mounts(id, decl)?,
            environment: decl.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            key_value: KeyValueAccess::with_stores(stores.clone(), decl.key_value_stores.iter().cloned().collect(), known_stores.clone()),
            variables: resolve_component_variables(&decl.variables, &app_variables)
                .with_context(|| format!("component `{id}`"))?,
            memory: options.memory,
        };
        compiled.insert(id.to_owned(), (component, env));
    }

    let routes = manifest.http_triggers.iter().map(|t| Route::parse(&t.route, &t.component)).collect::<Result<Vec<_>>>()?;
    let router = Router::new(routes)?;
    let mut pools = BTreeMap::new();
    for route in router.routes() {
        let id = &route.component;
        if pools.contains_key(id) {
            continue;
        }
        let (component, env) = &compiled[id];
        let pre = ServicePre::new(linker.instantiate_pre(component)?)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("component `{id}` does not export wasi:http/handler@0.3.0"))?;
        pools.insert(id.clone(), ComponentPool::new(engine.clone(), ProxyPre::P3(pre), env.clone(), options.pool));
    }
    let crons = manifest
        .cron_triggers
        .iter()
        .map(|t| {
            let (component, env) = &compiled[&t.component];
            CronTrigger::new(&engine, component, &t.cron_expression, env.clone(), options.cron_timeout)
        })
        .collect::<Result<Vec<_>>>()?;

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local = listener.local_addr()?;
    // Cranelift leaves hundreds of MB free in the heap after a fresh compile.
    crate::limits::release_freed_memory();
    print_banner(&manifest, &router, &crons, local, started.elapsed());

    let cron_tasks: Vec<_> = crons.into_iter().map(|c| tokio::spawn(c.run())).collect();
    let app = Arc::new(HttpApp { router, pools, limits: options.http });
    serve(listener, app, shutdown_signal()).await?;
    crate::http::pool::begin_shutdown();
    for task in cron_tasks {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// What `spin up` prints, so people (and our tests) find the address and routes.
fn print_banner(manifest: &Manifest, router: &Router, crons: &[CronTrigger], local: SocketAddr, took: Duration) {
    println!("Serving http://{local}");
    println!("Available Routes:");
    for route in router.routes() {
        let shown = route.raw.strip_suffix("/...").map(|p| format!("{p} (wildcard)")).unwrap_or_else(|| route.raw.clone());
        println!("  {}: http://{local}{shown}", route.component);
    }
    if !crons.is_empty() {
        println!("Cron Triggers:");
        for cron in crons {
            println!("  {}: `{}` (UTC)", cron.component(), cron.expression);
        }
    }
    println!("Application `{}` ready in {:.0} ms", manifest.application.name, took.as_secs_f64() * 1e3);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
