//! The llama architecture's forward pass over a ragged batch: tokens of many
//! sequences, each a chunk at its own positions, in one pass with no padding.

use crate::kernels::expf::silu_mul;
use crate::kernels::gelu::gelu_mul;
use crate::kernels::matmul::{matmul, Matrix, QuantizedActs, RowBatch};
use crate::kernels::ops::{add_assign, rms_norm, rms_norm_in_place, Rope, RopeStyle};
use crate::kernels::pool::{ComputePool, SharedOut};
use crate::kernels::{Arithmetic, Isa};
use crate::kv::KvPool;

use super::attention::{attend, Attention, AttentionTasks};
use super::batch::{SeqChunk, TokenSlot};
use super::bert::{Encoder, Pooling};

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: String,
    pub vocab: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub context_length: usize,
    pub norm_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    /// Every RoPE angle times this (linear scaling; 1 for none).
    pub rope_freq_scale: f32,
    /// Whether the layers have Q, K and V biases.
    pub qkv_bias: bool,
    /// Whether each query and key head is RMS-normed before RoPE.
    pub qk_norm: bool,
    /// Whether the file holds Q, K and V as one tensor, and gate and up
    /// (Phi-3).
    pub fused: bool,
    /// Embeddings times this as they enter the first layer (Gemma's
    /// sqrt(dim)).
    pub embed_scale: Option<f32>,
    /// Queries times this before attention, which then scales by 1
    /// (Gemma's order); otherwise attention scales by 1/sqrt(head_dim).
    pub query_scale: Option<f32>,
    /// Whether attention's and the feed-forward's outputs are RMS-normed
    /// before they join the residual (Gemma's post-norms).
    pub post_norms: bool,
    pub activation: Activation,
    pub sliding_window: Option<SlidingWindow>,
    /// Attention scores soft-capped at this (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Logits soft-capped at this: `cap * tanh(logit / cap)` (Gemma 2).
    pub final_softcap: Option<f32>,
    /// How an embedding model (an encoder) pools its states; None for a
    /// decoder, which generates.
    pub pooling: Option<Pooling>,
}

/// The feed-forward's gating: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU, tanh form.
    Gelu,
}

/// Layers whose attention sees only the last `window` positions, each
/// token itself included, rotated with their own RoPE base.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    pub window: usize,
    /// Per layer: whether it is a windowed one.
    pub layers: Vec<bool>,
    pub rope_base: f32,
}

impl ModelConfig {
    /// Width of a token's queries: every head's.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    /// Q, K and V projections: rows [q | k | v].
    pub wqkv: Stacked,
    /// Their biases, [q | k | v], where the architecture has them.
    pub qkv_bias: Option<Vec<f32>>,
    /// The weights of each query head's and each key head's RMSNorm.
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    pub wo: Matrix,
    /// Norms of attention's output and the feed-forward's, where the
    /// architecture has them.
    pub post_norms: Option<(Vec<f32>, Vec<f32>)>,
    pub ffn_norm: Vec<f32>,
    /// Gate and up projections: rows [gate | up].
    pub w_gate_up: Stacked,
    pub w_down: Matrix,
}

/// Matrices over the same inputs whose outputs sit side by side in a row:
/// fused into one where their formats are one (one pass over the
/// activations), else multiplied one by one (a file may quantize them
/// differently: Q4_K_M gives V and half the down projections Q6_K).
pub enum Stacked {
    Fused(Matrix),
    Parts(Vec<Matrix>),
}

pub struct Model {
    pub config: ModelConfig,
    pub token_embd: Matrix,
    /// The decoder's layers; none for an encoder (an embedding model).
    pub layers: Vec<Layer>,
    /// An embedding model's encoder (BERT), which only embeds.
    pub encoder: Option<Encoder>,
    pub output_norm: Vec<f32>,
    /// None when the embeddings are tied (token_embd is the lm_head).
    pub output: Option<Matrix>,
    pub rope: Rope,
    /// The sliding-window layers' RoPE, where their base is another.
    pub rope_local: Option<Rope>,
    pub isa: Isa,
    pub arithmetic: Arithmetic,
    pub pool: ComputePool,
    /// Total parameter count, for listings.
    pub parameters: u64,
}

