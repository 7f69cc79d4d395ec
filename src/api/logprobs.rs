//! Log-probabilities asked for and answered in each API's shape: OpenAI
//! chat's and Ollama's per-token entries (`token`, `logprob`, `bytes`,
//! `top_logprobs`), and the legacy completions' parallel arrays.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use super::fields::{opt_bool, opt_u64};
use crate::sampler::logprobs::{TokenLogprobs, MAX_TOP};
use crate::tokenizer::Tokenizer;

/// How many alternatives `top_logprobs` asks for (0 to 20).
fn top_count(body: &Value) -> Result<usize> {
    match opt_u64(body, "top_logprobs", 0) {
        Ok(Some(n)) if n as usize <= MAX_TOP => Ok(n as usize),
        Ok(None) => Ok(0),
        _ => bail!("top_logprobs must be between 0 and {MAX_TOP}"),
    }
}

/// `logprobs` (true or false) and `top_logprobs`, as OpenAI's chat and
/// Ollama's generate and chat take them: None when not asked for. Asking
/// for alternatives without `logprobs` is refused, as OpenAI refuses it.
pub fn flag_and_top(body: &Value) -> Result<Option<usize>> {
    let top = top_count(body)?;
    match opt_bool(body, "logprobs")? {
        Some(true) => Ok(Some(top)),
        _ if top > 0 => bail!("top_logprobs needs logprobs: true"),
        _ => Ok(None),
    }
}

/// The legacy completions' `logprobs`: how many alternatives (0 to 20),
/// the drawn token's always given too.
pub fn completion_count(body: &Value) -> Result<Option<usize>> {
    if !matches!(body.get("top_logprobs"), None | Some(Value::Null)) {
        bail!("top_logprobs is for chat completions; completions take logprobs as a number");
    }
    match opt_u64(body, "logprobs", 0) {
        Ok(n) if n.is_none_or(|n| n as usize <= MAX_TOP) => Ok(n.map(|n| n as usize)),
        _ => bail!("logprobs must be a whole number from 0 to {MAX_TOP}"),
    }
}

/// A token as the APIs write it: its text (a control token's too), and
/// its bytes, which say what the text cannot when a character is split
/// across tokens.
fn token_text(tok: &Tokenizer, id: u32) -> (String, &[u8]) {
    let bytes = tok.written_bytes(id);
    (String::from_utf8_lossy(bytes).into_owned(), bytes)
}

fn entry(tok: &Tokenizer, id: u32, logprob: f32) -> Value {
    let (text, bytes) = token_text(tok, id);
    json!({ "token": text, "logprob": logprob, "bytes": bytes })
}

/// Per-token entries, each with its alternatives: OpenAI chat's
/// `logprobs.content` and Ollama's `logprobs`.
pub fn entries(tok: &Tokenizer, tokens: &[TokenLogprobs]) -> Value {
    tokens
        .iter()
        .map(|t| {
            let mut v = entry(tok, t.token, t.logprob);
            v["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(tok, id, lp)).collect();
            v
        })
        .collect()
}

/// A chat choice's `logprobs` object.
pub fn chat(tok: &Tokenizer, tokens: &[TokenLogprobs]) -> Value {
    json!({ "content": entries(tok, tokens), "refusal": null })
}

/// A completion choice's `logprobs`: tokens, their log-probabilities, a
/// map of the likeliest (the drawn token included) per position, and each
/// token's offset in characters, counting from `offset`. Returns the
/// offset after the last token.
pub fn completion(tok: &Tokenizer, tokens: &[TokenLogprobs], mut offset: usize) -> (Value, usize) {
    let (mut texts, mut logprobs, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tokens {
        let (text, _) = token_text(tok, t.token);
        let mut top = Map::new();
        for &(id, lp) in t.top.iter().chain([&(t.token, t.logprob)]) {
            top.entry(token_text(tok, id).0).or_insert(json!(lp));
        }
        offsets.push(offset);
        offset += text.chars().count();
        texts.push(text);
        logprobs.push(t.logprob);
        tops.push(Value::Object(top));
    }
    (json!({ "tokens": texts, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets }), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_the_apis_spell_them() {
        assert_eq!(flag_and_top(&json!({})).unwrap(), None);
        assert_eq!(flag_and_top(&json!({"logprobs": true})).unwrap(), Some(0));
        assert_eq!(flag_and_top(&json!({"logprobs": true, "top_logprobs": 20})).unwrap(), Some(20));
        assert_eq!(flag_and_top(&json!({"logprobs": false, "top_logprobs": 0})).unwrap(), None);
        for bad in [json!({"logprobs": true, "top_logprobs": 21}), json!({"top_logprobs": 2}), json!({"logprobs": 1})] {
            assert!(flag_and_top(&bad).is_err(), "{bad}");
        }
        assert_eq!(completion_count(&json!({"logprobs": 0})).unwrap(), Some(0));
        assert_eq!(completion_count(&json!({"logprobs": null})).unwrap(), None);
        for bad in [json!({"logprobs": 21}), json!({"logprobs": true}), json!({"logprobs": 2, "top_logprobs": 2})] {
            assert!(completion_count(&bad).is_err(), "{bad}");
        }
    }
}
