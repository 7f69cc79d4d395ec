//! The batching engine: sequences from many requests share one ragged
//! forward pass per step and one paged KV pool. `submit` queues a gang (all
//! its sequences start in the same step); each `step` schedules, runs the
//! model, samples and emits events to the sequences' streams. Dropping a
//! stream cancels its sequence; its blocks return at the next step.

mod draw;
mod embed;
mod scheduler;
mod sequence;
mod thread;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::grammar::Constraint;
use crate::kv::KvPool;
use crate::loaded::LoadedModel;
use crate::model::{Scratch, SeqChunk};
use crate::sampler::logprobs::TokenLogprobs;
use crate::sampler::SamplingParams;
use scheduler::Scheduler;
use sequence::Sequence;
pub use thread::{EngineHandle, EngineSnapshot, KvEventSink, StepObserver, StepReport, Watchers};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// What the output must match: each draw takes only tokens it allows,
    /// and the sequence ends where it is complete.
    pub grammar: Option<Constraint>,
    /// Report each drawn token's log-probability and those of this many
    /// likeliest alternatives, from the raw logits.
    pub logprobs: Option<usize>,
    pub priority: Priority,
}

/// Interactive sequences are scheduled first; background ones (batch
/// jobs) fill what they leave of each step, and are preempted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Interactive,
    Background,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// max_tokens or the context window.
    Length,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache, not computed.
    pub cached_tokens: usize,
    pub generated: usize,
    /// Time of the steps until the first token, and of the steps after.
    pub prompt_duration: Duration,
    pub decode_duration: Duration,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Admitted: the sequence's first step.
    Started {
        step: u64,
    },
    /// A generated token, the text it completes (possibly empty) and,
    /// when asked for, its log-probabilities.
    Token {
        id: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Done(Summary),
    /// The sequence failed inside the engine (a bug caught, not a panic
    /// of the server); it has ended.
    Failed(String),
}

/// A sequence's events. Dropping it cancels the sequence. Synchronous
/// callers poll `events.try_recv()` or wait with `events.blocking_recv()`;
/// async callers await `events.recv()`.
pub struct EventStream {
    pub events: UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl EventStream {
    /// The events ready now.
    pub fn ready(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(|| self.events.try_recv().ok())
    }

    /// Every event until the sequence ends, waiting for each (not from an
    /// async context).
    pub fn blocking(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(|| self.events.blocking_recv())
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most tokens in one step's batch.
    pub max_batch_tokens: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
    /// Most of a step's tokens that background sequences may take: a step
    /// under a batch job stays short, so that an interactive request that
    /// arrives waits little for it.
    pub max_background_tokens: usize,
}

impl EngineConfig {
    /// Background sequences limited only by the step's budget.
    pub fn new(max_batch_tokens: usize, max_seqs: usize) -> EngineConfig {
        EngineConfig { max_batch_tokens, max_seqs, max_background_tokens: max_batch_tokens }
    }
}

/// Counters of what the engine did.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub steps: u64,
    /// Tokens that went through the model (prompt chunks and decodes).
    pub computed_tokens: u64,
    pub preemptions: u64,
    /// Sequences and tokens in the latest step's batch.
    pub last_batch_seqs: usize,
    pub last_batch_tokens: usize,
}

pub struct Engine<'a> {
    model: &'a LoadedModel,
    pub kv: &'a mut KvPool,
    scheduler: Scheduler,
    scratch: Scratch,
    stats: EngineStats,
    next_id: u64,
}

