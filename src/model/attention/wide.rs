//! Head rows in 16-lane vectors, for head dimensions of 64, 128 and 256:
//! one 512-bit register per vector with AVX-512, two 256-bit ones with AVX2.
//! ggml's dot product works on 16 lanes whatever the hardware it was
//! measured on, so both widths do the same lane arithmetic as `Scalar` and
//! give its bits; the fixed width unrolls every row loop.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use half::f16;

use super::{rescale_factor, HeadMath, Softmax, MAX_PAIRS, RUN, WEIGH_HEADS};
use crate::kernels::expf::{ggml_expf, ggml_expf_avx2, libm16};
use crate::kernels::max_lane8;

/// Sixteen f32 lanes. Only used inside functions compiled with the
/// features the implementation needs (AVX2/FMA/F16C, plus AVX-512F for
/// `W512`).
pub(super) trait Wide: Copy {
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn zero() -> Self;
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn splat(x: f32) -> Self;
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn load_f16(src: *const f16) -> Self;
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn load(src: *const f32) -> Self;
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn store(self, dst: *mut f32);
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn add(self, b: Self) -> Self;
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn mul(self, b: Self) -> Self;
    /// `self * b + c`, fused.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn fmadd(self, b: Self, c: Self) -> Self;
    /// Rounded to f16 precision.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn round(self) -> Self;

    /// Lanes 8..16 added onto 0..8: the first step of the final sum.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn fold8(self) -> __m256;
    /// The largest lane.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn max_lane(self) -> f32;
    /// `x[i] = expf(x[i])`, the C library's bits.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn exp(x: &mut [f32; RUN]);
    /// The online softmax over a run (see `HeadMath::softmax_run`).
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    unsafe fn softmax_run(score: &[f32; RUN], seen: usize, state: &mut Softmax, factor: &mut [f32; RUN]) -> u32;
}

