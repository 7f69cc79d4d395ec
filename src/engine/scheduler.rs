//! Filling one step's ragged batch, in the order the design sets: one
//! decode token for every running sequence, then prompt chunks of sequences
//! still prefilling (chunked, so a long prompt never stalls the others),
//! then waiting gangs, first come first served, all members or none. That
//! order runs twice: for interactive sequences, then for background ones
//! with the budget they left, up to their own share of a step (none in a
//! step that computes an interactive prompt). When a sequence needs a
//! block and none is free, the most recently admitted running sequence is
//! preempted, a background one first (an interactive gang that cannot be
//! admitted preempts background sequences too): its blocks go back, and it
//! is requeued at the front to be recomputed later (its generated tokens
//! are kept).

use std::collections::VecDeque;

use super::sequence::Sequence;
use super::{EngineConfig, Event, FinishReason, Priority};
use crate::kv::KvPool;

/// One sequence's part of the step: `len` tokens from `start`.
pub(super) struct Planned {
    pub seq: usize,
    pub start: usize,
    pub len: usize,
    /// The chunk ends the sequence's pending tokens: sample after it.
    pub logits: bool,
}

pub(super) struct Scheduler {
    pub config: EngineConfig,
    pub running: Vec<Sequence>,
    pub waiting: VecDeque<Vec<Sequence>>,
    admissions: u64,
    pub preemptions: u64,
}

