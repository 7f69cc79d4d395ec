//! A batch's input file: JSONL, one request a line, each
//! `{"custom_id", "method": "POST", "url": <the batch's endpoint>, "body"}`.
//! Validation reads it twice, as a stream (a file's size never becomes
//! memory): once to check what fails the whole batch (no JSON at all, a
//! missing custom_id, a url other than the endpoint, more than one model),
//! then to record each line's place as an item. A line that is not JSON is
//! an item that fails alone, with an error line.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{json, Value};

/// Validation keeps this many of the problems it finds.
const MAX_ERRORS: usize = 20;

/// What one line is.
#[derive(Debug, PartialEq)]
pub enum Line {
    Request {
        custom_id: String,
        model: Option<String>,
    },
    /// Not a JSON object: the item fails with this reason.
    Unreadable(String),
    /// Fails the batch: OpenAI's error `code`, the `param` at fault, why.
    Invalid {
        code: &'static str,
        param: &'static str,
        message: String,
    },
}

pub fn classify(bytes: &[u8], endpoint: &str) -> Line {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Line::Unreadable("the line is not a JSON object".into()),
        Err(e) => return Line::Unreadable(format!("the line is not JSON: {e}")),
    };
    let Some(custom_id) = v.get("custom_id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Line::Invalid { code: "missing_custom_id", param: "custom_id", message: "custom_id must be a non-empty string".into() };
    };
    match v.get("url").and_then(Value::as_str) {
        Some(url) if url == endpoint => {}
        url => {
            return Line::Invalid {
                code: "mismatched_endpoint",
                param: "url",
                message: format!("url is {url:?} but the batch's endpoint is {endpoint:?}"),
            }
        }
    }
    let model = v.get("body").and_then(|b| b.get("model")).and_then(Value::as_str).map(String::from);
    Line::Request { custom_id: custom_id.to_string(), model }
}

/// The non-empty lines of `path`: (1-based number, byte offset, bytes).
pub fn lines(path: &Path) -> std::io::Result<impl Iterator<Item = std::io::Result<(u64, u64, Vec<u8>)>>> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let (mut number, mut offset) = (0u64, 0u64);
    Ok(std::iter::from_fn(move || loop {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                let at = offset;
                offset += n as u64;
                number += 1;
                while buf.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                    buf.pop();
                }
                if !buf.iter().all(u8::is_ascii_whitespace) {
                    return Some(Ok((number, at, buf)));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }))
}

/// What the first reading found: the model the requests name (`default`
/// for those naming none), or why the batch fails (OpenAI's
/// `errors.data` entries).
pub fn check(path: &Path, endpoint: &str, default: &str) -> std::io::Result<Result<String, Vec<Value>>> {
    let (mut requests, mut errors, mut models) = (0usize, Vec::new(), BTreeSet::new());
    let mut first_unreadable = None;
    for line in lines(path)? {
        let (number, _, bytes) = line?;
        match classify(&bytes, endpoint) {
            Line::Request { model, .. } => {
                requests += 1;
                if models.len() < 2 {
                    models.insert(model.unwrap_or_else(|| default.to_string()));
                }
            }
            Line::Unreadable(why) => {
                first_unreadable.get_or_insert((number, why));
            }
            Line::Invalid { code, param, message } => {
                if errors.len() < MAX_ERRORS {
                    errors.push(json!({ "code": code, "message": format!("line {number}: {message}"), "param": param, "line": number }));
                }
                requests += 1;
            }
        }
    }
    if requests == 0 {
        let message = match first_unreadable {
            Some((number, why)) => format!("the input file is not JSONL: line {number}: {why}"),
            None => "the input file holds no requests".to_string(),
        };
        return Ok(Err(vec![json!({ "code": "invalid_file", "message": message, "param": "input_file_id", "line": null })]));
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    if models.len() > 1 {
        let names: Vec<&String> = models.iter().collect();
        let message = format!("a batch's requests must all name one model; found {:?} and {:?}", names[0], names[1]);
        return Ok(Err(vec![json!({ "code": "mixed_models", "message": message, "param": "body.model", "line": null })]));
    }
    Ok(Ok(models.pop_first().unwrap_or_else(|| default.to_string())))
}

/// The bytes of the line at `offset`.
pub fn read_line(file: &File, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; length as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