/// Buffers a forward pass reuses from step to step: once they have grown
/// to a step's size, a step allocates nothing.
#[derive(Default)]
pub struct Scratch {
    slots: Vec<TokenSlot>,
    last_rows: Vec<usize>,
    attention: AttentionTasks,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gate_up: Vec<f32>,
    /// One part's outputs of a `Stacked` that could not be fused.
    part: Vec<f32>,
    act: Vec<f32>,
    quant: QuantizedActs,
    /// Per row of the matmuls' input: `SeqChunk::row_batch`.
    batches: Vec<RowBatch>,
    pub logits: Vec<f32>,
}

/// A matmul's input rows, with `SeqChunk::row_batch` for each.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub x: &'a [f32],
    pub batches: &'a [RowBatch],
}

impl Model {
    /// What attention computes with in layer `layer`.
    pub fn attention(&self, layer: usize) -> Attention {
        let c = &self.config;
        let full = Attention::new(c.heads, c.kv_heads, c.head_dim, self.isa, self.arithmetic);
        Attention {
            scale: if c.query_scale.is_some() { 1.0 } else { full.scale },
            softcap: c.attn_softcap,
            window: c.sliding_window.as_ref().filter(|w| w.layers[layer]).map_or(usize::MAX, |w| w.window),
            ..full
        }
    }

    /// The RoPE of layer `layer`.
    fn rope(&self, layer: usize) -> &Rope {
        match (&self.rope_local, &self.config.sliding_window) {
            (Some(local), Some(w)) if w.layers[layer] => local,
            _ => &self.rope,
        }
    }

