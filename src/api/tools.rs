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
    let forced = match body.get("tool_choice") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s != "none" && s != "auto",
        Some(_) => true,
    };
    let list = match body.get("tools") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        None | Some(Value::Null | Value::Array(_)) if forced => bail!("tool_choice asks for a call, but no tools are offered"),
        None | Some(Value::Null | Value::Array(_)) => return Ok(None),
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

/// Tool calls out of streamed text: what is plain text is given back as
/// soon as it cannot be the start of a call, each call once it is whole.
///
/// Two forms are read: the template's `<tool_call>` blocks, and an answer
/// that is nothing but calls of offered tools written as bare JSON (one or
/// more `{"name", "arguments"}` objects, an array of them, or either in a
/// ```json fence), as Qwen 2.5 Coder writes them. Anything else, a block
/// without a call included, stays text.
#[derive(Debug)]
pub struct CallSplitter {
    names: Vec<String>,
    pending: String,
    inside: bool,
    /// Whether the answer so far may be bare calls, and so is held back
    /// whole: None until its first characters tell.
    bare: Option<bool>,
}

impl Tools {
    /// A splitter for answers to a request offering these tools.
    pub fn splitter(&self) -> CallSplitter {
        let names = self.list.iter().filter_map(|t| t["function"]["name"].as_str()).map(str::to_string).collect();
        CallSplitter { names, pending: String::new(), inside: false, bare: None }
    }

    /// A whole answer's text (trimmed) and calls.
    pub fn split(&self, text: &str) -> (String, Vec<ToolCall>) {
        let mut splitter = self.splitter();
        let (mut shown, mut calls) = splitter.push(text);
        let (rest, last) = splitter.finish();
        shown += &rest;
        calls.extend(last);
        (shown.trim().to_string(), calls)
    }
}

impl CallSplitter {
    /// The text safe to show and the calls completed by `text`.
    pub fn push(&mut self, text: &str) -> (String, Vec<ToolCall>) {
        self.pending.push_str(text);
        if self.bare.is_none() {
            self.bare = may_be_bare(&self.pending);
        }
        if self.bare != Some(false) {
            return (String::new(), Vec::new());
        }
        let (mut shown, mut calls) = (String::new(), Vec::new());
        loop {
            if self.inside {
                let Some(end) = self.pending.find(CLOSE) else { break };
                let block: String = self.pending.drain(..end + CLOSE.len()).collect();
                match serde_json::from_str(block[..end].trim()).ok().and_then(|v| self.call(&v)) {
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

    /// At the end: what is held back, as text or the last calls.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        if self.bare != Some(false) {
            if let Some(calls) = self.bare_calls() {
                self.pending.clear();
                return (String::new(), calls);
            }
            self.bare = Some(false);
            let (shown, calls) = self.push("");
            let (rest, last) = self.finish();
            return (shown + &rest, calls.into_iter().chain(last).collect());
        }
        let rest = std::mem::take(&mut self.pending);
        if !self.inside {
            return (rest, Vec::new());
        }
        self.inside = false;
        match serde_json::from_str(rest.trim()).ok().and_then(|v| self.call(&v)) {
            Some(call) => (String::new(), vec![call]),
            None => (format!("{OPEN}{rest}"), Vec::new()),
        }
    }

    /// The held answer as bare calls, if that is all it is.
    fn bare_calls(&self) -> Option<Vec<ToolCall>> {
        let mut body = self.pending.trim();
        if let Some(fenced) = body.strip_prefix("```") {
            let (_, inner) = fenced.split_once('\n')?;
            body = inner.trim_end().strip_suffix("```")?;
        }
        let mut calls = Vec::new();
        for value in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
            match value.ok()? {
                Value::Array(list) => calls.extend(list.iter().map(|v| self.call(v)).collect::<Option<Vec<_>>>()?),
                v => calls.push(self.call(&v)?),
            }
        }
        (!calls.is_empty()).then_some(calls)
    }

    /// `{"name": ..., "arguments": {...}}` naming an offered tool
    /// (arguments as an object, or a string holding one).
    fn call(&self, v: &Value) -> Option<ToolCall> {
        let name = v.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = match v.get("arguments") {
            Some(a @ Value::Object(_)) => a.clone(),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object)?,
            None | Some(Value::Null) => json!({}),
            Some(_) => return None,
        };
        Some(ToolCall { name: name.to_string(), arguments })
    }
}

