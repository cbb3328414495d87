//! Jobs HTTP component: `POST /async_predict/{model}`, `POST /schedule/{model}?execute_at=…`,
//! `GET /tasks?status=&limit=&after=`, `GET /tasks/{id}`, `GET /tasks/{id}/results`,
//! `GET /tasks/{id}/sheet.png`, and
//! `POST /jobs/tick` (one batch tick, bearer token `jobs_tick_token`, for platforms without the
//! cron trigger). Thin: read the request, answer with `kana_jobs::api` (routes, statuses, bodies,
//! tested natively), and run a just-stored async job for one turn after the response
//! (`kana_jobs::spin::spawn_run`).

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full};
use kana_jobs::api;
use kana_jobs::spin::{Setup, registry, spawn_run};
use spin_sdk::http::{IntoResponse, Request};

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let text = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (content_type, authorization) = (text(header::CONTENT_TYPE), text(header::AUTHORIZATION));
    let request = api::Request { method: parts.method.as_str(), path: parts.uri.path(), query: parts.uri.query(), content_type, authorization, body: &body };
    let reply = match Setup::open().await {
        Ok(setup) => {
            let reply = api::handle(&request, &setup.jobs(), registry(), &setup.predictor()).await;
            if let Some(task_id) = &reply.run_after {
                spawn_run(task_id.clone(), setup.config);
            }
            reply
        }
        Err(e) => e.reply(&request),
    };
    if let Some(line) = &reply.log {
        kana_jobs::log_line(line);
    }
    // A contact sheet goes out as its PNG; every other answer as its JSON.
    let (content_type, body) = match reply.png {
        Some(png) => ("image/png", Bytes::from(png)),
        None => ("application/json", Bytes::from(reply.body.to_string())),
    };
    let mut response = http::Response::builder().status(reply.status).header(header::CONTENT_TYPE, content_type);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    Ok(response.body(Full::new(body))?)
}
