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

/// How long a model stays loaded after its last request ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    For(std::time::Duration),
    Forever,
}

impl std::str::FromStr for KeepAlive {
    type Err = anyhow::Error;

    /// A duration as Ollama reads one: Go's syntax ("5m", "1h30m", "2.5s",
    /// "0"), or digits alone as seconds (as `OLLAMA_KEEP_ALIVE` takes
    /// them); negative means forever.
    fn from_str(text: &str) -> Result<KeepAlive> {
        let t = text.trim();
        if let Ok(seconds) = t.parse::<f64>() {
            return KeepAlive::seconds(seconds).ok_or_else(|| anyhow!("keep_alive {text:?} is out of range"));
        }
        let (negative, mut rest) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let bad = || anyhow!("keep_alive {text:?} is not a duration (like \"5m\", \"1h30m\", \"30s\", 0 or -1)");
        let mut total = 0.0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
            let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
            let unit_end = rest[number_end..].find(|c: char| c.is_ascii_digit() || c == '.').map_or(rest.len(), |i| number_end + i);
            let scale = match &rest[number_end..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += number * scale;
            rest = &rest[unit_end..];
        }
        KeepAlive::seconds(if negative { -total } else { total }).ok_or_else(bad)
    }
}

impl KeepAlive {
    fn seconds(s: f64) -> Option<KeepAlive> {
        match s {
            s if s < 0.0 => Some(KeepAlive::Forever),
            s => std::time::Duration::try_from_secs_f64(s).ok().map(KeepAlive::For),
        }
    }
}

/// `keep_alive`: seconds as a number, or a duration as text.
pub fn keep_alive(body: &Value) -> Result<Option<KeepAlive>> {
    match body.get("keep_alive") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some),
        Some(v) => {
            v.as_f64().and_then(KeepAlive::seconds).map(Some).ok_or_else(|| anyhow!("keep_alive must be a duration or a number of seconds"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keep_alive_reads_as_ollama_reads_it() {
        for (text, want) in [
            ("5m", KeepAlive::For(Duration::from_secs(300))),
            ("1h30m", KeepAlive::For(Duration::from_secs(5400))),
            ("2.5s", KeepAlive::For(Duration::from_millis(2500))),
            ("300ms", KeepAlive::For(Duration::from_millis(300))),
            ("0", KeepAlive::For(Duration::ZERO)),
            ("600", KeepAlive::For(Duration::from_secs(600))),
            ("-1", KeepAlive::Forever),
            ("-5m", KeepAlive::Forever),
        ] {
            assert_eq!(text.parse::<KeepAlive>().unwrap(), want, "{text}");
        }
        for bad in ["", "5 minutes", "m", "5x", "1.2.3s", "-"] {
            assert!(bad.parse::<KeepAlive>().is_err(), "{bad:?}");
        }
        assert_eq!(keep_alive(&serde_json::json!({ "keep_alive": 0 })).unwrap(), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(keep_alive(&serde_json::json!({ "keep_alive": -1 })).unwrap(), Some(KeepAlive::Forever));
        assert!(keep_alive(&serde_json::json!({ "keep_alive": true })).is_err());
    }
}
