//! The HTTP trigger: a hyper server that routes each request to a component pool, adds Spin's
//! request headers, enforces the body limit and turns guest failures into JSON errors.

pub mod pool;
pub mod router;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use pool::ComponentPool;
use router::{RouteMatch, Router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Everything the HTTP trigger needs to answer requests.
pub struct HttpApp {
    pub router: Router,
    pub pools: BTreeMap<String, ComponentPool>,
    pub max_body_bytes: usize,
}

/// Serves until `shutdown` resolves, then waits (up to 10 s) for open connections to finish.
pub async fn serve(listener: TcpListener, app: Arc<HttpApp>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
            },
            () = &mut shutdown => break,
        };
        // Responses are written as headers then body: without this, Nagle + delayed ACK add ~40 ms.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req, client, local).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection from {client} ended: {e}");
            }
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

/// One request: route, check the body, run the component, log a line.
async fn handle(app: &HttpApp, req: Request<Incoming>, client: SocketAddr, local: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = dispatch(app, req, client, local).await;
    tracing::info!("{method} {path} {} {:.1}ms", response.status().as_u16(), started.elapsed().as_secs_f64() * 1e3);
    response
}

async fn dispatch(app: &HttpApp, req: Request<Incoming>, client: SocketAddr, local: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(matched) = app.router.route(&path) else {
        return json_error(StatusCode::NOT_FOUND, format!("no route matches {path}"));
    };
    let (mut parts, body) = req.into_parts();
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > app.max_body_bytes as u64) {
        return body_too_large(app.max_body_bytes);
    }
    // Bodies are read fully before the guest runs: the limit is enforced exactly, and a slow
    // client never holds an instance.
    let body = match Limited::new(body, app.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return body_too_large(app.max_body_bytes),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}")),
    };
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let authority = host.unwrap_or_else(|| local.to_string());
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let full_url = format!("http://{authority}{path_and_query}");
    match full_url.parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "invalid request URL".into()),
    }
    add_spin_headers(&mut parts.headers, &matched, &full_url, client);

    let Some(pool) = app.pools.get(matched.component) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("component {} is not loaded", matched.component));
    };
    let body = Full::new(body).map_err(|never: Infallible| match never {}).boxed_unsync();
    match pool.handle(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(|body| body.map_err(BoxError::from).boxed_unsync()),
        Err(e) => {
            tracing::warn!(component = matched.component, "request to {path} failed: {e:?}");
            let mut response = json_error(StatusCode::INTERNAL_SERVER_ERROR, "the component failed to handle the request".into());
            if let Ok(value) = HeaderValue::from_str(matched.component) {
                response.headers_mut().insert("x-kana-component", value);
            }
            response
        }
    }
}

/// The headers Spin adds to every request it routes to a component.
fn add_spin_headers(headers: &mut http::HeaderMap, matched: &RouteMatch<'_>, full_url: &str, client: SocketAddr) {
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

pub fn json_error(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(json_body(&serde_json::json!({ "error": message })));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_body(value: &serde_json::Value) -> Body {
    Full::new(Bytes::from(value.to_string())).map_err(|never: Infallible| match never {}).boxed_unsync()
}
