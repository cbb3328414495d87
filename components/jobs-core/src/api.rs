//! The `jobs` component's HTTP mapping: `POST /async_predict/{model}`,
//! `POST /schedule/{model}?execute_at=…`, `GET /tasks?status=&limit=&after=`, `GET /tasks/{id}`,
//! `GET /tasks/{id}/results`, `GET /tasks/{id}/sheet.png`, and `POST /jobs/tick` (one batch
//! tick for schedulers outside Spin, behind a bearer token): routes, statuses, headers and JSON
//! bodies (and a contact sheet's PNG).
//!
//! Plain values in ([`Request`]) and out ([`Reply`]), generic over the store and the clock, so
//! native tests pin every answer; the component copies a reply into its response and, when
//! [`Reply::run_after`] names an async job, runs it after the response. Uploads are checked by an
//! [`UploadCheck`] (kana-inference's decoder in the component) before anything is stored; the
//! tick runs jobs with the [`Predictor`] `batch-cron` uses.

use kana_inference::{Images, PredictionResult, contact_sheet};
use serde_json::{Value, json};

use crate::config::Config;
use crate::faults::{self, ErrorReply};
use crate::chunks;
use crate::job::{self, Job, Kind, Status, keys};
use crate::jobs::{Jobs, NewJob, Predictor, SubmitError};
use crate::kv::{Clock, KeyValue};
use crate::schedule::{self, ScheduleError};
use crate::tick::TickReport;

/// An HTTP request as the routes need it; the body already read.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ... as sent.
    pub method: &'a str,
    /// The path without the query string, still percent-encoded.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The `Authorization` header (`POST /jobs/tick` wants `Bearer <jobs_tick_token>`).
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// An answer: status, headers besides `Content-Type: application/json` (every body is JSON but a
/// contact sheet's), the JSON body, and what the component does once it has answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// Lower-case names: `location`, `retry-after`, `allow`, `content-disposition`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    /// The id of an async job just stored: run it for one turn once the response has gone out.
    pub run_after: Option<String>,
    /// A line for the host log: a store error's details, which stay out of the answer, or what
    /// a tick did.
    pub log: Option<String>,
    /// `GET /tasks/{id}/sheet.png`: sent instead of `body`, as `image/png`.
    pub png: Option<Vec<u8>>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body, run_after: None, log: None, png: None }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of header `name` (lower case), if the reply has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

impl From<ErrorReply> for Reply {
    fn from(reply: ErrorReply) -> Self {
        let json = Reply::json(reply.status, reply.body);
        match reply.retry_after {
            Some(seconds) => json.with_header("retry-after", seconds.to_string()),
            None => json,
        }
    }
}

/// Whether an upload can run as a job: its model is served and its body decodes for that model
/// exactly as the run will decode it. Checked before anything is stored, so bad input is a 4xx
/// now rather than a failed job later.
pub trait UploadCheck {
    /// `Err` is the answer: 404 unknown model, 413, 415 or 422, as `/predict` gives them.
    fn check(&self, model: &str, content_type: Option<&str>, body: &[u8], config: &Config) -> Result<(), ErrorReply>;

    /// The upload decoded as the run decodes it, for `GET /tasks/{id}/sheet.png`; `Err` is the
    /// answer (404 when its model is no longer served).
    fn decode(&self, model: &str, content_type: Option<&str>, body: &[u8], config: &Config) -> Result<Images, ErrorReply>;
}

/// Answers one request. Every store error becomes a 503 (507 when the store is full) with
/// `Retry-After`, its details in [`Reply::log`]. `predictor` runs jobs only in `POST /jobs/tick`.
pub async fn handle<K: KeyValue, C: Clock>(
    req: &Request<'_>,
    jobs: &Jobs<'_, K, C>,
    uploads: &impl UploadCheck,
    predictor: &impl Predictor,
) -> Reply {
    match route(req, jobs, uploads, predictor).await {
        Ok(reply) => reply,
        // The routes answer bad input themselves: what escapes is the store failing.
        Err(e) => store_failed(req, &e),
    }
}

