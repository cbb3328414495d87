//! The HTTP trigger: a hyper server that routes each request to a component pool, adds Spin's
//! request headers, enforces the connection, body and time limits, and turns guest failures
//! into JSON errors.

pub mod pool;
pub mod router;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use pool::{Abandon, ComponentPool, Saturated};
use router::{RouteMatch, Router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Everything the HTTP trigger needs to answer requests.
pub struct HttpApp {
    pub router: Router,
    pub pools: BTreeMap<String, ComponentPool>,
    pub limits: HttpLimits,
}

/// What one client may cost the server before a component runs.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Open connections; more wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// To send the request line and headers (hyper answers 408 after it).
    pub header_read_timeout: Duration,
    /// To send the whole body once admitted (408 JSON after it).
    pub body_read_timeout: Duration,
    /// From arrival to response headers (504 JSON after it); see `PoolConfig::request_timeout`.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves until `shutdown` resolves, then waits (up to 10 s) for open connections to finish.
pub async fn serve(listener: TcpListener, app: Arc<HttpApp>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(app.limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_backoff = Duration::ZERO;
    loop {
        // A connection slot first: at the cap, new clients wait in the accept backlog.
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot?,
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => { accept_backoff = Duration::ZERO; pair }
                Err(e) => {
                    // Out of file descriptors and the like: retrying at once would spin.
                    accept_backoff = (accept_backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!("accept failed: {e}; retrying in {accept_backoff:?}");
                    tokio::time::sleep(accept_backoff).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written as headers then body: without this, Nagle + delayed ACK add ~40 ms.
        let _ = stream.set_nodelay(true);
        let header_read_timeout = app.limits.header_read_timeout;
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req, client, local).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection from {client} ended: {e}");
            }
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("gave up waiting for open connections");
        }
    }
    Ok(())
}

/// One request: route, admit, read the body, run the component, log a line — also for
/// requests whose client hung up before the answer (hyper then drops this future).
async fn handle(app: &HttpApp, req: Request<Incoming>, client: SocketAddr, local: SocketAddr) -> Response<Body> {
    struct LogLine {
        started: Instant,
        method: http::Method,
        path: String,
        status: Option<StatusCode>,
    }
    impl Drop for LogLine {
        fn drop(&mut self) {
            let ms = self.started.elapsed().as_secs_f64() * 1e3;
            match self.status {
                Some(status) => tracing::info!("{} {} {} {ms:.1}ms", self.method, self.path, status.as_u16()),
                None => tracing::info!("{} {} cancelled (client disconnected) {ms:.1}ms", self.method, self.path),
            }
        }
    }
    let mut line = LogLine { started: Instant::now(), method: req.method().clone(), path: req.uri().path().to_owned(), status: None };
    let deadline = tokio::time::Instant::now() + app.limits.request_timeout;
    let large_body = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|n| n > 1 << 20);
    let response = dispatch(app, req, client, local, deadline).await;
    line.status = Some(response.status());
    if large_body {
        // The body's buffers are free now; without this glibc keeps them and RSS stays up.
        tokio::task::spawn_blocking(crate::limits::release_freed_memory);
    }
    response
}

