use spin_sdk::http::{IntoResponse, Request};

#[spin_sdk::http_service]
async fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok((http::StatusCode::NOT_IMPLEMENTED, "not yet"))
}