/// The answer when the store fails (or cannot be opened): 503, or 507 when it is full.
pub fn store_failed(req: &Request<'_>, e: &anyhow::Error) -> Reply {
    Reply { log: Some(format!("jobs: {} {}: store error: {e:#}", req.method, req.path)), ..faults::store_fault(e).into() }
}

/// The answer when the Spin variables do not make a valid [`Config`].
pub fn bad_config(e: &anyhow::Error) -> Reply {
    Reply::json(500, json!({ "error": format!("bad configuration: {e:#}") }))
}

async fn route<K: KeyValue, C: Clock>(
    req: &Request<'_>,
    jobs: &Jobs<'_, K, C>,
    uploads: &impl UploadCheck,
    predictor: &impl Predictor,
) -> anyhow::Result<Reply> {
    let query: Vec<(String, String)> = form_urlencoded::parse(req.query.unwrap_or("").as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();

    Ok(match (req.method, segments.as_slice()) {
        ("POST", ["async_predict", model]) => submit(jobs, uploads, req, model, Kind::Async, None).await?,
        ("POST", ["schedule", model]) => match schedule::parse_execute_at(param("execute_at"), jobs.clock.now(), jobs.config.max_horizon) {
            Ok(at) => submit(jobs, uploads, req, model, Kind::Scheduled, Some(at)).await?,
            Err(e) => {
                let status = match e {
                    ScheduleError::Missing | ScheduleError::Unparseable(_) => 400,
                    ScheduleError::InPast { .. } | ScheduleError::BeyondHorizon { .. } => 422,
                };
                Reply::json(status, json!({ "error": e.to_string(), "kind": "bad_execute_at" }))
            }
        },
        ("GET", ["tasks"]) if !jobs.config.list_tasks => Reply::json(404, json!({
            "error": "listing tasks is disabled; set the Spin variable jobs_list_tasks=true to enable it (operators only)",
            "kind": "listing_disabled",
        })),
        ("GET", ["tasks"]) => list(jobs, param("status"), param("limit"), param("after")).await?,
        ("GET", ["tasks", id]) => match jobs.get(id).await? {
            Some(job) => {
                let mut view = job.summary();
                view["results"] = jobs.results(&job).await?.unwrap_or_else(|| json!([]));
                Reply::json(200, view)
            }
            None => unknown_task(id),
        },
        ("GET", ["tasks", id, "results"]) => match jobs.get(id).await? {
            Some(job) => match jobs.results(&job).await? {
                Some(results) => {
                    let disposition = format!("attachment; filename=\"{}.json\"", job.task_id);
                    Reply::json(200, json!({ "model": job.model, "task_id": job.task_id, "results": results }))
                        .with_header("content-disposition", disposition)
                }
                None => no_results(&job),
            },
            None => unknown_task(id),
        },
        ("GET", ["tasks", id, "sheet.png"]) => match jobs.get(id).await? {
            Some(job) => sheet(jobs, uploads, &job).await?,
            None => unknown_task(id),
        },
        (_, ["jobs", "tick"]) => tick(jobs, predictor, req).await?,
        (_, ["async_predict" | "schedule", _]) => method_not_allowed("POST"),
        (_, ["tasks"] | ["tasks", _] | ["tasks", _, "results" | "sheet.png"]) => method_not_allowed("GET"),
        _ => Reply::json(404, json!({ "error": format!("no such endpoint: {} {}", req.method, req.path) })),
    })
}

/// Checks an upload, stores it as a job and answers 202; an async job is then to be run.
async fn submit<K: KeyValue, C: Clock>(
    jobs: &Jobs<'_, K, C>,
    uploads: &impl UploadCheck,
    req: &Request<'_>,
    model: &str,
    kind: Kind,
    execute_at: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<Reply> {
    if let Err(e) = jobs.check_size(req.body.len()) {
        return Ok(too_large(jobs.config, &e));
    }
    if let Err(refused) = uploads.check(model, req.content_type, req.body, jobs.config) {
        return Ok(refused.into());
    }
    let new = NewJob { model, content_type: req.content_type.unwrap_or(""), body: req.body, kind, execute_at };
    let job = match jobs.submit(new).await {
        Ok(job) => job,
        Err(e @ SubmitError::TooLarge { .. }) => return Ok(too_large(jobs.config, &e)),
        Err(SubmitError::QueueFull(queued)) => {
            return Ok(faults::queue_full(queued, jobs.config.max_queued_jobs, jobs.config.max_queued_bytes).into());
        }
        Err(SubmitError::Store(e)) => return Err(e),
    };
    let status_url = format!("/tasks/{}", job.task_id);
    let mut body = json!({ "task_id": job.task_id, "model": job.model, "status": job.status, "status_url": status_url });
    if kind == Kind::Scheduled {
        let at = job::timestamp(job.execute_at);
        body["execute_at"] = json!(at);
        body["message"] = json!(format!("Batch prediction task scheduled at {at}"));
    }
    let reply = Reply { run_after: (kind == Kind::Async).then(|| job.task_id.clone()), ..Reply::json(202, body) };
    Ok(reply.with_header("location", status_url))
}

/// `POST /jobs/tick`: one [`Jobs::tick`], what `batch-cron` runs every cron period, for
/// platforms without the cron trigger (SpinKube: a Kubernetes CronJob calls this). Without a
/// `tick_token` the route does not exist (404); a wrong or missing `Bearer` token is 401, checked
/// before anything else so that nothing about the route leaks to a caller without it.
async fn tick<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, predictor: &impl Predictor, req: &Request<'_>) -> anyhow::Result<Reply> {
    let Some(token) = &jobs.config.tick_token else {
        return Ok(Reply::json(404, json!({
            "error": "the tick route is disabled; set the Spin variable jobs_tick_token to enable it (operators only)",
            "kind": "tick_disabled",
        })));
    };
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let bearer = req.authorization.and_then(|v| v.trim().split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    if !bearer.is_some_and(|(_, given)| token.matches(given.trim())) {
        return Ok(Reply::json(401, json!({ "error": "send Authorization: Bearer <jobs_tick_token>", "kind": "unauthorized" }))
            .with_header("www-authenticate", "Bearer"));
    }
    if req.method != "POST" {
        return Ok(method_not_allowed("POST"));
    }
    // A fresh owner per tick, as in batch-cron: two ticks must not share a claim.
    let TickReport { ran, paused, deferred, lost_claims, expired, swept, orphans } = jobs.tick(&job::new_owner_id(), predictor).await?;
    let body = json!({
        "ran": ran, "paused": paused, "deferred": deferred, "lost_claims": lost_claims,
        "expired": expired, "swept": swept, "orphans": orphans,
    });
    let busy = ran + paused + deferred + expired + lost_claims > 0 || swept;
    Ok(Reply { log: busy.then(|| format!("jobs: POST /jobs/tick: {body}")), ..Reply::json(200, body) })
}

async fn list<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, status: Option<&str>, limit: Option<&str>, after: Option<&str>) -> anyhow::Result<Reply> {
    let status = match status.map(|s| Status::parse(s).ok_or(s)).transpose() {
        Ok(status) => status,
        Err(bad) => {
            return Ok(Reply::json(400, json!({
                "error": format!("unknown status '{bad}'"),
                "expected": "pending, running, done or failed",
            })));
        }
    };
    let limit = match limit.map(str::parse::<usize>).transpose() {
        Ok(limit) if limit.is_none_or(|l| (1..=500).contains(&l)) => limit.unwrap_or(50),
        _ => return Ok(Reply::json(400, json!({ "error": "limit must be an integer from 1 to 500" }))),
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
    Ok(Reply::json(200, json!({ "tasks": tasks, "next": page.next, "next_url": next_url })))
}

/// `GET /tasks/{id}/sheet.png`: a done job's contact sheet, drawn by kana-inference's renderer
/// (the one `/predict?format=png` uses) from the stored upload, decoded as the run decoded it, and
/// the stored results; the first `MAX_TILES` images only, as the `x-sheet-*` headers say.
async fn sheet<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, uploads: &impl UploadCheck, job: &Job) -> anyhow::Result<Reply> {
    let Some(results) = jobs.results(job).await? else { return Ok(no_results(job)) };
    let input = chunks::get(jobs.kv, &keys::input(&job.task_id), job.input_chunks).await?;
    // Stored as "" when the upload had no Content-Type, as in the run.
    let content_type = Some(job.content_type.as_str()).filter(|ct| !ct.is_empty());
    let images = match uploads.decode(&job.model, content_type, &input, jobs.config) {
        Ok(images) => images,
        Err(refused) => return Ok(refused.into()),
    };
    let results: Vec<PredictionResult> = serde_json::from_value(results)?;
    let drawn = contact_sheet(&job.model, &images, &results);
    let body = json!({ "task_id": job.task_id, "tiles": drawn.tiles, "images": drawn.images });
    Ok(Reply { png: Some(drawn.png), ..Reply::json(200, body) }
        .with_header("x-sheet-tiles", drawn.tiles.to_string())
        .with_header("x-sheet-images", drawn.images.to_string()))
}

fn no_results(job: &Job) -> Reply {
    Reply::json(409, json!({
        "error": format!("task {} has no results: it is {}", job.task_id, job.summary()["status"].as_str().unwrap_or("")),
        "status": job.status,
        "task_id": job.task_id,
    }))
}

fn too_large(config: &Config, e: &SubmitError) -> Reply {
    Reply::json(413, json!({ "error": e.to_string(), "kind": "body_too_large", "max_input_bytes": config.max_input_bytes }))
}

fn unknown_task(id: &str) -> Reply {
    Reply::json(404, json!({ "error": format!("unknown task id '{id}'"), "kind": "unknown_task" }))
}

fn method_not_allowed(allowed: &'static str) -> Reply {
    Reply::json(405, json!({ "error": format!("use {allowed}") })).with_header("allow", allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{MemoryKv, StoreFull};
    use crate::config::Secret;
    use crate::testing::{Echo, FaultyKv, clock, config};
    use crate::{RunOutcome, Trigger};
    use chrono::Duration;
    use futures::executor::block_on;

    /// Serves the model `cnn`; bodies starting with "bad" do not decode.
    struct Models;

    impl UploadCheck for Models {
        fn check(&self, model: &str, _content_type: Option<&str>, body: &[u8], _config: &Config) -> Result<(), ErrorReply> {
            let refuse = |status, kind| Err(ErrorReply { status, body: json!({ "error": "refused", "kind": kind }), retry_after: None });
            if model != "cnn" {
                return refuse(404, "unknown_model");
            }
            if body.starts_with(b"bad") {
                return refuse(422, "garbled");
            }
            Ok(())
        }

        /// One 28×28 image per body byte, every pixel that byte.
        fn decode(&self, model: &str, content_type: Option<&str>, body: &[u8], config: &Config) -> Result<Images, ErrorReply> {
            self.check(model, content_type, body, config)?;
            let pixels: Vec<u8> = body.iter().flat_map(|&b| [b; 28 * 28]).collect();
            Ok(Images::from_u8(body.len(), 28, 28, &pixels))
        }
    }

    /// What the real predictor stores: `/predict` result objects, here labelled by the byte.
    struct Labels;

    impl Predictor for Labels {
        type Images = Vec<u8>;
        async fn decode(&self, _job: &Job, input: Vec<u8>) -> Result<Vec<u8>, String> {
            Ok(input)
        }
        fn count(&self, images: &Vec<u8>) -> usize {
            images.len()
        }
        async fn predict(&self, _job: &Job, images: &Vec<u8>, range: std::ops::Range<usize>) -> Result<Vec<Value>, String> {
            let result = |i: usize| PredictionResult {
                index: i,
                start_timestamp: "20240322_150000".into(),
                prediction: char::from(b'a' + images[i] % 26).to_string(),
                prediction_label: (images[i] % 26).to_string(),
                probability: "0.75".into(),
                top_k: None,
            };
            Ok(range.map(|i| serde_json::to_value(result(i)).unwrap()).collect())
        }
    }

    /// `target` is the path with an optional `?query`.
    async fn call<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, method: &str, target: &str, body: &[u8]) -> Reply {
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        let req = Request { method, path, query, content_type: Some("application/x-npz"), authorization: None, body };
        handle(&req, jobs, &Models, &Echo::default()).await
    }

    /// `POST /jobs/tick` (or `method`) with `authorization`, running jobs with `echo`.
    fn tick_call<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, method: &str, authorization: Option<&str>, echo: &Echo<'_>) -> Reply {
        let req = Request { method, path: "/jobs/tick", query: None, content_type: None, authorization, body: b"" };
        block_on(handle(&req, jobs, &Models, echo))
    }

    fn get<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, target: &str) -> Reply {
        block_on(call(jobs, "GET", target, b""))
    }

    fn post<K: KeyValue, C: Clock>(jobs: &Jobs<'_, K, C>, target: &str, body: &[u8]) -> Reply {
        block_on(call(jobs, "POST", target, body))
    }

    /// `execute_at` for a query string, `seconds` from the clock's now.
    fn at(clock: &crate::kv::ManualClock, seconds: i64) -> String {
        job::timestamp(clock.now() + Duration::seconds(seconds)).replace(':', "%3A")
    }

    #[test]
    fn an_async_submission_is_202_with_location_and_a_run_after_the_response() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let reply = post(&jobs, "/async_predict/cnn", b"0123456789");
        assert_eq!(reply.status, 202, "{}", reply.body);
        let id = reply.body["task_id"].as_str().unwrap().to_owned();
        assert_eq!(reply.header("location"), Some(format!("/tasks/{id}").as_str()));
        assert_eq!((reply.body["status"].as_str(), reply.body["model"].as_str()), (Some("pending"), Some("cnn")));
        assert_eq!(reply.body["status_url"], json!(format!("/tasks/{id}")));
        assert_eq!(reply.run_after.as_deref(), Some(id.as_str()));

        let task = get(&jobs, &format!("/tasks/{id}"));
        assert_eq!((task.status, task.body["kind"].as_str(), task.body["results"].clone()), (200, Some("async"), json!([])));
        let early = get(&jobs, &format!("/tasks/{id}/results"));
        assert_eq!((early.status, early.body["status"].as_str()), (409, Some("pending")), "{}", early.body);

        let outcome = block_on(jobs.run(&id, "spawned", Trigger::Submitted, &echo)).unwrap();
        assert_eq!(outcome, RunOutcome::Finished(Status::Done));
        let task = get(&jobs, &format!("/tasks/{id}"));
        assert_eq!((task.body["status"].as_str(), task.body["results"].as_array().map(Vec::len)), (Some("done"), Some(10)));
        let download = get(&jobs, &format!("/tasks/{id}/results"));
        assert_eq!((download.status, download.body["task_id"].as_str()), (200, Some(id.as_str())));
        assert_eq!(download.body["results"], task.body["results"]);
        assert_eq!(download.header("content-disposition"), Some(format!("attachment; filename=\"{id}.json\"").as_str()));
    }

    #[test]
    fn a_done_jobs_sheet_is_a_png_of_its_inputs_with_their_results_and_409_before() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let id = post(&jobs, "/async_predict/cnn", b"0123456789").body["task_id"].as_str().unwrap().to_owned();
        let early = get(&jobs, &format!("/tasks/{id}/sheet.png"));
        assert_eq!((early.status, early.body["status"].as_str(), early.png.is_none()), (409, Some("pending"), true), "{}", early.body);

        assert_eq!(block_on(jobs.run(&id, "spawned", Trigger::Submitted, &Labels)).unwrap(), RunOutcome::Finished(Status::Done));
        let reply = get(&jobs, &format!("/tasks/{id}/sheet.png"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!((reply.header("x-sheet-tiles"), reply.header("x-sheet-images")), (Some("10"), Some("10")));
        let png = reply.png.expect("a PNG body");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        // Exactly the renderer's drawing of the decoded upload and the stored results.
        let stored = get(&jobs, &format!("/tasks/{id}/results")).body["results"].clone();
        let results: Vec<PredictionResult> = serde_json::from_value(stored).unwrap();
        let images = Models.decode("cnn", None, b"0123456789", &config).unwrap();
        assert_eq!(png, contact_sheet("cnn", &images, &results).png);

        let post_sheet = block_on(call(&jobs, "POST", &format!("/tasks/{id}/sheet.png"), b""));
        assert_eq!((post_sheet.status, post_sheet.header("allow")), (405, Some("GET")));
        let unknown = get(&jobs, "/tasks/20240322_155100_abcdefgh/sheet.png");
        assert_eq!((unknown.status, unknown.body["kind"].as_str()), (404, Some("unknown_task")));
    }

    #[test]
    fn a_scheduled_submission_is_202_with_location_and_its_normalised_time() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        // 2024-03-22T15:00:00Z + 30 s, given with a +09:00 offset.
        let reply = post(&jobs, "/schedule/cnn?execute_at=2024-03-23T00%3A00%3A30%2B09%3A00", b"0123456789");
        assert_eq!(reply.status, 202, "{}", reply.body);
        let id = reply.body["task_id"].as_str().unwrap();
        assert_eq!(reply.header("location"), Some(format!("/tasks/{id}").as_str()));
        assert_eq!(reply.body["execute_at"], json!("2024-03-22T15:00:30Z"));
        assert_eq!(reply.body["message"], json!("Batch prediction task scheduled at 2024-03-22T15:00:30Z"));
        assert_eq!(reply.run_after, None, "cron runs it");
        assert_eq!(block_on(jobs.get(id)).unwrap().unwrap().kind, Kind::Scheduled);
    }

    #[test]
    fn a_missing_or_unparseable_execute_at_is_400_and_one_out_of_range_422() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), Config { max_horizon: Duration::hours(1), ..config() });
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let cases = [
            ("/schedule/cnn".to_owned(), 400),
            ("/schedule/cnn?execute_at=".to_owned(), 400),
            ("/schedule/cnn?execute_at=tomorrow".to_owned(), 400),
            ("/schedule/cnn?execute_at=2024-03-22T15%3A51%3A00".to_owned(), 400),
            (format!("/schedule/cnn?execute_at={}", at(&clock, -300)), 422),
            (format!("/schedule/cnn?execute_at={}", at(&clock, 7200)), 422),
        ];
        for (target, status) in cases {
            let reply = post(&jobs, &target, b"0123456789");
            assert_eq!((reply.status, reply.body["kind"].as_str()), (status, Some("bad_execute_at")), "{target}: {}", reply.body);
            assert!(reply.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        assert!(kv.is_empty(), "nothing stored");
    }

    #[test]
    fn listing_is_404_unless_enabled_and_then_pages_and_checks_its_parameters() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(post(&jobs, &format!("/schedule/cnn?execute_at={}", at(&clock, 600)), b"0123456789").body["task_id"].clone());
            clock.advance(Duration::seconds(1));
        }
        let disabled = get(&jobs, "/tasks");
        assert_eq!((disabled.status, disabled.body["kind"].as_str()), (404, Some("listing_disabled")));

        let config = Config { list_tasks: true, ..config };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let first = get(&jobs, "/tasks?status=pending&limit=2");
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].clone()).collect::<Vec<_>>(), ids[..2]);
        let next_url = first.body["next_url"].as_str().unwrap();
        assert_eq!(next_url, format!("/tasks?limit=2&after={}&status=pending", ids[1].as_str().unwrap()));
        let last = get(&jobs, next_url);
        assert_eq!((last.body["tasks"][0]["task_id"].clone(), last.body["next"].clone()), (ids[2].clone(), Value::Null));
        assert_eq!(get(&jobs, "/tasks?status=done").body["tasks"], json!([]));
        for bad in ["/tasks?status=finished", "/tasks?limit=0", "/tasks?limit=501", "/tasks?limit=many"] {
            assert_eq!(get(&jobs, bad).status, 400, "{bad}");
        }
    }

    #[test]
    fn unknown_tasks_are_404_and_other_paths_404_or_405_with_allow() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        for target in ["/tasks/20240322_155100_abcdefgh", "/tasks/20240322_155100_abcdefgh/results", "/tasks/..%2F..%2Fetc", "/tasks/nonsense"] {
            let reply = get(&jobs, target);
            assert_eq!((reply.status, reply.body["kind"].as_str()), (404, Some("unknown_task")), "{target}");
        }
        for (method, target, allow) in [("GET", "/async_predict/cnn", "POST"), ("PUT", "/schedule/cnn", "POST"), ("POST", "/tasks", "GET"), ("DELETE", "/tasks/x/results", "GET")] {
            let reply = block_on(call(&jobs, method, target, b""));
            assert_eq!((reply.status, reply.header("allow")), (405, Some(allow)), "{method} {target}");
            assert_eq!(reply.body["error"], json!(format!("use {allow}")));
        }
        for target in ["/", "/async_predict", "/tasks/x/y", "/predict/cnn"] {
            let reply = get(&jobs, target);
            assert_eq!(reply.status, 404, "{target}");
            assert_eq!(reply.body["error"], json!(format!("no such endpoint: GET {target}")));
        }
    }

    #[test]
    fn uploads_are_checked_before_anything_is_stored() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), Config { max_input_bytes: 9, ..config() });
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let too_large = post(&jobs, "/async_predict/cnn", b"0123456789");
        assert_eq!((too_large.status, too_large.body["kind"].as_str()), (413, Some("body_too_large")));
        assert_eq!(too_large.body["max_input_bytes"], 9);
        let soon = format!("?execute_at={}", at(&clock, 30));
        for (target, body, status) in [
            ("/async_predict/nope".to_owned(), &b"01234"[..], 404),
            (format!("/schedule/nope{soon}"), b"01234", 404),
            ("/async_predict/cnn".to_owned(), b"bad!", 422),
            (format!("/schedule/cnn{soon}"), b"bad!", 422),
        ] {
            let reply = post(&jobs, &target, body);
            assert_eq!((reply.status, reply.run_after.as_deref()), (status, None), "{target}: {}", reply.body);
        }
        assert!(kv.is_empty(), "nothing stored");
        assert_eq!(post(&jobs, "/async_predict/cnn", b"01234").status, 202);
    }

    #[test]
    fn a_full_queue_is_429_with_retry_after_and_stores_nothing() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), Config { max_queued_jobs: 2, ..config() });
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        for _ in 0..2 {
            assert_eq!(post(&jobs, "/async_predict/cnn", b"0123456789").status, 202);
        }
        let stored = kv.len();
        let reply = post(&jobs, "/async_predict/cnn", b"0123456789");
        assert_eq!((reply.status, reply.body["kind"].as_str(), reply.body["queued_jobs"].as_u64()), (429, Some("queue_full"), Some(2)));
        assert_eq!(reply.header("retry-after"), Some(faults::QUEUE_RETRY_SECONDS.to_string().as_str()));
        assert_eq!((reply.run_after, kv.len()), (None, stored));
    }

    #[test]
    fn store_faults_are_503_or_507_with_retry_after_and_details_only_in_the_log() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        let locked = FaultyKv { kv: &kv, fail: Box::new(|_| Some(anyhow::anyhow!("database is locked"))) };
        let jobs = Jobs { kv: &locked, clock: &clock, config: &config };
        let reply = post(&jobs, "/async_predict/cnn", b"0123456789");
        assert_eq!((reply.status, reply.body["kind"].as_str()), (503, Some("store_unavailable")));
        assert_eq!(reply.header("retry-after"), Some(faults::STORE_RETRY_SECONDS.to_string().as_str()));
        assert!(!reply.body.to_string().contains("locked"), "{}", reply.body);
        assert!(reply.log.as_deref().is_some_and(|l| l.contains("POST /async_predict/cnn") && l.contains("database is locked")));
        assert_eq!(reply.run_after, None);

        let full = FaultyKv { kv: &kv, fail: Box::new(|_| Some(StoreFull("database or disk is full".into()).into())) };
        let jobs = Jobs { kv: &full, clock: &clock, config: &config };
        let reply = post(&jobs, &format!("/schedule/cnn?execute_at={}", at(&clock, 30)), b"0123456789");
        assert_eq!((reply.status, reply.body["kind"].as_str()), (507, Some("store_full")));
        assert_eq!(reply.header("retry-after"), Some(faults::FULL_RETRY_SECONDS.to_string().as_str()));
        assert!(kv.is_empty(), "nothing stored");
    }

    #[test]
    fn the_tick_route_is_disabled_without_a_token() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        for (method, auth) in [("POST", None), ("POST", Some("Bearer ")), ("GET", Some("Bearer anything"))] {
            let reply = tick_call(&jobs, method, auth, &echo);
            assert_eq!((reply.status, reply.body["kind"].as_str()), (404, Some("tick_disabled")), "{method} {auth:?}");
        }
        assert!(kv.is_empty(), "no tick ran");
    }

    #[test]
    fn the_tick_route_refuses_a_wrong_or_missing_token_with_401() {
        let (kv, clock, echo) = (MemoryKv::new(), clock(), Echo::default());
        let config = Config { tick_token: Secret::new("s3cret"), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        for auth in [None, Some(""), Some("s3cret"), Some("Bearer"), Some("Bearer "), Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Basic s3cret")] {
            let reply = tick_call(&jobs, "POST", auth, &echo);
            assert_eq!((reply.status, reply.body["kind"].as_str()), (401, Some("unauthorized")), "{auth:?}");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        }
        let reply = tick_call(&jobs, "GET", Some("Bearer s3cret"), &echo);
        assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
        assert!(kv.is_empty(), "no tick ran");
    }

    #[test]
    fn the_tick_route_with_the_token_runs_a_due_job_and_reports_the_tick() {
        let (kv, clock, echo) = (MemoryKv::new(), clock(), Echo::default());
        let config = Config { tick_token: Secret::new("s3cret"), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let reply = post(&jobs, &format!("/schedule/cnn?execute_at={}", at(&clock, 30)), b"0123456789");
        let id = reply.body["task_id"].as_str().unwrap().to_owned();

        let early = tick_call(&jobs, "POST", Some("Bearer s3cret"), &echo);
        assert_eq!((early.status, early.body["ran"].as_u64()), (200, Some(0)), "{}", early.body);
        assert_eq!(get(&jobs, &format!("/tasks/{id}")).body["status"].as_str(), Some("pending"));

        clock.advance(Duration::seconds(31));
        let reply = tick_call(&jobs, "POST", Some("bearer  s3cret"), &echo);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, json!({
            "ran": 1, "paused": 0, "deferred": 0, "lost_claims": 0, "expired": 0, "swept": false, "orphans": 0,
        }));
        assert!(reply.log.as_deref().is_some_and(|l| l.starts_with("jobs: POST /jobs/tick: ")));
        let task = get(&jobs, &format!("/tasks/{id}"));
        assert_eq!(task.body["status"].as_str(), Some("done"));
        assert_eq!(task.body["results"], crate::testing::echoed(b"0123456789"));
        assert_eq!(echo.calls.get(), 1);
    }

    #[test]
    fn a_bad_configuration_is_500() {
        let reply = bad_config(&anyhow::anyhow!("variable lease_seconds must be a positive integer"));
        assert_eq!(reply.status, 500);
        assert!(reply.body["error"].as_str().unwrap().starts_with("bad configuration: variable lease_seconds"));
    }
}
