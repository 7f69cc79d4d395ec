//! Microbenchmarks of the CPU kernels, every instruction set this CPU has:
//! `cargo bench --bench kernels` (optionally a filter: `-- matmul`, and
//! `--simd-only` to leave out the portable path, which is slow to time;
//! `--format Q8_0` to time that weight format's matmuls alone).
//!
//! Matmuls run on random weights of each format, 1536 x 1536 (the default
//! model's down projection has rows of 1536; K-quants need multiples of
//! 256), for batches from one token (decode, bound by
//! memory) to 512 (prefill, bound by compute); attention at the default
//! model's shape; row-wise ops over 512 tokens; sampling one token. Times
//! are medians of 5 runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use caravan::kernels::expf::silu_mul;
use caravan::kernels::matmul::{matmul, Matrix, QuantizedActs, RowBatch};
use caravan::kernels::ops::{rms_norm, Rope, RopeStyle};
use caravan::kernels::pool::ComputePool;
use caravan::kernels::quant::{repack, TensorType};
use caravan::kernels::{Arithmetic, Isa};
use caravan::kv::KvPool;
use caravan::model::attention::{attend, Attention, AttentionTasks};
use caravan::model::{SeqChunk, TokenSlot};
use caravan::sampler::{Rng, Sampler, SamplingParams};

#[path = "../tests/common/blocks.rs"]
mod blocks;
use blocks::random_blocks;

/// The instruction sets to time: all this CPU has, or with `--simd-only`
/// all but the portable reference (attention's takes minutes).
fn isas() -> Vec<Isa> {
    let simd_only = std::env::args().any(|a| a == "--simd-only");
    Isa::available().into_iter().filter(|&isa| !(simd_only && isa == Isa::PORTABLE)).collect()
}

/// Median seconds per call of `f`, each of 5 runs repeating it for ~50 ms.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(10) {
        f();
        calls += 1;
    }
    let per_run = (calls * 5).max(1);
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_run {
                f();
            }
            t.elapsed().as_secs_f64() / per_run as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn floats(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn bench_matmul(pool: &ComputePool) {
    let (rows, cols) = (1536, 1536);
    let mut rng = Rng(1);
    println!("matmul {rows}x{cols}, {} threads: microseconds per call (GMAC/s; weight GB/s at m=1)", pool.threads());
    println!("{:<11} {:<12} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18}", "format", "isa", "m=1", "m=8", "m=32", "m=64", "m=128", "m=512");
    let only = std::env::args().skip_while(|a| a != "--format").nth(1);
    let formats = [
        TensorType::F16,
        TensorType::Q4_0,
        TensorType::Q4_1,
        TensorType::Q5_0,
        TensorType::Q5_1,
        TensorType::Q8_0,
        TensorType::Q2K,
        TensorType::Q3K,
        TensorType::Q4K,
        TensorType::Q5K,
        TensorType::Q6K,
        TensorType::IQ4NL,
        TensorType::IQ4XS,
    ];
    let formats = formats.into_iter().filter(|t| only.as_ref().is_none_or(|name| name == t.name()));
    for (t, order) in formats.flat_map(|t| [Arithmetic::Ggml, Arithmetic::Fast].map(move |o| (t, o))) {
        let w = Matrix { rows, cols, w: repack(t, &random_blocks(&mut rng, t, rows, cols), rows, cols, order) };
        for isa in isas() {
            let mut line = format!("{:<11} {:<12}", format!("{} {order}", t.name()), isa.to_string());
            for m in [1usize, 8, 32, 64, 128, 512] {
                let x = floats(&mut rng, m * cols);
                let mut q = QuantizedActs::default();
                q.quantize(pool, isa, &x, m, cols);
                if w.w.reads_16bit_acts() {
                    q.quantize_16(pool, isa, &x);
                }
                if w.w.reads_super_blocks() {
                    // A prompt of m tokens, as llama.cpp would batch it.
                    let batches: Vec<RowBatch> = (0..m).map(|index| RowBatch { rows: m, index }).collect();
                    q.quantize_super_blocks(pool, &x, &batches);
                }
                let mut out = vec![0f32; m * rows];
                let s = time(|| matmul(pool, isa, &w, &x, &q, black_box(&mut out)));
                let gmacs = (m * rows * cols) as f64 / s / 1e9;
                let cell = if m == 1 {
                    format!("{:.1} ({:.1}; {:.1})", s * 1e6, gmacs, w.w.bytes() as f64 / s / 1e9)
                } else {
                    format!("{:.1} ({:.1})", s * 1e6, gmacs)
                };
                line += &format!(" {cell:>18}");
            }
            println!("{line}");
        }
    }
}

fn bench_ops() {
    let (m, dim, ffn) = (512, 576, 1536);
    let mut rng = Rng(2);
    let x = floats(&mut rng, m * 2 * ffn);
    let weight = floats(&mut rng, dim);
    let mut out = vec![0f32; m * ffn];
    println!("\nrow-wise ops over {m} tokens, one thread: microseconds per call");
    println!("{:<12} {:>12} {:>12} {:>12} {:>12}", "isa", "quantize 1536", "rms_norm 576", "rope 9x64", "silu*up 1536");
    let single = ComputePool::new(1);
    for isa in isas() {
        let mut q = QuantizedActs::default();
        let quantize = time(|| q.quantize(&single, isa, &x[..m * ffn], m, ffn));
        let norm = time(|| rms_norm(&x[..m * dim], &weight, 1e-5, black_box(&mut out[..m * dim])));
        let rope = Rope::new(64, 10000.0, RopeStyle::Normal);
        let mut heads = x[..m * dim].to_vec();
        let rope = time(|| heads.chunks_exact_mut(dim).enumerate().for_each(|(p, row)| rope.apply(row, 64, p)));
        let silu =
            time(|| x.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)).for_each(|(gu, o)| silu_mul(isa, &gu[..ffn], &gu[ffn..], o)));
        println!("{:<12} {:>12.1} {:>12.1} {:>12.1} {:>12.1}", isa.to_string(), quantize * 1e6, norm * 1e6, rope * 1e6, silu * 1e6);
    }
}

