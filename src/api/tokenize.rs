//! /tokenize and /detokenize bodies, in the shapes of llama.cpp's server
//! (`content`, answered with `tokens`) and vLLM's (`prompt` or `messages`,
//! answered with `count`, `max_model_len` and `tokens`), so that clients of
//! either can count tokens.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::fields::opt_bool;
use super::{parse_messages, tools};
use crate::loaded::LoadedModel;

const LLAMA_CPP_FIELDS: [&str; 5] = ["model", "content", "add_special", "parse_special", "with_pieces"];
const VLLM_FIELDS: [&str; 7] = ["model", "prompt", "messages", "add_special_tokens", "add_generation_prompt", "return_token_strs", "tools"];

fn refuse_others(body: &Value, known: &[&str]) -> Result<()> {
    match body.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
        Some(key) => bail!("{key} is not supported here (fields: {})", known.join(", ")),
        None if !body.is_object() => bail!("the body must be a JSON object"),
        None => Ok(()),
    }
}

fn text(body: &Value, key: &str) -> Result<String> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => bail!("{key} must be a string"),
    }
}

/// A token's bytes as llama.cpp's `with_pieces` shows them: the text when
/// it is whole UTF-8, else the bytes.
fn piece(m: &LoadedModel, id: u32) -> Value {
    let bytes = m.tokenizer.written_bytes(id);
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!(bytes),
    }
}

/// The answer to a /tokenize body.
pub fn tokenize(m: &LoadedModel, body: &Value) -> Result<Value> {
    if body.get("content").is_some() {
        refuse_others(body, &LLAMA_CPP_FIELDS)?;
        let tokens = m.tokenizer.encode(&text(body, "content")?, opt_bool(body, "parse_special")?.unwrap_or(true))?;
        let tokens = if opt_bool(body, "add_special")?.unwrap_or(false) { m.tokenizer.with_specials(tokens) } else { tokens };
        if opt_bool(body, "with_pieces")?.unwrap_or(false) {
            return Ok(json!({ "tokens": tokens.iter().map(|&id| json!({ "id": id, "piece": piece(m, id) })).collect::<Vec<_>>() }));
        }
        return Ok(json!({ "tokens": tokens }));
    }
    refuse_others(body, &VLLM_FIELDS)?;
    let tokens = match (body.get("prompt"), body.get("messages")) {
        (Some(_), Some(_)) => bail!("give prompt or messages, not both"),
        (Some(_), None) => {
            let tokens = m.tokenizer.encode(&text(body, "prompt")?, true)?;
            if opt_bool(body, "add_special_tokens")?.unwrap_or(true) {
                m.tokenizer.with_specials(tokens)
            } else {
                tokens
            }
        }
        (None, Some(_)) => {
            if body.get("add_special_tokens").is_some() {
                bail!("add_special_tokens is for prompt; a conversation's tokens are its template's");
            }
            let offered = tools::parse(m, body)?;
            let list = offered.as_ref().map_or(&[][..], |t| t.list.as_slice());
            m.conversation_tokens(&parse_messages(body)?, list, opt_bool(body, "add_generation_prompt")?.unwrap_or(true))?
        }
        (None, None) => bail!("content (llama.cpp's shape), or prompt or messages (vLLM's), is required"),
    };
    let strs = opt_bool(body, "return_token_strs")?
        .unwrap_or(false)
        .then(|| tokens.iter().map(|&id| m.tokenizer.token_text(id)).collect::<Vec<_>>());
    Ok(json!({ "count": tokens.len(), "max_model_len": m.model.config.context_length, "tokens": tokens, "token_strs": strs }))
}

/// The answer to a /detokenize body: the text under both servers' names
/// (`content` for llama.cpp's, `prompt` for vLLM's), control tokens as
/// their text.
pub fn detokenize(m: &LoadedModel, body: &Value) -> Result<Value> {
    refuse_others(body, &["model", "tokens"])?;
    let vocab = m.tokenizer.vocab_size() as u64;
    let ids = match body.get("tokens") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_u64().filter(|&t| t < vocab).map(|t| t as u32))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| anyhow::anyhow!("tokens must be whole numbers below {vocab}"))?,
        _ => bail!("tokens must be an array of token ids"),
    };
    let text = m.tokenizer.decode_with_controls(&ids);
    Ok(json!({ "content": text, "prompt": text }))
}
