//! Batched matmul `out[m][n] = x[m][k] · W[n][k]ᵀ` over packed weights.
//!
//! Activations are quantized once per matmul to 8-bit blocks of 32 (scale and
//! scaled sum kept in f32), so each weight block is loaded and unpacked once
//! and reused against up to four activation rows (a 4 x 4 tile). Integer sums
//! are exact, and each output element is accumulated in an order that does
//! not depend on how many rows are in the batch: a sequence's results are the
//! same alone or batched.

use super::pool::{ComputePool, SharedOut};
use super::quant::{tile_index, Packed, SCALE_TILE};
use super::Isa;

/// Weight rows per tile, and the most activation rows a tile takes.
pub const TILE_ROWS: usize = SCALE_TILE;
pub const TILE_ACTS: usize = 4;
/// Weight rows per parallel task: small enough to balance two threads on the
/// 192-row K/V projections, large enough to amortize the hand-off.
const ROWS_PER_TASK: usize = 32;

/// A weight matrix: `rows` output features of `cols` inputs each.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub w: Packed,
}

/// Activations quantized to blocks of 32: `qs[row * cols + i]`,
/// `scale[row * blocks + b]`, `sum[...] = scale * Σ qs` over the block.
#[derive(Default)]
pub struct QuantizedActs {
    pub rows: usize,
    pub cols: usize,
    pub qs: Vec<i8>,
    pub scale: Vec<f32>,
    pub sum: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes `x` (`rows` x `cols`, cols a multiple of 32), reusing buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        assert!(cols % 32 == 0 && x.len() == rows * cols);
        let blocks = rows * cols / 32;
        self.rows = rows;
        self.cols = cols;
        self.qs.resize(rows * cols, 0);
        self.scale.resize(blocks, 0.0);
        self.sum.resize(blocks, 0.0);
        for (b, xb) in x.chunks_exact(32).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let q = &mut self.qs[b * 32..(b + 1) * 32];
            let mut total = 0i32;
            for (qi, &v) in q.iter_mut().zip(xb) {
                *qi = round_ties_even(v * inv) as i8;
                total += *qi as i32;
            }
            // Scales are kept at f16 precision, as ggml's Q8_1 blocks keep
            // them: it measurably brings greedy outputs closer to llama.cpp's.
            let f16 = |v: f32| half::f16::from_f32(v).to_f32();
            self.scale[b] = f16(d);
            self.sum[b] = f16(d * total as f32);
        }
    }
}

/// `out[i * w.rows + r] = Σ_k x[i][k] · W[r][k]` for all activation rows i.
/// `x` is the float input (used by float weights) and `q` its quantized form.
pub fn matmul(pool: &ComputePool, isa: Isa, w: &Matrix, x: &[f32], q: &QuantizedActs, out: &mut [f32]) {
    let m = q.rows;
    assert_eq!(q.cols, w.cols);
    assert_eq!(out.len(), m * w.rows);
    let tasks = w.rows.div_ceil(ROWS_PER_TASK);
    let shared = SharedOut::new(out);
    pool.run(tasks, &|t| {
        let r0 = t * ROWS_PER_TASK;
        let r1 = (r0 + ROWS_PER_TASK).min(w.rows);
        // SAFETY: each task writes only columns r0..r1 of every output row.
        let out = unsafe { shared.slice() };
        rows_range(isa, w, x, q, r0, r1, out);
    });
}

fn rows_range(isa: Isa, w: &Matrix, x: &[f32], q: &QuantizedActs, r0: usize, r1: usize, out: &mut [f32]) {
    let m = q.rows;
    let mut r = r0;
    while r < r1 {
        let wr = TILE_ROWS.min(r1 - r);
        let mut i = 0;
        while i < m {
            let ar = TILE_ACTS.min(m - i);
            let mut tile = [[0f32; TILE_ACTS]; TILE_ROWS];
            tile_dot(isa, w, x, q, r, wr, i, ar, &mut tile);
            for (dr, row) in tile.iter().enumerate().take(wr) {
                for (da, v) in row.iter().enumerate().take(ar) {
                    out[(i + da) * w.rows + r + dr] = *v;
                }
            }
            i += ar;
        }
        r += wr;
    }
}

