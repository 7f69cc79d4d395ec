//! One sequence in the engine: its tokens, its KV blocks, and turning each
//! sampled token into events for its stream (text that is whole UTF-8 and
//! clear of stop strings, then a summary when it ends).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Event, FinishReason, GenRequest, Summary};
use crate::sampler::logprobs::TokenLogprobs;
use crate::sampler::Sampler;
use crate::stop::StopMatcher;
use crate::tokenizer::stream::StreamDecoder;
use crate::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

pub(super) struct Sequence {
    /// Unique within the engine.
    pub id: u64,
    /// The gang member with the same prompt whose prompt step this one
    /// shares: it gets that member's blocks (forked) and logits then.
    pub follows: Option<u64>,
    pub req: GenRequest,
    pub sampler: Sampler,
    pub blocks: Vec<u32>,
    /// Prompt, then generated tokens.
    pub history: Vec<u32>,
    /// Tokens of `history` whose K/V are in `blocks`.
    pub computed: usize,
    /// Full blocks registered in the prefix cache.
    pub registered: usize,
    /// Admission order: preemption takes the most recent.
    pub admitted: u64,
    pub generated: usize,
    pub cached_tokens: usize,
    pub prompt_duration: Duration,
    pub decode_duration: Duration,
    decoder: StreamDecoder,
    stops: StopMatcher,
    events: UnboundedSender<Event>,
    cancelled: Arc<AtomicBool>,
    pub finished: bool,
    /// Lost its blocks this step; goes back to the queue.
    pub preempted: bool,
}

impl Sequence {
    pub fn new(id: u64, req: GenRequest, events: UnboundedSender<Event>, cancelled: Arc<AtomicBool>) -> Sequence {
        Sequence {
            id,
            follows: None,
            sampler: Sampler::new(req.params.clone()),
            blocks: Vec::new(),
            history: req.prompt.clone(),
            computed: 0,
            registered: 0,
            admitted: 0,
            generated: 0,
            cached_tokens: 0,
            prompt_duration: Duration::ZERO,
            decode_duration: Duration::ZERO,
            decoder: StreamDecoder::default(),
            stops: StopMatcher::new(req.stop.clone()),
            events,
            cancelled,
            finished: false,
            preempted: false,
            req,
        }
    }

    /// Tokens still to compute: history[computed..].
    pub fn pending(&self) -> usize {
        self.history.len() - self.computed
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn send(&self, e: Event) {
        // A closed stream is noticed through the cancel flag at the next step.
        let _ = self.events.send(e);
    }

    /// Adds the sampled token; emits its text; ends the sequence on EOS,
    /// a stop string, a complete grammar, max_tokens or the context window.
    pub fn accept(&mut self, token: u32, logprobs: Option<TokenLogprobs>, tok: &Tokenizer, context: usize) {
        self.history.push(token);
        self.generated += 1;
        let grammar_complete = match self.req.grammar.as_mut().map(|g| g.accept(token)) {
            None => false,
            Some(Ok(complete)) => complete,
            Some(Err(e)) => return self.fail(&e.to_string()),
        };
        let mut cut_by_stop_string = false;
        let mut finish = None;
        let mut text = String::new();
        if !self.req.ignore_eos && tok.end_tokens().contains(&token) {
            finish = Some(FinishReason::Stop);
        } else {
            let (shown, stopped) = self.stops.push(&self.decoder.push(tok.token_bytes(token)));
            text = shown;
            if stopped {
                finish = Some(FinishReason::Stop);
                cut_by_stop_string = true;
            }
        }
        if finish.is_none() && grammar_complete {
            finish = Some(FinishReason::Stop);
        }
        if finish.is_none() && (self.generated >= self.req.max_tokens || self.history.len() >= context) {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() && !cut_by_stop_string {
            // Text held back for a possible stop string or an unfinished
            // character is the sequence's own: show it.
            let (tail, _) = self.stops.push(&self.decoder.flush());
            text += &tail;
            text += &self.stops.finish();
        }
        self.send(Event::Token { id: token, text, logprobs });
        if let Some(finish) = finish {
            self.finish(finish);
        }
    }

    pub fn fail(&mut self, message: &str) {
        self.finished = true;
        self.send(Event::Failed(message.to_string()));
    }

    pub fn finish(&mut self, finish: FinishReason) {
        self.finished = true;
        self.send(Event::Done(Summary {
            finish,
            prompt_tokens: self.req.prompt.len(),
            cached_tokens: self.cached_tokens,
            generated: self.generated,
            prompt_duration: self.prompt_duration,
            decode_duration: self.decode_duration,
        }));
    }
}
