//! The HTTP APIs' requests and answers as plain data: parsing JSON bodies
//! into engine requests, and shaping results into each API's JSON. The
//! server and `caravan batch` share them.

pub mod batch_line;
pub mod fields;
pub mod logprobs;
pub mod ollama;
pub mod openai;
pub mod structured;
pub mod tokenize;
pub mod tools;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::engine::FinishReason;
use crate::loaded::LoadedModel;
use crate::tokenizer::template::Message;

/// Roles a chat message may have.
const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// `messages`: a non-empty array of {role, content}; content is a string,
/// or (OpenAI) an array of text parts.
pub fn parse_messages(body: &Value) -> Result<Vec<Message>> {
    let list = match body.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => bail!("messages must not be empty"),
        None | Some(Value::Null) => bail!("messages is required"),
        Some(_) => bail!("messages must be an array"),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            // OpenAI's `developer` is the newer name of `system`.
            let role = match m.get("role").and_then(Value::as_str).unwrap_or("") {
                "developer" => "system",
                role => role,
            };
            if !ROLES.contains(&role) {
                bail!("messages[{i}].role must be one of {}, developer, got {role:?}", ROLES.join(", "));
            }
            if !matches!(m.get("images"), None | Some(Value::Null)) && m["images"] != serde_json::json!([]) {
                bail!("messages[{i}].images is not supported: the model takes text only");
            }
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t),
                        _ => bail!("messages[{i}].content parts must be {{\"type\": \"text\", \"text\": ...}}"),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
                Some(_) => bail!("messages[{i}].content must be a string"),
            };
            let mut message = Message::new(role, &content);
            message.tool_calls = tool_calls(m).map_err(|e| anyhow::anyhow!("messages[{i}].{e}"))?;
            for (key, field) in [("tool_name", &mut message.tool_name), ("tool_call_id", &mut message.tool_call_id)] {
                *field = match m.get(key) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => bail!("messages[{i}].{key} must be a string"),
                };
            }
            Ok(message)
        })
        .collect()
}

/// An assistant message's `tool_calls` as templates read them, arguments
/// as objects (OpenAI sends them as JSON text, Ollama as objects).
fn tool_calls(message: &Value) -> Result<Vec<Value>> {
    let list = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => bail!("tool_calls must be an array"),
    };
    list.iter()
        .enumerate()
        .map(|(k, call)| {
            let f = call.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = match f.and_then(|f| f.get("arguments")) {
                Some(a @ Value::Object(_)) => Some(a.clone()),
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object),
                None | Some(Value::Null) => Some(serde_json::json!({})),
                Some(_) => None,
            };
            match (name, arguments) {
                (Some(name), Some(arguments)) => {
                    let mut v = serde_json::json!({ "type": "function", "function": { "name": name, "arguments": arguments } });
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        v["id"] = id.into();
                    }
                    Ok(v)
                }
                _ => bail!("tool_calls[{k}] must have function.name and function.arguments (an object, or JSON text of one)"),
            }
        })
        .collect()
}

/// An input to embed as tokens: BOS, the text (never control tokens) and
/// the separator where the tokenizer ends inputs with one,
/// cut to the context when `truncate`, else refused when too long.
pub fn embed_tokens(m: &LoadedModel, text: &str, truncate: bool) -> Result<Vec<u32>> {
    if text.is_empty() {
        bail!("an input to embed must not be empty");
    }
    let tok = &m.tokenizer;
    let mut tokens = tok.with_specials(tok.encode(text, false)?);
    let ctx = m.model.config.context_length;
    if tokens.len() > ctx {
        if !truncate {
            bail!("the input is {} tokens; the context is {ctx}", tokens.len());
        }
        tokens.truncate(ctx);
        // A separator that ends every input stays its last token.
        if let (Some(sep), Some(last)) = (tok.sep_last, tokens.last_mut()) {
            *last = sep;
        }
    }
    Ok(tokens)
}

/// "stop" or "length", as both APIs name them.
pub fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}