/// The rest of the final sum of eight folded dot products at once, one per
/// lane of the result: lanes 4..8 onto 0..4, then (0 + 2) + (1 + 3), GCC's
/// `_mm512_reduce_add_ps` order after ggml's tree. Each step adds the same
/// two lanes of one product as the one-product form would, whichever side
/// each lands on; the shuffles are shared by all eight.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn reduce_halves8(t8: &[__m256; 8]) -> __m256 {
    // [a lanes 0-3 + 4-7 | b lanes 0-3 + 4-7] for the pairs (0,1) (2,3) ...
    let t4: [__m256; 4] = std::array::from_fn(|j| {
        let (a, b) = (t8[2 * j], t8[2 * j + 1]);
        _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31))
    });
    // [a0+a2, a1+a3, c0+c2, c1+c3 | the same for b, d], and for e..h.
    let t2: [__m256; 2] = std::array::from_fn(|j| {
        let (x, y) = (t4[2 * j], t4[2 * j + 1]);
        _mm256_add_ps(_mm256_shuffle_ps(x, y, 0b01_00_01_00), _mm256_shuffle_ps(x, y, 0b11_10_11_10))
    });
    // [a, c, e, g | b, d, f, h], then in order.
    let (x, y) = (t2[0], t2[1]);
    let t1 = _mm256_add_ps(_mm256_shuffle_ps(x, y, 0b10_00_10_00), _mm256_shuffle_ps(x, y, 0b11_01_11_01));
    _mm256_permutevar8x32_ps(t1, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[derive(Clone, Copy)]
pub(super) struct W512(__m512);

impl Wide for W512 {
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn zero() -> Self {
        W512(_mm512_setzero_ps())
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        W512(_mm512_set1_ps(x))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn load_f16(src: *const f16) -> Self {
        W512(_mm512_cvtph_ps(_mm256_loadu_si256(src as *const __m256i)))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn load(src: *const f32) -> Self {
        W512(_mm512_loadu_ps(src))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn store(self, dst: *mut f32) {
        _mm512_storeu_ps(dst, self.0)
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        W512(_mm512_add_ps(self.0, b.0))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        W512(_mm512_mul_ps(self.0, b.0))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn fmadd(self, b: Self, c: Self) -> Self {
        W512(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn round(self) -> Self {
        W512(_mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0)))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn fold8(self) -> __m256 {
        let x = self.0;
        _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)), _mm512_castps512_ps256(x))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn max_lane(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn exp(x: &mut [f32; RUN]) {
        libm16::exp(x)
    }
    /// The same steps sixteen positions at a time: the running maximum
    /// as a prefix scan, the choices as masks, one 16-wide `expf`.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn softmax_run(score: &[f32; RUN], seen: usize, state: &mut Softmax, factor: &mut [f32; RUN]) -> u32 {
        let valid: __mmask16 = ((1u32 << seen) - 1) as __mmask16;
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        let x = _mm512_mask_loadu_ps(neg_inf, valid, score.as_ptr());
        // prefix[p] = max(score[0..=p]), lanes shifted in with -inf.
        let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let shifted = |v: __m512, by: i32| -> __m512 {
            let from = _mm512_sub_epi32(lane, _mm512_set1_epi32(by));
            let keep = _mm512_cmpge_epi32_mask(from, _mm512_setzero_si512());
            _mm512_mask_permutexvar_ps(neg_inf, keep, from, v)
        };
        let mut prefix = x;
        for by in [1, 2, 4, 8] {
            prefix = _mm512_max_ps(prefix, shifted(prefix, by));
        }
        // The maximum before each position: x > max ? x : max, as the
        // scalar steps choose it.
        let before = _mm512_max_ps(shifted(prefix, 1), _mm512_set1_ps(state.max));
        let new_max = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(valid, x, before);
        let arg = _mm512_mask_blend_ps(new_max, _mm512_sub_ps(x, before), _mm512_sub_ps(before, x));
        _mm512_storeu_ps(factor.as_mut_ptr(), _mm512_maskz_mov_ps(valid, arg));
        Self::exp(factor);
        let all = _mm512_max_ps(prefix, _mm512_set1_ps(state.max));
        let mut maxes = [0f32; RUN];
        _mm512_storeu_ps(maxes.as_mut_ptr(), all);
        state.max = maxes[seen - 1];
        let e = _mm512_loadu_ps(factor.as_ptr());
        let one = _mm512_set1_ps(1.0);
        let (mut rescale, mut weight) = ([0f32; RUN], [0f32; RUN]);
        _mm512_storeu_ps(rescale.as_mut_ptr(), _mm512_mask_blend_ps(new_max, one, e));
        _mm512_storeu_ps(weight.as_mut_ptr(), _mm512_mask_blend_ps(new_max, e, one));
        for p in 0..seen {
            state.sum = state.sum.mul_add(rescale[p], weight[p]);
        }
        new_max as u32
    }
}

/// Lanes 0..8 in `.0`, 8..16 in `.1`.
#[derive(Clone, Copy)]
pub(super) struct W256x2(__m256, __m256);

impl W256x2 {
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn each(self, b: Self, f: impl Fn(__m256, __m256) -> __m256) -> Self {
        W256x2(f(self.0, b.0), f(self.1, b.1))
    }
}

impl Wide for W256x2 {
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn zero() -> Self {
        W256x2(_mm256_setzero_ps(), _mm256_setzero_ps())
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        W256x2(_mm256_set1_ps(x), _mm256_set1_ps(x))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn load_f16(src: *const f16) -> Self {
        let h = |at: usize| _mm256_cvtph_ps(_mm_loadu_si128(src.add(at) as *const __m128i));
        W256x2(h(0), h(8))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn load(src: *const f32) -> Self {
        W256x2(_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn store(self, dst: *mut f32) {
        _mm256_storeu_ps(dst, self.0);
        _mm256_storeu_ps(dst.add(8), self.1);
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.each(b, |x, y| _mm256_add_ps(x, y))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.each(b, |x, y| _mm256_mul_ps(x, y))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn fmadd(self, b: Self, c: Self) -> Self {
        W256x2(_mm256_fmadd_ps(self.0, b.0, c.0), _mm256_fmadd_ps(self.1, b.1, c.1))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn round(self) -> Self {
        let r = |v: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
        W256x2(r(self.0), r(self.1))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn fold8(self) -> __m256 {
        _mm256_add_ps(self.1, self.0)
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn max_lane(self) -> f32 {
        max_lane8(_mm256_max_ps(self.0, self.1))
    }
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn exp(x: &mut [f32; RUN]) {
        libm16::exp_avx2(x)
    }
    /// `W512::softmax_run`'s steps in two halves of eight lanes: each
    /// half's prefix maximum as a scan, the second half's raised by the
    /// first's last, the choices as masks, one 16-wide `expf`.
    ///
    /// # Safety
    /// The CPU has the width's instructions (AVX2, FMA and F16C; AVX-512F too
    /// for `W512`); a pointer is valid for 16 lanes.
    #[inline(always)]
    unsafe fn softmax_run(score: &[f32; RUN], seen: usize, state: &mut Softmax, factor: &mut [f32; RUN]) -> u32 {
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let lane = lane_indices();
        let mut valid = [_mm256_setzero_ps(); 2];
        let mut x = [neg_inf; 2];
        let mut prefix = [neg_inf; 2];
        for h in 0..2 {
            valid[h] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(seen as i32 - 8 * h as i32), lane));
            x[h] = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(score.as_ptr().add(8 * h)), valid[h]);
            prefix[h] = x[h];
            for by in [1, 2, 4] {
                prefix[h] = _mm256_max_ps(prefix[h], lanes_up(prefix[h], by));
            }
        }
        let first_last = _mm256_permutevar8x32_ps(prefix[0], _mm256_set1_epi32(7));
        prefix[1] = _mm256_max_ps(prefix[1], first_last);
        // The maximum before each position, as the scalar steps keep it.
        let old = _mm256_set1_ps(state.max);
        let before = [_mm256_max_ps(lanes_up(prefix[0], 1), old), _mm256_max_ps(_mm256_max_ps(lanes_up(prefix[1], 1), first_last), old)];
        let mut maxes = [0f32; RUN];
        let mut new_max = [_mm256_setzero_ps(); 2];
        for h in 0..2 {
            new_max[h] = _mm256_and_ps(valid[h], _mm256_cmp_ps::<_CMP_GT_OQ>(x[h], before[h]));
            let arg = _mm256_blendv_ps(_mm256_sub_ps(x[h], before[h]), _mm256_sub_ps(before[h], x[h]), new_max[h]);
            _mm256_storeu_ps(factor.as_mut_ptr().add(8 * h), _mm256_and_ps(arg, valid[h]));
            _mm256_storeu_ps(maxes.as_mut_ptr().add(8 * h), _mm256_max_ps(prefix[h], old));
        }
        Self::exp(factor);
        state.max = maxes[seen - 1];
        let one = _mm256_set1_ps(1.0);
        let (mut rescale, mut weight) = ([0f32; RUN], [0f32; RUN]);
        for (h, &new_max) in new_max.iter().enumerate() {
            let e = _mm256_loadu_ps(factor.as_ptr().add(8 * h));
            _mm256_storeu_ps(rescale.as_mut_ptr().add(8 * h), _mm256_blendv_ps(one, e, new_max));
            _mm256_storeu_ps(weight.as_mut_ptr().add(8 * h), _mm256_blendv_ps(e, one, new_max));
        }
        for p in 0..seen {
            state.sum = state.sum.mul_add(rescale[p], weight[p]);
        }
        (_mm256_movemask_ps(new_max[0]) | _mm256_movemask_ps(new_max[1]) << 8) as u32
    }
}

/// Each lane's own index, 0..8.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn lane_indices() -> __m256i {
    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
}

/// The lanes of `v` moved up by `by`, -inf shifted in.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn lanes_up(v: __m256, by: i32) -> __m256 {
    let from = _mm256_sub_epi32(lane_indices(), _mm256_set1_epi32(by));
    let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(from, _mm256_set1_epi32(-1)));
    _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), _mm256_permutevar8x32_ps(v, from), keep)
}

/// ggml's four 16-lane accumulators over a row, combined as (0 + 2) + (1 + 3).
///
/// # Safety
/// The CPU has `W`'s instructions.
#[inline(always)]
unsafe fn dot_lanes<W: Wide, const V: usize>(k: &[W; V], q: &[W; V]) -> W {
    let mut lanes = [W::zero(); 4];
    for i in (0..V).step_by(4) {
        for (j, l) in lanes.iter_mut().enumerate() {
            *l = k[i + j].fmadd(q[i + j], *l);
        }
    }
    lanes[0].add(lanes[2]).add(lanes[1].add(lanes[3]))
}

/// `HeadMath::scores_fast` for `N` pairs: rows of `2 V` eight-lane chunks.
///
/// # Safety
/// The CPU has `W`'s instructions.
#[inline(always)]
unsafe fn scores_tile<const V: usize, const N: usize>(
    k: &[impl Copy; RUN],
    run: usize,
    q: &[impl Copy],
    scale: __m256,
    score: &mut [[f32; RUN]],
) {
    let row = |r: *const u8, c: usize| (r as *const f32).add(8 * c);
    for group in (0..run).step_by(8) {
        let mut lanes = [[_mm256_setzero_ps(); 8]; N];
        for half in [0, 4] {
            let mut acc = [[_mm256_setzero_ps(); 4]; N];
            for c in 0..2 * V {
                let mut kc = [_mm256_setzero_ps(); 4];
                for (p, kc) in kc.iter_mut().enumerate() {
                    *kc = _mm256_loadu_ps(row(&k[group + half + p] as *const _ as *const u8, c));
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let qc = _mm256_loadu_ps(row(&q[i] as *const _ as *const u8, c));
                    for (a, &kc) in acc.iter_mut().zip(&kc) {
                        *a = _mm256_fmadd_ps(qc, kc, *a);
                    }
                }
            }
            for (lanes, acc) in lanes.iter_mut().zip(&acc) {
                lanes[half..half + 4].copy_from_slice(acc);
            }
        }
        for (score, lanes) in score.iter_mut().zip(&lanes) {
            _mm256_storeu_ps(score.as_mut_ptr().add(group), _mm256_mul_ps(sum_lanes8x8(lanes), scale));
        }
    }
}

/// Eight vectors' lanes summed at once, one per lane of the result, in
/// `sum_lanes8`'s tree: pairs (`vhaddps`), pairs of pairs, then halves.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn sum_lanes8x8(a: &[__m256; 8]) -> __m256 {
    let t: [__m256; 4] = [_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]), _mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7])];
    let (u0, u1) = (_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3]));
    _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31))
}