/// Dots of weight rows `r..r+wr` with activation rows `i..i+ar` into `tile[row][act]`.
#[allow(clippy::too_many_arguments)]
fn tile_dot(isa: Isa, w: &Matrix, x: &[f32], q: &QuantizedActs, r: usize, wr: usize, i: usize, ar: usize, tile: &mut [[f32; TILE_ACTS]; TILE_ROWS]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable && wr == TILE_ROWS && super::x86::tile_dot(isa, w, q, r, i, ar, tile) {
        return;
    }
    let _ = isa;
    for dr in 0..wr {
        for da in 0..ar {
            tile[dr][da] = portable_dot(w, x, q, r + dr, i + da);
        }
    }
}

/// The reference dot product of weight row `r` with activation row `a`.
///
/// For the 8-bit-activation formats it reproduces, operation for operation,
/// the SIMD kernels' order (and ggml's, whose AVX2 dot products they follow):
/// eight lanes of four-element integer sums, one fused multiply-add per block
/// and lane, a fixed horizontal sum, the block minimums fused in block order.
/// Every instruction set therefore gives bitwise the same results.
pub fn portable_dot(w: &Matrix, x: &[f32], q: &QuantizedActs, r: usize, a: usize) -> f32 {
    let k = w.cols;
    let nb = k / 32;
    let xq = &q.qs[a * k..(a + 1) * k];
    let (xs, xsum) = (&q.scale[a * nb..(a + 1) * nb], &q.sum[a * nb..(a + 1) * nb]);
    let mut acc = 0f32;
    match &w.w {
        Packed::Float(wf) => {
            let (wrow, xrow) = (&wf[r * k..(r + 1) * k], &x[a * k..(a + 1) * k]);
            for (wc, xc) in wrow.chunks_exact(32).zip(xrow.chunks_exact(32)) {
                acc += wc.iter().zip(xc).map(|(a, b)| a * b).sum::<f32>();
            }
        }
        Packed::Nibble32 { qs, scale, min } => {
            let mut lanes = [0f32; 8];
            let mut mins = 0f32;
            for b in 0..nb {
                let wb = &qs[(r * nb + b) * 16..(r * nb + b + 1) * 16];
                let xb = &xq[b * 32..(b + 1) * 32];
                let nibble = |e: usize| if e < 16 { wb[e] & 0xF } else { wb[e - 16] >> 4 } as i32;
                let at = tile_index(r, b, nb);
                let block_scale = scale[at].to_f32() * xs[b];
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let part: i32 = (4 * j..4 * j + 4).map(|e| nibble(e) * xb[e] as i32).sum();
                    *lane = (part as f32).mul_add(block_scale, *lane);
                }
                mins = min[at].to_f32().mul_add(xsum[b], mins);
            }
            acc = hsum8(&lanes) + mins;
        }
        Packed::Int8x32 { qs, scale } => {
            let mut lanes = [0f32; 8];
            for b in 0..nb {
                let wb = &qs[(r * nb + b) * 32..(r * nb + b + 1) * 32];
                let xb = &xq[b * 32..(b + 1) * 32];
                let block_scale = scale[tile_index(r, b, nb)].to_f32() * xs[b];
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let part: i32 = (4 * j..4 * j + 4).map(|e| wb[e] as i32 * xb[e] as i32).sum();
                    *lane = (part as f32).mul_add(block_scale, *lane);
                }
            }
            acc = hsum8(&lanes);
        }
        Packed::Int8x16 { qs, scale } => {
            for h in 0..2 * nb {
                let wb = &qs[(r * 2 * nb + h) * 16..(r * 2 * nb + h + 1) * 16];
                let sumi: i32 = wb.iter().zip(&xq[h * 16..(h + 1) * 16]).map(|(&a, &b)| a as i32 * b as i32).sum();
                acc += sumi as f32 * (scale[r * 2 * nb + h] * xs[h / 2]);
            }
        }
    }
    acc
}

/// Rounds half to even like `f32::round_ties_even`, without the libm call
/// that baseline x86-64 compiles it to: adding 1.5 * 2^23 leaves no fraction
/// bits, so the FPU's default rounding does the work (|x| <= 2^22 here).
#[inline]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Horizontal sum of eight lanes in the order of ggml's `hsum_float_8`.
fn hsum8(l: &[f32; 8]) -> f32 {
    let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}
