//! Reading request fields out of JSON with errors that name the field, the
//! type expected and the limit broken: every one of them is a client error.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Most stop sequences a request may give, and the longest one (bytes).
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_LEN: usize = 256;

pub fn opt_str<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("{key} must be a string"),
    }
}

pub fn req_str<'a>(body: &'a Value, key: &str) -> Result<&'a str> {
    opt_str(body, key)?.ok_or_else(|| anyhow!("{key} is required"))
}

pub fn opt_bool(body: &Value, key: &str) -> Result<Option<bool>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => bail!("{key} must be true or false"),
    }
}

/// A number within `range` (inclusive).
pub fn opt_f32(body: &Value, key: &str, range: (f32, f32)) -> Result<Option<f32>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (range.0 as f64..=range.1 as f64).contains(&x) => Ok(Some(x as f32)),
            _ => bail!("{key} must be a number from {} to {}", range.0, range.1),
        },
    }
}

/// A whole number of at least `min`.
pub fn opt_u64(body: &Value, key: &str, min: u64) -> Result<Option<u64>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().filter(|&n| n >= min).map(Some).ok_or_else(|| anyhow!("{key} must be a whole number of at least {min}")),
    }
}

/// A whole number, possibly negative.
pub fn opt_i64(body: &Value, key: &str) -> Result<Option<i64>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| anyhow!("{key} must be a whole number")),
    }
}

/// `stop`: a string or an array of strings, within the limits.
pub fn stop_strings(body: &Value) -> Result<Vec<String>> {
    let list: Vec<String> = match body.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            a.iter().map(|s| s.as_str().map(String::from).ok_or_else(|| anyhow!("stop must hold strings"))).collect::<Result<_>>()?
        }
        Some(_) => bail!("stop must be a string or an array of strings"),
    };
    if list.len() > MAX_STOPS {
        bail!("stop has {} sequences; the limit is {MAX_STOPS}", list.len());
    }
    if list.iter().any(|s| s.len() > MAX_STOP_LEN) {
        bail!("a stop sequence is longer than the limit of {MAX_STOP_LEN} bytes");
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// A seed for requests that give none: differs per call.
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    now ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