/// Attention over random K and V: one and 32 sequences decoding one token
/// each at position 1024, a 512-token prompt's first chunk (positions 0..512), and
/// a 512-token chunk at positions 2048..2560.
fn bench_attention() {
    println!("\nattention (9 heads of 64, 3 KV heads), 2 threads: milliseconds per call (ns per head and position)");
    println!(
        "{:<17} {:>24} {:>24} {:>24} {:>24}",
        "isa", "decode 1 x ctx 1025", "decode 32 x ctx 1025", "prefill 512 at 0", "prefill 512 at 2048"
    );
    let mut rng = Rng(3);
    for (isa, order) in isas().into_iter().flat_map(|isa| [Arithmetic::Ggml, Arithmetic::Fast].map(|o| (isa, o))) {
        let attention = Attention::new(9, 3, 64, isa, order);
        let pool = ComputePool::new(2);
        let (dim, kv_dim) = (attention.dim(), attention.kv_dim());
        let mut line = format!("{:<17}", format!("{isa} {order}"));
        for (seqs, queries, first_pos) in [(1usize, 1usize, 1024usize), (32, 1, 1024), (1, 512, 0), (1, 512, 2048)] {
            let context = first_pos + queries;
            let mut kv = KvPool::new(1, kv_dim, 16, seqs * context.div_ceil(16));
            let mut tables = vec![Vec::new(); seqs];
            for table in tables.iter_mut() {
                kv.reserve(table, context).unwrap();
                for pos in 0..context {
                    kv.write(table, 0, pos, &floats(&mut rng, kv_dim), &floats(&mut rng, kv_dim));
                }
            }
            let tokens = vec![0u32; queries];
            let chunks: Vec<SeqChunk> = tables
                .iter()
                .map(|b| SeqChunk { tokens: &tokens, start_pos: first_pos, blocks: b, logits: false, prompt_len: first_pos + queries })
                .collect();
            let slots: Vec<TokenSlot> =
                (0..seqs).flat_map(|chunk| (0..queries).map(move |j| TokenSlot { chunk, pos: first_pos + j })).collect();
            let qkv = floats(&mut rng, slots.len() * (dim + 2 * kv_dim));
            let (mut out, mut tasks) = (vec![0f32; slots.len() * dim], AttentionTasks::default());
            let s = time(|| attend(&attention, &pool, &chunks, &slots, 0, &qkv, &kv, black_box(&mut out), &mut tasks));
            let head_positions: usize = slots.iter().map(|t| (t.pos + 1) * attention.heads).sum();
            line += &format!(" {:>24}", format!("{:.2} ({:.2})", s * 1e3, s * 1e9 / head_positions as f64));
        }
        println!("{line}");
    }
}

