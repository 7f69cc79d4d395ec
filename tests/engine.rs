//! The batching engine on the real model: continuous batching with chunked
//! prefill, preemption, cancellation, gang admission, and no leaked blocks.

mod common;

use caravan::engine::{Engine, EngineConfig, Event, EventStream, GenRequest, Priority};
use caravan::generate::generate;
use caravan::kernels::Arithmetic;
use caravan::sampler::SamplingParams;
use common::faithful::greedy;
use common::{golden, model};

/// What one stream said.
#[derive(Default, Clone)]
struct Seen {
    started: Option<u64>,
    tokens: Vec<u32>,
    text: String,
    done: bool,
}

impl Seen {
    fn record(&mut self, e: Event) {
        match e {
            Event::Started { step } => self.started = Some(step),
            Event::Token { id, text, .. } => {
                self.tokens.push(id);
                self.text.push_str(&text);
            }
            Event::Done(_) => self.done = true,
            Event::Failed(m) => panic!("the sequence failed: {m}"),
        }
    }
}

fn drain(streams: &mut [EventStream], seen: &mut [Seen]) {
    for (s, out) in streams.iter_mut().zip(seen.iter_mut()) {
        s.ready().for_each(|e| out.record(e));
    }
}

fn alone(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let m = model();
    let mut kv = m.kv_pool(512, 16);
    generate(m, &mut kv, &[greedy(prompt.to_vec(), max_tokens)], |_, _| {}).unwrap().remove(0).tokens
}

#[test]
fn sequences_joining_at_different_steps_get_the_tokens_they_get_alone() {
    let m = model();
    let rows = golden();
    let watched = [3usize, 12, 33];
    let mut kv = m.kv_pool(64 * 96, 16);
    // Small steps: prompts are prefilled in chunks among the decodes.
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(48, 64));
    let mut streams = Vec::new();
    for (i, r) in rows.iter().enumerate().filter(|(i, _)| !watched.contains(i)).take(30) {
        streams.extend(engine.submit(vec![greedy(r.prompt_tokens.clone(), 4 + i % 13)]).unwrap());
    }
    let mut seen = vec![Seen::default(); streams.len()];
    let mut late = Vec::new();
    // Late arrivals come once the others are decoding, at different steps.
    for step in 0..400 {
        if let Some(k) = [20, 30, 40].iter().position(|&s| s == step) {
            late.extend(engine.submit(vec![greedy(rows[watched[k]].prompt_tokens.clone(), 12)]).unwrap());
        }
        if !engine.step() && late.len() == 3 {
            break;
        }
        drain(&mut streams, &mut seen);
    }
    let mut late_seen = vec![Seen::default(); 3];
    drain(&mut late, &mut late_seen);
    assert!(engine.is_idle());
    let starts: Vec<u64> = late_seen.iter().map(|s| s.started.unwrap()).collect();
    assert!(starts[0] < starts[1] && starts[1] < starts[2], "joined at different steps: {starts:?}");
    for (k, s) in late_seen.iter().enumerate() {
        assert!(s.done);
        assert_eq!(s.tokens, alone(&rows[watched[k]].prompt_tokens, 12), "row {}", watched[k]);
    }
    assert!(seen.iter().all(|s| s.done));
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

#[test]
fn a_pool_too_small_for_everyone_preempts_and_every_sequence_still_gets_its_tokens() {
    let m = model();
    let rows = golden();
    let picks: Vec<usize> = (0..12).map(|i| i * 3).collect();
    let mut kv = m.kv_pool(20 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(256, 64));
    let mut streams: Vec<EventStream> =
        picks.iter().flat_map(|&i| engine.submit(vec![greedy(rows[i].prompt_tokens.clone(), 24)]).unwrap()).collect();
    let mut seen = vec![Seen::default(); streams.len()];
    while engine.step() {
        drain(&mut streams, &mut seen);
    }
    drain(&mut streams, &mut seen);
    assert!(engine.is_idle());
    assert!(engine.stats().preemptions > 0, "the pool was meant to be too small");
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
    for (s, &i) in seen.iter().zip(&picks) {
        assert_eq!(s.tokens, alone(&rows[i].prompt_tokens, 24), "row {i}");
    }
}

