//! Who may call, and what a failure inside a handler becomes: the API key
//! check (every route but /health), CORS (off unless origins are given),
//! and panics caught into a 500 for that request alone.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::{Api, ApiError};

/// The API whose error shape a path answers in.
pub fn api_of(path: &str) -> Api {
    if path.starts_with("/v1/") {
        Api::OpenAi
    } else {
        Api::Ollama
    }
}

/// With a key set, every route but /health needs `Authorization: Bearer KEY`
/// (compared in constant time).
pub async fn require_key(State(key): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    let Some(key) = key.as_deref() else { return next.run(req).await };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
        return next.run(req).await;
    }
    let mut r = ApiError::new(api_of(req.uri().path()), StatusCode::UNAUTHORIZED, "missing or wrong API key (Authorization: Bearer ...)")
        .into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// A panic while handling one request answers that request with a 500;
/// the server and every other request go on.
pub async fn catch_panics(req: Request, next: Next) -> Response {
    let api = api_of(req.uri().path());
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => ApiError::internal(api, "internal error while handling the request").into_response(),
    }
}

/// CORS for the given origins ("*" for any); None when there are none.
pub fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| anyhow::anyhow!("--cors-origin {o:?} is not a valid origin")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .expose_headers([header::RETRY_AFTER]),
    ))
}
