//! Errors as each API writes them: Ollama `{"error": "..."}`, OpenAI
//! `{"error": {"message", "type", "param", "code"}}`. Overload is 503 on
//! Ollama routes and 429 on OpenAI routes, both with Retry-After.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Ollama,
    OpenAi,
}

#[derive(Debug)]
pub struct ApiError {
    pub api: Api,
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error `code` where the status alone does not say it.
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(api: Api, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { api, status, message: message.into(), code: None }
    }

    /// A request the client got wrong (400); `e`'s whole chain is the message.
    pub fn bad(api: Api, e: impl std::fmt::Display) -> ApiError {
        ApiError::new(api, StatusCode::BAD_REQUEST, format!("{e:#}"))
    }

    pub fn not_found(api: Api, model: &str) -> ApiError {
        ApiError::new(api, StatusCode::NOT_FOUND, format!("model '{model}' not found"))
    }

    /// No such file or batch.
    pub fn no_such(api: Api, what: &str, id: &str) -> ApiError {
        ApiError { code: Some("not_found"), ..ApiError::new(api, StatusCode::NOT_FOUND, format!("no {what} with id '{id}'")) }
    }

    /// Too much waiting work: try again shortly.
    pub fn overloaded(api: Api, message: impl Into<String>) -> ApiError {
        let status = match api {
            Api::Ollama => StatusCode::SERVICE_UNAVAILABLE,
            Api::OpenAi => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError::new(api, status, message)
    }

    pub fn internal(api: Api, e: impl std::fmt::Display) -> ApiError {
        ApiError::new(api, StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }

    /// The engine's refusals are the client's to fix; its stopping and its
    /// faults are the server's.
    pub fn engine(api: Api, e: EngineError) -> ApiError {
        match e {
            EngineError::Rejected(_) => ApiError::bad(api, e),
            EngineError::Stopped | EngineError::Internal(_) => ApiError::internal(api, e),
        }
    }

    /// A name that cannot be a model's is the client's; a store that
    /// cannot be read is the server's.
    pub fn store(api: Api, e: StoreError) -> ApiError {
        match e {
            StoreError::BadName(_) => ApiError::bad(api, e),
            StoreError::Unreadable(_) => ApiError::internal(api, e),
        }
    }
}

impl ApiError {
    /// The error as its API's JSON.
    pub fn body(&self) -> serde_json::Value {
        match self.api {
            Api::Ollama => json!({ "error": self.message }),
            Api::OpenAi => {
                let (kind, code) = match self.status {
                    StatusCode::NOT_FOUND => ("invalid_request_error", "model_not_found"),
                    StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_exceeded"),
                    s if s.is_server_error() => ("server_error", "internal_error"),
                    _ => ("invalid_request_error", "invalid_request"),
                };
                json!({ "error": { "message": self.message, "type": kind, "param": null, "code": self.code.unwrap_or(code) } })
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut r = (self.status, axum::Json(body)).into_response();
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}