/// `HeadMath::weigh_values` for `N` heads, one vector of lanes at a time.
///
/// # Safety
/// The CPU has `W`'s instructions.
#[inline(always)]
unsafe fn weigh_tile<W: Wide, const V: usize, const N: usize>(
    acc: &mut [[W; V]],
    v: &[[W; V]; RUN],
    weight: &[[f32; RUN]],
    rescale: &[f32],
    seen: usize,
) {
    for j in 0..V {
        // Loops, not `array::from_fn`: its closure is compiled without the
        // caller's target features, and the intrinsics were calls.
        let mut sums = [W::zero(); N];
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = acc[i][j].mul(W::splat(rescale[i]));
        }
        for (p, row) in v[..seen].iter().enumerate() {
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = W::splat(weight[i][p]).fmadd(row[j], *sum);
            }
        }
        for (i, sum) in sums.into_iter().enumerate() {
            acc[i][j] = sum;
        }
    }
}

/// `HeadMath::weigh_values_ggml` for `N` heads, `J` vectors of lanes at a
/// time (`J` divides `V`); `RESCALES`: whether any head's maximum moves in
/// the run.
///
/// # Safety
/// The CPU has `W`'s instructions.
#[inline(always)]
unsafe fn weigh_tile_ggml<W: Wide, const V: usize, const N: usize, const J: usize, const RESCALES: bool>(
    acc: &mut [[W; V]],
    v: &[[W; V]; RUN],
    factor: &[[f32; RUN]],
    new_max: &[u32],
    seen: usize,
) {
    for j in (0..V).step_by(J) {
        // Loops, not `array::from_fn` (see `weigh_tile`).
        let mut sums = [[W::zero(); J]; N];
        for (i, sums) in sums.iter_mut().enumerate() {
            sums.copy_from_slice(&acc[i][j..j + J]);
        }
        for (p, row) in v[..seen].iter().enumerate() {
            for (i, sums) in sums.iter_mut().enumerate() {
                let mut w = W::splat(factor[i][p]);
                if RESCALES && new_max[i] & (1 << p) != 0 {
                    for sum in sums.iter_mut() {
                        *sum = sum.mul(w).round();
                    }
                    w = W::splat(1.0);
                }
                for (k, sum) in sums.iter_mut().enumerate() {
                    *sum = row[j + k].fmadd(w, *sum).round();
                }
            }
        }
        for (i, sums) in sums.iter().enumerate() {
            acc[i][j..j + J].copy_from_slice(sums);
        }
    }
}

