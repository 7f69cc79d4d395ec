//! x86-64 tile kernels for the matmul. One macro writes the 256-bit ones,
//! AVX2 (`vpmaddubsw`) and AVX-512 VNNI (`vpdpbusd`), so that they differ
//! only in the instruction that multiplies unsigned weight bytes with signed
//! activation bytes; the 512-bit VNNI kernels take two blocks per
//! instruction (even block counts). All of them accumulate each output in
//! the portable reference's order, whatever the batch size: same bits.

use std::arch::x86_64::*;

use half::f16;

use super::matmul::{Matrix, QuantizedActs, TILE_ACTS, TILE_ROWS};
use super::quant::{tile_index, Packed};
use super::Isa;

type Tile = [[f32; TILE_ACTS]; TILE_ROWS];

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_u8i8_avx2(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_u8i8_vnni(w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
}

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_to_f32(x: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// Loads activation blocks `b` of rows `i..i+AR`: bytes, scale, scaled sum.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_acts<const AR: usize>(q: &QuantizedActs, i: usize, b: usize) -> ([__m256i; AR], [f32; AR], [f32; AR]) {
    let (k, nb) = (q.cols, q.cols / 32);
    let mut xv = [_mm256_setzero_si256(); AR];
    let (mut xs, mut xsum) = ([0f32; AR], [0f32; AR]);
    for a in 0..AR {
        xv[a] = _mm256_loadu_si256(q.qs.as_ptr().add((i + a) * k + b * 32) as *const __m256i);
        xs[a] = q.scale[(i + a) * nb + b];
        xsum[a] = q.sum[(i + a) * nb + b];
    }
    (xv, xs, xsum)
}

macro_rules! tile_kernels {
    ($features:literal, $dot:ident, $nibble:ident, $int8:ident) => {
        /// Nibble32 weights (w = scale * q + min) against quantized activations.
        #[target_feature(enable = $features)]
        unsafe fn $nibble<const AR: usize>(qs: &[u8], scale: &[f16], min: &[f16], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
            let nb = q.cols / 32;
            let low = _mm_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); AR]; TILE_ROWS];
            let mut min_acc = [[0f32; AR]; TILE_ROWS];
            for b in 0..nb {
                let (xv, xs, xsum) = load_acts::<AR>(q, i, b);
                for dr in 0..TILE_ROWS {
                    let blk = (r + dr) * nb + b;
                    let packed = _mm_loadu_si128(qs.as_ptr().add(blk * 16) as *const __m128i);
                    let wv = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low), _mm_and_si128(packed, low));
                    let at = tile_index(r + dr, b, nb);
                    let (sw, mw) = (f16_to_f32(scale[at]), f16_to_f32(min[at]));
                    for a in 0..AR {
                        let d = _mm256_cvtepi32_ps($dot(wv, xv[a]));
                        acc[dr][a] = _mm256_fmadd_ps(d, _mm256_set1_ps(sw * xs[a]), acc[dr][a]);
                        min_acc[dr][a] = mw.mul_add(xsum[a], min_acc[dr][a]);
                    }
                }
            }
            for dr in 0..TILE_ROWS {
                for a in 0..AR {
                    tile[dr][a] = hsum(acc[dr][a]) + min_acc[dr][a];
                }
            }
        }

        /// Int8x32 weights (w = scale * q): signs moved onto the activations
        /// so that the unsigned-by-signed multiply applies.
        #[target_feature(enable = $features)]
        unsafe fn $int8<const AR: usize>(qs: &[i8], scale: &[f16], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
            let nb = q.cols / 32;
            let mut acc = [[_mm256_setzero_ps(); AR]; TILE_ROWS];
            for b in 0..nb {
                let (xv, xs, _) = load_acts::<AR>(q, i, b);
                for dr in 0..TILE_ROWS {
                    let blk = (r + dr) * nb + b;
                    let wv = _mm256_loadu_si256(qs.as_ptr().add(blk * 32) as *const __m256i);
                    let wabs = _mm256_sign_epi8(wv, wv);
                    let sw = f16_to_f32(scale[tile_index(r + dr, b, nb)]);
                    for a in 0..AR {
                        let d = _mm256_cvtepi32_ps($dot(wabs, _mm256_sign_epi8(xv[a], wv)));
                        acc[dr][a] = _mm256_fmadd_ps(d, _mm256_set1_ps(sw * xs[a]), acc[dr][a]);
                    }
                }
            }
            for dr in 0..TILE_ROWS {
                for a in 0..AR {
                    tile[dr][a] = hsum(acc[dr][a]);
                }
            }
        }
    };
}

