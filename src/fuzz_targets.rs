//! What the fuzzers run (fuzz/, with cargo fuzz) and what their replay
//! test runs (tests/fuzz_replay.rs): each entry takes arbitrary bytes and
//! may fail with an error, never with a panic.

use serde_json::Value;

use crate::api::{ollama, openai};
use crate::loaded::LoadedModel;
use crate::tokenizer::stream::StreamDecoder;
use crate::tokenizer::template::{tokenize_segments, Message};

/// The GGUF reader over any bytes.
pub fn gguf(data: &[u8]) {
    let _ = crate::gguf::parse(data);
}

/// The tokenizer: the bytes as text (special tokens parsed or not), and as
/// token ids (any u32, in or out of the vocabulary) decoded whole and
/// streamed.
pub fn tokenizer(m: &LoadedModel, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parse_special = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(ids) = m.tokenizer.encode(&text, parse_special) {
        let _ = m.tokenizer.decode(&ids);
    }
    let ids: Vec<u32> = data.chunks(4).map(|c| c.iter().fold(0u32, |a, &b| (a << 8) | b as u32)).collect();
    let _ = m.tokenizer.decode(&ids);
    let mut stream = StreamDecoder::default();
    for &id in &ids {
        let _ = stream.push(m.tokenizer.token_bytes(id));
    }
    let _ = stream.flush();
}

/// The model's chat template over hostile messages: the bytes split at
/// NUL into role, content, role, content...
pub fn template(m: &LoadedModel, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.split('\0').collect();
    let messages: Vec<Message> = parts.chunks(2).map(|p| Message::new(p[0], p.get(1).copied().unwrap_or(""))).collect();
    let Some(template) = &m.template else { return };
    for add_generation_prompt in [false, true] {
        if let Ok(segments) = template.render_segments(&messages, &[], add_generation_prompt) {
            let _ = tokenize_segments(&m.tokenizer, &segments);
        }
    }
}

/// Every route's request parsing over the bytes as a JSON body.
pub fn requests(m: &LoadedModel, data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    for kind in [openai::Kind::Chat, openai::Kind::Completion] {
        let _ = openai::parse(m, kind, &body, 1, None, 64);
    }
    let _ = openai::embedding_inputs(m, &body);
    let _ = ollama::embed_inputs(m, &body);
    if let Ok(options) = ollama::merge_options(body.get("options"), None).and_then(|o| ollama::parse_options(&o, 1)) {
        let ctx = m.model.config.context_length;
        let logprobs = crate::api::logprobs::flag_and_top(&body).unwrap_or(None);
        if let Ok(prompt) = ollama::generate_prompt(m, &body) {
            let grammar = ollama::request_grammar(m, &body, None).ok().flatten();
            let _ = ollama::gen_request(prompt, &options, ctx, grammar, logprobs);
        }
        if let Ok((prompt, tools)) = ollama::chat_prompt(m, &body) {
            let grammar = ollama::request_grammar(m, &body, tools.as_ref()).ok().flatten();
            let _ = ollama::gen_request(prompt, &options, ctx, grammar, logprobs);
        }
    }
    if let Some(Value::Array(items)) = body.get("requests") {
        let shared = ollama::BatchShared { options: body.get("options"), format: None };
        for item in items {
            let _ = ollama::batch_item(m, item, &shared, 1);
        }
    }
}
