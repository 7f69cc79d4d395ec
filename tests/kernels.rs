//! Every SIMD kernel the CPU has must match the portable reference, on random
//! weights of every packed format and on every batch size a tile can see,
//! and attention on every head shape.

mod common;

use caravan::kernels::matmul::{matmul, portable_dot, Matrix, QuantizedActs, RowBatch};
use caravan::kernels::pool::ComputePool;
use caravan::kernels::quant::{repack, repack_bf16, TensorType};
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

const TYPES: [TensorType; 15] = [
    TensorType::F32,
    TensorType::F16,
    TensorType::BF16,
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

/// `check(isa, act, row, got, want)` on every output of `matmul` on every
/// ISA, against `portable_dot`'s.
fn against_portable(pool: &ComputePool, w: &Matrix, x: &[f32], q: &QuantizedActs, check: impl Fn(Isa, usize, usize, f32, f32)) {
    for isa in Isa::available() {
        let mut out = vec![0f32; q.rows * w.rows];
        matmul(pool, isa, w, x, q, &mut out);
        for a in 0..q.rows {
            for r in 0..w.rows {
                check(isa, a, r, out[a * w.rows + r], portable_dot(w, x, q, r, a));
            }
        }
    }
}

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
            if w.w.reads_super_blocks() {
                // Rows of every kind of llama.cpp batch, mixed: in fours,
                // tiled, both, neither.
                let batches: Vec<RowBatch> = (0..m).map(|a| RowBatch { rows: [4, 9, 12, 1][a % 4], index: a % 3 }).collect();
                q.quantize_super_blocks(&pool, &x, &batches);
            }
            if w.w.reads_16bit_acts() {
                q.quantize_16(&pool, Isa::PORTABLE, &x);
            }
            against_portable(&pool, &w, &x, &q, |isa, a, r, got, want| {
                // Same operations in the same order: bitwise equal.
                assert_eq!(got.to_bits(), want.to_bits(), "{t:?} {order} {isa} m={m} row {r} act {a}: {got} vs {want}");
            });
        }
    }
}

