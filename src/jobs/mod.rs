//! Batch jobs as OpenAI's Batch API has them: uploaded files, and batches
//! that run a file's requests. Their state lives in SQLite (`db`); a job's
//! answers are appended to its output file as they come, and each answer's
//! bytes are committed with its item, so a job killed mid-way resumes
//! where it stood and answers every request exactly once. `input` reads
//! and checks a job's input file. The server runs the jobs.

pub mod db;
pub mod input;

use serde_json::{json, Value};

/// The endpoints a batch may target.
pub const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// How long a batch has to finish: OpenAI offers only this window.
pub const COMPLETION_WINDOW: &str = "24h";
pub const WINDOW_SECONDS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Validating,
    InProgress,
    Finalizing,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
    Expired,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Validating,
        Status::InProgress,
        Status::Finalizing,
        Status::Completed,
        Status::Failed,
        Status::Cancelling,
        Status::Cancelled,
        Status::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The batch object's field holding when this status was reached.
    pub fn time_field(self) -> &'static str {
        match self {
            Status::Validating => "created_at",
            Status::InProgress => "in_progress_at",
            Status::Finalizing => "finalizing_at",
            Status::Completed => "completed_at",
            Status::Failed => "failed_at",
            Status::Cancelling => "cancelling_at",
            Status::Cancelled => "cancelled_at",
            Status::Expired => "expired_at",
        }
    }

    /// A job in this status has nothing left to do.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled | Status::Expired)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: u64,
    pub created_at: u64,
}

impl FileRecord {
    /// OpenAI's file object.
    pub fn object(&self) -> Value {
        json!({
            "id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": null, "status_details": null,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    pub id: String,
    pub input_file_id: String,
    pub endpoint: String,
    /// The one model the input's requests name, once validated.
    pub model: Option<String>,
    pub metadata: Option<Value>,
    pub status: Status,
    /// Why validation failed: OpenAI's `errors.data` entries.
    pub errors: Option<Value>,
    pub created_at: u64,
    pub expires_at: u64,
    /// When each status after `validating` was reached, by `time_field`.
    pub times: serde_json::Map<String, Value>,
    /// The files the answers and the failures go to: named when the batch
    /// is created, listed once it has ended (and only if they hold lines).
    pub output_id: String,
    pub error_id: String,
    pub output_published: bool,
    pub error_published: bool,
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    /// Bytes of the output and error files that are committed: a line
    /// past them was written by a run that died before committing it.
    pub output_bytes: u64,
    pub error_bytes: u64,
}

impl BatchRecord {
    /// OpenAI's batch object.
    pub fn object(&self) -> Value {
        let mut v = json!({
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model, "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW, "status": self.status.name(),
            "output_file_id": self.output_published.then_some(&self.output_id),
            "error_file_id": self.error_published.then_some(&self.error_id),
            "errors": self.errors.as_ref().map(|data| json!({ "object": "list", "data": data })),
            "created_at": self.created_at, "expires_at": self.expires_at,
            "request_counts": { "total": self.total, "completed": self.completed, "failed": self.failed },
            "metadata": self.metadata,
        });
        for status in &Status::ALL[1..] {
            v[status.time_field()] = self.times.get(status.time_field()).cloned().unwrap_or(Value::Null);
        }
        v
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh id with OpenAI's prefix (`file-`, `batch_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", crate::api::fields::fresh_seed())
}