#[test]
fn stopped_cancelled_and_finished_sequences_leave_no_block_behind() {
    let m = model();
    let rows = golden();
    let mut kv = m.kv_pool(24 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(64, 8));
    let stop = GenRequest { stop: vec!["\n".into()], ..greedy(rows[0].prompt_tokens.clone(), 40) };
    let mut kept = engine.submit(vec![stop, greedy(rows[1].prompt_tokens.clone(), 30)]).unwrap();
    let mut cancelled = engine.submit(vec![greedy(rows[2].prompt_tokens.clone(), 200)]).unwrap();
    for _ in 0..6 {
        engine.step();
    }
    let used_before = engine.kv.total_blocks() - engine.kv.free_blocks();
    // The client goes away mid-generation: its blocks return at the next step.
    assert!(cancelled.remove(0).ready().any(|e| matches!(e, Event::Token { .. })));
    engine.step();
    assert!(engine.kv.total_blocks() - engine.kv.free_blocks() < used_before);
    let mut seen = vec![Seen::default(); 2];
    while engine.step() {
        drain(&mut kept, &mut seen);
    }
    drain(&mut kept, &mut seen);
    assert!(seen[0].done && !seen[0].text.contains('\n'), "cut at the stop string: {:?}", seen[0].text);
    assert!(seen[0].tokens.len() < 40);
    assert!(seen[1].done);
    kept.clear();
    assert!(engine.is_idle());
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

#[test]
fn a_gang_starts_in_one_step_even_while_the_engine_is_busy() {
    let m = model();
    let rows = golden();
    let mut kv = m.kv_pool(64 * 64, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(32, 16));
    let busy: Vec<EventStream> = (0..3).flat_map(|i| engine.submit(vec![greedy(rows[i].prompt_tokens.clone(), 20)]).unwrap()).collect();
    for _ in 0..4 {
        engine.step();
    }
    let gang: Vec<GenRequest> = (30..36).map(|i| greedy(rows[i].prompt_tokens.clone(), 6)).collect();
    let mut streams = engine.submit(gang).unwrap();
    let mut seen = vec![Seen::default(); streams.len()];
    while engine.step() {
        drain(&mut streams, &mut seen);
    }
    drain(&mut streams, &mut seen);
    let starts: Vec<u64> = seen.iter().map(|s| s.started.expect("started")).collect();
    assert!(starts.iter().all(|&s| s == starts[0] && s > 4), "gang started at {starts:?}");
    // Chat prompts of ~40 tokens and a 32-token step: the gang's prompts
    // were chunked over later steps, yet all were admitted together.
    assert!(seen.iter().all(|s| s.done && (1..=6).contains(&s.tokens.len())));
    drop(busy);
}

#[test]
fn eight_completions_of_one_long_prompt_compute_and_hold_it_once() {
    let m = model();
    let prompt: Vec<u32> = (0..1000u32).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut kv = m.kv_pool(256 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(2048, 16));
    // Different seeds: eight different continuations of the same context.
    let gang: Vec<GenRequest> = (0..8)
        .map(|seed| GenRequest { params: SamplingParams { seed, ..SamplingParams::default() }, ..greedy(prompt.clone(), 10) })
        .collect();
    let mut streams = engine.submit(gang).unwrap();
    assert!(engine.step());
    // One prompt's worth of tokens went through the model, held in 63 blocks.
    assert_eq!(engine.stats().computed_tokens, 1000);
    assert_eq!(engine.kv.total_blocks() - engine.kv.free_blocks(), 1000usize.div_ceil(16));
    let mut seen = vec![Seen::default(); 8];
    drain(&mut streams, &mut seen);
    assert!(seen.iter().all(|s| s.started == Some(1) && s.tokens.len() == 1));
    while engine.step() {
        drain(&mut streams, &mut seen);
    }
    drain(&mut streams, &mut seen);
    // After the prompt, each token is one decode: 9 more per sequence.
    assert_eq!(engine.stats().computed_tokens, 1000 + 8 * 9);
    assert!(seen.iter().all(|s| s.done && s.tokens.len() == 10));
    let distinct: std::collections::HashSet<&Vec<u32>> = seen.iter().map(|s| &s.tokens).collect();
    assert!(distinct.len() > 1, "seeded samplers diverge");
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

mod threaded {
    use super::*;
    use caravan::engine::{EngineHandle, Watchers};
    use caravan::loaded::LoadedModel;
    use std::sync::Arc;
    use std::time::Duration;

    fn collect(mut stream: EventStream) -> Seen {
        let mut seen = Seen::default();
        for e in stream.blocking() {
            seen.record(e);
            if seen.done {
                break;
            }
        }
        seen
    }

    fn handle(window_ms: u64) -> EngineHandle {
        let m = Arc::new(LoadedModel::open(&common::model_path(), 2, Arithmetic::Ggml).unwrap());
        let kv = m.kv_pool(64 * 128, 16);
        EngineHandle::spawn(m, kv, EngineConfig::new(256, 32), Duration::from_millis(window_ms), Watchers::default())
    }

    #[test]
    fn requests_within_the_batch_window_start_together_and_concurrent_clients_get_their_tokens() {
        let engine = Arc::new(handle(300));
        let rows = golden();
        let clients: Vec<_> = [4usize, 9, 21, 32]
            .into_iter()
            .map(|i| {
                let (engine, prompt) = (engine.clone(), rows[i].prompt_tokens.clone());
                std::thread::spawn(move || (i, collect(engine.submit(vec![greedy(prompt, 10)]).unwrap().remove(0))))
            })
            .collect();
        let results: Vec<(usize, Seen)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for (i, seen) in &results {
            assert_eq!(seen.started, Some(1), "row {i} arrived within the window");
            assert!(seen.done);
            assert_eq!(seen.tokens, alone(&rows[*i].prompt_tokens, 10), "row {i}");
        }
        let snap = engine.snapshot();
        assert_eq!((snap.free_blocks, snap.idle), (snap.total_blocks, true));
    }

    /// Embeddings take turns with the steps: a pass of at most a step's
    /// token budget, then a step. Inputs of 240 tokens against a budget of
    /// 256 go one a pass, so a running generation gets about a token per
    /// input while they wait; were they embedded first, it would get none.
    #[test]
    fn queued_embeddings_take_turns_with_a_running_generation() {
        let engine = handle(0);
        let rows = golden();
        let mut stream =
            engine.submit(vec![GenRequest { ignore_eos: true, ..greedy(rows[0].prompt_tokens.clone(), 400) }]).unwrap().remove(0);
        while !matches!(stream.events.blocking_recv(), Some(Event::Token { .. })) {}
        let input: Vec<u32> = rows[35].prompt_tokens.iter().cycle().take(240).copied().collect();
        let pending: Vec<_> = (0..24).map(|_| engine.embed(input.clone()).unwrap()).collect();
        let mut generated = 0;
        let mut answers = Vec::new();
        for rx in pending {
            answers.push(rx.blocking_recv().unwrap().unwrap());
            generated += stream.ready().filter(|e| matches!(e, Event::Token { .. })).count();
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "the same input, the same embedding");
        assert!((20..399).contains(&generated), "{generated} tokens generated while 24 inputs were embedded");
    }

    #[test]
    fn a_client_that_leaves_mid_stream_gives_its_blocks_back() {
        let engine = handle(0);
        let rows = golden();
        let mut stream =
            engine.submit(vec![GenRequest { ignore_eos: true, ..greedy(rows[35].prompt_tokens.clone(), 500) }]).unwrap().remove(0);
        // Read a few tokens, then go away.
        let tokens = stream.blocking().filter(|e| matches!(e, Event::Token { .. })).take(3).count();
        assert_eq!(tokens, 3);
        assert!(engine.snapshot().free_blocks < engine.snapshot().total_blocks);
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !engine.snapshot().idle && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let snap = engine.snapshot();
        assert!(snap.idle, "the cancelled sequence was dropped");
        assert_eq!(snap.free_blocks, snap.total_blocks);
        assert!(snap.stats.steps < 100, "it did not run to its 500 tokens");
    }
}

#[test]
fn one_request_fills_the_whole_context_whatever_max_seqs_allows() {
    let m = model();
    let ctx = m.model.config.context_length;
    let prompt: Vec<u32> = (0..ctx as u32 - 24).map(|i| 100 + (i * 7919) % 40000).collect();
    let mut kv = m.kv_pool(ctx, 16);
    // 64 sequences allowed, yet nothing is reserved per slot: one request
    // may take the whole pool.
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(2048, 64));
    let mut stream = engine.submit(vec![GenRequest { ignore_eos: true, ..greedy(prompt, 1000) }]).unwrap().remove(0);
    while engine.step() {}
    let mut seen = [Seen::default()];
    drain(std::slice::from_mut(&mut stream), &mut seen);
    // It ran to the end of the context window, not to a per-slot share.
    assert_eq!(seen[0].tokens.len(), 24);
    assert!(seen[0].done);
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

#[test]
fn a_sequence_that_outgrows_the_whole_pool_ends_with_length() {
    let m = model();
    let rows = golden();
    // 4 blocks = 64 tokens; a 5-token prompt asked for 200 tokens.
    let mut kv = m.kv_pool(64, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(64, 4));
    let mut stream = engine.submit(vec![GenRequest { ignore_eos: true, ..greedy(rows[0].prompt_tokens.clone(), 200) }]).unwrap().remove(0);
    while engine.step() {}
    let events: Vec<Event> = stream.ready().collect();
    let tokens = events.iter().filter(|e| matches!(e, Event::Token { .. })).count();
    assert_eq!(tokens, 64 - 5 + 1, "it filled the pool, the last token needing no slot");
    assert!(matches!(events.last(), Some(Event::Done(s)) if s.finish == caravan::engine::FinishReason::Length));
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

/// Sequences under grammars (each its own schema, some sharing one) among
/// free ones, in a pool too small for all: preempted and recomputed, each
/// keeps its matcher and gets the tokens it gets alone; every constrained
/// output parses as its schema asks, and ends where the grammar completes.
#[test]
fn constrained_sequences_batch_preempt_and_finish_as_they_do_alone() {
    use caravan::grammar::GrammarSpec;
    let m = model();
    let rows = golden();
    let number = GrammarSpec::JsonSchema(serde_json::json!({
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["n"]}));
    let words = GrammarSpec::JsonSchema(serde_json::json!({
        "type": "object", "properties": {"words": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 3}},
        "required": ["words"]}));
    let picks: Vec<usize> = (0..12).map(|i| i * 3).collect();
    let request = |k: usize| {
        let i = picks[k];
        let grammar = match k % 3 {
            0 => Some(m.constraint(&number).unwrap()),
            1 => Some(m.constraint(&words).unwrap()),
            _ => None,
        };
        GenRequest { grammar, ..greedy(rows[i].prompt_tokens.clone(), 40) }
    };
    let alone: Vec<Vec<u32>> = (0..picks.len())
        .map(|k| {
            let mut kv = m.kv_pool(512, 16);
            generate(m, &mut kv, &[request(k)], |_, _| {}).unwrap().remove(0).tokens
        })
        .collect();
    let mut kv = m.kv_pool(12 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(256, 64));
    let mut streams: Vec<EventStream> = (0..picks.len()).flat_map(|k| engine.submit(vec![request(k)]).unwrap()).collect();
    let mut seen = vec![Seen::default(); streams.len()];
    while engine.step() {
        drain(&mut streams, &mut seen);
    }
    drain(&mut streams, &mut seen);
    assert!(engine.stats().preemptions > 0, "the pool was meant to be too small");
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
    for (k, s) in seen.iter().enumerate() {
        assert_eq!(s.tokens, alone[k], "sequence {k}");
        let parsed = serde_json::from_str::<serde_json::Value>(&s.text);
        match k % 3 {
            0 => assert!(parsed.unwrap()["n"].as_u64().unwrap() <= 999, "{}", s.text),
            1 => {
                let words = parsed.unwrap()["words"].as_array().unwrap().len();
                assert!((2..=3).contains(&words), "{}", s.text);
            }
            _ => {}
        }
        if k % 3 != 2 {
            // Ended by the grammar: no end token drawn, nothing after the object.
            assert!(s.tokens.len() < 40 && s.text.ends_with('}'), "{}", s.text);
        }
    }
}

fn background(req: GenRequest) -> GenRequest {
    GenRequest { priority: Priority::Background, ..req }
}

/// Steps until every stream has ended, recording after each the step each
/// stream's tokens arrived at.
fn run_recording(engine: &mut Engine, streams: &mut [EventStream], seen: &mut [Seen], token_steps: &mut [Vec<u64>]) {
    while engine.step() {
        let step = engine.stats().steps;
        for ((s, out), steps) in streams.iter_mut().zip(seen.iter_mut()).zip(token_steps.iter_mut()) {
            for e in s.ready() {
                if matches!(e, Event::Token { .. }) {
                    steps.push(step);
                }
                out.record(e);
            }
        }
    }
}

/// A batch job's sequences fill what interactive ones leave: with every
/// sequence slot and most of the pool taken by background sequences, an
/// interactive request is admitted at the very next step (background
/// sequences preempted for it), gets a token every step from then on, and
/// every sequence still gets the tokens it gets alone.
#[test]
fn interactive_sequences_come_first_and_background_ones_yield() {
    let m = model();
    let rows = golden();
    let mut kv = m.kv_pool(40 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(64, 12));
    let picks: Vec<usize> = (0..12).map(|i| i * 3).collect();
    let mut streams: Vec<EventStream> =
        picks.iter().flat_map(|&i| engine.submit(vec![background(greedy(rows[i].prompt_tokens.clone(), 24))]).unwrap()).collect();
    for _ in 0..12 {
        engine.step();
    }
    let arrived = engine.stats().steps;
    let interactive = 33;
    streams.extend(engine.submit(vec![greedy(rows[interactive].prompt_tokens.clone(), 30)]).unwrap());
    let n = streams.len();
    let (mut seen, mut token_steps) = (vec![Seen::default(); n], vec![Vec::new(); n]);
    run_recording(&mut engine, &mut streams, &mut seen, &mut token_steps);
    assert!(engine.stats().preemptions > 0, "the slots and the pool were meant to be full");
    let first = &token_steps[n - 1];
    assert_eq!(seen[n - 1].started, Some(arrived + 1), "admitted at the next step");
    assert_eq!(first[0], arrived + 1, "its prompt fits one step's budget");
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "a token every step: {first:?}");
    assert_eq!(seen[n - 1].tokens, alone(&rows[interactive].prompt_tokens, 30));
    for (s, &i) in seen.iter().zip(&picks) {
        assert!(s.done);
        assert_eq!(s.tokens, alone(&rows[i].prompt_tokens, 24), "background row {i}");
    }
    assert_eq!(engine.kv.free_blocks(), engine.kv.total_blocks());
}

/// A background sequence that needs blocks never takes an interactive
/// one's, even one admitted after it: in a pool too small for all, the
/// interactive sequences decode every step from start to end while the
/// background ones are preempted and recomputed among themselves.
#[test]
fn background_sequences_never_preempt_interactive_ones() {
    let m = model();
    let rows = golden();
    let mut kv = m.kv_pool(22 * 16, 16);
    let mut engine = Engine::new(m, &mut kv, EngineConfig::new(256, 64));
    let picks: Vec<usize> = (10..18).collect();
    let mut streams: Vec<EventStream> =
        picks.iter().flat_map(|&i| engine.submit(vec![background(greedy(rows[i].prompt_tokens.clone(), 24))]).unwrap()).collect();
    for _ in 0..3 {
        engine.step();
    }
    let arrived = engine.stats().steps;
    let kept = [1usize, 4];
    streams.extend(kept.iter().flat_map(|&i| engine.submit(vec![greedy(rows[i].prompt_tokens.clone(), 48)]).unwrap()));
    let n = streams.len();
    let (mut seen, mut token_steps) = (vec![Seen::default(); n], vec![Vec::new(); n]);
    run_recording(&mut engine, &mut streams, &mut seen, &mut token_steps);
    assert!(engine.stats().preemptions > 0, "the pool was meant to be too small");
    for (k, &i) in kept.iter().enumerate() {
        let (steps, seen) = (&token_steps[picks.len() + k], &seen[picks.len() + k]);
        assert_eq!((steps[0], steps.len()), (arrived + 1, 48), "row {i}");
        assert!(steps.windows(2).all(|w| w[1] == w[0] + 1), "row {i} lost steps: {steps:?}");
        assert_eq!(seen.tokens, alone(&rows[i].prompt_tokens, 48), "row {i}");
    }
    for (s, &i) in seen.iter().zip(&picks) {
        assert_eq!(s.tokens, alone(&rows[i].prompt_tokens, 24), "background row {i}");
    }
}

/// Background sequences take at most their share of each step, and none of
/// a step that computes an interactive prompt: that step holds the prompt
/// alone, so its first token comes as soon as it can. Every sequence still
/// gets the tokens it gets alone.
#[test]
fn background_sequences_keep_to_their_share_of_each_step() {
    let m = model();
    let rows = golden();
    let mut kv = m.kv_pool(64 * 16, 16);
    let config = EngineConfig { max_background_tokens: 12, ..EngineConfig::new(256, 64) };
    let mut engine = Engine::new(m, &mut kv, config);
    let picks: Vec<usize> = (0..10).collect();
    let mut streams: Vec<EventStream> =
        picks.iter().flat_map(|&i| engine.submit(vec![background(greedy(rows[i].prompt_tokens.clone(), 16))]).unwrap()).collect();
    for _ in 0..6 {
        engine.step();
        assert_eq!(engine.stats().last_batch_tokens, 12, "a full share, and no more");
    }
    let interactive = 33;
    streams.extend(engine.submit(vec![greedy(rows[interactive].prompt_tokens.clone(), 8)]).unwrap());
    engine.step();
    let stats = engine.stats();
    assert_eq!(
        (stats.last_batch_seqs, stats.last_batch_tokens),
        (1, rows[interactive].prompt_tokens.len()),
        "the prompt's step is its own"
    );
    engine.step();
    assert_eq!(engine.stats().last_batch_tokens, 1 + 12, "then its decode and the background share");
    let n = streams.len();
    let (mut seen, mut token_steps) = (vec![Seen::default(); n], vec![Vec::new(); n]);
    run_recording(&mut engine, &mut streams, &mut seen, &mut token_steps);
    assert_eq!(seen[n - 1].tokens, alone(&rows[interactive].prompt_tokens, 8));
    for (s, &i) in seen.iter().zip(&picks) {
        assert_eq!(s.tokens, alone(&rows[i].prompt_tokens, 16), "background row {i}");
    }
}
