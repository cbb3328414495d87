//! Instance reuse for one HTTP component, the way Spin serves WASIp3 components: built on
//! wasmtime-wasi-http's `ProxyHandler`, where each worker owns one `Store` + instance inside a
//! long-lived `run_concurrent` loop. So guest globals (a loaded model) survive across requests,
//! and guest tasks spawned by a handler keep running after its response went out.
//!
//! Policy: an instance takes up to 16 requests at a time (Spin's figure) and is recycled after
//! `max_requests_per_instance` requests or when it traps. At most `instances` requests per
//! component are admitted at once, which also bounds how many instances exist.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    self, HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};

use crate::state::{ComponentEnv, HostState};

/// Set once the server stops: the runtime then cancels every worker, which is not an error.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Marks the host as stopping, so workers cancelled by the runtime's shutdown log quietly.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
}

/// Spin reuses one p3 instance for up to 16 concurrent requests.
const CONCURRENT_REQUESTS_PER_INSTANCE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Requests admitted at once per component (default: number of CPUs).
    pub instances: usize,
    /// Requests one instance serves before it is replaced by a fresh one.
    pub max_requests_per_instance: usize,
    /// Time a guest has to produce response headers.
    pub request_timeout: Duration,
}

/// A component ready to serve HTTP requests.
pub struct ComponentPool {
    handler: ProxyHandler<PoolState>,
    admission: Semaphore,
}

impl ComponentPool {
    pub fn new(engine: Engine, pre: ProxyPre<HostState>, env: ComponentEnv, config: PoolConfig) -> Self {
        let admission = Semaphore::new(config.instances.max(1));
        Self { handler: ProxyHandler::new(PoolState { engine, pre, env, config }), admission }
    }

    /// Runs one request through a (reused) instance; an error means no response was produced.
    pub async fn handle(&self, request: handler::Request) -> wasmtime::Result<handler::Response> {
        let _permit = self.admission.acquire().await.map_err(wasmtime::Error::new)?;
        self.handler.handle((), request).await
    }
}

struct PoolState {
    engine: Engine,
    pre: ProxyPre<HostState>,
    env: ComponentEnv,
    config: PoolConfig,
}

impl HandlerState for PoolState {
    type StoreData = HostState;
    type WorkerExpiration = NeverExpires;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, NeverExpires, Worker>> {
        let state = self.env.new_state().map_err(wasmtime::Error::from_anyhow)?;
        let mut store = Store::new(&self.engine, state);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        tracing::debug!(component = %self.env.id, "new instance");
        Ok(Instance {
            store,
            proxy,
            view: <HostState as WasiHttpView>::http,
            expiration: NeverExpires,
            state: Worker { component: self.env.id.clone(), config: self.config },
        })
    }
}

/// Instances are not expired on a clock: an idle instance keeps its loaded state.
struct NeverExpires;

impl WorkerExpiration for NeverExpires {
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>, _: WorkerStatus, _: Instant) -> Poll<()> {
        Poll::Pending
    }
}

struct Worker {
    component: String,
    config: PoolConfig,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.config.max_requests_per_instance {
            ShouldAccept::Never
        } else if concurrent >= CONCURRENT_REQUESTS_PER_INSTANCE {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, HostState>,
        _: (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(tokio::time::sleep(self.config.request_timeout))
    }

    fn drop(&self, _store: Store<HostState>, result: wasmtime::Result<()>) {
        match result {
            Ok(()) => tracing::debug!(component = %self.component, "instance retired"),
            Err(e) if SHUTTING_DOWN.load(Ordering::Relaxed) => {
                tracing::debug!(component = %self.component, "instance stopped at shutdown: {e}")
            }
            Err(e) => tracing::warn!(component = %self.component, "instance dropped after error: {e:?}"),
        }
    }
}
