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
/// Query heads sharing one KV head, at most (grouped-query attention).
pub const MAX_GROUP: usize = 16;

/// Writes every token's attention output (heads concatenated) into `out`.
/// One task per (token, KV head) serves every query head of its group, so
/// each cached K and V row is converted from f16 once.
pub(super) fn attend(model: &Model, chunks: &[SeqChunk], slots: &[TokenSlot], layer: usize, qkv: &[f32], kv: &KvPool, out: &mut [f32]) {
    let c = &model.config;
    let (dim, hd) = (c.dim, c.head_dim);
    let qkv_dim = dim + 2 * c.kv_dim();
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let shared = SharedOut::new(out);
    model.pool.run(slots.len() * c.kv_heads, &|task| {
        let (ti, kvh) = (task / c.kv_heads, task % c.kv_heads);
        let slot = slots[ti];
        let blocks = chunks[slot.chunk].blocks;
        let kv_off = kvh * hd;
        // The queries at the keys' f16 precision, as llama.cpp's f16 cache
        // computes Q·K: near-ties then fall the same way.
        let mut q = [[0f32; MAX_HEAD_DIM]; MAX_GROUP];
        for (g, qg) in q.iter_mut().enumerate().take(group) {
            let head = kvh * group + g;
            let src = &qkv[ti * qkv_dim + head * hd..ti * qkv_dim + (head + 1) * hd];
            for (d, &x) in qg.iter_mut().zip(src) {
                *d = f16::from_f32(x).to_f32();
            }
        }
        let (mut k, mut v) = ([0f32; MAX_HEAD_DIM], [0f32; MAX_HEAD_DIM]);
        let (k, v) = (&mut k[..hd], &mut v[..hd]);
        let mut acc = [[0f32; MAX_HEAD_DIM]; MAX_GROUP];
        // Online softmax over positions 0..=pos: one pass over K and V.
        let (mut max, mut sum) = ([f32::NEG_INFINITY; MAX_GROUP], [0f32; MAX_GROUP]);
        for p in 0..=slot.pos {
            let (k16, v16) = kv.slot(blocks, layer, p);
            k16[kv_off..kv_off + hd].convert_to_f32_slice(k);
            v16[kv_off..kv_off + hd].convert_to_f32_slice(v);
            for g in 0..group {
                let s = dot(&q[g][..hd], k) * scale;
                let (mut rescale, mut weight) = (1.0f32, 1.0f32);
                if s > max[g] {
                    rescale = (max[g] - s).exp();
                    max[g] = s;
                } else {
                    weight = (s - max[g]).exp();
                }
                for (a, &x) in acc[g][..hd].iter_mut().zip(v.iter()) {
                    *a = *a * rescale + x * weight;
                }
                sum[g] = sum[g] * rescale + weight;
            }
        }
        // SAFETY: each task writes only its own token's heads of its group.
        let out = unsafe { shared.slice() };
        for g in 0..group {
            let head = kvh * group + g;
            let inv = 1.0 / sum[g];
            for (o, a) in out[ti * dim + head * hd..ti * dim + (head + 1) * hd].iter_mut().zip(&acc[g][..hd]) {
                *o = a * inv;
            }
        }
    });
}