impl Scheduler {
    pub fn new(config: EngineConfig) -> Scheduler {
        Scheduler { config, running: Vec::new(), waiting: VecDeque::new(), admissions: 0, preemptions: 0 }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Plans the step numbered `step`; admitted sequences get `Started`.
    pub fn plan(&mut self, kv: &mut KvPool, step: u64) -> Vec<Planned> {
        let mut plan: Vec<Planned> = Vec::new();
        let mut budget = self.config.max_batch_tokens;
        for class in [Priority::Interactive, Priority::Background] {
            if class == Priority::Background {
                // A step that computes an interactive prompt is theirs
                // alone: the first token comes as soon as the prompt can.
                let prefilling = plan.iter().any(|p| self.running[p.seq].pending() > 1);
                budget = if prefilling { 0 } else { budget.min(self.config.max_background_tokens) };
            }
            // Decodes first, then prefill chunks, each in admission order.
            for decoding in [true, false] {
                for i in 0..self.running.len() {
                    let s = &self.running[i];
                    if s.req.priority != class || s.finished || s.follows.is_some() || (s.pending() == 1) != decoding || budget == 0 {
                        continue;
                    }
                    let len = s.pending().min(budget);
                    if self.make_room(kv, i, s.computed + len, &mut plan) {
                        let s = &self.running[i];
                        plan.push(Planned { seq: i, start: s.computed, len, logits: len == s.pending() });
                        budget -= len;
                    }
                }
            }
            self.admit(kv, step, class, &mut budget, &mut plan);
        }
        plan
    }

    /// Gives sequence `i` blocks for `tokens` positions, writable from its
    /// next position, preempting others (or itself, last) as needed.
    /// Returns false if `i` itself was preempted.
    fn make_room(&mut self, kv: &mut KvPool, i: usize, tokens: usize, plan: &mut Vec<Planned>) -> bool {
        loop {
            let s = &mut self.running[i];
            let from = s.computed;
            if kv.reserve(&mut s.blocks, tokens).is_ok() && kv.make_writable(&mut s.blocks, from, tokens).is_ok() {
                return true;
            }
            let others = (0..self.running.len()).filter(|&j| j != i && !self.running[j].finished && !self.running[j].blocks.is_empty());
            if others.clone().next().is_none() {
                // Alone and the pool is full: the pool is this sequence's limit.
                self.running[i].finish(FinishReason::Length);
                plan.retain(|p| p.seq != i);
                return false;
            }
            // Background sequences go first, so a background sequence never
            // takes an interactive one's blocks (it would go itself first).
            let victim = others
                .chain([i])
                .max_by_key(|&j| (self.running[j].req.priority == Priority::Background, self.running[j].admitted))
                .expect("candidates exist");
            self.preempt(kv, victim);
            plan.retain(|p| p.seq != victim);
            if victim == i {
                return false;
            }
        }
    }

    /// Frees sequence `j`'s blocks; it stays in `running` (finished for
    /// this step, so plan indices keep pointing where they did) until
    /// `requeue_preempted` runs after the step.
    fn preempt(&mut self, kv: &mut KvPool, j: usize) {
        let leader = self.running[j].id;
        self.release_followers(leader);
        let s = &mut self.running[j];
        kv.release(&mut s.blocks);
        s.computed = 0;
        s.registered = 0;
        s.finished = true;
        s.preempted = true;
        self.preemptions += 1;
    }

    /// Sequences waiting to share `leader`'s prompt step compute their own
    /// instead (the leader lost its blocks or left).
    pub fn release_followers(&mut self, leader: u64) {
        for s in self.running.iter_mut().filter(|s| s.follows == Some(leader)) {
            s.follows = None;
        }
    }

    /// Puts this step's preempted sequences back at the front of the
    /// queue, the longest-running first. Returns whether there were any.
    pub fn requeue_preempted(&mut self) -> bool {
        let mut any = false;
        let mut i = self.running.len();
        // From the newest, each pushed to the front: the oldest ends first.
        while i > 0 {
            i -= 1;
            if self.running[i].preempted {
                let mut s = self.running.remove(i);
                s.preempted = false;
                s.finished = false;
                self.waiting.push_front(vec![s]);
                any = true;
            }
        }
        any
    }

    /// The newest running background sequence, preempted to make room for
    /// an interactive gang; false when there is none.
    fn preempt_background(&mut self, kv: &mut KvPool, plan: &mut Vec<Planned>) -> bool {
        let newest = (0..self.running.len())
            .filter(|&j| !self.running[j].finished && self.running[j].req.priority == Priority::Background)
            .max_by_key(|&j| self.running[j].admitted);
        let Some(j) = newest else { return false };
        self.preempt(kv, j);
        plan.retain(|p| p.seq != j);
        true
    }

    /// Admits waiting gangs of `class` while every member fits: a sequence
    /// slot, at least one token of this step's budget, and blocks for its
    /// prompt. An interactive gang makes room by preempting background
    /// sequences.
    fn admit(&mut self, kv: &mut KvPool, step: u64, class: Priority, budget: &mut usize, plan: &mut Vec<Planned>) {
        while let Some(at) = self.waiting.iter().position(|g| g.first().is_some_and(|s| s.req.priority == class)) {
            let gang = &mut self.waiting[at];
            let active = self.running.iter().filter(|s| !s.finished).count();
            let leaders = gang.iter().filter(|s| s.follows.is_none()).count();
            if *budget < leaders {
                return;
            }
            if active + gang.len() > self.config.max_seqs {
                if class == Priority::Interactive && self.preempt_background(kv, plan) {
                    continue;
                }
                return;
            }
            for s in gang.iter_mut().filter(|s| s.blocks.is_empty() && s.follows.is_none()) {
                s.computed = kv.match_prefix(&s.history, &mut s.blocks);
                if s.admitted == 0 {
                    s.cached_tokens = s.computed;
                }
            }
            let needed: usize =
                gang.iter().filter(|s| s.follows.is_none()).map(|s| s.history.len().div_ceil(kv.block_size()) - s.blocks.len()).sum();
            if needed > kv.free_blocks() {
                // Not yet: give back what the prefix match took.
                for s in gang.iter_mut() {
                    kv.release(&mut s.blocks);
                    s.computed = 0;
                }
                if class == Priority::Interactive && self.preempt_background(kv, plan) {
                    continue;
                }
                return;
            }
            let gang = self.waiting.remove(at).expect("the gang is waiting");
            let mut leaders_left = leaders;
            for mut s in gang {
                if s.admitted == 0 {
                    s.send(Event::Started { step });
                }
                self.admissions += 1;
                s.admitted = self.admissions;
                if s.follows.is_some() {
                    self.running.push(s);
                    continue;
                }
                // Leave at least one token of budget for each leader after this one.
                leaders_left -= 1;
                let len = s.pending().min(*budget - leaders_left);
                kv.reserve(&mut s.blocks, s.computed + len).expect("blocks were checked");
                plan.push(Planned { seq: self.running.len(), start: s.computed, len, logits: len == s.pending() });
                *budget -= len;
                self.running.push(s);
            }
        }
    }
}
