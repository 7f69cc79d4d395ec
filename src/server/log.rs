//! One log line per request: method, path, model, status, tokens generated
//! and duration. A streamed answer is logged when its body ends (or the
//! client leaves), so the line has the final token count.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

#[derive(Default)]
struct Fields {
    model: String,
    tokens: usize,
}

/// The parts of a request's log line that its handler fills in.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Fields>>);

impl RequestLog {
    pub fn set_model(&self, model: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).model = model.to_string();
    }

    pub fn add_tokens(&self, n: usize) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).tokens += n;
    }
}

/// Prints the line when dropped.
struct Line {
    method: String,
    path: String,
    status: u16,
    started: Instant,
    log: RequestLog,
}

impl Drop for Line {
    fn drop(&mut self) {
        let f = self.log.0.lock().unwrap_or_else(|e| e.into_inner());
        let model = if f.model.is_empty() { "-" } else { &f.model };
        eprintln!(
            "{} {} model={model} status={} tokens={} {:.1}ms",
            self.method,
            self.path,
            self.status,
            f.tokens,
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }
}

pub async fn log_requests(mut req: Request, next: Next) -> Response {
    let log = RequestLog::default();
    req.extensions_mut().insert(log.clone());
    let (method, path, started) = (req.method().to_string(), req.uri().path().to_string(), Instant::now());
    let response = next.run(req).await;
    let line = Line { method, path, status: response.status().as_u16(), started, log };
    let streamed = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-ndjson") || t.starts_with("text/event-stream"));
    if !streamed {
        return response;
    }
    // The line goes with the body: printed when the stream is dropped.
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &line;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
