//! Attention over the paged KV pool for a ragged batch: every token attends
//! to its own sequence's cached positions 0..=pos (causal within its chunk,
//! since the chunk's K and V were written before this runs).
//!
//! The arithmetic is that of llama.cpp's CPU flash attention over an f16
//! cache, operation for operation: the query rounded to f16, Q·K summed in
//! four 16-lane fused accumulators and reduced as a tree, an online softmax
//! with the C library's `expf`, and the weighted V sum kept in f16. Together
//! with the matmul, RoPE and SiLU orders this makes greedy outputs equal
//! llama.cpp's bit for bit (see tests/golden.rs).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kernels::pool::SharedOut;
use crate::kernels::Isa;
use crate::kv::KvPool;

use super::llama::{Model, SeqChunk, TokenSlot};

/// Head dimensions up to this fit the per-task stack buffers.
pub const MAX_HEAD_DIM: usize = 256;
/// Query heads sharing one KV head, at most (grouped-query attention).
pub const MAX_GROUP: usize = 16;

/// Rounds floats to f16 precision in place.
trait HalfRound {
    fn round(x: &mut [f32]);
}

struct SoftwareRound;

impl HalfRound for SoftwareRound {
    #[inline(always)]
    fn round(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
    }
}

#[cfg(target_arch = "x86_64")]
struct F16cRound;

#[cfg(target_arch = "x86_64")]
impl HalfRound for F16cRound {
    /// Only called from functions compiled with F16C enabled.
    #[inline(always)]
    fn round(x: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: 8 floats in bounds; the caller's target features include f16c.
            unsafe {
                let v = _mm256_loadu_ps(c.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        SoftwareRound::round(chunks.into_remainder());
    }
}

/// Q·K as ggml's `vec_dot_f16` sums it on AVX-512: per 64 elements, four
/// accumulators of 16 lanes with fused multiply-adds, then a fixed tree.
#[inline(always)]
fn dot_f16_order(k: &[f32], q: &[f32]) -> f32 {
    let n = k.len();
    let full = n & !63;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..full).step_by(64) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *a = k[e].mul_add(q[e], *a);
            }
        }
    }
    let mut x = [0f32; 16];
    for l in 0..16 {
        x[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t8: [f32; 8] = std::array::from_fn(|i| x[8 + i] + x[i]);
    let t4: [f32; 4] = std::array::from_fn(|i| t8[4 + i] + t8[i]);
    let mut sum = ((t4[0] + t4[2]) + (t4[1] + t4[3])) as f64;
    for e in full..n {
        sum += (k[e] * q[e]) as f64;
    }
    sum as f32
}

/// One query head's running state over the positions seen so far.
struct HeadState {
    acc: [f32; MAX_HEAD_DIM],
    max: f32,
    sum: f32,
}

struct Task<'a> {
    model: &'a Model,
    chunks: &'a [SeqChunk<'a>],
    slots: &'a [TokenSlot],
    layer: usize,
    qkv: &'a [f32],
    kv: &'a KvPool,
    out: SharedOut<f32>,
}

