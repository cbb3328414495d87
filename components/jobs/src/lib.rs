//! Jobs HTTP component: `POST /async_predict/{model}`, `POST /schedule/{model}?execute_at=…`,
//! `GET /tasks?status=&limit=&after=`, `GET /tasks/{id}`, `GET /tasks/{id}/results`.
//!
//! Uploads are validated with kana-inference's decoder before they are stored, so a bad upload is
//! a 4xx now rather than a failed job later. An async job is run in a task spawned after the
//! response (WASIp3 lets an instance keep working once its handler has returned) for one turn of
//! at most `run_budget`; the `batch-cron` component continues it, or runs it if that run never
//! finishes. Store errors answer 503 (507 when the store is full) and a full queue 429, all JSON
//! with `Retry-After`.

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use kana_inference::{InputError, decode_upload};
use std::sync::atomic::{AtomicUsize, Ordering};

use kana_jobs::faults::{self, ErrorReply};
use kana_jobs::spin::{InferencePredictor, SpinClock, SpinKv, limits, load_config, registry};
use kana_jobs::{Config, Jobs, Kind, NewJob, Status, SubmitError, Trigger, schedule};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Request};

type Response = http::Response<Full<Bytes>>;

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = req.into_body().collect().await?.to_bytes();

    let config = match load_config().await {
        Ok(config) => config,
        Err(e) => return Ok(error(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": format!("bad configuration: {e:#}") }))),
    };
    let request = Incoming { method: &method, path: &path, query: &query, content_type: content_type.as_deref(), body: &body };
    Ok(match route(request, &config).await {
        Ok(response) => response,
        // The routes answer bad input themselves: what escapes is the store failing.
        Err(e) => {
            kana_inference::log_line(&format!("jobs: {method} {path}: store error: {e:#}"));
            fault(faults::store_fault(&e))
        }
    })
}

struct Incoming<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a [(String, String)],
    content_type: Option<&'a str>,
    body: &'a [u8],
}

async fn route(req: Incoming<'_>, config: &Config) -> anyhow::Result<Response> {
    let Incoming { method, path, query, content_type, body } = req;
    let kv = SpinKv::open_default().await?;
    let jobs = Jobs { kv: &kv, clock: &SpinClock, config };
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    Ok(match (method, segments.as_slice()) {
        (&Method::POST, ["async_predict", model]) => {
            let upload = Upload { model, content_type, body };
            submit(&jobs, upload, Kind::Async, None).await?
        }
        (&Method::POST, ["schedule", model]) => {
            match schedule::parse_execute_at(param("execute_at"), Utc::now(), config.max_horizon) {
                Ok(at) => {
                    let upload = Upload { model, content_type, body };
                    submit(&jobs, upload, Kind::Scheduled, Some(at)).await?
                }
                Err(e) => {
                    let status = match e {
                        schedule::ScheduleError::Missing | schedule::ScheduleError::Unparseable(_) => StatusCode::BAD_REQUEST,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    };
                    error(status, json!({ "error": e.to_string(), "kind": "bad_execute_at" }))
                }
            }
        }
        (&Method::GET, ["tasks"]) if !config.list_tasks => error(StatusCode::NOT_FOUND, json!({
            "error": "listing tasks is disabled; set the Spin variable jobs_list_tasks=true to enable it (operators only)",
            "kind": "listing_disabled",
        })),
        (&Method::GET, ["tasks"]) => list(&jobs, param("status"), param("limit"), param("after")).await?,
        (&Method::GET, ["tasks", id]) => match jobs.get(id).await? {
            Some(job) => {
                let mut view = job.summary();
                view["results"] = jobs.results(&job).await?.unwrap_or_else(|| json!([]));
                json_response(StatusCode::OK, &view)
            }
            None => unknown_task(id),
        },
        (&Method::GET, ["tasks", id, "results"]) => match jobs.get(id).await? {
            Some(job) => match jobs.results(&job).await? {
                Some(results) => {
                    let document = json!({ "model": job.model, "task_id": job.task_id, "results": results });
                    let mut response = json_response(StatusCode::OK, &document);
                    let disposition = format!("attachment; filename=\"{}.json\"", job.task_id);
                    response.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition)?);
                    response
                }
                None => error(StatusCode::CONFLICT, json!({
                    "error": format!("task {id} has no results: it is {}", job.summary()["status"].as_str().unwrap_or("")),
                    "status": job.status,
                    "task_id": job.task_id,
                })),
            },
            None => unknown_task(id),
        },
        (_, ["async_predict" | "schedule", _]) => method_not_allowed("POST"),
        (_, ["tasks"] | ["tasks", _] | ["tasks", _, "results"]) => method_not_allowed("GET"),
        _ => error(StatusCode::NOT_FOUND, json!({ "error": format!("no such endpoint: {method} {path}") })),
    })
}

struct Upload<'a> {
    model: &'a str,
    content_type: Option<&'a str>,
    body: &'a [u8],
}