/// Float matrices as bf16 (how an embedding model's run on AMX): the
/// portable path fuses one multiply-add per input in input order, and the
/// ISAs without AMX run it; AMX's tiles sum the same bf16 products in f32
/// in an order of their own, so they are held to f32 rounding of the sum
/// of magnitudes. Shapes with partial panels, an odd panel count and
/// activation rows that leave part of a tile group or of a pair of groups.
#[test]
fn bf16_matmul_on_every_isa_tracks_the_portable_path() {
    let mut rng = Rng(5);
    let pool = ComputePool::new(2);
    for (t, rows, cols) in [(TensorType::F16, 72, 512), (TensorType::F32, 40, 96), (TensorType::BF16, 48, 1536)] {
        let w = Matrix { rows, cols, w: repack_bf16(t, &random_blocks(&mut rng, t, rows, cols), rows, cols) };
        let mut weights = vec![0f32; rows * cols];
        weights.chunks_exact_mut(cols).enumerate().for_each(|(r, row)| w.w.row_f32(r, cols, row));
        for m in [1usize, 5, 16, 17, 31, 32, 33, 70] {
            let x: Vec<f32> = (0..m * cols).map(|_| float(&mut rng) * 3.0).collect();
            let mut q = QuantizedActs::default();
            q.shape_only(m, cols);
            q.tile_bf16(&pool, Isa::PORTABLE, &x);
            against_portable(&pool, &w, &x, &q, |isa, a, r, got, want| {
                if !isa.amx() {
                    assert_eq!(got.to_bits(), want.to_bits(), "{t:?} {isa} m={m} row {r} act {a}: {got} vs {want}");
                    return;
                }
                let magnitude: f32 = weights[r * cols..(r + 1) * cols].iter().zip(&x[a * cols..]).map(|(w, x)| (w * x).abs()).sum();
                let bound = magnitude * cols as f32 * f32::EPSILON;
                assert!((got - want).abs() <= bound, "{t:?} {isa} m={m} row {r} act {a}: {got} vs {want} (bound {bound})");
            });
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
        if w.w.reads_super_blocks() {
            q.quantize_super_blocks(&ComputePool::new(1), &x, &[RowBatch::ALONE]);
        }
        if w.w.reads_16bit_acts() {
            q.quantize_16(&ComputePool::new(1), Isa::PORTABLE, &x);
        }
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
fn every_isa_quantizes_activations_to_the_same_codes() {
    let mut rng = Rng(11);
    let pool = ComputePool::new(2);
    let (rows, cols) = (37, 576);
    // Values at exact rounding ties and zero blocks as well as random ones.
    let mut x: Vec<f32> = (0..rows * cols).map(|_| float(&mut rng) * 5.0).collect();
    x[..32].fill(0.0);
    x[32..64].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 15.5);
    // Ties of the 13-bit codes: a block whose largest value is the largest code.
    x[64..96].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 15.5);
    x[64] = 4095.0;
    let mut want = QuantizedActs::default();
    want.quantize(&pool, Isa::PORTABLE, &x, rows, cols);
    for isa in Isa::available() {
        let mut got = QuantizedActs::default();
        got.quantize(&pool, isa, &x, rows, cols);
        assert_eq!(got.qs, want.qs, "{isa}");
        assert_eq!((&got.scale, &got.sum, &got.isum16), (&want.scale, &want.sum, &want.isum16), "{isa}");
    }
    want.quantize_16(&pool, Isa::PORTABLE, &x);
    for isa in Isa::available() {
        let mut got = QuantizedActs::default();
        got.shape_only(rows, cols);
        got.quantize_16(&pool, isa, &x);
        assert_eq!((&got.q16, &got.scale16), (&want.q16, &want.scale16), "{isa}");
    }
    // bf16 as `half` rounds (to nearest, ties to even), ties included.
    x[96..128].iter_mut().enumerate().for_each(|(i, v)| *v = f32::from_bits(0x3f80_8000 + ((i as u32) << 16)));
    want.tile_bf16(&pool, Isa::PORTABLE, &x);
    for a in 0..rows {
        for k in 0..cols {
            let at = caravan::kernels::bf16_tiles::acts_offset(cols, a, k);
            assert_eq!(want.bf16[at], half::bf16::from_f32(x[a * cols + k]).to_bits(), "row {a} input {k}");
        }
    }
    for isa in Isa::available() {
        let mut got = QuantizedActs::default();
        got.shape_only(rows, cols);
        got.tile_bf16(&pool, isa, &x);
        assert_eq!(got.bf16, want.bf16, "{isa}");
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
            TensorType::Q5_1 => {
                let (d, m, qh) = (f16(b, 0), f16(b, 2), u32::from_le_bytes(b[4..8].try_into().unwrap()));
                let mut out = [0f32; 32];
                for j in 0..16 {
                    let xh_0 = ((qh >> j) << 4) & 0x10;
                    let xh_1 = (qh >> (j + 12)) & 0x10;
                    out[j] = ((b[8 + j] & 0x0F) as u32 | xh_0) as f32 * d + m;
                    out[j + 16] = ((b[8 + j] >> 4) as u32 | xh_1) as f32 * d + m;
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
            // dequantize_row_q2_K
            TensorType::Q2K => {
                let (d, min) = (f16(b, 80), f16(b, 82));
                let mut is = 0;
                for n in 0..2 {
                    let q = &b[16 + 32 * n..];
                    for shift in [0, 2, 4, 6] {
                        for part in 0..2 {
                            let sc = b[is];
                            is += 1;
                            let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                            y.extend((0..16).map(|l| dl * ((q[l + 16 * part] >> shift) & 3) as i8 as f32 - ml));
                        }
                    }
                }
            }
            // dequantize_row_q3_K
            TensorType::Q3K => {
                let d_all = f16(b, 108);
                let (kmask1, kmask2) = (0x03030303u32, 0x0f0f0f0fu32);
                let mut aux = [0u32; 4];
                for (i, a) in aux.iter_mut().enumerate().take(3) {
                    *a = u32::from_le_bytes(b[96 + 4 * i..100 + 4 * i].try_into().unwrap());
                }
                let tmp = aux[2];
                aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
                aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
                aux[0] = (aux[0] & kmask2) | ((tmp & kmask1) << 4);
                aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
                let scales: Vec<i8> = aux.iter().flat_map(|a| a.to_le_bytes()).map(|v| v as i8).collect();
                let (hm, mut m, mut is) = (&b[0..32], 1u8, 0);
                for n in 0..2 {
                    let q = &b[32 + 32 * n..];
                    for shift in [0, 2, 4, 6] {
                        for part in 0..2 {
                            let dl = d_all * (scales[is] as i32 - 32) as f32;
                            is += 1;
                            y.extend((0..16).map(|l| {
                                let i = l + 16 * part;
                                dl * (((q[i] >> shift) & 3) as i8 - if hm[i] & m != 0 { 0 } else { 4 }) as f32
                            }));
                        }
                        m <<= 1;
                    }
                }
            }
            // dequantize_row_q5_K
            TensorType::Q5K => {
                let (d, min, s, qh) = (f16(b, 0), f16(b, 2), &b[4..16], &b[16..48]);
                let sm = |j: usize| -> (f32, f32) {
                    let (sc, m) = if j < 4 {
                        (s[j] & 63, s[j + 4] & 63)
                    } else {
                        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
                    };
                    (d * sc as f32, min * m as f32)
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for j in 0..4 {
                    let ql = &b[48 + 32 * j..80 + 32 * j];
                    let ((d1, m1), (d2, m2)) = (sm(2 * j), sm(2 * j + 1));
                    y.extend((0..32).map(|l| d1 * ((ql[l] & 0xF) + if qh[l] & u1 != 0 { 16 } else { 0 }) as f32 - m1));
                    y.extend((0..32).map(|l| d2 * ((ql[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 }) as f32 - m2));
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
            // dequantize_row_iq4_nl
            TensorType::IQ4NL => {
                let d = f16(b, 0);
                y.extend(b[2..18].iter().map(|&q| d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32));
                y.extend(b[2..18].iter().map(|&q| d * KVALUES_IQ4NL[(q >> 4) as usize] as f32));
            }
            // dequantize_row_iq4_xs
            TensorType::IQ4XS => {
                let (d, scales_h) = (f16(b, 0), u16::from_le_bytes([b[2], b[3]]));
                for ib in 0..8 {
                    let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
                    let dl = d * (ls - 32) as f32;
                    let qs = &b[8 + 16 * ib..24 + 16 * ib];
                    y.extend(qs.iter().map(|&q| dl * KVALUES_IQ4NL[(q & 0xF) as usize] as f32));
                    y.extend(qs.iter().map(|&q| dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32));
                }
            }
        }
    }
    y
}

/// ggml's `kvalues_iq4nl`.
const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

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
            // In the fast order Q4_K's scale and minimum products are
            // rounded to f16 (relative 2^-11 each), and Q5_K's, and IQ4_XS's
            // in either order; float rows there are 14-bit codes of the
            // row's largest weight; everything else repacks exactly.
            let largest = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let rounded = (matches!(t, TensorType::Q4K | TensorType::Q5K) && order == Arithmetic::Fast) || t == TensorType::IQ4XS;
            let tol = if rounded {
                largest * 2e-3
            } else if t.is_float() && order == Arithmetic::Fast {
                largest / 16382.0 * 1.001
            } else {
                0.0
            };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= tol, "{t:?} {order} row {r} element {i}: {g} vs {w}");
            }
        }
    }
}

/// ggml's `quantize_row_q8_K_ref` for one row: per super-block of 256 the
/// scale, the codes and the sums of each 16.
fn ggml_quantize_q8_k(x: &[f32]) -> Vec<(f32, Vec<i8>, Vec<i32>)> {
    let nearest_int = |v: f32| {
        let bits = (v + 12_582_912.0).to_bits() as i32;
        (bits & 0x007f_ffff) - 0x0040_0000
    };
    x.chunks_exact(256)
        .map(|x| {
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                return (0.0, vec![0; 256], vec![0; 16]);
            }
            let iscale = -127.0 / max;
            let qs: Vec<i8> = x.iter().map(|&v| nearest_int(iscale * v).min(127) as i8).collect();
            let bsums = qs.chunks_exact(16).map(|c| c.iter().map(|&q| q as i32).sum()).collect();
            (1.0 / iscale, qs, bsums)
        })
        .collect()
}

