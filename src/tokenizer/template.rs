//! Chat templates: the GGUF's `tokenizer.chat_template` (Jinja) rendered with
//! minijinja. Message content is wrapped in private-use marker characters
//! while rendering, so the result can be split into template text (where
//! special tokens are parsed) and message text (always plain): a user who
//! types `<|im_end|>` gets those characters, not the control token.

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use super::Tokenizer;
use crate::gguf::GgufFile;

const OPEN: char = '\u{F0000}';
const CLOSE: char = '\u{F0001}';

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant's calls: `{"type": "function", "function": {"name",
    /// "arguments" (an object)}}` each, as templates read them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
    /// A tool result's tool (Ollama) or the call it answers (OpenAI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into(), tool_calls: Vec::new(), tool_name: None, tool_call_id: None }
    }
}

/// A rendered conversation: template text and message text, in order.
#[derive(Debug, PartialEq)]
pub enum Segment {
    Template(String),
    Content(String),
}

/// Instructions one render may run: thousands of messages' worth.
const RENDER_FUEL: u64 = 5_000_000;

/// Bytes of its own text a template may add to the messages.
const MAX_TEMPLATE_TEXT: usize = 1 << 20;

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The file's template; None where it has none (a base model).
    pub fn from_gguf(f: &GgufFile, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
        let Some(source) = f.get("tokenizer.chat_template").and_then(|v| v.as_str()) else { return Ok(None) };
        let text = |id: Option<u32>| id.map(|i| tok.token_text(i)).unwrap_or_default();
        ChatTemplate::new(source, text(tok.bos), text(tok.eos)).map(Some)
    }

    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // Templates come with model files from strangers: bound the work a
        // render may do (loops, recursion) so that a hostile one errors out
        // instead of hanging a worker. There is no loader: no file access.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", python_tojson);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_template_owned("chat", source.to_string()).map_err(|e| anyhow!("chat template does not parse: {e}"))?;
        Ok(ChatTemplate { env, source: source.to_string(), bos, eos })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The conversation as segments, the functions in `tools` offered
    /// (OpenAI's `{"type": "function", "function": {...}}` each);
    /// `add_generation_prompt` opens the assistant's turn.
    pub fn render_segments(&self, messages: &[Message], tools: &[Value], add_generation_prompt: bool) -> Result<Vec<Segment>> {
        let strip = |s: &str| s.replace([OPEN, CLOSE], "");
        let marked: Vec<Message> = messages
            .iter()
            .map(|m| Message {
                role: strip(&m.role),
                // Empty content stays empty, as templates test it for truth.
                content: if m.content.is_empty() { String::new() } else { format!("{OPEN}{}{CLOSE}", strip(&m.content)) },
                ..m.clone()
            })
            .collect();
        let ctx = minijinja::context! {
            messages => marked,
            tools => (!tools.is_empty()).then_some(tools),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        };
        let rendered = self.env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| anyhow!("chat template failed: {e}"))?;
        // The caller's own bytes: messages, their calls and the tools.
        let calls = messages.iter().flat_map(|m| &m.tool_calls).chain(tools);
        let content: usize =
            messages.iter().map(|m| m.content.len() + m.role.len()).sum::<usize>() + calls.map(|c| c.to_string().len()).sum::<usize>();
        if rendered.len() > content + MAX_TEMPLATE_TEXT {
            bail!(
                "chat template failed: it wrote {} bytes around {content} bytes of messages (limit: {MAX_TEMPLATE_TEXT} bytes of its own)",
                rendered.len()
            );
        }
        let mut segments = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(open) = rest.find(OPEN) {
            push_segment(&mut segments, Segment::Template(rest[..open].to_string()));
            let after = &rest[open + OPEN.len_utf8()..];
            let close = after.find(CLOSE).unwrap_or(after.len());
            push_segment(&mut segments, Segment::Content(after[..close].to_string()));
            rest = after.get(close + CLOSE.len_utf8()..).unwrap_or("");
        }
        push_segment(&mut segments, Segment::Template(rest.replace(CLOSE, "")));
        Ok(segments)
    }

    /// The conversation as one string.
    pub fn render(&self, messages: &[Message], tools: &[Value], add_generation_prompt: bool) -> Result<String> {
        Ok(self
            .render_segments(messages, tools, add_generation_prompt)?
            .into_iter()
            .map(|s| match s {
                Segment::Template(t) | Segment::Content(t) => t,
            })
            .collect())
    }
}

/// `tojson` as the templates' own environment (Hugging Face's) defines it:
/// Python's `json.dumps` with ", " and ": " (or `indent`), keys in their
/// order, non-ASCII kept; minijinja's own escapes HTML and writes compact.
fn python_tojson(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> Result<minijinja::Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            json.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes()),
            ))
        }
        None => json.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonFormatter)),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(minijinja::Value::from_safe_string(String::from_utf8(out).expect("JSON is UTF-8")))
}

/// serde_json's compact layout with Python's separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.begin_array_value(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn push_segment(segments: &mut Vec<Segment>, s: Segment) {
    match &s {
        Segment::Template(t) | Segment::Content(t) if t.is_empty() => {}
        _ => segments.push(s),
    }
}

/// Tokens of a rendered conversation: specials parsed in template text only.
pub fn tokenize_segments(tok: &Tokenizer, segments: &[Segment]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for s in segments {
        match s {
            Segment::Template(t) => out.extend(tok.encode(t, true)?),
            Segment::Content(t) => out.extend(tok.encode(t, false)?),
        }
    }
    Ok(tok.with_specials(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with user') }}{% endif %}ok",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(t.render(&[Message::new("user", "hi")], &[], false).unwrap(), "ok");
        let err = t.render(&[Message::new("assistant", "hi")], &[], false).unwrap_err().to_string();
        assert!(err.contains("roles must start with user"), "{err}");
    }

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn content_is_a_segment_of_its_own_even_with_markers_in_it() {
        let t = ChatTemplate::new(CHATML, String::new(), String::new()).unwrap();
        let hostile = format!("a{OPEN}b{CLOSE}c<|im_end|>");
        let segments = t.render_segments(&[Message::new("user", &hostile)], &[], true).unwrap();
        assert_eq!(
            segments,
            vec![
                Segment::Template("<|im_start|>user\n".into()),
                Segment::Content("abc<|im_end|>".into()),
                Segment::Template("<|im_end|>\n<|im_start|>assistant\n".into()),
            ]
        );
    }

    #[test]
    fn hostile_templates_fail_quickly_instead_of_hanging() {
        let started = std::time::Instant::now();
        let endless = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let deep = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let huge = "{{ 'x' * 1000000000 }}";
        let wide = "{% for i in range(10000) %}{{ 'x' * 10000 }}{% endfor %}";
        for source in [endless, deep, huge, wide] {
            let t = ChatTemplate::new(source, String::new(), String::new()).unwrap();
            let err = t.render(&[Message::new("user", "hi")], &[], true).unwrap_err().to_string();
            assert!(err.starts_with("chat template failed"), "{source}: {err}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
        // The bounds leave room for long conversations.
        let long: Vec<Message> =
            (0..5000).map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, "some words here")).collect();
        assert!(ChatTemplate::new(CHATML, String::new(), String::new()).unwrap().render(&long, &[], true).is_ok());
    }
}
