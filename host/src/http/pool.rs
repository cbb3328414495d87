//! Instance reuse for one HTTP component, the way Spin serves WASIp3 components: built on
//! wasmtime-wasi-http's `ProxyHandler`, where each worker owns one `Store` + instance inside a
//! long-lived `run_concurrent` loop. So guest globals (a loaded model) survive across requests,
//! and guest tasks spawned by a handler keep running after its response went out.
//!
//! Policy: an instance takes up to 16 requests at a time (Spin's figure) and is recycled after
//! `max_requests_per_instance` requests, when it traps, or when its memory grew past the recycle
//! threshold (`limits::MemoryPolicy`). At most `instances` requests per component run at once,
//! which also bounds how many instances exist; at most `max_queued` more wait for a slot.
//!
//! An instance idle for `idle_timeout` is dropped too, so a quiet host goes back to its
//! start-up memory.
//!
//! Time limits: the HTTP trigger answers 504 at the request deadline and marks the request
//! abandoned, as it does when the client hangs up. An instance with an abandoned request, one
//! still computing `request_timeout` after its latest request started, or one still working
//! `background_timeout` after its last response (a job run after its 202), is dropped: that is the only
//! way to stop a running guest (wasmtime has no per-task cancel yet), so its other in-flight
//! requests, if any, fail with it. Guests yield at every epoch tick, so this is checked while
//! they compute.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Sleep;
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    self, HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};

use crate::engine::new_store;
use crate::state::{ComponentEnv, HostState};

/// Set once the server stops: the runtime then cancels every worker, which is not an error.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Marks the host as stopping, so workers cancelled by the runtime's shutdown log quietly.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
}

/// Spin reuses one p3 instance for up to 16 concurrent requests.
const CONCURRENT_REQUESTS_PER_INSTANCE: usize = 16;

/// Past its time limit, an instance gets this long before it is dropped, so the trigger's own
/// deadline (which answers 504) always comes first.
const KILL_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Requests admitted at once per component (default: number of CPUs).
    pub instances: usize,
    /// Requests that may wait for a slot; more are answered 503 with `Retry-After`.
    pub max_queued: usize,
    /// Requests one instance serves before it is replaced by a fresh one.
    pub max_requests_per_instance: usize,
    /// From a request's arrival to its response headers.
    pub request_timeout: Duration,
    /// Work a guest carries on with after its last response (a job run after its 202).
    pub background_timeout: Duration,
    /// An instance idle this long is dropped, giving its memory back; the next request pays
    /// for a fresh instance (and its model load).
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PoolConfig {
            instances: cpus,
            max_queued: 64,
            max_requests_per_instance: 100_000,
            request_timeout: Duration::from_secs(120),
            background_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Set when a request's client went away or its deadline passed: its guest work is garbage.
#[derive(Default)]
pub struct Abandon {
    abandoned: AtomicBool,
    notify: Notify,
}

impl Abandon {
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if !self.is_abandoned() {
            notified.await;
        }
    }
}

/// The pool refused a request because every slot is busy and the queue is full.
#[derive(Debug)]
pub struct Saturated;

/// A component ready to serve HTTP requests.
pub struct ComponentPool {
    handler: ProxyHandler<PoolState>,
    admission: Semaphore,
    queued: AtomicUsize,
    max_queued: usize,
}

impl ComponentPool {
    pub fn new(engine: Engine, pre: ProxyPre<HostState>, env: ComponentEnv, config: PoolConfig) -> Self {
        Self {
            handler: ProxyHandler::new(PoolState { engine, pre, env, config }),
            admission: Semaphore::new(config.instances.max(1)),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
        }
    }