/// Validates an upload, stores it as a job and answers 202; async jobs then run in the background.
async fn submit(jobs: &Jobs<'_, SpinKv, SpinClock>, upload: Upload<'_>, kind: Kind, execute_at: Option<chrono::DateTime<Utc>>) -> anyhow::Result<Response> {
    if let Err(e) = jobs.check_size(upload.body.len()) {
        return Ok(too_large(jobs.config, &e));
    }
    let Some(model) = registry().get(upload.model) else {
        return Ok(input_error(&InputError::UnknownModel(upload.model.to_owned())));
    };
    let [_, height, width] = model.card.input.shape;
    if let Err(e) = decode_upload(upload.content_type, upload.body, height, width, &limits(jobs.config)) {
        return Ok(input_error(&e));
    }
    let new = NewJob {
        model: upload.model,
        content_type: upload.content_type.unwrap_or(""),
        body: upload.body,
        kind,
        execute_at,
    };
    let job = match jobs.submit(new).await {
        Ok(job) => job,
        Err(e @ SubmitError::TooLarge { .. }) => return Ok(too_large(jobs.config, &e)),
        Err(SubmitError::QueueFull(queued)) => {
            return Ok(fault(faults::queue_full(queued, jobs.config.max_queued_jobs, jobs.config.max_queued_bytes)));
        }
        Err(SubmitError::Store(e)) => return Err(e),
    };
    let status_url = format!("/tasks/{}", job.task_id);
    let mut body = json!({ "task_id": job.task_id, "model": job.model, "status": job.status, "status_url": status_url });
    if kind == Kind::Scheduled {
        let at = kana_jobs::job::timestamp(job.execute_at);
        body["execute_at"] = json!(at);
        body["message"] = json!(format!("Batch prediction task scheduled at {at}"));
    } else {
        spawn_run(job.task_id.clone(), jobs.config.clone());
    }
    let mut response = json_response(StatusCode::ACCEPTED, &body);
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&status_url)?);
    Ok(response)
}

/// Runs of spawned jobs going on in this instance. They share its one thread with its requests,
/// so running several at once only makes every request wait longer (25 at once delayed
/// submissions by up to a minute): one runs, the others wait their turn.
static SPAWNED_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Runs the job for one turn after the response has gone out. A run that cannot start within
/// `run_budget`, or an instance that dies first, leaves the job to cron.
fn spawn_run(task_id: String, config: Config) {
    spin_sdk::wasip3::spawn(async move {
        let give_up_at = Utc::now() + config.run_budget;
        // Single-threaded: nothing runs between this check and the increment.
        while SPAWNED_RUNNING.load(Ordering::Relaxed) > 0 {
            if Utc::now() >= give_up_at {
                return;
            }
            spin_sdk::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        SPAWNED_RUNNING.fetch_add(1, Ordering::Relaxed);
        let run = async {
            let kv = SpinKv::open_default().await?;
            let jobs = Jobs { kv: &kv, clock: &SpinClock, config: &config };
            let predictor = InferencePredictor { registry: registry(), limits: limits(&config) };
            let owner = kana_jobs::job::new_owner_id();
            jobs.run(&task_id, &owner, Trigger::Submitted, &predictor).await
        };
        let outcome = run.await;
        SPAWNED_RUNNING.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = outcome {
            kana_inference::log_line(&format!("async job {task_id} failed to run: {e:#}"));
        }
    });
}

async fn list(jobs: &Jobs<'_, SpinKv, SpinClock>, status: Option<&str>, limit: Option<&str>, after: Option<&str>) -> anyhow::Result<Response> {
    let status = match status.map(|s| Status::parse(s).ok_or(s)).transpose() {
        Ok(status) => status,
        Err(bad) => {
            return Ok(error(StatusCode::BAD_REQUEST, json!({
                "error": format!("unknown status '{bad}'"),
                "expected": "pending, running, done or failed",
            })));
        }
    };
    let limit = match limit.map(str::parse::<usize>).transpose() {
        Ok(limit) if limit.is_none_or(|l| (1..=500).contains(&l)) => limit.unwrap_or(50),
        _ => return Ok(error(StatusCode::BAD_REQUEST, json!({ "error": "limit must be an integer from 1 to 500" }))),
    };
    let page = jobs.list(status, after, limit).await?;
    let tasks: Vec<Value> = page.jobs.iter().map(|j| j.summary()).collect();
    let next_url = page.next.as_ref().map(|after| {
        let mut url = format!("/tasks?limit={limit}&after={after}");
        if let Some(status) = status {
            url.push_str(&format!("&status={}", json!(status).as_str().unwrap_or("")));
        }
        url
    });
    Ok(json_response(StatusCode::OK, &json!({ "tasks": tasks, "next": page.next, "next_url": next_url })))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, body: Value) -> Response {
    json_response(status, &body)
}

fn fault(reply: ErrorReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = json_response(status, &reply.body);
    if let Some(seconds) = reply.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn input_error(e: &InputError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &serde_json::to_value(e.body()).unwrap_or_else(|_| json!({ "error": e.to_string() })))
}

fn too_large(config: &Config, e: &SubmitError) -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": e.to_string(), "kind": "body_too_large", "max_input_bytes": config.max_input_bytes }))
}

fn unknown_task(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, json!({ "error": format!("unknown task id '{id}'"), "kind": "unknown_task" }))
}

fn method_not_allowed(allowed: &'static str) -> Response {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, json!({ "error": format!("use {allowed}") }));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}