/// A Q4_K super-block's parts as ggml reads them: d, dmin, the eight
/// 6-bit scales and minimums (`get_scale_min_k4`), the 256 codes.
fn q4k_parts(b: &[u8]) -> (f32, f32, [i32; 8], [i32; 8], Vec<i32>) {
    let f16 = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let s = &b[4..16];
    let (mut sc, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        let (a, b) = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        };
        (sc[j], m[j]) = (a as i32, b as i32);
    }
    let q = (0..4).flat_map(|j| {
        let q = &b[16 + 32 * j..48 + 32 * j];
        q.iter().map(|&v| (v & 0xF) as i32).chain(q.iter().map(|&v| (v >> 4) as i32)).collect::<Vec<_>>()
    });
    (f16(0), f16(2), sc, m, q.collect())
}

/// ggml's Q4_K · Q8_K on one row, as its repacked AVX2/AVX-512 kernels sum:
/// integer sums over each super-block (`gemv_q4_K_8x8_q8_K`) or, for rows
/// it multiplies four at a time, over each pair of blocks
/// (`gemm_q4_K_8x8_q8_K`), fused with d · d_x and dmin · d_x.
fn ggml_q4k_dot(row: &[u8], x: &[f32], in_fours: bool) -> f32 {
    let (mut acc, mut mins) = (0f32, 0f32);
    for (b, (dx, qx, bsums)) in row.chunks_exact(144).zip(ggml_quantize_q8_k(x)) {
        let (d, dmin, sc, m, q) = q4k_parts(b);
        let step = if in_fours { 2 } else { 8 };
        for first in (0..8).step_by(step) {
            let (mut isum, mut imin) = (0i32, 0i32);
            for j in first..first + step {
                isum += sc[j] * (32 * j..32 * j + 32).map(|e| q[e] * qx[e] as i32).sum::<i32>();
                imin += m[j] * (bsums[2 * j] + bsums[2 * j + 1]);
            }
            acc = (isum as f32).mul_add(d * dx, acc);
            mins = (imin as f32).mul_add(dmin * dx, mins);
        }
    }
    acc - mins
}

