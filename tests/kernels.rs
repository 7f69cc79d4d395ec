//! Every SIMD kernel the CPU has must match the portable reference, on random
//! weights of every packed format and on every batch size a tile can see,
//! and attention on every head shape.

mod common;

use caravan::kernels::matmul::{matmul, portable_dot, Matrix, QuantizedActs};
use caravan::kernels::pool::ComputePool;
use caravan::kernels::quant::{repack, TensorType};
use caravan::kernels::{Arithmetic, Isa};
use caravan::kv::KvPool;
use caravan::model::attention::{attend, Attention, AttentionTasks};
use caravan::model::{SeqChunk, TokenSlot};
use caravan::sampler::Rng;
use common::blocks::random_blocks;

fn float(rng: &mut Rng) -> f32 {
    rng.next_f32() * 2.0 - 1.0
}

/// Both orders of the float arithmetic (and the 4-bit layouts that go with them).
const ORDERS: [Arithmetic; 2] = [Arithmetic::Ggml, Arithmetic::Fast];

const TYPES: [TensorType; 9] = [
    TensorType::F32,
    TensorType::F16,
    TensorType::BF16,
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q8_0,
    TensorType::Q4K,
    TensorType::Q6K,
];

#[test]
fn simd_matmul_equals_portable_bitwise_for_every_format_and_batch_size() {
    let mut rng = Rng(42);
    let pool = ComputePool::new(2);
    // Even and odd block counts, row counts that fill panels or leave a
    // partial one (padding rows), every tile width and more; 40 blocks
    // make the 4-bit kernel work in several chunks of blocks.
    let shapes = TYPES.iter().flat_map(|&t| [(t, 72, 512), (t, 70, 480), (t, 24, 1280)]);
    for ((t, rows, cols), order) in shapes.flat_map(|s| ORDERS.map(|o| (s, o))) {
        if cols % t.block_elems() != 0 {
            continue;
        }
        let w = Matrix { rows, cols, w: repack(t, &random_blocks(&mut rng, t, rows, cols), rows, cols, order) };
        for m in [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 17] {
            let x: Vec<f32> = (0..m * cols).map(|_| float(&mut rng) * 3.0).collect();
            let mut q = QuantizedActs::default();
            q.quantize(&pool, Isa::PORTABLE, &x, m, cols);
            for isa in Isa::available() {
                let mut out = vec![0f32; m * rows];
                matmul(&pool, isa, &w, &x, &q, &mut out);
                for a in 0..m {
                    for r in 0..rows {
                        let want = portable_dot(&w, &x, &q, r, a);
                        let got = out[a * rows + r];
                        // Same operations in the same order: bitwise equal.
                        assert_eq!(got.to_bits(), want.to_bits(), "{t:?} {order} {isa} m={m} row {r} act {a}: {got} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn quantized_matmul_tracks_the_float_product() {
    // The 8-bit activations cost a little precision; the product of the
    // dequantized weights with the float input must stay close.
    let mut rng = Rng(7);
    let (rows, cols) = (8, 256);
    for (t, order) in TYPES.iter().flat_map(|&t| ORDERS.map(|o| (t, o))) {
        let w = Matrix { rows, cols, w: repack(t, &random_blocks(&mut rng, t, rows, cols), rows, cols, order) };
        let x: Vec<f32> = (0..cols).map(|_| float(&mut rng)).collect();
        let mut q = QuantizedActs::default();
        q.quantize(&ComputePool::new(1), Isa::PORTABLE, &x, 1, cols);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            w.w.row_f32(r, cols, &mut row);
            let exact: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
            let norm: f32 = row.iter().map(|a| a.abs()).sum::<f32>() / 127.0;
            let got = portable_dot(&w, &x, &q, r, 0);
            assert!((got - exact).abs() <= norm + 1e-5, "{t:?} {order} row {r}: {got} vs {exact}");
        }
    }
}

#[test]
fn every_isa_quantizes_activations_to_the_same_bytes() {
    let mut rng = Rng(11);
    let pool = ComputePool::new(2);
    let (rows, cols) = (37, 576);
    // Values at exact rounding ties and zero blocks as well as random ones.
    let mut x: Vec<f32> = (0..rows * cols).map(|_| float(&mut rng) * 5.0).collect();
    x[..32].fill(0.0);
    x[32..64].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 15.5);
    let mut want = QuantizedActs::default();
    want.quantize(&pool, Isa::PORTABLE, &x, rows, cols);
    for isa in Isa::available() {
        let mut got = QuantizedActs::default();
        got.quantize(&pool, isa, &x, rows, cols);
        assert_eq!(got.qs, want.qs, "{isa}");
        assert_eq!((&got.scale, &got.sum, &got.isum16), (&want.scale, &want.sum, &want.isum16), "{isa}");
    }
}

/// ggml's own dequantization of one row, written from its reference C.
fn ggml_dequantize(t: TensorType, row: &[u8]) -> Vec<f32> {
    let f16 = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut y = Vec::new();
    for b in row.chunks_exact(t.block_bytes()) {
        match t {
            TensorType::F32 => y.push(f32::from_le_bytes(b.try_into().unwrap())),
            TensorType::F16 => y.push(f16(b, 0)),
            TensorType::BF16 => y.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            TensorType::Q4_0 => {
                let d = f16(b, 0);
                y.extend(b[2..18].iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                y.extend(b[2..18].iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            TensorType::Q4_1 => {
                let (d, m) = (f16(b, 0), f16(b, 2));
                y.extend(b[4..20].iter().map(|&q| (q & 0xF) as f32 * d + m));
                y.extend(b[4..20].iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            TensorType::Q5_0 => {
                let (d, qh) = (f16(b, 0), u32::from_le_bytes(b[2..6].try_into().unwrap()));
                let mut out = [0f32; 32];
                for j in 0..16 {
                    let xh_0 = (((qh >> j) << 4) & 0x10) as i32;
                    let xh_1 = ((qh >> (j + 12)) & 0x10) as i32;
                    out[j] = (((b[6 + j] & 0x0F) as i32 | xh_0) - 16) as f32 * d;
                    out[j + 16] = (((b[6 + j] >> 4) as i32 | xh_1) - 16) as f32 * d;
                }
                y.extend(out);
            }
            TensorType::Q8_0 => y.extend(b[2..34].iter().map(|&q| q as i8 as f32 * f16(b, 0))),
            TensorType::Q4K => {
                let (d, dmin, s) = (f16(b, 0), f16(b, 2), &b[4..16]);
                let sm = |j: usize| -> (f32, f32) {
                    let (sc, m) = if j < 4 {
                        (s[j] & 63, s[j + 4] & 63)
                    } else {
                        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
                    };
                    (d * sc as f32, dmin * m as f32)
                };
                for j in 0..4 {
                    let q = &b[16 + 32 * j..48 + 32 * j];
                    let ((d1, m1), (d2, m2)) = (sm(2 * j), sm(2 * j + 1));
                    y.extend(q.iter().map(|&v| d1 * (v & 0xF) as f32 - m1));
                    y.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - m2));
                }
            }
            TensorType::Q6K => {
                let d = f16(b, 208);
                let mut out = [0f32; 256];
                for n in 0..2 {
                    let (ql, qh, sc) = (&b[64 * n..], &b[128 + 32 * n..], &b[192 + 8 * n..]);
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let o = &mut out[128 * n..];
                        o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                y.extend(out);
            }
        }
    }
    y
}

#[test]
fn repacked_rows_equal_ggml_dequantization() {
    let mut rng = Rng(3);
    let (rows, cols) = (35, 512);
    for (t, order) in TYPES.iter().flat_map(|&t| ORDERS.map(|o| (t, o))) {
        let data = random_blocks(&mut rng, t, rows, cols);
        let w = repack(t, &data, rows, cols, order);
        let row_bytes = data.len() / rows;
        let mut got = vec![0f32; cols];
        for r in 0..rows {
            w.row_f32(r, cols, &mut got);
            let want = ggml_dequantize(t, &data[r * row_bytes..(r + 1) * row_bytes]);
            // Q4_K's scale and minimum products are rounded to f16 (relative
            // 2^-11 each); every other format repacks exactly.
            let largest = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let tol = if t == TensorType::Q4K { largest * 2e-3 } else { 0.0 };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= tol, "{t:?} {order} row {r} element {i}: {g} vs {w}");
            }
        }
    }
}

/// Plain softmax attention in f64 over the same f16-rounded cache, as a
/// check on the reference itself: scores scaled by 1/sqrt(hd), soft-capped
/// by `cap` where there is one.
fn exact_attention(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], cap: Option<f32>) -> Vec<f64> {
    let hd = q.len();
    let round = |x: f32| half::f16::from_f32(x).to_f32() as f64;
    let capped = |s: f64| cap.map_or(s, |c| c as f64 * (s / c as f64).tanh());
    let scores: Vec<f64> =
        keys.iter().map(|k| capped(k.iter().zip(q).map(|(&a, &b)| round(a) * round(b)).sum::<f64>() / (hd as f64).sqrt())).collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    (0..hd).map(|e| weights.iter().zip(values).map(|(w, v)| w * round(v[e])).sum::<f64>() / total).collect()
}

#[test]
fn simd_attention_equals_portable_bitwise_for_every_head_shape() {
    let mut rng = Rng(19);
    // Head sizes with vector rows (64, 128, 256) and without (80); groups of
    // 3, 1 and 2 query heads per KV head.
    // Each also with a sliding window of 23 positions (the 37-token chunk's
    // tokens' windows begin at different places inside its runs) and the
    // scores soft-capped.
    let shapes = [(9, 3, 64), (4, 4, 128), (2, 1, 256), (6, 3, 80)];
    let windows = [(usize::MAX, None), (23, Some(2.0))];
    for (((heads, kv_heads, hd), order), (window, softcap)) in
        shapes.into_iter().flat_map(|s| ORDERS.map(|o| (s, o))).flat_map(|so| windows.map(|w| (so, w)))
    {
        let pool = ComputePool::new(2);
        let on = |isa| Attention { softcap, window, ..Attention::new(heads, kv_heads, hd, isa, order) };
        let portable = on(Isa::PORTABLE);
        let (dim, kv_dim) = (portable.dim(), portable.kv_dim());
        // A decode at position 40, a 37-token chunk at 5..42 (runs its
        // tokens see only part of), a first token at position 0, and a
        // decode at position 300, most of whose runs of 16 positions set no
        // new maximum (the softmax's shortcut).
        let shapes = [(40usize, 1usize), (5, 37), (0, 1), (300, 1)];
        let mut kv = KvPool::new(1, kv_dim, 16, 48);
        let mut cache = Vec::new();
        let mut tables = Vec::new();
        for &(start, tokens) in &shapes {
            let mut table = Vec::new();
            kv.reserve(&mut table, start + tokens).unwrap();
            let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..start + tokens)
                .map(|_| ((0..kv_dim).map(|_| float(&mut rng)).collect(), (0..kv_dim).map(|_| float(&mut rng)).collect()))
                .collect();
            for (pos, (k, v)) in rows.iter().enumerate() {
                kv.write(&table, 0, pos, k, v);
            }
            cache.push(rows);
            tables.push(table);
        }
        let tokens = [0u32; 37];
        let chunks: Vec<SeqChunk> = shapes
            .iter()
            .zip(&tables)
            .map(|(&(start, n), b)| SeqChunk { tokens: &tokens[..n], start_pos: start, blocks: b, logits: false })
            .collect();
        let slots: Vec<TokenSlot> = shapes
            .iter()
            .enumerate()
            .flat_map(|(chunk, &(start, n))| (start..start + n).map(move |pos| TokenSlot { chunk, pos }))
            .collect();
        let qkv_dim = dim + 2 * kv_dim;
        let qkv: Vec<f32> = (0..slots.len() * qkv_dim).map(|_| float(&mut rng) * 2.0).collect();
        let mut want = vec![0f32; slots.len() * dim];
        attend(&portable, &pool, &chunks, &slots, 0, &qkv, &kv, &mut want, &mut AttentionTasks::default());
        // The reference is attention, up to its accumulator (f16 in ggml's
        // order, f32 in the fast one).
        let tol = match order {
            Arithmetic::Ggml => 1e-2,
            Arithmetic::Fast => 1e-4,
        };
        for (t, slot) in slots.iter().enumerate() {
            let rows = &cache[slot.chunk][(slot.pos + 1).saturating_sub(window)..=slot.pos];
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let keys: Vec<Vec<f32>> = rows.iter().map(|(k, _)| k[kvh * hd..(kvh + 1) * hd].to_vec()).collect();
                let values: Vec<Vec<f32>> = rows.iter().map(|(_, v)| v[kvh * hd..(kvh + 1) * hd].to_vec()).collect();
                let exact = exact_attention(&qkv[t * qkv_dim + h * hd..][..hd], &keys, &values, softcap);
                for (e, x) in exact.iter().enumerate() {
                    let got = want[t * dim + h * hd + e] as f64;
                    assert!((got - x).abs() < tol, "{order} hd {hd} window {window} token {t} head {h} element {e}: {got} vs {x}");
                }
            }
        }
        for isa in Isa::available() {
            let attention = on(isa);
            let mut got = vec![0f32; want.len()];
            attend(&attention, &pool, &chunks, &slots, 0, &qkv, &kv, &mut got, &mut AttentionTasks::default());
            let differ = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
            assert!(differ.is_none(), "{order} {isa} hd {hd} window {window}: output {differ:?} differs");
            // Each chunk alone gives the bits it had in the batch.
            let mut row = 0;
            for (ci, chunk) in chunks.iter().enumerate() {
                let n = chunk.tokens.len();
                let alone: Vec<TokenSlot> = slots[row..row + n].iter().map(|s| TokenSlot { chunk: 0, pos: s.pos }).collect();
                let mut out = vec![0f32; n * dim];
                attend(
                    &attention,
                    &pool,
                    std::slice::from_ref(chunk),
                    &alone,
                    0,
                    &qkv[row * qkv_dim..(row + n) * qkv_dim],
                    &kv,
                    &mut out,
                    &mut AttentionTasks::default(),
                );
                let differ = out.iter().zip(&want[row * dim..]).position(|(g, w)| g.to_bits() != w.to_bits());
                assert!(differ.is_none(), "{order} {isa} hd {hd}: chunk {ci} alone differs at {differ:?}");
                row += n;
            }
        }
    }
}