/// Rows of `V` sixteen-lane vectors (head dimension 16 V, V a multiple of 4).
pub(super) struct Simd<W, const V: usize>(std::marker::PhantomData<W>);

impl<W: Wide, const V: usize> HeadMath for Simd<W, V> {
    type Row = [W; V];
    fn zero() -> Self::Row {
        // SAFETY: every Wide is plain vector registers, valid as all-zero bits.
        unsafe { std::mem::zeroed() }
    }
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn load(src: &[f16], _hd: usize, row: &mut Self::Row) {
        for (j, r) in row.iter_mut().enumerate() {
            *r = W::load_f16(src.as_ptr().add(16 * j));
        }
    }
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn load_query(src: &[f32], _hd: usize, row: &mut Self::Row) {
        for (j, r) in row.iter_mut().enumerate() {
            *r = W::load(src.as_ptr().add(16 * j)).round();
        }
    }
    /// Eight positions at a time, their final sums shared (`reduce_halves8`).
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn scores(k_rows: &[&[f16]], kv_off: usize, hd: usize, q: &[Self::Row], seen: &[usize], scale: f32, score: &mut [[f32; RUN]]) {
        let mut row = Self::zero();
        // Each group of eight positions writes all eight lanes of every
        // pair before summing them (zeros where the pair does not see the
        // position: scores never read), so nothing is cleared beforehand.
        let mut folded = MaybeUninit::<[[__m256; 8]; MAX_PAIRS]>::uninit();
        let folded = folded.as_mut_ptr() as *mut [__m256; 8];
        for first in (0..k_rows.len()).step_by(8) {
            for j in 0..8 {
                let p = first + j;
                if let Some(k) = k_rows.get(p) {
                    Self::load(&k[kv_off..], hd, &mut row);
                }
                for (i, q) in q.iter().enumerate() {
                    (*folded.add(i))[j] = if p < seen[i] { dot_lanes::<W, V>(&row, q).fold8() } else { _mm256_setzero_ps() };
                }
            }
            for i in 0..q.len() {
                if first < seen[i] {
                    // SAFETY: row i's eight lanes were all written just above.
                    let s = _mm256_mul_ps(reduce_halves8(&*folded.add(i)), _mm256_set1_ps(scale));
                    _mm256_storeu_ps(score[i].as_mut_ptr().add(first), s);
                }
            }
        }
    }
    /// Tiles of up to six heads (`WEIGH_HEADS`) by `J` vectors of lanes,
    /// as `weigh_values`'s, here with fewer heads taking more vectors: each
    /// position's step (fused multiply-add, round trip through f16) waits
    /// on the one before, and a tile's chains (eight to twelve with AVX2)
    /// overlap them. A tile whose heads set no new maximum in the run (most
    /// runs) has no branch per position.
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn weigh_values_ggml(
        acc: &mut [Self::Row],
        v: &[Self::Row; RUN],
        factor: &[[f32; RUN]],
        new_max: &[u32],
        seen: usize,
        _hd: usize,
    ) {
        for first in (0..acc.len()).step_by(WEIGH_HEADS) {
            let heads = first..acc.len().min(first + WEIGH_HEADS);
            let (acc, factor, new_max) = (&mut acc[heads.clone()], &factor[heads.clone()], &new_max[heads]);
            let rescales = new_max.iter().any(|&m| m & ((1 << seen) - 1) != 0);
            macro_rules! tile {
                ($n:literal, $j:literal) => {
                    if rescales {
                        weigh_tile_ggml::<W, V, $n, $j, true>(acc, v, factor, new_max, seen)
                    } else {
                        weigh_tile_ggml::<W, V, $n, $j, false>(acc, v, factor, new_max, seen)
                    }
                };
            }
            match acc.len() {
                1 => tile!(1, 4),
                2 => tile!(2, 2),
                3 => tile!(3, 2),
                4 => tile!(4, 1),
                5 => tile!(5, 1),
                _ => tile!(6, 1),
            }
        }
    }
    /// Tiles of up to six heads (`WEIGH_HEADS`) by one vector of lanes: the
    /// tile's sums stay in registers over the run's positions, and each V
    /// vector is loaded once for the tile's heads (the per-position form
    /// loaded and stored every head's sums at every position). Six heads are twelve
    /// chains of fused multiply-adds with AVX2: a position's steps then
    /// overlap where three heads' six chains waited on one another.
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn weigh_values(acc: &mut [Self::Row], v: &[Self::Row; RUN], weight: &[[f32; RUN]], rescale: &[f32], seen: usize, _hd: usize) {
        for first in (0..acc.len()).step_by(WEIGH_HEADS) {
            let heads = first..acc.len().min(first + WEIGH_HEADS);
            let (acc, weight, rescale) = (&mut acc[heads.clone()], &weight[heads.clone()], &rescale[heads]);
            match acc.len() {
                1 => weigh_tile::<W, V, 1>(acc, v, weight, rescale, seen),
                2 => weigh_tile::<W, V, 2>(acc, v, weight, rescale, seen),
                3 => weigh_tile::<W, V, 3>(acc, v, weight, rescale, seen),
                4 => weigh_tile::<W, V, 4>(acc, v, weight, rescale, seen),
                5 => weigh_tile::<W, V, 5>(acc, v, weight, rescale, seen),
                _ => weigh_tile::<W, V, WEIGH_HEADS>(acc, v, weight, rescale, seen),
            }
        }
    }
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn exp_run(x: &mut [f32; RUN]) {
        for half in x.chunks_exact_mut(8) {
            match ggml_expf_avx2(_mm256_loadu_ps(half.as_ptr())) {
                Some(e) => _mm256_storeu_ps(half.as_mut_ptr(), e),
                None => half.iter_mut().for_each(|v| *v = ggml_expf(*v)),
            }
        }
    }
    /// `HeadMath::softmax_block` in two halves of eight lanes: the same
    /// maximum, differences and `expf`, the weights past `seen` masked to
    /// zero, and `sum_run`'s tree as vector folds.
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn softmax_block(score: &[f32; RUN], seen: usize, state: &mut Softmax, weight: &mut [f32; RUN]) -> f32 {
        // Lanes of each half below `seen` (no closure: see `weigh_tile`).
        let seen = _mm256_set1_epi32(seen as i32);
        let valid = [
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(seen, lane_indices())),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_sub_epi32(seen, _mm256_set1_epi32(8)), lane_indices())),
        ];
        let x = [_mm256_loadu_ps(score.as_ptr()), _mm256_loadu_ps(score.as_ptr().add(8))];
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let run_max = max_lane8(_mm256_max_ps(_mm256_blendv_ps(neg_inf, x[0], valid[0]), _mm256_blendv_ps(neg_inf, x[1], valid[1])));
        let max = state.max.max(run_max);
        for (h, &x) in x.iter().enumerate() {
            _mm256_storeu_ps(weight.as_mut_ptr().add(8 * h), _mm256_sub_ps(x, _mm256_set1_ps(max)));
        }
        Self::exp_run(weight);
        let mut w = [_mm256_setzero_ps(); 2];
        for h in 0..2 {
            w[h] = _mm256_and_ps(_mm256_loadu_ps(weight.as_ptr().add(8 * h)), valid[h]);
            _mm256_storeu_ps(weight.as_mut_ptr().add(8 * h), w[h]);
        }
        let halves = _mm256_add_ps(w[0], w[1]);
        let quarters = _mm_add_ps(_mm256_castps256_ps128(halves), _mm256_extractf128_ps::<1>(halves));
        let eighths = _mm_add_ps(quarters, _mm_movehl_ps(quarters, quarters));
        let sum = _mm_cvtss_f32(_mm_add_ss(eighths, _mm_shuffle_ps::<1>(eighths, eighths)));
        let rescale = rescale_factor(state.max, max);
        state.max = max;
        state.sum = state.sum.mul_add(rescale, sum);
        rescale
    }
    /// Tiles of two pairs by four positions (eight accumulators), each
    /// group of eight positions' lanes summed together (`sum_lanes8x8`).
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn scores_fast(k: &[Self::Row; RUN], run: usize, q: &[Self::Row], _hd: usize, scale: f32, score: &mut [[f32; RUN]]) {
        let scale = _mm256_set1_ps(scale);
        for first in (0..q.len()).step_by(2) {
            let pairs = first..q.len().min(first + 2);
            let (q, score) = (&q[pairs.clone()], &mut score[pairs]);
            match q.len() {
                1 => scores_tile::<V, 1>(k, run, q, scale, score),
                _ => scores_tile::<V, 2>(k, run, q, scale, score),
            }
        }
    }
    /// A whole run that sets no new maximum (the common case once a long
    /// prompt is under way) needs no prefix scan: each position weighs
    /// e^(s - max), the bits the general steps give it.
    ///
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn softmax_run(score: &[f32; RUN], seen: usize, state: &mut Softmax, factor: &mut [f32; RUN]) -> u32 {
        if seen == RUN {
            let x = W::load(score.as_ptr());
            // Not greater: no new maximum (NaN included, as the general steps see it).
            if x.max_lane().partial_cmp(&state.max) != Some(std::cmp::Ordering::Greater) {
                x.add(W::splat(-state.max)).store(factor.as_mut_ptr());
                W::exp(factor);
                for &w in factor.iter() {
                    state.sum = state.sum.mul_add(1.0, w);
                }
                return 0;
            }
        }
        W::softmax_run(score, seen, state, factor)
    }
    /// # Safety
    /// The CPU has `W`'s instructions; rows hold a head's values (at most
    /// `MAX_HEAD_DIM`).
    #[inline(always)]
    unsafe fn store(acc: &Self::Row, scale: f32, out: &mut [f32], _hd: usize) {
        let s = W::splat(scale);
        for (j, a) in acc.iter().enumerate() {
            a.mul(s).store(out.as_mut_ptr().add(16 * j));
        }
    }
}