fn bench_stream(pool: &ComputePool) {
    // Four times the default model's lm_head: far larger than the caches,
    // so m=1 shows the memory bandwidth a decode step can draw.
    let (rows, cols) = (4 * 49152, 576);
    let mut rng = Rng(5);
    println!("\nmatmul {rows}x{cols} at m=1 (weights from memory): microseconds per call (weight GB/s)");
    let formats = [
        (TensorType::Q4_1, Arithmetic::Ggml),
        (TensorType::Q4_1, Arithmetic::Fast),
        (TensorType::Q8_0, Arithmetic::Ggml),
        (TensorType::Q8_0, Arithmetic::Fast),
    ];
    for (t, order) in formats.into_iter().chain([(TensorType::Q5_0, Arithmetic::Fast)]) {
        let w = Matrix { rows, cols, w: repack(t, &random_blocks(&mut rng, t, rows, cols), rows, cols, order) };
        let x = floats(&mut rng, cols);
        let mut q = QuantizedActs::default();
        let isa = *Isa::available().last().unwrap();
        q.quantize(pool, isa, &x, 1, cols);
        let mut out = vec![0f32; rows];
        let s = time(|| matmul(pool, isa, &w, &x, &q, black_box(&mut out)));
        println!("{:<11} {:<12} {:>10.1} ({:.1})", format!("{} {order}", t.name()), isa.to_string(), s * 1e6, w.w.bytes() as f64 / s / 1e9);
    }
    for shape in &DECODE_SHAPES {
        bench_decode_step(pool, shape, Arithmetic::Ggml);
        bench_decode_step(pool, shape, Arithmetic::Fast);
    }
}

/// The matmuls of one decode token of a model: per layer Q/K/V (fused),
/// output, gate/up (fused) and down projections, then the lm_head.
struct DecodeShape {
    name: &'static str,
    dim: usize,
    qkv: usize,
    ffn: usize,
    vocab: usize,
    layers: usize,
    /// The projections' type and the down projection's, by layer.
    projections: TensorType,
    down: fn(usize) -> TensorType,
    head: TensorType,
}

/// The default model (Q4_1, a Q8_0 lm_head) and Qwen2.5-Coder-0.5B's
/// Q4_K_M file (Q5_0; down projections Q6_K and Q4_K in turn; a Q8_0
/// lm_head of 152k rows).
const DECODE_SHAPES: [DecodeShape; 2] = [
    DecodeShape {
        name: "smollm2:135m",
        dim: 576,
        qkv: 960,
        ffn: 1536,
        vocab: 49152,
        layers: 30,
        projections: TensorType::Q4_1,
        down: |_| TensorType::Q4_1,
        head: TensorType::Q8_0,
    },
    DecodeShape {
        name: "qwen2.5-coder:0.5b",
        dim: 896,
        qkv: 1152,
        ffn: 4864,
        vocab: 151936,
        layers: 24,
        projections: TensorType::Q5_0,
        down: |l| if l % 2 == 0 { TensorType::Q6K } else { TensorType::Q4K },
        head: TensorType::Q8_0,
    },
];

