//! Embeddings on the engine: a pooled hidden state of one input, computed
//! between generation steps with blocks borrowed from the same KV pool.

use super::{Engine, EngineError};

impl Engine<'_> {
    /// The unit-length embedding of `tokens`, or None when the pool lacks
    /// the blocks now (running sequences hold them; try after a step).
    pub fn embed(&mut self, tokens: &[u32]) -> Result<Option<Vec<f32>>, EngineError> {
        let ctx = self.model.model.config.context_length;
        if tokens.is_empty() || tokens.len() > ctx {
            return Err(EngineError::Rejected(format!("an input of {} tokens cannot be embedded (1 to {ctx})", tokens.len())));
        }
        let mut blocks = Vec::new();
        if self.kv.reserve(&mut blocks, tokens.len()).is_err() {
            if self.is_idle() {
                return Err(EngineError::Rejected(format!(
                    "the KV pool ({} blocks) cannot hold an input of {} tokens",
                    self.kv.total_blocks(),
                    tokens.len()
                )));
            }
            return Ok(None);
        }
        let chunk = self.scheduler.config.max_batch_tokens;
        let v = self.model.model.embed(tokens, &blocks, chunk, self.kv, &mut self.scratch);
        self.kv.release(&mut blocks);
        Ok(Some(v))
    }
}