tile_kernels!("avx2,fma,f16c", dot_u8i8_avx2, nibble_avx2, int8_avx2);
tile_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", dot_u8i8_vnni, nibble_vnni, int8_vnni);


/// How far ahead (in weight rows) the 512-bit kernels prefetch.
const PREFETCH_ROWS: usize = 4;

/// Lane `i` of `v` in every lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lane(v: __m256, i: i32) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i))
}

/// The tile's four rows' scales for blocks b and b + 1, as f32:
/// [b: rows 0-3, b+1: rows 0-3] (tile_index order makes them adjacent).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn tile_scales(s: &[f16], r: usize, b: usize, nb: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().add(tile_index(r, b, nb)) as *const __m128i))
}

/// Activation row `x`'s values at blocks b and b + 1 as [b x4, b+1 x4].
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn act_pair(v: &[f32], x: usize) -> __m256 {
    _mm256_set_m128(_mm_set1_ps(v[x + 1]), _mm_set1_ps(v[x]))
}

/// Nibble32 with 512-bit registers: two blocks' integer dots per
/// instruction, then the same per-block 8-lane accumulation as the 256-bit
/// kernels (and ggml), so results are bitwise equal; the four rows' block
/// minimums run as the lanes of one vector, each lane in block order.
/// Needs an even block count.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibble_512<const AR: usize>(qs: &[u8], scale: &[f16], min: &[f16], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
    let (k, nb) = (q.cols, q.cols / 32);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); AR]; TILE_ROWS];
    let mut min_acc = [_mm_setzero_ps(); AR];
    for b in (0..nb).step_by(2) {
        // Weights stream from memory once per token: fetch the next
        // tile's bytes while this one computes.
        let ahead = (r + PREFETCH_ROWS) * nb + b;
        for dr in 0..TILE_ROWS {
            _mm_prefetch::<_MM_HINT_T0>(qs.as_ptr().wrapping_add((ahead + dr * nb) * 16) as *const i8);
        }
        _mm_prefetch::<_MM_HINT_T0>(scale.as_ptr().wrapping_add(tile_index(r + PREFETCH_ROWS, b, nb)) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(min.as_ptr().wrapping_add(tile_index(r + PREFETCH_ROWS, b, nb)) as *const i8);
        let (sw, mw) = (tile_scales(scale, r, b, nb), tile_scales(min, r, b, nb));
        let mut xv = [_mm512_setzero_si512(); AR];
        let mut ws = [_mm256_setzero_ps(); AR];
        for a in 0..AR {
            let x = (i + a) * nb + b;
            xv[a] = _mm512_loadu_si512(q.qs.as_ptr().add((i + a) * k + b * 32) as *const __m512i);
            ws[a] = _mm256_mul_ps(sw, act_pair(&q.scale, x));
            let sums = act_pair(&q.sum, x);
            min_acc[a] = _mm_fmadd_ps(_mm256_castps256_ps128(mw), _mm256_castps256_ps128(sums), min_acc[a]);
            min_acc[a] = _mm_fmadd_ps(_mm256_extractf128_ps(mw, 1), _mm256_extractf128_ps(sums, 1), min_acc[a]);
        }
        for dr in 0..TILE_ROWS {
            let blk = (r + dr) * nb + b;
            let packed = _mm256_loadu_si256(qs.as_ptr().add(blk * 16) as *const __m256i);
            let lo = _mm256_and_si256(packed, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
            // [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1]: block order.
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let w = _mm512_shuffle_i64x2(w, w, 0b11_01_10_00);
            for a in 0..AR {
                let d = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv[a]));
                let (d0, d1) = (_mm512_castps512_ps256(d), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
                acc[dr][a] = _mm256_fmadd_ps(d0, lane(ws[a], dr as i32), acc[dr][a]);
                acc[dr][a] = _mm256_fmadd_ps(d1, lane(ws[a], dr as i32 + 4), acc[dr][a]);
            }
        }
    }
    for a in 0..AR {
        let mut mins = [0f32; 4];
        _mm_storeu_ps(mins.as_mut_ptr(), min_acc[a]);
        for dr in 0..TILE_ROWS {
            tile[dr][a] = hsum(acc[dr][a]) + mins[dr];
        }
    }
}

