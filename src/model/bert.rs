//! BERT's encoder, for embedding models: learned positions and a token type,
//! bidirectional attention within each input, LayerNorm after each
//! residual, GELU, then the input's states pooled (mean or CLS) and scaled
//! to unit length. Many whole inputs go through in one pass as a ragged
//! batch, every matmul over all their tokens at once; nothing is cached.

use crate::kernels::expf::exp_in_place;
use crate::kernels::gelu::gelu_in_place;
use crate::kernels::matmul::{Matrix, RowBatch};
use crate::kernels::ops::{add_assign, layer_norm};
use crate::kernels::pool::SharedOut;
use crate::kernels::IsaKind;

use super::llama::{Rows, Stacked};
use super::Model;

/// How an input's token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    /// The first token's ([CLS]).
    Cls,
}

/// LayerNorm's weight and bias.
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub struct EncoderLayer {
    /// Q, K and V projections: rows [q | k | v], and their biases.
    pub wqkv: Stacked,
    pub qkv_bias: Vec<f32>,
    pub wo: Matrix,
    pub wo_bias: Vec<f32>,
    pub attn_norm: Norm,
    pub w_up: Matrix,
    pub up_bias: Vec<f32>,
    pub w_down: Matrix,
    pub down_bias: Vec<f32>,
    pub out_norm: Norm,
}

pub struct Encoder {
    /// One row of `dim` per position.
    pub position_embd: Vec<f32>,
    /// Token type 0's row ("sentence A"), which every token gets.
    pub token_type: Vec<f32>,
    pub embd_norm: Norm,
    pub layers: Vec<EncoderLayer>,
    pub pooling: Pooling,
}

impl Model {
    /// The unit-length embedding of each input, all in one pass. Every
    /// input must be 1 to `context_length` tokens.
    pub fn encode(&self, encoder: &Encoder, inputs: &[&[u32]]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let dim = c.dim;
        let t: usize = inputs.iter().map(|i| i.len()).sum();
        let batches = vec![RowBatch::ALONE; t];
        let mut x = vec![0f32; t * dim];
        let positions = inputs.iter().flat_map(|i| 0..i.len());
        for ((row, &tok), pos) in x.chunks_exact_mut(dim).zip(inputs.iter().flat_map(|i| i.iter())).zip(positions) {
            // llama.cpp's order: the token's row plus type 0's, then the position's.
            self.token_embd.w.row_f32(tok as usize, dim, row);
            add_assign(row, &encoder.token_type);
            add_assign(row, &encoder.position_embd[pos * dim..(pos + 1) * dim]);
        }
        self.layer_norm_rows(&mut x, &encoder.embd_norm);
        let (mut quant, mut part) = (Default::default(), Vec::new());
        let (mut qkv, mut attn, mut out, mut up) = (Vec::new(), vec![0f32; t * dim], Vec::new(), Vec::new());
        for layer in &encoder.layers {
            self.linear_stacked(&layer.wqkv, Rows { x: &x, batches: &batches }, &mut quant, &mut part, &mut qkv);
            self.rows_with_bias(&mut qkv, &layer.qkv_bias, |_| {});
            self.attend_within_inputs(inputs, &qkv, &mut attn);
            self.linear(&layer.wo, Rows { x: &attn, batches: &batches }, &mut quant, &mut out);
            self.add_and_norm(&mut x, &mut out, &layer.wo_bias, &layer.attn_norm);
            self.linear(&layer.w_up, Rows { x: &x, batches: &batches }, &mut quant, &mut up);
            self.rows_with_bias(&mut up, &layer.up_bias, |row| gelu_in_place(self.isa, row));
            self.linear(&layer.w_down, Rows { x: &up, batches: &batches }, &mut quant, &mut out);
            self.add_and_norm(&mut x, &mut out, &layer.down_bias, &layer.out_norm);
        }
        let mut start = 0;
        inputs
            .iter()
            .map(|input| {
                let states = &x[start * dim..(start + input.len()) * dim];
                start += input.len();
                let pooled: Vec<f64> = match encoder.pooling {
                    Pooling::Cls => states[..dim].iter().map(|&v| v as f64).collect(),
                    Pooling::Mean => {
                        (0..dim).map(|d| states.chunks_exact(dim).map(|r| r[d] as f64).sum::<f64>() / input.len() as f64).collect()
                    }
                };
                let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                pooled.iter().map(|v| (v / norm) as f32).collect()
            })
            .collect()
    }

    fn layer_norm_rows(&self, x: &mut [f32], norm: &Norm) {
        let d = norm.weight.len();
        let shared = SharedOut::new(x);
        self.pool.run_rows(x.len() / d, &|range| {
            // SAFETY: each task normalizes its own rows.
            for row in unsafe { shared.rows(range, d) }.chunks_exact_mut(d) {
                layer_norm(row, &norm.weight, &norm.bias, self.config.norm_eps);
            }
        });
    }

    /// Adds `bias` to every row of `x`, then applies `then` to the row,
    /// rows shared over the pool.
    fn rows_with_bias(&self, x: &mut [f32], bias: &[f32], then: impl Fn(&mut [f32]) + Sync) {
        let d = bias.len();
        let shared = SharedOut::new(x);
        self.pool.run_rows(x.len() / d, &|range| {
            // SAFETY: each task writes its own rows.
            for row in unsafe { shared.rows(range, d) }.chunks_exact_mut(d) {
                add_assign(row, bias);
                then(row);
            }
        });
    }

