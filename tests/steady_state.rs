//! A decode step allocates nothing once its buffers have grown: the forward
//! pass (every matmul, norm, rotation, attention, the lm_head) on the
//! compute pool's threads, and sampling with Ollama's default settings
//! or greedy. Counted by a global allocator, so this binary holds this one
//! test: another test's allocations on other threads would be counted too.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use caravan::kv::KvPool;
use caravan::model::{Model, Scratch, SeqChunk};
use caravan::sampler::{Sampler, SamplingParams};

/// The system allocator, counting allocations (and growths) while `COUNTING`.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_steps_allocate_nothing_once_warm() {
    for loaded in [common::model(), common::fast_model()] {
        let counted = allocations_per_decode_step(&loaded.model);
        assert!(counted[2..].iter().all(|&n| n == 0), "{}: allocations per step: {counted:?}", loaded.model.arithmetic);
    }
}

/// Allocations in each of twelve decode steps of four sequences, counted
/// from the third step on (the first steps grow the buffers).
fn allocations_per_decode_step(m: &Model) -> Vec<usize> {
    let c = &m.config;
    // Four sequences (prompts of 3 to 40 tokens: a task list past the
    // small-sort cutoff) with their whole KV reserved up front, as the
    // scheduler does a block at a time.
    let prompts: Vec<Vec<u32>> = [3usize, 17, 40, 9].iter().map(|&n| (0..n as u32).map(|t| 100 + 7 * t).collect()).collect();
    let steps = 12;
    let mut kv = KvPool::new(c.layers, c.kv_dim(), 16, 32);
    let mut tables: Vec<Vec<u32>> = prompts.iter().map(|_| Vec::new()).collect();
    for (table, p) in tables.iter_mut().zip(&prompts) {
        kv.reserve(table, p.len() + steps).unwrap();
    }
    let mut samplers = [Sampler::new(SamplingParams::default()), Sampler::new(SamplingParams::greedy())];
    let mut histories = prompts.clone();
    let mut scratch = Scratch::default();
    let chunks: Vec<SeqChunk> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqChunk { tokens: p, start_pos: 0, blocks: t, logits: true, prompt_len: p.len() })
        .collect();
    m.forward(&chunks, &mut kv, &mut scratch);
    let mut next: Vec<u32> = histories.iter().map(|h| h[h.len() - 1]).collect();
    let mut counted = Vec::new();
    for step in 0..steps {
        let chunks: Vec<SeqChunk> = histories
            .iter()
            .zip(&tables)
            .zip(&next)
            .zip(&prompts)
            .map(|(((h, t), tok), p)| SeqChunk {
                tokens: std::slice::from_ref(tok),
                start_pos: h.len() - 1,
                blocks: t,
                logits: true,
                prompt_len: p.len(),
            })
            .collect();
        let mut picked = [0u32; 4];
        // The caller's bookkeeping around a step is outside the count.
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(step >= 2, Ordering::SeqCst);
        let logits = m.forward(&chunks, &mut kv, &mut scratch);
        for (i, p) in picked.iter_mut().enumerate() {
            *p = samplers[i % 2].sample(&logits[i * c.vocab..(i + 1) * c.vocab], &histories[i]);
        }
        COUNTING.store(false, Ordering::SeqCst);
        counted.push(ALLOCATIONS.load(Ordering::SeqCst));
        for ((h, n), p) in histories.iter_mut().zip(next.iter_mut()).zip(picked) {
            h.push(p);
            *n = p;
        }
    }
    counted
}