impl<'a> Engine<'a> {
    pub fn new(model: &'a LoadedModel, kv: &'a mut KvPool, config: EngineConfig) -> Engine<'a> {
        assert!(config.max_batch_tokens > 0 && config.max_seqs > 0 && config.max_background_tokens > 0);
        Engine { model, kv, scheduler: Scheduler::new(config), scratch: Scratch::default(), stats: EngineStats::default(), next_id: 0 }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats { preemptions: self.scheduler.preemptions, ..self.stats }
    }

    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    /// Sequences admitted and not finished.
    pub fn running(&self) -> usize {
        self.scheduler.running.len()
    }

    /// Sequences queued, not yet admitted.
    pub fn waiting(&self) -> usize {
        self.scheduler.waiting.iter().map(Vec::len).sum()
    }

    /// Tokens whose K/V the running sequences hold.
    pub fn held_tokens(&self) -> usize {
        self.scheduler.running.iter().map(|s| s.computed).sum()
    }

    /// Queues the requests as one gang; their streams, in order.
    pub fn submit(&mut self, gang: Vec<GenRequest>) -> Result<Vec<EventStream>, EngineError> {
        let limits = Limits::of(self.model, self.kv, &self.scheduler.config);
        let (members, streams) = limits.prepare(gang)?;
        self.enqueue(members);
        Ok(streams)
    }

    fn enqueue(&mut self, members: Vec<Prepared>) {
        let mut gang: Vec<Sequence> = Vec::new();
        for p in members {
            self.next_id += 1;
            let mut s = Sequence::new(self.next_id, p.request, p.events, p.cancel);
            // n completions of one prompt: the prompt is computed once.
            s.follows = gang.iter().find(|m| m.follows.is_none() && m.req.prompt == s.req.prompt).map(|m| m.id);
            gang.push(s);
        }
        self.scheduler.waiting.push_back(gang);
    }

    /// Runs one step: schedule, forward, sample, emit. Returns false when
    /// there was nothing to do.
    pub fn step(&mut self) -> bool {
        self.drop_cancelled();
        let step = self.stats.steps + 1;
        let plan = self.scheduler.plan(self.kv, step);
        if plan.is_empty() {
            // Planning may still have preempted or ended sequences.
            let requeued = self.scheduler.requeue_preempted();
            self.retire_finished();
            return requeued;
        }
        self.stats.steps = step;
        self.stats.last_batch_seqs = plan.len();
        self.stats.last_batch_tokens = plan.iter().map(|p| p.len).sum();
        let started = Instant::now();
        let running = &self.scheduler.running;
        let chunks: Vec<SeqChunk> = plan
            .iter()
            .map(|p| {
                let s = &running[p.seq];
                let tokens = &s.history[p.start..p.start + p.len];
                SeqChunk { tokens, start_pos: p.start, blocks: &s.blocks, logits: p.logits, prompt_len: s.req.prompt.len() }
            })
            .collect();
        let logits = self.model.model.forward(&chunks, self.kv, &mut self.scratch);
        let elapsed = started.elapsed();
        let (vocab, ctx, bs) = (self.model.model.config.vocab, self.model.model.config.context_length, self.kv.block_size());
        let mut row = 0;
        // (sequence, logits row) of every sequence that draws a token.
        let mut picks = Vec::new();
        for p in &plan {
            let s = &mut self.scheduler.running[p.seq];
            self.stats.computed_tokens += p.len as u64;
            s.computed += p.len;
            if s.generated == 0 {
                s.prompt_duration += elapsed;
            } else {
                s.decode_duration += elapsed;
            }
            let full = s.computed / bs;
            if full > s.registered {
                self.kv.register_prefix(&s.history[..full * bs], &s.blocks);
                s.registered = full;
            }
            if p.logits {
                let running = &mut self.scheduler.running;
                let leader = &running[p.seq];
                // Only a prompt step can have followers waiting on it.
                let has_followers = leader.generated == 0 && running.iter().any(|f| f.follows == Some(leader.id));
                let shared = if has_followers {
                    Some((
                        leader.id,
                        leader.blocks.clone(),
                        leader.computed,
                        leader.registered,
                        leader.cached_tokens,
                        leader.prompt_duration,
                    ))
                } else {
                    None
                };
                if let Some(shared) = &shared {
                    for (fi, f) in running.iter_mut().enumerate().filter(|(_, f)| f.follows == Some(shared.0)) {
                        f.follows = None;
                        f.blocks = self.kv.fork(&shared.1);
                        (f.computed, f.registered, f.cached_tokens, f.prompt_duration) = (shared.2, shared.3, shared.4, shared.5);
                        picks.push((fi, row));
                    }
                }
                picks.push((p.seq, row));
                row += 1;
            }
        }
        draw::sample_all(&self.model.model.pool, &mut self.scheduler.running, &picks, logits, vocab, &self.model.tokenizer, ctx);
        self.scheduler.requeue_preempted();
        self.retire_finished();
        true
    }

    /// Ends every sequence now, running or waiting, as if it had reached
    /// its length (shutdown).
    pub fn finish_all(&mut self) {
        self.end_all(|s| s.finish(FinishReason::Length));
    }

    /// Ends every sequence with an error (a step failed).
    pub fn fail_all(&mut self, message: &str) {
        self.end_all(|s| s.fail(message));
    }

    fn end_all(&mut self, end: impl Fn(&mut Sequence)) {
        self.scheduler.running.iter_mut().for_each(&end);
        for gang in self.scheduler.waiting.drain(..) {
            gang.into_iter().for_each(|mut s| end(&mut s));
        }
        self.retire_finished();
    }

    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self.scheduler.running.iter().filter(|s| s.is_cancelled()).map(|s| s.id).collect();
        for id in gone {
            self.scheduler.release_followers(id);
        }
        for s in self.scheduler.running.iter_mut().filter(|s| s.is_cancelled()) {
            s.finished = true;
        }
        self.retire_finished();
        for gang in self.scheduler.waiting.iter_mut() {
            let gone: Vec<u64> = gang.iter().filter(|s| s.is_cancelled()).map(|s| s.id).collect();
            gang.retain(|s| !s.is_cancelled());
            for s in gang.iter_mut().filter(|s| s.follows.is_some_and(|l| gone.contains(&l))) {
                s.follows = None;
            }
        }
        self.scheduler.waiting.retain(|g| !g.is_empty());
    }

    fn retire_finished(&mut self) {
        let kv = &mut *self.kv;
        self.scheduler.running.retain_mut(|s| {
            if s.finished {
                kv.release(&mut s.blocks);
            }
            !s.finished
        });
    }
}