async fn dispatch(
    app: &HttpApp,
    req: Request<Incoming>,
    client: SocketAddr,
    local: SocketAddr,
    deadline: tokio::time::Instant,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(matched) = app.router.route(&path) else {
        return json_error(StatusCode::NOT_FOUND, format!("no route matches {path}"));
    };
    let Some(pool) = app.pools.get(matched.component) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("component {} is not loaded", matched.component));
    };
    let (mut parts, body) = req.into_parts();
    let limit = app.limits.max_body_bytes;
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return body_too_large(limit);
    }
    // Admission before the body: waiting requests hold a socket, not a buffered upload.
    let _slot = match tokio::time::timeout_at(deadline, pool.admit()).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(Saturated)) => return busy(matched.component),
        Err(_) => return timed_out(app.limits.request_timeout),
    };
    // The whole body before the guest runs: the limit is exact and a slow sender is cut off
    // at the body read timeout instead of holding an instance.
    let body_deadline = deadline.min(tokio::time::Instant::now() + app.limits.body_read_timeout);
    let body = match tokio::time::timeout_at(body_deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return body_too_large(limit),
        Ok(Err(e)) => return json_error(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}")),
        Err(_) => {
            let secs = app.limits.body_read_timeout.as_secs();
            return json_error(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {secs} s"));
        }
    };
    let full_url = format!("http://{}{}", authority(&parts.headers, local), parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    match full_url.parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "invalid request URL".into()),
    }
    add_spin_headers(&mut parts.headers, &matched, &full_url, client);

    let abandon = Arc::new(Abandon::default());
    // Fires when this future is dropped (the client hung up) or at the deadline: the worker
    // then drops the instance, which stops the guest.
    let abandon_unless_answered = AbandonOnDrop(Some(abandon.clone()));
    let body = Full::new(body).map_err(|never: Infallible| match never {}).boxed_unsync();
    let outcome = tokio::time::timeout_at(deadline, pool.handle(Request::from_parts(parts, body), abandon)).await;
    match outcome {
        Ok(Ok(response)) => {
            abandon_unless_answered.disarm();
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        Ok(Err(e)) => {
            abandon_unless_answered.disarm();
            tracing::warn!(component = matched.component, "request to {path} failed: {e:?}");
            let mut response = json_error(StatusCode::INTERNAL_SERVER_ERROR, "the component failed to handle the request".into());
            if let Ok(value) = HeaderValue::from_str(matched.component) {
                response.headers_mut().insert("x-kana-component", value);
            }
            response
        }
        Err(_) => timed_out(app.limits.request_timeout),
    }
}

struct AbandonOnDrop(Option<Arc<Abandon>>);

impl AbandonOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(abandon) = self.0.take() {
            abandon.abandon();
        }
    }
}

/// The `Host` header when it is a plain authority (`host[:port]`), else the listening address:
/// a path or user info smuggled into `Host` must not change the URL the guest sees.
fn authority(headers: &http::HeaderMap, local: SocketAddr) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .filter(|a| !a.as_str().contains('@'))
        .map_or_else(|| local.to_string(), |a| a.as_str().to_owned())
}

/// The headers Spin adds to every request it routes to a component; client-sent `spin-*`
/// headers are removed first, so a guest can trust them.
fn add_spin_headers(headers: &mut http::HeaderMap, matched: &RouteMatch<'_>, full_url: &str, client: SocketAddr) {
    let forged: Vec<HeaderName> = headers.keys().filter(|name| name.as_str().starts_with("spin-")).cloned().collect();
    for name in forged {
        headers.remove(name);
    }
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    };
    set("spin-full-url", full_url);
    set("spin-path-info", &matched.path_info);
    set("spin-matched-route", matched.raw_route);
    set("spin-raw-component-route", matched.raw_route);
    set("spin-component-route", &matched.component_route);
    set("spin-base-path", "/");
    set("spin-client-addr", &client.to_string());
    for (name, value) in &matched.params {
        set(&format!("spin-path-match-{name}"), value);
    }
}

fn body_too_large(limit: usize) -> Response<Body> {
    let mut response = json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes"));
    *response.body_mut() = json_body(&serde_json::json!({
        "error": format!("request body exceeds {limit} bytes"),
        "max_body_bytes": limit,
    }));
    response
}

fn busy(component: &str) -> Response<Body> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, format!("{component} is at capacity; retry shortly"));
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn timed_out(limit: Duration) -> Response<Body> {
    json_error(StatusCode::GATEWAY_TIMEOUT, format!("no response within the request time limit of {} s", limit.as_secs()))
}

pub fn json_error(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(json_body(&serde_json::json!({ "error": message })));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_body(value: &serde_json::Value) -> Body {
    Full::new(Bytes::from(value.to_string())).map_err(|never: Infallible| match never {}).boxed_unsync()
}
