//! Tool calling: the functions a chat request offers (`tools`,
//! `tool_choice`, `parallel_tool_calls`), the grammar that makes the
//! model call one when it must, and its calls read back out of the text in
//! the template's own syntax: Hermes-style blocks, as Qwen 2.5 writes them,
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::fields::opt_bool;
use crate::grammar::{lark_json, GrammarSpec};
use crate::loaded::LoadedModel;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Whether, and which, tools the model must call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides: a plain answer stays plain.
    Auto,
    /// At least one call, of any of the tools.
    Required,
    /// A call of this function.
    Named(String),
}

/// What a chat request offers.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `{"type": "function", "function": {"name", "description", "parameters"}}` each.
    pub list: Vec<Value>,
    pub choice: ToolChoice,
    /// More than one call in an answer.
    pub parallel: bool,
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// Always an object.
    pub arguments: Value,
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a chat request
/// (Ollama's `tools` alone means `auto`); None when no tools are offered
/// (none given, or `tool_choice: "none"`). A model whose template takes
/// no tools, or writes calls in a syntax not known here, is refused.
pub fn parse(m: &LoadedModel, body: &Value) -> Result<Option<Tools>> {
    let list = match body.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => bail!("tools must be an array"),
    };
    let mut names = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let f = t.get("function");
        if t.get("type").and_then(Value::as_str) != Some("function") || !f.is_some_and(Value::is_object) {
            bail!("tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\", \"parameters\"}}}}");
        }
        match f.and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if !name.is_empty() => names.push(name.to_string()),
            _ => bail!("tools[{i}].function.name must be a non-empty string"),
        }
        if let Some(p) = f.and_then(|f| f.get("parameters")).filter(|p| !p.is_object() && !p.is_null()) {
            bail!("tools[{i}].function.parameters must be a JSON schema object, got {p}");
        }
    }
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(v @ Value::Object(_)) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if names.iter().any(|n| n == name) => ToolChoice::Named(name.to_string()),
            Some(name) => bail!("tool_choice names {name:?}, which is not in tools"),
            None => bail!("tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\"}}}}"),
        },
        Some(other) => bail!("tool_choice must be \"none\", \"auto\", \"required\" or a named function, got {other}"),
    };
    let parallel = opt_bool(body, "parallel_tool_calls")?.unwrap_or(true);
    let Some(template) = &m.template else { bail!("the model has no chat template: it takes no tools") };
    if !template.source().contains("tools") {
        bail!("the model's chat template takes no tools");
    }
    if !template.source().contains(OPEN) {
        bail!("the model's chat template writes tool calls in a syntax Caravan does not read (it reads {OPEN} blocks)");
    }
    Ok(Some(Tools { list: list.clone(), choice, parallel }))
}

impl Tools {
    /// The grammar that makes the model call what it must: None for `auto`.
    pub fn grammar(&self) -> Result<Option<GrammarSpec>> {
        let calls: Vec<Value> = self
            .list
            .iter()
            .filter_map(|t| t.get("function"))
            .filter(|f| match &self.choice {
                ToolChoice::Auto => false,
                ToolChoice::Required => true,
                ToolChoice::Named(name) => f.get("name").and_then(Value::as_str) == Some(name),
            })
            .map(|f| {
                let parameters = f.get("parameters").filter(|p| p.is_object()).cloned().unwrap_or(json!({ "type": "object" }));
                json!({
                    "type": "object",
                    "properties": { "name": { "const": f["name"] }, "arguments": parameters },
                    "required": ["name", "arguments"],
                })
            })
            .collect();
        if calls.is_empty() {
            return Ok(None);
        }
        let call = lark_json(&json!({ "anyOf": calls }))?;
        let repeat = if self.parallel { "(\"\\n\" call)*" } else { "" };
        Ok(Some(GrammarSpec::Lark(format!("start: call {repeat}\ncall: \"{OPEN}\\n\" {call} \"\\n{CLOSE}\"\n"))))
    }
}

/// Tool-call blocks out of streamed text: what is plain text is given
/// back as soon as it cannot be the start of a block, each block as a call
/// once it closes. A block that does not hold a call stays text.
#[derive(Debug, Default)]
pub struct CallSplitter {
    pending: String,
    inside: bool,
}

impl CallSplitter {
    /// The text safe to show and the calls completed by `text`.
    pub fn push(&mut self, text: &str) -> (String, Vec<ToolCall>) {
        self.pending.push_str(text);
        let (mut shown, mut calls) = (String::new(), Vec::new());
        loop {
            if self.inside {
                let Some(end) = self.pending.find(CLOSE) else { break };
                let block: String = self.pending.drain(..end + CLOSE.len()).collect();
                match read_call(&block[..end]) {
                    Some(call) => calls.push(call),
                    None => shown += &format!("{OPEN}{block}"),
                }
                self.inside = false;
            } else if let Some(start) = self.pending.find(OPEN) {
                shown.extend(self.pending.drain(..start));
                self.pending.drain(..OPEN.len());
                self.inside = true;
            } else {
                // Hold back what may be the start of a block.
                let keep = (1..OPEN.len()).rev().find(|&k| self.pending.ends_with(&OPEN[..k])).unwrap_or(0);
                shown.extend(self.pending.drain(..self.pending.len() - keep));
                break;
            }
        }
        (shown, calls)
    }

    /// At the end: what is held back, as text or a last call.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let rest = std::mem::take(&mut self.pending);
        match (self.inside, self.inside.then(|| read_call(&rest)).flatten()) {
            (true, Some(call)) => (String::new(), vec![call]),
            (true, None) => (format!("{OPEN}{rest}"), Vec::new()),
            (false, _) => (rest, Vec::new()),
        }
    }
}

/// A whole answer's text (trimmed) and calls.
pub fn split_calls(text: &str) -> (String, Vec<ToolCall>) {
    let mut splitter = CallSplitter::default();
    let (mut shown, mut calls) = splitter.push(text);
    let (rest, last) = splitter.finish();
    shown += &rest;
    calls.extend(last);
    (shown.trim().to_string(), calls)
}

/// `{"name": ..., "arguments": {...}}` (arguments as an object, or a
/// string holding one).
fn read_call(block: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(block.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get("arguments") {
        Some(a @ Value::Object(_)) => a.clone(),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object)?,
        None | Some(Value::Null) => json!({}),
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_come_out_of_text_streamed_in_any_pieces() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": \"{}\"}\n</tool_call>";
        let (shown, calls) = split_calls(text);
        assert_eq!(shown, "Let me check.");
        assert_eq!(
            calls,
            vec![
                ToolCall { name: "weather".into(), arguments: json!({"city": "Paris"}) },
                ToolCall { name: "time".into(), arguments: json!({}) },
            ]
        );
        for piece in [1, 2, 5, 11] {
            let mut s = CallSplitter::default();
            let (mut shown, mut got) = (String::new(), Vec::new());
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(piece) {
                let (t, c) = s.push(&chunk.iter().collect::<String>());
                assert!(!t.contains('<'), "a block's start was shown: {t:?}");
                shown += &t;
                got.extend(c);
            }
            let (t, c) = s.finish();
            shown += &t;
            got.extend(c);
            assert_eq!((shown.trim(), got.len()), ("Let me check.", 2), "pieces of {piece}");
        }
    }

    #[test]
    fn a_block_without_a_call_and_a_lone_angle_bracket_stay_text() {
        assert_eq!(split_calls("a <tool_call>not json</tool_call> b"), ("a <tool_call>not json</tool_call> b".into(), vec![]));
        assert_eq!(split_calls("1 < 2"), ("1 < 2".into(), vec![]));
    }
}