    /// The residual step after attention or the feed-forward, row by row
    /// over the pool: `out += bias`, `x += out`, then `x`'s LayerNorm.
    fn add_and_norm(&self, x: &mut [f32], out: &mut [f32], bias: &[f32], norm: &Norm) {
        let d = bias.len();
        let (xs, outs) = (SharedOut::new(x), SharedOut::new(out));
        self.pool.run_rows(x.len() / d, &|range| {
            // SAFETY: each task writes its own rows of both.
            let (x, out) = unsafe { (xs.rows(range.clone(), d), outs.rows(range, d)) };
            for (x, out) in x.chunks_exact_mut(d).zip(out.chunks_exact_mut(d)) {
                add_assign(out, bias);
                add_assign(x, out);
                layer_norm(x, &norm.weight, &norm.bias, self.config.norm_eps);
            }
        });
    }

    /// Scaled dot-product attention of every token over all the tokens of
    /// its own input (none masked within it), a task per input and head;
    /// `qkv` rows are [q | k | v], `out` rows each head's values side by side.
    fn attend_within_inputs(&self, inputs: &[&[u32]], qkv: &[f32], out: &mut [f32]) {
        let c = &self.config;
        let (dim, hd, heads) = (c.dim, c.head_dim, c.heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let starts: Vec<usize> = inputs.iter().scan(0, |at, i| Some(std::mem::replace(at, *at + i.len()))).collect();
        let shared = SharedOut::new(out);
        self.pool.run(inputs.len() * heads, &|task| {
            let (input, h) = (task / heads, task % heads);
            let head = Head { qkv, dim, hd, h, start: starts[input], len: inputs[input].len(), scale };
            // SAFETY: each task writes its own input's rows, its own head's columns.
            let out = unsafe { shared.slice() };
            match self.isa.kind() {
                // SAFETY: the Isa was detected on this CPU.
                #[cfg(target_arch = "x86_64")]
                IsaKind::Avx2 | IsaKind::Avx512Vnni => unsafe {
                    match hd {
                        32 => attend_head_avx2::<4>(head, out),
                        64 => attend_head_avx2::<8>(head, out),
                        _ => attend_head(head, out),
                    }
                },
                _ => attend_head(head, out),
            }
        });
    }
}

/// One head of one input's attention: rows `start..start + len` of `qkv`.
#[derive(Clone, Copy)]
struct Head<'a> {
    qkv: &'a [f32],
    dim: usize,
    hd: usize,
    h: usize,
    start: usize,
    len: usize,
    scale: f32,
}

/// Scaled dot-product attention of every token of `head`'s input over all
/// of them, into the head's columns of `out`.
fn attend_head(head: Head, out: &mut [f32]) {
    let Head { qkv, dim, hd, h, start, len, scale } = head;
    let at = |row: usize, part: usize| &qkv[(start + row) * 3 * dim + part * dim + h * hd..][..hd];
    let mut scores = vec![0f32; len];
    for a in 0..len {
        let q = at(a, 0);
        for (b, s) in scores.iter_mut().enumerate() {
            *s = dot(q, at(b, 1)) * scale;
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        scores.iter_mut().for_each(|s| *s -= max);
        exp_in_place(&mut scores);
        let inv = (1.0 / scores.iter().map(|&s| s as f64).sum::<f64>()) as f32;
        let o = &mut out[(start + a) * dim + h * hd..][..hd];
        o.fill(0.0);
        for (b, &p) in scores.iter().enumerate() {
            for (o, &v) in o.iter_mut().zip(at(b, 2)) {
                *o += p * inv * v;
            }
        }
    }
}

/// `attend_head` with AVX2 and FMA for heads of `V` whole vectors: the
/// query row and the output row stay in registers, each score a dot
/// product in one vector of sums (summed as `dot` sums), each value row
/// fused into the output. In memory, the output's adds waited on the
/// store of the key before: a chain through store forwarding per key.
///
/// # Safety
/// The CPU has AVX2 and FMA; `head.hd` is `8 * V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_head_avx2<const V: usize>(head: Head, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let Head { qkv, dim, hd, h, start, len, scale } = head;
    assert_eq!(hd, 8 * V);
    let row = |row: usize, part: usize| qkv[(start + row) * 3 * dim + part * dim + h * hd..][..hd].as_ptr();
    let mut scores = vec![0f32; len];
    for a in 0..len {
        let q: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(row(a, 0).add(8 * v)));
        let mut max = f32::NEG_INFINITY;
        for (b, s) in scores.iter_mut().enumerate() {
            let k = row(b, 1);
            let mut sum = _mm256_setzero_ps();
            for (v, &q) in q.iter().enumerate() {
                sum = _mm256_fmadd_ps(q, _mm256_loadu_ps(k.add(8 * v)), sum);
            }
            let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
            let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
            *s = _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half))) * scale;
            max = if *s > max { *s } else { max };
        }
        scores.iter_mut().for_each(|s| *s -= max);
        exp_in_place(&mut scores);
        let inv = (1.0 / scores.iter().map(|&s| s as f64).sum::<f64>()) as f32;
        let mut o = [_mm256_setzero_ps(); V];
        for (b, &p) in scores.iter().enumerate() {
            let (p, v) = (_mm256_set1_ps(p * inv), row(b, 2));
            for (i, o) in o.iter_mut().enumerate() {
                *o = _mm256_fmadd_ps(p, _mm256_loadu_ps(v.add(8 * i)), *o);
            }
        }
        let at = out[(start + a) * dim + h * hd..][..hd].as_mut_ptr();
        for (i, &o) in o.iter().enumerate() {
            _mm256_storeu_ps(at.add(8 * i), o);
        }
    }
}

/// A dot product in eight running sums (which the compiler keeps in one
/// vector register), added pairwise at the end.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    let s4 = [sums[0] + sums[4], sums[1] + sums[5], sums[2] + sums[6], sums[3] + sums[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3]) + tail
}
