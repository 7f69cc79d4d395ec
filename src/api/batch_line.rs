//! The lines a batch answers with, in OpenAI's batch output format:
//! `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
//! "error"}`. A request refused as the endpoint would refuse it has its
//! status and error body in `response`; one that could not be run at all
//! (an unreadable line, an expired batch) has `response: null` and `error`.
//! `caravan batch` and the server's batch jobs write the same lines.

use serde_json::{json, Value};

/// A request's answer, as its endpoint would give it.
pub fn answered(id: &str, custom_id: &str, body: Value) -> Value {
    responded(id, Some(custom_id), 200, body)
}

/// A request the endpoint refused: its status and error body.
pub fn refused(id: &str, custom_id: Option<&str>, status: u16, error_body: Value) -> Value {
    responded(id, custom_id, status, error_body)
}

/// A request that never reached its endpoint: OpenAI's `error` object.
pub fn failed(id: &str, custom_id: Option<&str>, code: &str, message: &str) -> Value {
    json!({ "id": id, "custom_id": custom_id, "response": null, "error": { "code": code, "message": message } })
}

fn responded(id: &str, custom_id: Option<&str>, status: u16, body: Value) -> Value {
    let request_id = format!("req_{}", id.trim_start_matches("batch_req_"));
    json!({ "id": id, "custom_id": custom_id, "response": { "status_code": status, "request_id": request_id, "body": body }, "error": null })
}