/// ggml's Q6_K · Q8_K on one row: for a row alone its AVX2
/// `vec_dot_q6_K_q8_K` (32-bit lane k sums bytes 4k..4k+4 of each 32-byte
/// vector, scaled, less the offset through the sums of 16; the lanes fused
/// with d · d_x, then `hsum_float_8`); tiled (batches of eight rows or more)
/// its VNNI `tiled_run_micro_vnni_8x16` (the whole integer sum, times d, then
/// fused with d_x: GCC contracts the multiply and add).
fn ggml_q6k_dot(row: &[u8], x: &[f32], tiled: bool) -> f32 {
    let (mut lanes, mut acc) = ([0f32; 8], 0f32);
    for (b, (dx, qx, bsums)) in row.chunks_exact(210).zip(ggml_quantize_q8_k(x)) {
        let d = half::f16::from_le_bytes([b[208], b[209]]).to_f32();
        let sc: Vec<i32> = b[192..208].iter().map(|&s| s as i8 as i32).collect();
        let mut q = vec![0i32; 256];
        for n in 0..2 {
            let (ql, qh) = (&b[64 * n..], &b[128 + 32 * n..]);
            for l in 0..32 {
                q[128 * n + l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32;
                q[128 * n + l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32;
                q[128 * n + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32;
                q[128 * n + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32;
            }
        }
        if tiled {
            let s1: i32 = (0..16).map(|g| sc[g] * ((16 * g..16 * g + 16).map(|e| q[e] * qx[e] as i32).sum::<i32>() - 32 * bsums[g])).sum();
            acc = (s1 as f32 * d).mul_add(dx, acc);
            continue;
        }
        let mut sumi = [0i32; 8];
        for (k, sum) in sumi.iter_mut().enumerate() {
            for vector in 0..8 {
                let e = 32 * vector + 4 * k;
                *sum += sc[e / 16] * (e..e + 4).map(|e| q[e] * qx[e] as i32).sum::<i32>();
            }
            *sum -= 32 * (bsums[2 * k] * sc[2 * k] + bsums[2 * k + 1] * sc[2 * k + 1]);
        }
        for (l, s) in lanes.iter_mut().zip(sumi) {
            *l = (dx * d).mul_add(s as f32, *l);
        }
    }
    if tiled {
        return acc;
    }
    let r = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// ggml's Q5_1 · Q8_1 on one row (its AVX2 `vec_dot_q5_1_q8_1`): eight
/// lanes of four-element integer sums fused with d · d_x per block,
/// `hsum_float_8`, plus the minimums times the activations' scaled sums
/// (GCC fuses that accumulation too), against Caravan's Q8_1 activations.
fn ggml_q5_1_dot(row: &[u8], q: &QuantizedActs, a: usize) -> f32 {
    let nb = q.cols / 32;
    let (mut lanes, mut summs) = ([0f32; 8], 0f32);
    for (b, blk) in row.chunks_exact(24).enumerate() {
        let f16 = |i: usize| half::f16::from_le_bytes([blk[i], blk[i + 1]]).to_f32();
        let qh = u32::from_le_bytes(blk[4..8].try_into().unwrap());
        let code = |e: usize| {
            let nibble = if e < 16 { blk[8 + e] & 0xF } else { blk[8 + e - 16] >> 4 };
            (nibble as u32 | (((qh >> e) & 1) << 4)) as i32
        };
        let (dy, s) = (q.scale[a * nb + b], q.sum[a * nb + b]);
        summs = f16(2).mul_add(s, summs);
        for (j, lane) in lanes.iter_mut().enumerate() {
            let isum: i32 = (4 * j..4 * j + 4).map(|e| code(e) * q.qs[a * q.cols + b * 32 + e] as i32).sum();
            *lane = (isum as f32).mul_add(f16(0) * dy, *lane);
        }
    }
    let r = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (r[0] + r[2]) + (r[1] + r[3]) + summs
}

#[test]
fn q5_1_in_ggml_s_order_sums_as_ggml_s_kernel_does() {
    let mut rng = Rng(13);
    let (rows, cols) = (18, 320);
    let data = random_blocks(&mut rng, TensorType::Q5_1, rows, cols);
    let w = Matrix { rows, cols, w: repack(TensorType::Q5_1, &data, rows, cols, Arithmetic::Ggml) };
    let x: Vec<f32> = (0..3 * cols).map(|_| float(&mut rng) * 3.0).collect();
    let mut q = QuantizedActs::default();
    q.quantize(&ComputePool::new(1), Isa::PORTABLE, &x, 3, cols);
    let row_bytes = data.len() / rows;
    for a in 0..3 {
        for r in 0..rows {
            let want = ggml_q5_1_dot(&data[r * row_bytes..(r + 1) * row_bytes], &q, a);
            let got = portable_dot(&w, &x, &q, r, a);
            assert_eq!(got.to_bits(), want.to_bits(), "row {r} act {a}: {got} vs {want}");
        }
    }
}

#[test]
fn super_block_activations_equal_ggml_s_q8_k() {
    let mut rng = Rng(5);
    let (rows, cols) = (3, 768);
    let mut x: Vec<f32> = (0..rows * cols).map(|_| float(&mut rng) * 4.0).collect();
    // A zero super-block, one whose extreme is negative, exact ties.
    x[256..512].fill(0.0);
    x[600] = -9.0;
    x[1000..1256].iter_mut().enumerate().for_each(|(i, v)| *v = (i % 17) as f32 - 8.5);
    let pool = ComputePool::new(2);
    let mut q = QuantizedActs::default();
    q.quantize(&pool, Isa::PORTABLE, &x, rows, cols);
    q.quantize_super_blocks(&pool, &x, &[RowBatch::ALONE; 3]);
    let want = ggml_quantize_q8_k(&x);
    for (s, (d, qs, bsums)) in want.iter().enumerate() {
        assert_eq!(q.sb.d[s].to_bits(), d.to_bits(), "super-block {s}");
        assert_eq!(&q.sb.qs[s * 256..(s + 1) * 256], &qs[..], "super-block {s}");
        assert_eq!(&q.sb.bsum16[s * 16..(s + 1) * 16], &bsums[..], "super-block {s}");
    }
}

#[test]
fn k_quants_in_ggml_s_order_sum_as_ggml_s_kernels_do() {
    let mut rng = Rng(9);
    let (rows, cols) = (20, 768);
    let pool = ComputePool::new(2);
    for t in [TensorType::Q4K, TensorType::Q6K] {
        let data = random_blocks(&mut rng, t, rows, cols);
        let w = Matrix { rows, cols, w: repack(t, &data, rows, cols, Arithmetic::Ggml) };
        let row_bytes = data.len() / rows;
        // Rows alone, in fours, tiled, and the last rows of a batch that
        // its four-row kernel leaves to the one-row kernel.
        let batches = [RowBatch::ALONE, RowBatch { rows: 6, index: 1 }, RowBatch { rows: 9, index: 3 }, RowBatch { rows: 9, index: 8 }];
        let x: Vec<f32> = (0..batches.len() * cols).map(|_| float(&mut rng) * 3.0).collect();
        let mut q = QuantizedActs::default();
        q.quantize(&pool, Isa::PORTABLE, &x, batches.len(), cols);
        q.quantize_super_blocks(&pool, &x, &batches);
        for (a, batch) in batches.iter().enumerate() {
            let xa = &x[a * cols..(a + 1) * cols];
            for r in 0..rows {
                let wr = &data[r * row_bytes..(r + 1) * row_bytes];
                let want = if t == TensorType::Q4K { ggml_q4k_dot(wr, xa, batch.in_fours()) } else { ggml_q6k_dot(wr, xa, batch.tiled()) };
                let got = portable_dot(&w, &x, &q, r, a);
                assert_eq!(got.to_bits(), want.to_bits(), "{t:?} {batch:?} row {r}: {got} vs {want}");
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
            .map(|(&(start, n), b)| SeqChunk { tokens: &tokens[..n], start_pos: start, blocks: b, logits: false, prompt_len: start + n })
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
