//! A model ready to run: weights, tokenizer and chat template from one GGUF.

use std::path::Path;

use anyhow::Result;

use crate::gguf::GgufFile;
use crate::kernels::{Arithmetic, Isa};
use crate::kv::KvPool;
use crate::model::Model;
use crate::tokenizer::template::{tokenize_segments, ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl LoadedModel {
    pub fn open(path: &Path, threads: usize, arithmetic: Arithmetic) -> Result<LoadedModel> {
        let f = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&f)?;
        let template = ChatTemplate::from_gguf(&f, &tokenizer)?;
        let model = Model::load(&f, Isa::select()?, arithmetic, threads)?;
        Ok(LoadedModel { model, tokenizer, template })
    }

    /// Prompt tokens of a conversation, the assistant's turn opened.
    pub fn chat_tokens(&self, messages: &[Message]) -> Result<Vec<u32>> {
        tokenize_segments(&self.tokenizer, &self.template.render_segments(messages, true)?)
    }

    /// Prompt tokens of raw text (special tokens in it are parsed, as a raw
    /// prompt is the caller's own template).
    pub fn raw_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.with_bos(self.tokenizer.encode(text, true)?))
    }

    /// A KV pool holding `tokens` positions.
    pub fn kv_pool(&self, tokens: usize, block_size: usize) -> KvPool {
        let c = &self.model.config;
        KvPool::new(c.layers, c.kv_dim(), block_size, tokens.div_ceil(block_size).max(1))
    }
}
