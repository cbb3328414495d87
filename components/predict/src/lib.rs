//! Spin HTTP component: `POST /predict/{model}` (multipart `upload_file` like the reference server,
//! or a raw npz/PNG/JPEG/JSON body), `GET /models`, `GET /models/{name}`. Thin: parse the request,
//! call `kana_inference`, map errors to JSON. Models come from the `/models` files mount and are
//! loaded once per instance (the host reuses instances, so the plan stays in this global).

use std::path::Path;
use std::sync::OnceLock;

use http_body_util::BodyExt;
use kana_inference::{CardError, InputError, Limits, ModelInfo, PredictOptions, Registry, parse_top_k, predict_request};
use spin_sdk::http::{IntoResponse, Json, Method, Request, StatusCode};

static MODELS: OnceLock<(Registry, Vec<CardError>)> = OnceLock::new();

fn models() -> &'static (Registry, Vec<CardError>) {
    MODELS.get_or_init(|| {
        let (registry, invalid) = Registry::load_dir(Path::new("/models"));
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
            let body = req.into_body().collect().await?.to_bytes();
            match predict(registry, name, content_type.as_deref(), &body, query.as_deref()).await {
                Ok(response) => Ok(serde_json::to_value(response)?),
                Err(e) => Err(error_json(&e)),
            }
        }
        _ => Err((404, serde_json::json!({ "error": format!("no route for {method} {}", path.join("/")), "kind": "no_route",
            "expected": "POST /predict/{model}, GET /models, GET /models/{name}" }))),
    };
    Ok(match reply {
        Ok(value) => (StatusCode::OK, Json(value)),
        Err((status, value)) => (StatusCode::from_u16(status)?, Json(value)),
    })
}

async fn predict(
    registry: &Registry,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
    query: Option<&str>,
) -> Result<kana_inference::PredictResponse, kana_inference::PredictError> {
    let model = registry.get(name).ok_or_else(|| InputError::UnknownModel(name.to_string()))?;
    let chunk_size = spin_sdk::variables::get("chunk_size").await.ok().and_then(|v| v.trim().parse().ok());
    let options = PredictOptions { top_k: parse_top_k(query)?, limits: limits().await, task_id: None, chunk_size };
    predict_request(model, content_type, body, &options)
}

/// Spin variables `max_images` and `max_upload_bytes`; defaults when unset or unparsable.
async fn limits() -> Limits {
    let default = Limits::default();
    let read = async |key: &str, fallback: usize| {
        spin_sdk::variables::get(key).await.ok().and_then(|v| v.trim().parse().ok()).unwrap_or(fallback)
    };
    Limits {
        max_images: read("max_images", default.max_images).await,
        max_body_bytes: read("max_upload_bytes", default.max_body_bytes).await,
    }
}

fn error_json(e: &kana_inference::PredictError) -> (u16, serde_json::Value) {
    (e.status(), serde_json::to_value(e.body()).unwrap_or_default())
}