/// Int8x32 with 512-bit registers, accumulated like the 256-bit kernel;
/// the weights' signs move onto the activations for the unsigned-by-signed
/// multiply.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn int8_512<const AR: usize>(qs: &[i8], scale: &[f16], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
    let (k, nb) = (q.cols, q.cols / 32);
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm256_setzero_ps(); AR]; TILE_ROWS];
    for b in (0..nb).step_by(2) {
        let ahead = (r + PREFETCH_ROWS) * nb + b;
        for dr in 0..TILE_ROWS {
            _mm_prefetch::<_MM_HINT_T0>(qs.as_ptr().wrapping_add((ahead + dr * nb) * 32) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(qs.as_ptr().wrapping_add((ahead + dr * nb) * 32 + 64) as *const i8);
        }
        _mm_prefetch::<_MM_HINT_T0>(scale.as_ptr().wrapping_add(tile_index(r + PREFETCH_ROWS, b, nb)) as *const i8);
        let sw = tile_scales(scale, r, b, nb);
        let mut xv = [zero; AR];
        let mut ws = [_mm256_setzero_ps(); AR];
        for a in 0..AR {
            xv[a] = _mm512_loadu_si512(q.qs.as_ptr().add((i + a) * k + b * 32) as *const __m512i);
            ws[a] = _mm256_mul_ps(sw, act_pair(&q.scale, (i + a) * nb + b));
        }
        for dr in 0..TILE_ROWS {
            let blk = (r + dr) * nb + b;
            let w = _mm512_loadu_si512(qs.as_ptr().add(blk * 32) as *const __m512i);
            let negative = _mm512_movepi8_mask(w);
            let wabs = _mm512_abs_epi8(w);
            for a in 0..AR {
                let x = _mm512_mask_sub_epi8(xv[a], negative, zero, xv[a]);
                let d = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wabs, x));
                let (d0, d1) = (_mm512_castps512_ps256(d), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
                acc[dr][a] = _mm256_fmadd_ps(d0, lane(ws[a], dr as i32), acc[dr][a]);
                acc[dr][a] = _mm256_fmadd_ps(d1, lane(ws[a], dr as i32 + 4), acc[dr][a]);
            }
        }
    }
    for dr in 0..TILE_ROWS {
        for a in 0..AR {
            tile[dr][a] = hsum(acc[dr][a]);
        }
    }
}

macro_rules! by_act_rows {
    ($ar:expr, $f:ident ( $($arg:expr),* )) => {
        match $ar {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            _ => $f::<4>($($arg),*),
        }
    };
}

/// Fills a full-height tile with SIMD if this weight format has a kernel;
/// returns false (leaving the tile to the portable path) otherwise.
pub(super) fn tile_dot(isa: Isa, w: &Matrix, q: &QuantizedActs, r: usize, i: usize, ar: usize, tile: &mut Tile) -> bool {
    // SAFETY: callers pass only an Isa that Isa::available() detected on this CPU.
    unsafe {
        let pairs = (q.cols / 32) % 2 == 0;
        match (&w.w, isa) {
            (Packed::Nibble32 { qs, scale, min }, Isa::Avx512Vnni) if pairs => by_act_rows!(ar, nibble_512(qs, scale, min, q, r, i, tile)),
            (Packed::Int8x32 { qs, scale }, Isa::Avx512Vnni) if pairs => by_act_rows!(ar, int8_512(qs, scale, q, r, i, tile)),
            (Packed::Nibble32 { qs, scale, min }, Isa::Avx512Vnni) => by_act_rows!(ar, nibble_vnni(qs, scale, min, q, r, i, tile)),
            (Packed::Nibble32 { qs, scale, min }, _) => by_act_rows!(ar, nibble_avx2(qs, scale, min, q, r, i, tile)),
            (Packed::Int8x32 { qs, scale }, Isa::Avx512Vnni) => by_act_rows!(ar, int8_vnni(qs, scale, q, r, i, tile)),
            (Packed::Int8x32 { qs, scale }, _) => by_act_rows!(ar, int8_avx2(qs, scale, q, r, i, tile)),
            _ => return false,
        }
    }
    true
}
