//! Embeddings on the engine, between generation steps: the queued inputs
//! at the front, whole, up to one step's token budget together, in one
//! forward pass. An encoder (an embedding model) keeps nothing; a decoder
//! borrows blocks from the same KV pool for the pass and gives them back.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::sync::oneshot;

use super::{Engine, EngineError};

pub(super) struct EmbedJob {
    pub tokens: Vec<u32>,
    pub reply: oneshot::Sender<Result<Vec<f32>, EngineError>>,
}

/// Embeddings waiting their turn, oldest first.
pub(super) type EmbedQueue = VecDeque<EmbedJob>;

impl Engine<'_> {
    /// Queues an input, or answers at once why it cannot be embedded.
    pub(super) fn queue_embed(&self, queue: &mut EmbedQueue, job: EmbedJob) {
        let ctx = self.model.model.config.context_length;
        if job.tokens.is_empty() || job.tokens.len() > ctx {
            let why = format!("an input of {} tokens cannot be embedded (1 to {ctx})", job.tokens.len());
            let _ = job.reply.send(Err(EngineError::Rejected(why)));
        } else {
            queue.push_back(job);
        }
    }

    /// Embeds inputs from the front of `queue` in one pass: whole inputs up
    /// to the step's token budget together (the first whatever its length),
    /// and answers each. A decoder's inputs that the KV pool cannot hold
    /// now stay queued until a step frees blocks.
    pub(super) fn embed_queued(&mut self, queue: &mut EmbedQueue) {
        let budget = self.scheduler.config.max_batch_tokens;
        let mut take = 0;
        let mut tokens = 0;
        while let Some(job) = queue.get(take) {
            if take > 0 && tokens + job.tokens.len() > budget {
                break;
            }
            tokens += job.tokens.len();
            take += 1;
        }
        let model = &self.model.model;
        let answers = match &model.encoder {
            Some(encoder) => {
                let inputs: Vec<&[u32]> = queue.iter().take(take).map(|j| &j.tokens[..]).collect();
                catch_unwind(AssertUnwindSafe(|| model.encode(encoder, &inputs)))
            }
            None => {
                let mut blocks: Vec<Vec<u32>> = Vec::new();
                for job in queue.iter().take(take) {
                    let mut b = Vec::new();
                    if self.kv.reserve(&mut b, job.tokens.len()).is_err() {
                        break;
                    }
                    blocks.push(b);
                }
                if blocks.is_empty() {
                    if self.is_idle() {
                        let job = queue.pop_front().expect("a job at the front");
                        let why =
                            format!("the KV pool ({} blocks) cannot hold an input of {} tokens", self.kv.total_blocks(), job.tokens.len());
                        let _ = job.reply.send(Err(EngineError::Rejected(why)));
                    }
                    return;
                }
                take = blocks.len();
                let inputs: Vec<&[u32]> = queue.iter().take(take).map(|j| &j.tokens[..]).collect();
                let (kv, scratch) = (&mut *self.kv, &mut self.scratch);
                let answers = catch_unwind(AssertUnwindSafe(|| model.embed(&inputs, &blocks, budget, kv, scratch)));
                blocks.iter_mut().for_each(|b| self.kv.release(b));
                answers
            }
        };
        let mut answers = answers.map_err(|_| EngineError::Internal("internal error while embedding".into()));
        for (i, job) in queue.drain(..take).enumerate() {
            let answer = match &mut answers {
                Ok(vectors) => Ok(std::mem::take(&mut vectors[i])),
                Err(e) => Err(e.clone()),
            };
            let _ = job.reply.send(answer);
        }
    }
}