    /// A slot to run one request in, waiting behind at most `max_queued` others. Taken before
    /// the body is read, so a flood of uploads waits unread instead of buffered.
    pub async fn admit(&self) -> Result<SemaphorePermit<'_>, Saturated> {
        if let Ok(permit) = self.admission.try_acquire() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Saturated);
        }
        struct Dequeue<'a>(&'a AtomicUsize);
        impl Drop for Dequeue<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _dequeue = Dequeue(&self.queued);
        self.admission.acquire().await.map_err(|_| Saturated)
    }

    /// Runs one admitted request through a (reused) instance; an error means no response was
    /// produced. `abandon` is how the caller says the response is no longer wanted.
    pub async fn handle(&self, request: handler::Request, abandon: Arc<Abandon>) -> wasmtime::Result<handler::Response> {
        self.handler.handle(abandon, request).await
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
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiry, Worker>> {
        let state = self.env.new_state().map_err(wasmtime::Error::from_anyhow)?;
        let oversized = state.memory.oversized_flag();
        let mut store = new_store(&self.engine, state);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        tracing::debug!(component = %self.env.id, "new instance");
        let requests = Arc::new(Requests::default());
        Ok(Instance {
            store,
            proxy,
            view: <HostState as WasiHttpView>::http,
            expiration: Expiry {
                requests: requests.clone(),
                request_limit: self.config.request_timeout + KILL_GRACE,
                background_limit: self.config.background_timeout,
                idle_limit: self.config.idle_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                armed_for: None,
            },
            state: Worker { component: self.env.id.clone(), config: self.config, requests, oversized },
        })
    }
}

/// The requests a worker has taken, as seen from outside the guest's event loop.
#[derive(Default)]
struct Requests {
    /// Requests still wanted by someone; dead entries are pruned as new ones arrive.
    live: Mutex<Vec<Weak<Abandon>>>,
    /// One of them was abandoned.
    abandoned: AtomicBool,
}

impl Requests {
    /// Also remembers the answer, since the abandoned request itself may be gone by the time
    /// the worker logs why it was dropped.
    fn any_abandoned(&self) -> bool {
        if !self.abandoned.load(Ordering::SeqCst)
            && self.live.lock().unwrap().iter().filter_map(Weak::upgrade).any(|a| a.is_abandoned())
        {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.abandoned.load(Ordering::SeqCst)
    }
}

/// Decides, from outside the guest's event loop, when an instance must be dropped.
struct Expiry {
    requests: Arc<Requests>,
    request_limit: Duration,
    background_limit: Duration,
    idle_limit: Duration,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl WorkerExpiration for Expiry {
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, start: Instant) -> Poll<()> {
        if self.requests.any_abandoned() {
            return Poll::Ready(());
        }
        let deadline = start
            + match status {
                WorkerStatus::Requests => self.request_limit,
                WorkerStatus::PostReturn => self.background_limit,
                WorkerStatus::Idle => self.idle_limit,
            };
        if self.armed_for != Some(deadline) {
            self.sleep.as_mut().reset(deadline.into());
            self.armed_for = Some(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

struct Worker {
    component: String,
    config: PoolConfig,
    requests: Arc<Requests>,
    oversized: Arc<AtomicBool>,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = Arc<Abandon>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.config.max_requests_per_instance || self.oversized.load(Ordering::Relaxed) {
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
        abandon: Arc<Abandon>,
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        {
            let mut live = self.requests.live.lock().unwrap();
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&abandon));
        }
        let requests = self.requests.clone();
        Box::pin(async move {
            abandon.wait().await;
            requests.abandoned.store(true, Ordering::SeqCst);
        })
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        let peak_mib = store.data().memory.peak_bytes() >> 20;
        drop(store);
        crate::limits::release_freed_memory();
        match result {
            Ok(()) if self.oversized.load(Ordering::Relaxed) => {
                tracing::info!(component = %self.component, "instance recycled after its memory grew to {peak_mib} MiB")
            }
            Ok(()) => {
                crate::limits::release_idle_code();
                tracing::debug!(component = %self.component, "instance retired or idle ({peak_mib} MiB)")
            }
            Err(e) if SHUTTING_DOWN.load(Ordering::Relaxed) => {
                tracing::debug!(component = %self.component, "instance stopped at shutdown: {e}")
            }
            Err(e) if self.requests.any_abandoned() => {
                tracing::info!(component = %self.component, "instance dropped to stop an abandoned request: {e}")
            }
            Err(e) => tracing::warn!(component = %self.component, "instance dropped after error ({peak_mib} MiB): {e:?}"),
        }
    }
}