/// Whether an answer starting so may be bare calls: None while it is too
/// short to tell (blank, or inside the first line of a fence).
fn may_be_bare(text: &str) -> Option<bool> {
    let t = text.trim_start();
    let opens_json = |c: char| c == '{' || c == '[';
    match t.chars().next() {
        None => None,
        Some(c) if opens_json(c) => Some(true),
        Some(_) if !t.starts_with("```") => {
            if "```".starts_with(t) {
                None
            } else {
                Some(false)
            }
        }
        Some(_) => {
            let (fence, after) = t[3..].split_once('\n')?;
            if !matches!(fence.trim(), "" | "json") {
                return Some(false);
            }
            after.trim_start().chars().next().map(opens_json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> Tools {
        let list = names.iter().map(|n| json!({ "type": "function", "function": { "name": n } })).collect();
        Tools { list, choice: ToolChoice::Auto, parallel: true }
    }

    fn streamed(tools: &Tools, text: &str, piece: usize) -> (String, Vec<ToolCall>) {
        let mut s = tools.splitter();
        let (mut shown, mut got) = (String::new(), Vec::new());
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(piece) {
            let (t, c) = s.push(&chunk.iter().collect::<String>());
            assert!(!t.contains('<') && !t.contains('{'), "a call's start was shown: {t:?}");
            shown += &t;
            got.extend(c);
        }
        let (t, c) = s.finish();
        (shown + &t, got.into_iter().chain(c).collect())
    }

    #[test]
    fn calls_come_out_of_text_streamed_in_any_pieces() {
        let tools = offered(&["weather", "time"]);
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": \"{}\"}\n</tool_call>";
        let expected = vec![
            ToolCall { name: "weather".into(), arguments: json!({"city": "Paris"}) },
            ToolCall { name: "time".into(), arguments: json!({}) },
        ];
        assert_eq!(tools.split(text), ("Let me check.".to_string(), expected.clone()));
        for piece in [1, 2, 5, 11] {
            let (shown, calls) = streamed(&tools, text, piece);
            assert_eq!((shown.trim(), &calls), ("Let me check.", &expected), "pieces of {piece}");
        }
    }

    #[test]
    fn an_answer_that_is_only_bare_calls_of_offered_tools_is_calls() {
        let tools = offered(&["weather"]);
        let paris = ToolCall { name: "weather".into(), arguments: json!({"city": "Paris"}) };
        let rome = ToolCall { name: "weather".into(), arguments: json!({"city": "Rome"}) };
        let one = "{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}";
        let two =
            "{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Rome\"}}";
        for (text, calls) in [
            (format!("  {one}"), vec![paris.clone()]),
            (format!("```json\n{one}\n```"), vec![paris.clone()]),
            (format!("```\n{two}\n```\n"), vec![paris.clone(), rome.clone()]),
            (format!("[{one}]"), vec![paris.clone()]),
        ] {
            assert_eq!(tools.split(&text), (String::new(), calls.clone()), "{text}");
            assert_eq!(streamed(&tools, &text, 3), (String::new(), calls), "{text} streamed");
        }
        // Not an offered tool, not only calls, or not a call: text, whole.
        for text in [
            "{\"name\": \"other\", \"arguments\": {}}".to_string(),
            format!("{one} and more"),
            "{\"title\": \"a\"}".to_string(),
            format!("```python\nprint({one})\n```"),
        ] {
            assert_eq!(tools.split(&text), (text.clone(), vec![]), "{text}");
        }
    }

    #[test]
    fn a_block_without_a_call_and_a_lone_angle_bracket_stay_text() {
        let tools = offered(&["weather"]);
        assert_eq!(tools.split("a <tool_call>not json</tool_call> b"), ("a <tool_call>not json</tool_call> b".into(), vec![]));
        assert_eq!(tools.split("1 < 2"), ("1 < 2".into(), vec![]));
        // Plain text streams as it comes, but for a possible block's start.
        let mut s = tools.splitter();
        assert_eq!(s.push("It is sunny <tool"), ("It is sunny ".to_string(), vec![]));
        assert_eq!(s.push("s> here"), ("<tools> here".to_string(), vec![]));
    }
}
