//! A request's sequences in flight: submitted to the engine as one gang
//! behind the queue limit, followed as their events arrive (recording the
//! latency metrics), cancelled by dropping.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::engine::{Event, EventStream, FinishReason, GenRequest, Priority, Summary};
use crate::sampler::logprobs::TokenLogprobs;

use super::error::{Api, ApiError};
use super::log::RequestLog;
use super::metrics::Metrics;
use super::models::Loaded;

/// A place in the queue of requests not yet admitted.
struct Ticket(Arc<Metrics>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one sequence produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub tokens: usize,
    pub finish: FinishReason,
    /// Each token's log-probabilities, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    pub summary: Summary,
    pub started_step: u64,
}

pub struct Gang {
    streams: Vec<EventStream>,
    done: Vec<bool>,
    first_token: Vec<Option<Instant>>,
    /// The engine step each sequence started at.
    pub started_steps: Vec<Option<u64>>,
    pub arrived: Instant,
    ticket: Option<Ticket>,
    metrics: Arc<Metrics>,
    /// The model's name, as the metrics label it.
    model: String,
    log: RequestLog,
}

impl Gang {
    /// Queues `requests` as one gang, unless `max_queue` requests already
    /// wait (then: overloaded, so the client retries later).
    pub fn submit(
        loaded: &Loaded,
        requests: Vec<GenRequest>,
        api: Api,
        metrics: &Arc<Metrics>,
        max_queue: usize,
        arrived: Instant,
        log: &RequestLog,
    ) -> Result<Gang, ApiError> {
        if metrics.queued.fetch_add(1, Ordering::Relaxed) >= max_queue {
            metrics.queued.fetch_sub(1, Ordering::Relaxed);
            metrics.reject();
            return Err(ApiError::overloaded(
                api,
                format!("server busy: {max_queue} requests are already waiting (--max-queue); retry later"),
            ));
        }
        let ticket = Ticket(metrics.clone());
        Gang::start(loaded, requests, api, metrics, Some(ticket), arrived, log)
    }

    /// Queues a batch job's `requests` in the background class: they take
    /// what interactive sequences leave, and no place in the queue that
    /// --max-queue bounds.
    pub fn background(
        loaded: &Loaded,
        mut requests: Vec<GenRequest>,
        api: Api,
        metrics: &Arc<Metrics>,
        log: &RequestLog,
    ) -> Result<Gang, ApiError> {
        for r in &mut requests {
            r.priority = Priority::Background;
        }
        Gang::start(loaded, requests, api, metrics, None, Instant::now(), log)
    }

    fn start(
        loaded: &Loaded,
        requests: Vec<GenRequest>,
        api: Api,
        metrics: &Arc<Metrics>,
        ticket: Option<Ticket>,
        arrived: Instant,
        log: &RequestLog,
    ) -> Result<Gang, ApiError> {
        let streams = loaded.engine.submit(requests).map_err(|e| ApiError::engine(api, e))?;
        let n = streams.len();
        Ok(Gang {
            streams,
            done: vec![false; n],
            first_token: vec![None; n],
            started_steps: vec![None; n],
            arrived,
            ticket,
            metrics: metrics.clone(),
            model: loaded.manifest.name.clone(),
            log: log.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// The next event of any sequence, or None when all have ended.
    pub async fn next(&mut self) -> Option<(usize, Event)> {
        let (i, event) = std::future::poll_fn(|cx| {
            let mut open = false;
            for (i, s) in self.streams.iter_mut().enumerate() {
                if self.done[i] {
                    continue;
                }
                match s.events.poll_recv(cx) {
                    Poll::Ready(Some(e)) => return Poll::Ready(Some((i, e))),
                    Poll::Ready(None) => self.done[i] = true,
                    Poll::Pending => open = true,
                }
            }
            if open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await?;
        self.record(i, &event);
        Some((i, event))
    }

    fn record(&mut self, i: usize, event: &Event) {
        let now = Instant::now();
        match event {
            Event::Started { step } => {
                self.started_steps[i] = Some(*step);
                self.metrics.admitted(&self.model, now - self.arrived);
                self.ticket = None;
            }
            Event::Token { .. } => {
                if self.first_token[i].is_none() {
                    self.first_token[i] = Some(now);
                    self.metrics.first_token(&self.model, now - self.arrived);
                }
                self.log.add_tokens(1);
            }
            Event::Failed(_) => self.done[i] = true,
            Event::Done(s) => {
                self.done[i] = true;
                let decoding = self.first_token[i].map_or(Duration::ZERO, |t| now - t);
                self.metrics.finished(&self.model, s, decoding);
            }
        }
    }

    /// Runs every sequence to its end; their outputs, in order.
    pub async fn collect(mut self, api: Api) -> Result<Vec<Output>, ApiError> {
        let n = self.len();
        let mut texts = vec![String::new(); n];
        let mut tokens = vec![0; n];
        let mut logprobs: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
        let mut outputs: Vec<Option<Output>> = vec![None; n];
        while let Some((i, e)) = self.next().await {
            match e {
                Event::Started { .. } => {}
                Event::Token { text, logprobs: lp, .. } => {
                    texts[i].push_str(&text);
                    tokens[i] += 1;
                    logprobs[i].extend(lp);
                }
                Event::Failed(message) => return Err(ApiError::internal(api, message)),
                Event::Done(summary) => {
                    let started_step = self.started_steps[i].unwrap_or(0);
                    outputs[i] = Some(Output {
                        text: std::mem::take(&mut texts[i]),
                        tokens: tokens[i],
                        finish: summary.finish,
                        logprobs: std::mem::take(&mut logprobs[i]),
                        summary,
                        started_step,
                    });
                }
            }
        }
        outputs.into_iter().map(|o| o.ok_or_else(|| ApiError::internal(api, "the engine stopped before the answer was complete"))).collect()
    }
}
