//! Structured output as each API asks for it: Ollama's `format` and
//! OpenAI's `response_format`, read into a grammar and compiled for the
//! model (a grammar that does not compile is the caller's error).

use anyhow::{bail, Result};
use serde_json::Value;

use super::tools::Tools;
use crate::grammar::{Constraint, GrammarSpec};
use crate::loaded::LoadedModel;

/// Ollama's `format`: "json" (any JSON object) or a JSON Schema object;
/// absent or "" for free text.
pub fn ollama_format(body: &Value) -> Result<Option<GrammarSpec>> {
    match body.get("format") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(GrammarSpec::JsonObject)),
        Some(schema @ Value::Object(_)) => Ok(Some(GrammarSpec::JsonSchema(schema.clone()))),
        Some(other) => bail!("format must be \"json\" or a JSON schema object, got {other}"),
    }
}

/// OpenAI's `response_format`: `text`, `json_object`, or `json_schema`
/// with `json_schema.schema` (without one: any JSON object). Caravan's
/// own `regex` (with `regex`) and `lark` (with `lark`) take a regular
/// expression or a Lark grammar.
pub fn openai_response_format(body: &Value) -> Result<Option<GrammarSpec>> {
    let format = match body.get("response_format") {
        None | Some(Value::Null) => return Ok(None),
        Some(f @ Value::Object(_)) => f,
        Some(_) => bail!("response_format must be an object with a type"),
    };
    let text_field = |key: &str| match format.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => bail!("response_format of type {key} needs {key}, a string"),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(GrammarSpec::JsonObject)),
        Some("json_schema") => {
            let Some(spec @ Value::Object(_)) = format.get("json_schema") else {
                bail!("response_format of type json_schema needs json_schema, an object with name and schema")
            };
            if let Some(strict) = spec.get("strict").filter(|s| !s.is_boolean() && !s.is_null()) {
                bail!("response_format.json_schema.strict must be true or false, got {strict}");
            }
            match spec.get("schema") {
                None | Some(Value::Null) => Ok(Some(GrammarSpec::JsonObject)),
                Some(schema @ Value::Object(_)) => Ok(Some(GrammarSpec::JsonSchema(schema.clone()))),
                Some(other) => bail!("response_format.json_schema.schema must be a JSON schema object, got {other}"),
            }
        }
        Some("regex") => Ok(Some(GrammarSpec::Regex(text_field("regex")?))),
        Some("lark") => Ok(Some(GrammarSpec::Lark(text_field("lark")?))),
        Some(other) => bail!("response_format type {other:?} is not supported (text, json_object, json_schema, regex, lark)"),
        None => bail!("response_format needs a type (text, json_object, json_schema, regex, lark)"),
    }
}

/// The grammar a request's output is held to, compiled for `m`: its
/// format's, or the one that makes the model call the tools it must;
/// None for free text.
pub fn request_grammar(m: &LoadedModel, format: Option<GrammarSpec>, tools: Option<&Tools>) -> Result<Option<Constraint>> {
    let spec = match (format, tools.map(Tools::grammar).transpose()?.flatten()) {
        (Some(_), Some(_)) => bail!("a response format and a tool_choice that requires a call cannot be combined"),
        (format, calls) => format.or(calls),
    };
    spec.map(|s| m.constraint(&s)).transpose()
}