/// Attention of token `ti` for every query head sharing KV head `kvh`: each
/// cached K and V row is converted from f16 once for the whole group.
#[inline(always)]
fn attend_group<R: HalfRound>(t: &Task, ti: usize, kvh: usize) {
    let c = &t.model.config;
    let (dim, hd) = (c.dim, c.head_dim);
    let qkv_dim = dim + 2 * c.kv_dim();
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let slot = t.slots[ti];
    let blocks = t.chunks[slot.chunk].blocks;
    let kv_off = kvh * hd;

    let mut q = [[0f32; MAX_HEAD_DIM]; MAX_GROUP];
    for (g, qg) in q.iter_mut().enumerate().take(group) {
        let head = kvh * group + g;
        qg[..hd].copy_from_slice(&t.qkv[ti * qkv_dim + head * hd..ti * qkv_dim + (head + 1) * hd]);
        R::round(&mut qg[..hd]);
    }
    let mut heads: [HeadState; MAX_GROUP] =
        std::array::from_fn(|_| HeadState { acc: [0.0; MAX_HEAD_DIM], max: f32::NEG_INFINITY, sum: 0.0 });
    let (mut k, mut v) = ([0f32; MAX_HEAD_DIM], [0f32; MAX_HEAD_DIM]);
    let (k, v) = (&mut k[..hd], &mut v[..hd]);
    for p in 0..=slot.pos {
        let (k16, v16) = t.kv.slot(blocks, t.layer, p);
        k16[kv_off..kv_off + hd].convert_to_f32_slice(k);
        v16[kv_off..kv_off + hd].convert_to_f32_slice(v);
        for (h, qg) in heads.iter_mut().zip(&q).take(group) {
            let s = dot_f16_order(k, &qg[..hd]) * scale;
            let acc = &mut h.acc[..hd];
            let (mut rescale, mut weight) = (1.0f32, 1.0f32);
            if s > h.max {
                rescale = (h.max - s).exp();
                h.max = s;
                acc.iter_mut().for_each(|a| *a *= rescale);
                R::round(acc);
            } else {
                weight = (s - h.max).exp();
            }
            for (a, &x) in acc.iter_mut().zip(v.iter()) {
                *a = x.mul_add(weight, *a);
            }
            R::round(acc);
            h.sum = h.sum.mul_add(rescale, weight);
        }
    }
    // SAFETY: each task writes only its own token's heads of its group.
    let out = unsafe { t.out.slice() };
    for (g, h) in heads.iter().enumerate().take(group) {
        let head = kvh * group + g;
        let inv = if h.sum == 0.0 { 0.0 } else { 1.0 / h.sum };
        for (o, a) in out[ti * dim + head * hd..ti * dim + (head + 1) * hd].iter_mut().zip(&h.acc[..hd]) {
            *o = a * inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_avx2(t: &Task, ti: usize, kvh: usize) {
    attend_group::<F16cRound>(t, ti, kvh)
}

/// The same arithmetic as `attend_group`, written with AVX-512 registers
/// for head dimensions that are multiples of 64 (bitwise equal results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn attend_group_avx512(t: &Task, ti: usize, kvh: usize) {
    use std::arch::x86_64::*;
    let c = &t.model.config;
    let (dim, hd) = (c.dim, c.head_dim);
    if hd % 64 != 0 {
        return attend_group::<F16cRound>(t, ti, kvh);
    }
    let (qkv_dim, group, vecs) = (dim + 2 * c.kv_dim(), c.heads / c.kv_heads, hd / 16);
    let scale = 1.0 / (hd as f32).sqrt();
    let slot = t.slots[ti];
    let blocks = t.chunks[slot.chunk].blocks;
    let kv_off = kvh * hd;
    let round = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    const V: usize = MAX_HEAD_DIM / 16;
    let mut q = [[_mm512_setzero_ps(); V]; MAX_GROUP];
    let mut acc = [[_mm512_setzero_ps(); V]; MAX_GROUP];
    let (mut max, mut sum) = ([f32::NEG_INFINITY; MAX_GROUP], [0f32; MAX_GROUP]);
    for (g, qg) in q.iter_mut().enumerate().take(group) {
        let src = t.qkv.as_ptr().add(ti * qkv_dim + (kvh * group + g) * hd);
        for (j, v) in qg.iter_mut().enumerate().take(vecs) {
            *v = round(_mm512_loadu_ps(src.add(16 * j)));
        }
    }
    let (mut k, mut v) = ([_mm512_setzero_ps(); V], [_mm512_setzero_ps(); V]);
    for p in 0..=slot.pos {
        let (k16, v16) = t.kv.slot(blocks, t.layer, p);
        for j in 0..vecs {
            k[j] = _mm512_cvtph_ps(_mm256_loadu_si256(k16.as_ptr().add(kv_off + 16 * j) as *const __m256i));
            v[j] = _mm512_cvtph_ps(_mm256_loadu_si256(v16.as_ptr().add(kv_off + 16 * j) as *const __m256i));
        }
        for g in 0..group {
            let mut lanes = [_mm512_setzero_ps(); 4];
            for i in (0..vecs).step_by(4) {
                for (j, l) in lanes.iter_mut().enumerate() {
                    *l = _mm512_fmadd_ps(k[i + j], q[g][i + j], *l);
                }
            }
            // ggml's tree, then GCC's _mm512_reduce_add_ps order, spelled out.
            let x = _mm512_add_ps(_mm512_add_ps(lanes[0], lanes[2]), _mm512_add_ps(lanes[1], lanes[3]));
            let t8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)), _mm512_castps512_ps256(x));
            let t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
            let t2 = _mm_add_ps(t4, _mm_shuffle_ps(t4, t4, 0b01_00_11_10));
            let s = _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1))) * scale;
            let (mut rescale, mut weight) = (1.0f32, 1.0f32);
            if s > max[g] {
                rescale = (max[g] - s).exp();
                max[g] = s;
                let r = _mm512_set1_ps(rescale);
                for a in acc[g].iter_mut().take(vecs) {
                    *a = round(_mm512_mul_ps(*a, r));
                }
            } else {
                weight = (s - max[g]).exp();
            }
            let w = _mm512_set1_ps(weight);
            for (a, &vj) in acc[g].iter_mut().zip(&v).take(vecs) {
                *a = round(_mm512_fmadd_ps(vj, w, *a));
            }
            sum[g] = sum[g].mul_add(rescale, weight);
        }
    }
    let out = t.out.slice();
    for g in 0..group {
        let inv = _mm512_set1_ps(if sum[g] == 0.0 { 0.0 } else { 1.0 / sum[g] });
        let dst = out.as_mut_ptr().add(ti * dim + (kvh * group + g) * hd);
        for j in 0..vecs {
            _mm512_storeu_ps(dst.add(16 * j), _mm512_mul_ps(acc[g][j], inv));
        }
    }
}

/// Writes every token's attention output (heads concatenated) into `out`.
pub(super) fn attend(model: &Model, chunks: &[SeqChunk], slots: &[TokenSlot], layer: usize, qkv: &[f32], kv: &KvPool, out: &mut [f32]) {
    let kv_heads = model.config.kv_heads;
    let task = Task { model, chunks, slots, layer, qkv, kv, out: SharedOut::new(out) };
    model.pool.run(slots.len() * kv_heads, &|i| {
        let (ti, kvh) = (i / kv_heads, i % kv_heads);
        // SAFETY: the model's Isa was detected on this CPU, and each Isa
        // implies the features its path is compiled for.
        match model.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { attend_group_avx512(&task, ti, kvh) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { attend_group_avx2(&task, ti, kvh) },
            _ => attend_group::<SoftwareRound>(&task, ti, kvh),
        }
    });
}
