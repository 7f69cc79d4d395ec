//! A model ready to run: weights, tokenizer and chat template from one GGUF.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::gguf::GgufFile;
use crate::grammar::{Constraint, GrammarSpec, Grammars};
use crate::kernels::{Arithmetic, Isa};
use crate::kv::KvPool;
use crate::model::Model;
use crate::tokenizer::template::{tokenize_segments, ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

/// Why an embedding model refuses to generate.
pub const EMBEDS_ONLY: &str = "this is an embedding model: it only embeds (/api/embed, /v1/embeddings), it cannot generate";

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// None for a model whose file has no chat template (a base model):
    /// it takes raw prompts only.
    pub template: Option<ChatTemplate>,
    pub grammars: Grammars,
}

impl LoadedModel {
    pub fn open(path: &Path, threads: usize, arithmetic: Arithmetic) -> Result<LoadedModel> {
        let f = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&f)?;
        let template = ChatTemplate::from_gguf(&f, &tokenizer)?;
        let model = Model::load(&f, Isa::select()?, arithmetic, threads)?;
        let grammars = Grammars::new(&tokenizer);
        Ok(LoadedModel { model, tokenizer, template, grammars })
    }

    /// Prompt tokens of a conversation, the assistant's turn opened, the
    /// functions in `tools` offered.
    pub fn chat_tokens(&self, messages: &[Message], tools: &[Value]) -> Result<Vec<u32>> {
        self.conversation_tokens(messages, tools, true)
    }

    /// A conversation's tokens, the assistant's turn opened or not.
    pub fn conversation_tokens(&self, messages: &[Message], tools: &[Value], add_generation_prompt: bool) -> Result<Vec<u32>> {
        self.check_generates()?;
        let Some(template) = &self.template else {
            bail!("the model has no chat template: it takes raw prompts only (generate, completions)")
        };
        // Tools and calls are rendered as the template's own text, where
        // control tokens count: one written into them is refused.
        let calls = messages.iter().flat_map(|m| m.tool_calls.iter().map(|c| ("a message's tool_calls", c.to_string())));
        let ids = messages
            .iter()
            .flat_map(|m| [&m.tool_name, &m.tool_call_id])
            .flatten()
            .map(|s| ("a message's tool_name or tool_call_id", s.clone()));
        for (what, text) in tools.iter().map(|t| ("tools", t.to_string())).chain(calls).chain(ids) {
            if let Some(&t) = self.tokenizer.encode(&text, true)?.iter().find(|&&t| self.tokenizer.is_control(t)) {
                bail!("{what} hold the control token {:?}", self.tokenizer.token_text(t));
            }
        }
        tokenize_segments(&self.tokenizer, &template.render_segments(messages, tools, add_generation_prompt)?)
    }

    /// Prompt tokens of a generate request: the prompt (after the system
    /// message, if any) as the user's turn of the chat template, or, for a
    /// model without one, the prompt as it is (Ollama's `{{ .Prompt }}`).
    pub fn prompt_tokens(&self, system: Option<&str>, prompt: &str) -> Result<Vec<u32>> {
        self.check_generates()?;
        if self.template.is_none() {
            if system.is_some() {
                bail!("the model has no chat template to place a system message in");
            }
            return self.raw_tokens(prompt);
        }
        let mut messages: Vec<Message> = system.map(|s| Message::new("system", s)).into_iter().collect();
        messages.push(Message::new("user", prompt));
        self.chat_tokens(&messages, &[])
    }

    fn check_generates(&self) -> Result<()> {
        if self.model.encoder.is_some() {
            bail!(EMBEDS_ONLY);
        }
        Ok(())
    }

    /// Prompt tokens of raw text (special tokens in it are parsed, as a raw
    /// prompt is the caller's own template).
    pub fn raw_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.with_specials(self.tokenizer.encode(text, true)?))
    }

    /// A sequence's constraint to `spec` (an error says why it does not
    /// compile).
    pub fn constraint(&self, spec: &GrammarSpec) -> Result<Constraint> {
        self.grammars.constraint(&self.tokenizer, spec)
    }

    /// A KV pool holding `tokens` positions; one block for an embedding
    /// model, which keeps no KV.
    pub fn kv_pool(&self, tokens: usize, block_size: usize) -> KvPool {
        let c = &self.model.config;
        let blocks = if self.model.encoder.is_some() { 1 } else { tokens.div_ceil(block_size).max(1) };
        KvPool::new(c.layers, c.kv_dim(), block_size, blocks)
    }
}
