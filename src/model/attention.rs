//! Attention over the paged KV pool for a ragged batch: every token attends to
//! its own sequence's cached positions 0..=pos (causal within its chunk,
//! since the chunk's K and V were written before this runs).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kernels::ops::dot;
use crate::kernels::pool::SharedOut;
use crate::kv::KvPool;

use super::llama::{Model, SeqChunk, TokenSlot};

/// Head dimensions up to this fit the per-task stack buffers.
pub const MAX_HEAD_DIM: usize = 256;

/// Writes every token's attention output (heads concatenated) into `out`.
pub(super) fn attend(model: &Model, chunks: &[SeqChunk], slots: &[TokenSlot], layer: usize, qkv: &[f32], kv: &KvPool, out: &mut [f32]) {
    let c = &model.config;
    let (dim, hd) = (c.dim, c.head_dim);
    let qkv_dim = dim + 2 * c.kv_dim();
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let shared = SharedOut::new(out);
    model.pool.run(slots.len() * c.heads, &|task| {
        let (ti, head) = (task / c.heads, task % c.heads);
        let slot = slots[ti];
        let blocks = chunks[slot.chunk].blocks;
        let kv_off = (head / group) * hd;
        let (mut q, mut k, mut v, mut acc) = ([0f32; MAX_HEAD_DIM], [0f32; MAX_HEAD_DIM], [0f32; MAX_HEAD_DIM], [0f32; MAX_HEAD_DIM]);
        let (q, k, v, acc) = (&mut q[..hd], &mut k[..hd], &mut v[..hd], &mut acc[..hd]);
        // The query at the keys' f16 precision, as llama.cpp's f16 cache
        // computes Q·K: near-ties then fall the same way.
        for (d, &x) in q.iter_mut().zip(&qkv[ti * qkv_dim + head * hd..ti * qkv_dim + (head + 1) * hd]) {
            *d = f16::from_f32(x).to_f32();
        }
        // Online softmax over positions 0..=pos: one pass over K and V.
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
        for p in 0..=slot.pos {
            let (k16, v16) = kv.slot(blocks, layer, p);
            k16[kv_off..kv_off + hd].convert_to_f32_slice(k);
            let s = dot(q, k) * scale;
            let (mut rescale, mut weight) = (1.0f32, 1.0f32);
            if s > max {
                rescale = (max - s).exp();
                max = s;
            } else {
                weight = (s - max).exp();
            }
            v16[kv_off..kv_off + hd].convert_to_f32_slice(v);
            for (a, &x) in acc.iter_mut().zip(v.iter()) {
                *a = *a * rescale + x * weight;
            }
            sum = sum * rescale + weight;
        }
        // SAFETY: each task writes only its own (token, head) slice.
        let out = unsafe { shared.slice() };
        let inv = 1.0 / sum;
        for (o, a) in out[ti * dim + head * hd..ti * dim + (head + 1) * hd].iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    });
}
