//! Spin HTTP component: `POST /predict/{model}` (multipart `upload_file` like the reference server,
//! or a raw npz/PNG/JPEG/JSON body; `?format=png` for a contact sheet), `GET /models`,
//! `GET /models/{name}`. Thin: parse the request,
//! call `kana_inference`, map errors to JSON. Models come from the `/models` files mount: cards
//! are read once per instance, each model's plan on its first request (the host reuses
//! instances, so the plans stay in this global).

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use kana_inference::api::PREDICT_VARIABLES;
use kana_inference::{CardError, InputError, ModelInfo, PredictAnswer, PredictError, PredictOptions, Registry, answer_predict};
use spin_sdk::http::{IntoResponse, Method, Request};

static MODELS: OnceLock<(Registry, Vec<CardError>)> = OnceLock::new();

fn models() -> &'static (Registry, Vec<CardError>) {
    MODELS.get_or_init(|| {
        let (registry, invalid) = Registry::open_dir(Path::new("/models"));
        // Bad cards show in the host log as soon as the models load, and in GET /models.
        for error in &invalid {
            kana_inference::log_line(&format!("predict: not serving {error}"));
        }
        (registry, invalid)
    })
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let (registry, invalid) = models();
    let path: Vec<String> = req.uri().path().split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let query = req.uri().query().map(str::to_owned);
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let method = req.method().clone();
    let reply = match (&method, path.iter().map(String::as_str).collect::<Vec<_>>().as_slice()) {
        (&Method::GET, ["models"]) => {
            let models: Vec<ModelInfo> = registry.models().map(ModelInfo::from).collect();
            Ok(serde_json::json!({ "models": models, "invalid": invalid }))
        }
        (&Method::GET, ["models", name]) => match registry.get(name) {
            Some(model) => Ok(serde_json::to_value(ModelInfo::from(model))?),
            None => Err(error_json(&InputError::UnknownModel(name.to_string()).into())),
        },
        (&Method::POST, ["predict", name]) => {
            let options = options().await;
            let body = read_body(req, options.limits.max_body_bytes).await?;
            let response = body.map_err(PredictError::from).and_then(|body| {
                predict(registry, name, content_type.as_deref(), &body, query.as_deref(), options)
            });
            match response {
                Ok(PredictAnswer::Json(response)) => Ok(serde_json::to_value(response)?),
                Ok(PredictAnswer::Png(sheet)) => {
                    let counts = [("x-sheet-tiles", sheet.tiles.to_string()), ("x-sheet-images", sheet.images.to_string())];
                    return Ok(respond(200, "image/png", &counts, sheet.png)?);
                }
                Err(e) => Err(error_json(&e)),
            }
        }
        _ => Err((404, serde_json::json!({ "error": format!("no route for {method} {}", path.join("/")), "kind": "no_route",
            "expected": "POST /predict/{model}, GET /models, GET /models/{name}" }))),
    };
    let (status, value) = match reply {
        Ok(value) => (200, value),
        Err(error) => error,
    };
    Ok(respond(status, "application/json", &[], serde_json::to_vec(&value)?)?)
}

fn respond(status: u16, content_type: &str, headers: &[(&str, String)], body: Vec<u8>) -> http::Result<http::Response<Full<Bytes>>> {
    let mut response = http::Response::builder().status(status).header(http::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(Bytes::from(body)))
}

fn predict(
    registry: &Registry,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
    query: Option<&str>,
    options: PredictOptions,
) -> Result<PredictAnswer, PredictError> {
    let model = registry.get(name).ok_or_else(|| InputError::UnknownModel(name.to_string()))?;
    answer_predict(model, content_type, body, query, options)
}

/// The request body; past `limit` bytes it stops reading and answers 413.
async fn read_body(req: Request, limit: usize) -> anyhow::Result<Result<Bytes, InputError>> {
    let claimed = req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse().ok());
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(Ok(body.to_bytes())),
        // Without a Content-Length, all that is known is "more than the limit".
        Err(e) if e.is::<LengthLimitError>() => {
            Ok(Err(InputError::TooLarge { bytes: claimed.unwrap_or(limit.saturating_add(1)), limit }))
        }
        Err(e) => Err(anyhow::anyhow!("reading the request body: {e}")),
    }
}

/// Limits and chunk size from the Spin variables, read once per instance (they do not change
/// while an application runs); bad values are logged and defaulted.
async fn options() -> PredictOptions {
    static OPTIONS: OnceLock<PredictOptions> = OnceLock::new();
    if let Some(options) = OPTIONS.get() {
        return options.clone();
    }
    let mut values = Vec::new();
    for name in PREDICT_VARIABLES {
        values.push((name, spin_sdk::variables::get(name).await.ok()));
    }
    let (options, problems) =
        PredictOptions::from_variables(|name| values.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone()));
    problems.iter().for_each(|p| kana_inference::log_line(&format!("predict: {p}")));
    OPTIONS.get_or_init(|| options).clone()
}

fn error_json(e: &PredictError) -> (u16, serde_json::Value) {
    let mut body = e.body();
    // A batch too big to answer in one response still has a route: a job.
    let job = "larger batches: POST /async_predict/{model} (a job, results at /tasks/{id}/results)";
    match e {
        PredictError::Input(InputError::TooManyImages { limit, .. }) => {
            body.expected = Some(format!("at most {limit} images per /predict request; {job}"));
        }
        PredictError::Input(InputError::TooLarge { limit, .. }) => {
            body.expected = Some(format!("at most {limit} bytes per /predict request; {job}"));
        }
        _ => {}
    }
    (e.status(), serde_json::to_value(body).unwrap_or_default())
}