/// Every matmul of one decode token of `shape`, in order, on random
/// weights of its shapes and formats. Most of these matrices are small, so
/// this shows what the hand-offs and the starts of short streams cost
/// against `stream`'s one long matrix.
fn bench_decode_step(pool: &ComputePool, shape: &DecodeShape, order: Arithmetic) {
    let mut rng = Rng(6);
    let mut make = |t: TensorType, rows: usize, cols: usize| Matrix {
        rows,
        cols,
        w: repack(t, &random_blocks(&mut rng, t, rows, cols), rows, cols, order),
    };
    let (dim, ffn) = (shape.dim, shape.ffn);
    let mut step: Vec<Matrix> = Vec::new();
    for layer in 0..shape.layers {
        step.extend([
            make(shape.projections, shape.qkv, dim),
            make(shape.projections, dim, dim),
            make(shape.projections, 2 * ffn, dim),
            make((shape.down)(layer), dim, ffn),
        ]);
    }
    step.push(make(shape.head, shape.vocab, dim));
    let bytes: usize = step.iter().map(|w| w.w.bytes()).sum();
    let isa = *Isa::available().last().unwrap();
    let x = floats(&mut Rng(7), ffn);
    let (mut q, mut out) = (QuantizedActs::default(), vec![0f32; shape.vocab]);
    let s = time(|| {
        for w in &step {
            q.quantize(pool, isa, &x[..w.cols], 1, w.cols);
            if w.w.reads_super_blocks() {
                q.quantize_super_blocks(pool, &x[..w.cols], &[RowBatch { rows: 1, index: 0 }]);
            }
            matmul(pool, isa, w, &x[..w.cols], &q, black_box(&mut out[..w.rows]));
        }
    });
    println!(
        "{} decode step's {} matmuls ({:.1} MB) {:<12} {order:<5} {:>10.1} ({:.1})",
        shape.name,
        step.len(),
        bytes as f64 / 1e6,
        isa.to_string(),
        s * 1e6,
        bytes as f64 / s / 1e9
    );
}

fn main() {
    // The first argument that is neither a flag nor a flag's value.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args
        .iter()
        .enumerate()
        .find(|&(i, a)| !a.starts_with('-') && (i == 0 || args[i - 1] != "--format"))
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    let pool = ComputePool::new(2);
    if "matmul".contains(filter.as_str()) {
        bench_matmul(&pool);
    }
    if "stream".contains(filter.as_str()) {
        bench_stream(&pool);
    }
    if "attention".contains(filter.as_str()) {
        bench_attention();
    }
    if "ops".contains(filter.as_str()) {
        bench_ops();
    }
    if "sample".contains(filter.as_str()) {
        bench_sample();
    }
    if "pool".contains(filter.as_str()) {
        bench_pool(&pool);
    }
}

/// The pool's hand-off: one `run` of empty tasks, the fixed cost that every
/// parallel kernel call pays (a decode step makes about 150 of them).
fn bench_pool(pool: &ComputePool) {
    println!("\ncompute pool, {} threads: microseconds per run of empty tasks", pool.threads());
    for tasks in [2, 8, 64] {
        let per_run = time(|| {
            pool.run(tasks, &|i| {
                black_box(i);
            })
        });
        println!("{tasks:>3} tasks {:>8.2}", per_run * 1e6);
    }
}

/// One token drawn from the default model's vocabulary of logits.
fn bench_sample() {
    let logits = floats(&mut Rng(13), 49152).iter().map(|x| x * 8.0).collect::<Vec<_>>();
    println!("\nsampling over 49152 logits: microseconds per token");
    let settings = [
        ("greedy", SamplingParams::greedy()),
        ("ollama defaults (top-k 40, top-p 0.9, t 0.8, penalty)", SamplingParams::default()),
        (
            "openai defaults (t 1, no top-k)",
            SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, repeat_penalty: 1.0, ..SamplingParams::default() },
        ),
        (
            "top-p 0.9 alone (t 1)",
            SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.9, repeat_penalty: 1.0, ..SamplingParams::default() },
        ),
    ];
    let history: Vec<u32> = (0..64).collect();
    for (name, params) in settings {
        let mut sampler = Sampler::new(params);
        let s = time(|| {
            black_box(sampler.sample(&logits, &history));
        });
        println!("{name:<56} {:>10.1}", s * 1e6);
    }
}