/// Why the engine did not take, or did not finish, a request or an
/// embedding; each kind is one class of failure for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// It cannot run as given (an empty prompt, one longer than the
    /// context, more than the pool can ever hold): the caller's to change.
    Rejected(String),
    /// The engine thread has ended (shut down, or stopped by a fault).
    Stopped,
    /// A fault inside the engine while it ran.
    Internal(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Rejected(why) | EngineError::Internal(why) => f.write_str(why),
            EngineError::Stopped => f.write_str("the engine has stopped"),
        }
    }
}

impl std::error::Error for EngineError {}

/// A request checked and given its stream, on its way to the engine.
pub(crate) struct Prepared {
    request: GenRequest,
    events: UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
}

/// What a gang must fit in; checked before anything reaches the engine.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    context: usize,
    block_size: usize,
    total_blocks: usize,
    max_seqs: usize,
    /// An embedding model's: it generates nothing.
    embeds_only: bool,
}

impl Limits {
    fn of(model: &LoadedModel, kv: &KvPool, config: &EngineConfig) -> Limits {
        Limits {
            context: model.model.config.context_length,
            block_size: kv.block_size(),
            total_blocks: kv.total_blocks(),
            max_seqs: config.max_seqs,
            embeds_only: model.model.encoder.is_some(),
        }
    }

    fn prepare(&self, gang: Vec<GenRequest>) -> Result<(Vec<Prepared>, Vec<EventStream>), EngineError> {
        if self.embeds_only {
            return Err(EngineError::Rejected(crate::loaded::EMBEDS_ONLY.into()));
        }
        let ctx = self.context;
        for (i, r) in gang.iter().enumerate() {
            if r.prompt.is_empty() {
                return Err(EngineError::Rejected(format!("request {i}: the prompt is empty")));
            }
            if r.max_tokens == 0 {
                return Err(EngineError::Rejected(format!("request {i}: max_tokens must be at least 1")));
            }
            if r.prompt.len() >= ctx {
                return Err(EngineError::Rejected(format!(
                    "request {i}: prompt of {} tokens does not fit the context of {ctx}",
                    r.prompt.len()
                )));
            }
        }
        // A shared prompt counts once; each follower copies one block.
        let mut blocks = 0;
        for (i, r) in gang.iter().enumerate() {
            let shared = gang[..i].iter().any(|e| e.prompt == r.prompt);
            blocks += if shared { 1 } else { (r.prompt.len() + 1).div_ceil(self.block_size) };
        }
        if gang.is_empty() || blocks > self.total_blocks || gang.len() > self.max_seqs {
            return Err(EngineError::Rejected(format!(
                "{} sequences needing {blocks} KV blocks cannot run together (pool: {} blocks, max {} sequences)",
                gang.len(),
                self.total_blocks,
                self.max_seqs
            )));
        }
        let mut members = Vec::new();
        let mut streams = Vec::new();
        for request in gang {
            let (events, rx) = unbounded_channel();
            let cancel = Arc::new(AtomicBool::new(false));
            members.push(Prepared { request, events, cancel: cancel.clone() });
            streams.push(EventStream { events: rx, cancel });
        }
        Ok((members, streams))
    }
}
