//! x86-64 tile kernels for the matmul: AVX2 (`vpmaddubsw`) and AVX-512 VNNI
//! (`vpdpbusd`). One macro writes both so that they differ only in the
//! instruction that multiplies unsigned weight bytes with signed activation
//! bytes; each output is accumulated block by block in the same order
//! whatever the batch size.

use std::arch::x86_64::*;

use super::matmul::{Matrix, QuantizedActs, TILE_ACTS, TILE_ROWS};
use super::quant::Packed;
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
        unsafe fn $nibble<const AR: usize>(qs: &[u8], scale: &[f32], min: &[f32], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
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
                    let (sw, mw) = (scale[blk], min[blk]);
                    for a in 0..AR {
                        let d = _mm256_cvtepi32_ps($dot(wv, xv[a]));
                        acc[dr][a] = _mm256_fmadd_ps(d, _mm256_set1_ps(sw * xs[a]), acc[dr][a]);
                        min_acc[dr][a] += mw * xsum[a];
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
        unsafe fn $int8<const AR: usize>(qs: &[i8], scale: &[f32], q: &QuantizedActs, r: usize, i: usize, tile: &mut Tile) {
            let nb = q.cols / 32;
            let mut acc = [[_mm256_setzero_ps(); AR]; TILE_ROWS];
            for b in 0..nb {
                let (xv, xs, _) = load_acts::<AR>(q, i, b);
                for dr in 0..TILE_ROWS {
                    let blk = (r + dr) * nb + b;
                    let wv = _mm256_loadu_si256(qs.as_ptr().add(blk * 32) as *const __m256i);
                    let wabs = _mm256_sign_epi8(wv, wv);
                    let sw = scale[blk];
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

tile_kernels!("avx2,fma", dot_u8i8_avx2, nibble_avx2, int8_avx2);
tile_kernels!("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni", dot_u8i8_vnni, nibble_vnni, int8_vnni);

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
        match (&w.w, isa) {
            (Packed::Nibble32 { qs, scale, min }, Isa::Avx512Vnni) => by_act_rows!(ar, nibble_vnni(qs, scale, min, q, r, i, tile)),
            (Packed::Nibble32 { qs, scale, min }, _) => by_act_rows!(ar, nibble_avx2(qs, scale, min, q, r, i, tile)),
            (Packed::Int8x32 { qs, scale }, Isa::Avx512Vnni) => by_act_rows!(ar, int8_vnni(qs, scale, q, r, i, tile)),
            (Packed::Int8x32 { qs, scale }, _) => by_act_rows!(ar, int8_avx2(qs, scale, q, r, i, tile)),
            _ => return false,
        }
    }
    true
}