    /// `out = x · W` for each part of `w`, the parts' outputs side by side
    /// in each row (`part` holds one part's at a time).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_stacked(&self, w: &Stacked, x: Rows, quant: &mut QuantizedActs, part: &mut Vec<f32>, out: &mut Vec<f32>) {
        match w {
            Stacked::Fused(m) => self.linear(m, x, quant, out),
            Stacked::Parts(parts) => {
                let (rows, width) = (x.batches.len(), parts.iter().map(|m| m.rows).sum::<usize>());
                out.resize(rows * width, 0.0);
                self.quantize(parts, x, quant);
                let mut at = 0;
                for m in parts {
                    part.resize(rows * m.rows, 0.0);
                    matmul(&self.pool, self.isa, m, x.x, quant, part);
                    for (dst, src) in out.chunks_exact_mut(width).zip(part.chunks_exact(m.rows)) {
                        dst[at..at + m.rows].copy_from_slice(src);
                    }
                    at += m.rows;
                }
            }
        }
    }

    pub(super) fn linear(&self, w: &Matrix, x: Rows, quant: &mut QuantizedActs, out: &mut Vec<f32>) {
        self.quantize(std::slice::from_ref(w), x, quant);
        out.resize(x.batches.len() * w.rows, 0.0);
        matmul(&self.pool, self.isa, w, x.x, quant, out);
    }

    /// Quantizes `x` in the forms the matrices `ws` read.
    fn quantize(&self, ws: &[Matrix], x: Rows, quant: &mut QuantizedActs) {
        if ws.iter().any(|m| m.w.reads_8bit_acts()) {
            quant.quantize(&self.pool, self.isa, x.x, x.batches.len(), ws[0].cols);
        } else {
            quant.shape_only(x.batches.len(), ws[0].cols);
        }
        if ws.iter().any(|m| m.w.reads_super_blocks()) {
            quant.quantize_super_blocks(&self.pool, x.x, x.batches);
        }
        if ws.iter().any(|m| m.w.reads_16bit_acts()) {
            quant.quantize_16(&self.pool, self.isa, x.x);
        }
        if ws.iter().any(|m| m.w.reads_bf16_acts()) {
            quant.tile_bf16(&self.pool, self.isa, x.x);
        }
    }

    /// RMSNorm of every row of `x` into `out`, rows shared over the pool.
    fn norm_rows(&self, x: &[f32], weight: &[f32], out: &mut [f32]) {
        let d = weight.len();
        let shared = SharedOut::new(out);
        self.pool.run_rows(x.len() / d, &|range| {
            // SAFETY: each task writes its own rows.
            let out = unsafe { shared.rows(range.clone(), d) };
            rms_norm(&x[range.start * d..range.end * d], weight, self.config.norm_eps, out);
        });
    }

    /// Runs one step. Returns the logits (`vocab` floats per row) of the last
    /// token of every chunk with `logits` set, in chunk order.
    pub fn forward<'s>(&self, chunks: &[SeqChunk], kv: &mut KvPool, s: &'s mut Scratch) -> &'s [f32] {
        self.run_layers(chunks, kv, s, true);
        let c = &self.config;
        let dim = c.dim;
        // Only the rows that need logits go through the norm and the lm_head.
        s.last_rows.clear();
        let mut end = 0;
        for ch in chunks {
            end += ch.tokens.len();
            if ch.logits && !ch.tokens.is_empty() {
                s.last_rows.push(end - 1);
            }
        }
        s.h.resize(s.last_rows.len() * dim, 0.0);
        for (dst, &r) in s.h.chunks_exact_mut(dim).zip(&s.last_rows) {
            rms_norm(&s.x[r * dim..(r + 1) * dim], &self.output_norm, c.norm_eps, dst);
        }
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        // llama.cpp multiplies the rows that need logits one at a time.
        s.batches.clear();
        s.batches.resize(s.last_rows.len(), RowBatch::ALONE);
        self.linear(head, Rows { x: &s.h, batches: &s.batches }, &mut s.quant, &mut s.logits);
        if let Some(cap) = c.final_softcap {
            // ggml's steps: scale, tanh, scale.
            s.logits.iter_mut().for_each(|l| *l = cap * (*l * (1.0 / cap)).tanh());
        }
        &s.logits
    }

    /// Sentence embeddings of `inputs`: the mean of the final-normed hidden
    /// states of each input's tokens, scaled to unit length. `blocks[i]`
    /// must cover input i. Several inputs go through in one pass, whole;
    /// one alone goes `chunk` tokens at a time.
    pub fn embed(&self, inputs: &[&[u32]], blocks: &[Vec<u32>], chunk: usize, kv: &mut KvPool, s: &mut Scratch) -> Vec<Vec<f32>> {
        let dim = self.config.dim;
        let chunk = if inputs.len() == 1 { chunk.max(1) } else { usize::MAX };
        let mut sums = vec![vec![0f64; dim]; inputs.len()];
        let mut normed = vec![0f32; dim];
        let longest = inputs.iter().map(|t| t.len()).max().unwrap_or(0);
        for start in (0..longest).step_by(chunk) {
            let which: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].len() > start).collect();
            let chunks: Vec<SeqChunk> = which
                .iter()
                .map(|&i| {
                    let t = inputs[i];
                    let tokens = &t[start..t.len().min(start.saturating_add(chunk))];
                    SeqChunk { tokens, start_pos: start, blocks: &blocks[i], logits: false, prompt_len: t.len() }
                })
                .collect();
            self.run_layers(&chunks, kv, s, false);
            let mut rows = s.x.chunks_exact(dim);
            for (&i, c) in which.iter().zip(&chunks) {
                for row in rows.by_ref().take(c.tokens.len()) {
                    rms_norm(row, &self.output_norm, self.config.norm_eps, &mut normed);
                    sums[i].iter_mut().zip(&normed).for_each(|(a, &b)| *a += b as f64);
                }
            }
        }
        sums.into_iter()
            .map(|sum| {
                let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                sum.iter().map(|x| (x / norm) as f32).collect()
            })
            .collect()
    }

    /// The decoder layers over a ragged batch: leaves every token's hidden
    /// state in `s.x`. `logits_only`: only the rows that give logits are
    /// used past the last layer's attention, and llama.cpp multiplies just
    /// those (one per sequence) in its last feed-forward.
    fn run_layers(&self, chunks: &[SeqChunk], kv: &mut KvPool, s: &mut Scratch, logits_only: bool) {
        let c = &self.config;
        let (dim, kv_dim) = (c.dim, c.kv_dim());
        s.slots.clear();
        s.slots.extend(
            chunks
                .iter()
                .enumerate()
                .flat_map(|(ci, ch)| (0..ch.tokens.len()).map(move |j| TokenSlot { chunk: ci, pos: ch.start_pos + j })),
        );
        let (slots, t) = (&s.slots, s.slots.len());
        s.batches.clear();
        // llama.cpp's server checkpoints a sliding window's cache on completions.
        let checkpoints = logits_only && c.sliding_window.is_some();
        s.batches.extend(slots.iter().map(|slot| chunks[slot.chunk].row_batch(slot.pos, checkpoints)));

        s.x.resize(t * dim, 0.0);
        let tokens = chunks.iter().flat_map(|ch| ch.tokens.iter());
        for (row, &tok) in s.x.chunks_exact_mut(dim).zip(tokens) {
            self.token_embd.w.row_f32(tok as usize, dim, row);
            if let Some(scale) = c.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        s.h.resize(t * dim, 0.0);

        let q_dim = c.q_dim();
        let qkv_dim = q_dim + 2 * kv_dim;
        for (li, layer) in self.layers.iter().enumerate() {
            let rope = self.rope(li);
            self.norm_rows(&s.x, &layer.attn_norm, &mut s.h);
            self.linear_stacked(&layer.wqkv, Rows { x: &s.h, batches: &s.batches }, &mut s.quant, &mut s.part, &mut s.qkv);
            let rows = SharedOut::new(&mut s.qkv);
            self.pool.run_rows(t, &|range| {
                // SAFETY: each task rotates its own rows.
                let qkv = unsafe { rows.rows(range.clone(), qkv_dim) };
                for (row, slot) in qkv.chunks_exact_mut(qkv_dim).zip(&slots[range]) {
                    if let Some(bias) = &layer.qkv_bias {
                        add_assign(row, bias);
                    }
                    if let Some((q_norm, k_norm)) = &layer.qk_norm {
                        let (q, k) = row[..q_dim + kv_dim].split_at_mut(q_dim);
                        for (head, weight) in
                            q.chunks_exact_mut(c.head_dim).map(|h| (h, q_norm)).chain(k.chunks_exact_mut(c.head_dim).map(|h| (h, k_norm)))
                        {
                            rms_norm_in_place(head, weight, c.norm_eps);
                        }
                    }
                    rope.apply(&mut row[..q_dim + kv_dim], c.head_dim, slot.pos);
                    if let Some(scale) = c.query_scale {
                        row[..q_dim].iter_mut().for_each(|v| *v *= scale);
                    }
                }
            });
            for (row, slot) in s.qkv.chunks_exact(qkv_dim).zip(slots) {
                let (k, v) = row[q_dim..].split_at(kv_dim);
                kv.write(chunks[slot.chunk].blocks, li, slot.pos, k, v);
            }
            s.attn.resize(t * q_dim, 0.0);
            attend(&self.attention(li), &self.pool, chunks, slots, li, &s.qkv, kv, &mut s.attn, &mut s.attention);
            self.linear(&layer.wo, Rows { x: &s.attn, batches: &s.batches }, &mut s.quant, &mut s.tmp);
            self.join_residual(&mut s.x, &s.tmp, layer.post_norms.as_ref().map(|n| &n.0[..]), &mut s.h);

            if logits_only && li + 1 == self.layers.len() {
                s.batches.fill(RowBatch::ALONE);
            }
            self.norm_rows(&s.x, &layer.ffn_norm, &mut s.h);
            self.linear_stacked(&layer.w_gate_up, Rows { x: &s.h, batches: &s.batches }, &mut s.quant, &mut s.part, &mut s.gate_up);
            s.act.resize(t * c.ffn, 0.0);
            let (act, gate_up, ffn) = (SharedOut::new(&mut s.act), &s.gate_up, c.ffn);
            self.pool.run_rows(t, &|range| {
                // SAFETY: each task writes its own rows.
                let act = unsafe { act.rows(range.clone(), ffn) };
                for (gu, a) in gate_up[range.start * 2 * ffn..range.end * 2 * ffn].chunks_exact(2 * ffn).zip(act.chunks_exact_mut(ffn)) {
                    match c.activation {
                        Activation::Silu => silu_mul(self.isa, &gu[..ffn], &gu[ffn..], a),
                        Activation::Gelu => gelu_mul(self.isa, &gu[..ffn], &gu[ffn..], a),
                    }
                }
            });
            self.linear(&layer.w_down, Rows { x: &s.act, batches: &s.batches }, &mut s.quant, &mut s.tmp);
            self.join_residual(&mut s.x, &s.tmp, layer.post_norms.as_ref().map(|n| &n.1[..]), &mut s.h);
        }
    }

    /// `x += out`, `out` RMS-normed first where there is a post-norm
    /// (`normed` holds it).
    fn join_residual(&self, x: &mut [f32], out: &[f32], post_norm: Option<&[f32]>, normed: &mut Vec<f32>) {
        match post_norm {
            Some(weight) => {
                normed.resize(out.len(), 0.0);
                self.norm_rows(out, weight, normed);
                add_assign(x, normed);
            }
            None => add_assign(x, out),
        }
    }
}
