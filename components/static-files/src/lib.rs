//! Spin HTTP component: `GET /` and `GET /{file}` serve the files of the `web/` folder, mounted
//! read-only at `/web` (the drawing page). spin.toml routes `/...` here as the catch-all, so every
//! more specific route (`/health`, `/predict/...`, ...) still reaches its own component.
//! Thin: [`resolve`] decides which file a path names (pure, unit-tested); the handler reads it.
//! Only GET and HEAD (405 JSON otherwise); a bad path is 400 JSON, a missing file 404 JSON.

pub mod resolve;

#[cfg(target_arch = "wasm32")]
mod handler {
    use bytes::Bytes;
    use http_body_util::Full;
    use serde_json::json;
    use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};

    use crate::resolve::{MOUNT, Refusal, etag, not_modified, resolve};

    type Response = spin_sdk::http::Response<Full<Bytes>>;

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let message = format!("{} is not allowed here: the static files answer GET and HEAD", req.method());
                return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message, Some("GET, HEAD"));
            }
        };
        let path = req.uri().path();
        let target = match resolve(path) {
            Ok(target) => target,
            Err(Refusal::BadPath(why)) => return error(StatusCode::BAD_REQUEST, "bad_path", why, None),
            Err(Refusal::UnknownType(_)) => return not_found(path),
        };
        // A missing file, a folder (never listed) or an unreadable entry: all "not here".
        let Ok(bytes) = std::fs::read(format!("{MOUNT}/{}", target.relative)) else {
            return not_found(path);
        };
        let tag = etag(&bytes);
        let matched = req.headers().get("if-none-match").and_then(|v| v.to_str().ok()).is_some_and(|v| not_modified(v, &tag));
        let status = if matched { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
        let length = bytes.len();
        let body = if head || matched { Bytes::new() } else { Bytes::from(bytes) };
        let mut builder = http_response(status)
            .header("content-type", target.content_type)
            .header("cache-control", target.cache_control)
            .header("etag", tag)
            .header("x-content-type-options", "nosniff");
        if head {
            builder = builder.header("content-length", length);
        }
        Ok(builder.body(Full::new(body))?)
    }

    fn http_response(status: StatusCode) -> http::response::Builder {
        http::Response::builder().status(status)
    }

    fn not_found(path: &str) -> anyhow::Result<Response> {
        error(StatusCode::NOT_FOUND, "not_found", format!("nothing at {path}: not a route, not a file of the page"), None)
    }

    fn error(status: StatusCode, kind: &str, message: String, allow: Option<&str>) -> anyhow::Result<Response> {
        let body = json!({ "error": message, "kind": kind });
        let mut builder = http_response(status).header("content-type", "application/json");
        if let Some(allow) = allow {
            builder = builder.header("allow", allow);
        }
        Ok(builder.body(Full::new(Bytes::from(body.to_string())))?)
    }
}
