//! ggml's vectorized `expf` and the SiLU built on it: one value at a time
//! (the reference), 8 at a time with AVX2 and 16 with AVX-512.
//!
//! llama.cpp computes SiLU with this polynomial (Arm's optimized routine,
//! max error 1.45 ulp) rather than the C library's `expf`. SiLU feeds the
//! 8-bit quantization of the down projection's input, where a last-bit
//! difference can flip a rounding; using the same formula, operation for
//! operation (each `mul_add` is one fused multiply-add), keeps greedy
//! outputs with llama.cpp's.

use super::{Isa, IsaKind};

const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
const LOG2_E: u32 = 0x3fb8_aa3b;
const LN2_LO: u32 = 0x35bf_be8e;
const LN2_HI: u32 = 0x3f31_7200;
const C5: u32 = 0x3c07_2010;
const C4: u32 = 0x3d2b_9f17;
const C3: u32 = 0x3e2a_af33;
const C2: u32 = 0x3eff_fedb;
const C1: u32 = 0x3f7f_fff6;

#[inline(always)]
fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// How many values ggml's AVX-512 vector loop takes at a time: the rest of
/// a row goes through the C library's `expf` (`ggml_silu_f32`).
const SILU_LANES: usize = 16;

/// `n` (integral) from x: x/ln 2 rounded by the shift, and the reduced
/// argument b = x - n ln 2 in two fused steps.
#[inline(always)]
fn reduce(x: f32) -> (f32, f32) {
    let z = x.mul_add(c(LOG2_E), SHIFT);
    let n = z - SHIFT;
    // fnmadd(a, b, c) = c - a*b, fused: (-a)*b + c with the negation exact.
    let b = (-n).mul_add(c(LN2_LO), (-n).mul_add(c(LN2_HI), x));
    (n, b)
}

/// e^x as one lane of ggml's AVX-512 `ggml_v_expf` computes it.
#[inline(always)]
pub fn ggml_expf(x: f32) -> f32 {
    let (n, b) = reduce(x);
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = c(C5).mul_add(b, c(C4)).mul_add(u, c(C3).mul_add(b, c(C2))).mul_add(u, c(C1).mul_add(b, 1.0));
    scalef(j, n)
}

/// `j * 2^n` for integral |n| <= 192 with one rounding, as `vscalefps`
/// does: the product is exact in f64, and its conversion rounds once,
/// overflowing to infinity past f32's range and rounding into the
/// subnormals below it.
#[inline(always)]
fn scalef(j: f32, n: f32) -> f32 {
    let n = n as i32;
    if (-126..=127).contains(&n) {
        // 2^n is a normal f32: one product, rounded once (the fast order's
        // softmax takes this path at every position).
        j * f32::from_bits(((n + 127) as u32) << 23)
    } else {
        (j as f64 * f64::from_bits(((n as i64 + 1023) as u64) << 52)) as f32
    }
}

/// `silu(gate) * up` lane by lane: ggml's vector loop's operations over
/// whole vectors of 16, the C library's `expf` for the rest.
#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let whole = out.len() / SILU_LANES * SILU_LANES;
    silu_mul_lanes(&gate[..whole], &up[..whole], &mut out[..whole]);
    silu_mul_tail(&gate[whole..], &up[whole..], &mut out[whole..]);
}

/// ggml's `ggml_v_silu` times up, one lane at a time.
#[inline(always)]
fn silu_mul_lanes(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + ggml_expf(-g)) * u;
    }
}

/// `ggml_silu_f32` times up: the C library's `expf`, for a row's last
/// values past ggml's vectors.
#[inline(always)]
fn silu_mul_tail(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// # Safety
/// The CPU has FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn silu_mul_fma(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_body(gate, up, out)
}

/// ggml's `ggml_v_expf` (AVX-512), of which `ggml_expf` is one lane.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn expf_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let k = |bits: u32| _mm512_set1_ps(c(bits));
    let shift = _mm512_set1_ps(SHIFT);
    let n = _mm512_sub_ps(_mm512_fmadd_ps(x, k(LOG2_E), shift), shift);
    let b = _mm512_fnmadd_ps(n, k(LN2_LO), _mm512_fnmadd_ps(n, k(LN2_HI), x));
    let out_of_range = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(k(C5), b, k(C4)), u, _mm512_fmadd_ps(k(C3), b, k(C2))),
        u,
        _mm512_fmadd_ps(k(C1), b, _mm512_set1_ps(1.0)),
    );
    let res = _mm512_scalef_ps(j, n);
    if out_of_range == 0 {
        return res;
    }
    let negative = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
    let alt = _mm512_mask_blend_ps(negative, _mm512_set1_ps(f32::INFINITY), _mm512_setzero_ps());
    _mm512_mask_blend_ps(out_of_range, res, alt)
}

/// SiLU times up, 16 values at a time (ggml's `ggml_v_silu` with AVX-512):
/// the same operations as `silu_mul_body`.
///
/// # Safety
/// The CPU has AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn silu_mul_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len() / 16 * 16;
    for i in (0..n).step_by(16) {
        let g = _mm512_loadu_ps(gate.as_ptr().add(i));
        let e = expf_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
        _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(silu, _mm512_loadu_ps(up.as_ptr().add(i))));
    }
    silu_mul_tail(&gate[n..], &up[n..], &mut out[n..]);
}

/// `ggml_expf` of eight values with AVX2, lane by lane the same
/// operations, so the same bits: SiLU's and the fast order's softmax. 2^n is
/// built in the exponent field, which holds for n in -126..=127; with a
/// lane outside (|x| beyond about 87) this gives None, and the caller
/// takes the scalar form.
///
/// # Safety
/// Only on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn ggml_expf_avx2(x: std::arch::x86_64::__m256) -> Option<std::arch::x86_64::__m256> {
    use std::arch::x86_64::*;
    let k = |bits: u32| _mm256_set1_ps(c(bits));
    let shift = _mm256_set1_ps(SHIFT);
    let n = _mm256_sub_ps(_mm256_fmadd_ps(x, k(LOG2_E), shift), shift);
    let outside =
        _mm256_or_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(n, _mm256_set1_ps(-126.0)), _mm256_cmp_ps::<_CMP_GT_OQ>(n, _mm256_set1_ps(127.0)));
    if _mm256_movemask_ps(outside) != 0 {
        return None;
    }
    let b = _mm256_fnmadd_ps(n, k(LN2_LO), _mm256_fnmadd_ps(n, k(LN2_HI), x));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(k(C5), b, k(C4)), u, _mm256_fmadd_ps(k(C3), b, k(C2))),
        u,
        _mm256_fmadd_ps(k(C1), b, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    Some(_mm256_mul_ps(j, pow2))
}

/// SiLU times up with AVX2: `silu_mul_body`'s operations, eight lanes at
/// a time (`ggml_expf_avx2`, the scalar form where a lane is beyond its
/// range), so the same bits.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let whole = out.len() / SILU_LANES * SILU_LANES;
    for i in (0..whole).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let Some(e) = ggml_expf_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g)) else {
            silu_mul_lanes(&gate[i..i + 8], &up[i..i + 8], &mut out[i..i + 8]);
            continue;
        };
        let silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
    silu_mul_tail(&gate[whole..], &up[whole..], &mut out[whole..]);
}

/// `out = silu(gate) * up` as llama.cpp's AVX-512 build computes it, on
/// every instruction set. (Its AVX2 build rounds SiLU, and other steps,
/// differently; Caravan's order of arithmetic is the AVX-512 build's
/// throughout, so that every CPU gives the same tokens.)
pub fn silu_mul(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len());
    // SAFETY: an Isa is only had for a CPU with its features, and the CPU
    // has FMA where that is checked.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa.kind() {
            IsaKind::Avx512Vnni => return silu_mul_avx512(gate, up, out),
            IsaKind::Avx2 => return silu_mul_avx2(gate, up, out),
            IsaKind::Portable => {}
        }
        if is_x86_feature_detected!("fma") {
            return silu_mul_fma(gate, up, out);
        }
    }
    let _ = isa;
    silu_mul_body(gate, up, out)
}

/// `x[i] = expf(x[i])`: the C library's own, or where the CPU has AVX2 and
/// FMA (where glibc runs its FMA build) `libm16`'s, sixteen at a time with
/// the same bits.
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let mut blocks = x.chunks_exact_mut(16);
        for block in &mut blocks {
            // SAFETY: the CPU has AVX2 and FMA (detected above).
            unsafe { libm16::exp_avx2(block.try_into().unwrap()) };
        }
        blocks.into_remainder().iter_mut().for_each(|v| *v = v.exp());
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// The C library's `expf` as glibc's FMA build computes it (Arm's
/// table-driven algorithm in double precision), sixteen values at a time,
/// bit for bit: llama.cpp's attention softmax calls `expf`. The scalar form
/// is the C library's own.
#[cfg(target_arch = "x86_64")]
pub mod libm16 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    const INV_LN2_SCALED: u64 = 0x4047_1547_652b_82fe; // 32 / ln 2
    const C0: u64 = 0x3ebc_6af8_4b91_2394;
    const C1: u64 = 0x3f2e_bfce_50fa_c4f3;
    const C2: u64 = 0x3f96_2e42_ff0c_52d6;
    const SHIFT: u64 = 0x4338_0000_0000_0000; // 1.5 * 2^52
    /// |x| from 88 up (and NaN, infinities) take the C library's own path.
    const LAST_FAST_TOP12: i32 = 0x42a;

    /// 2^(i/32) with i moved out of the exponent field: the table glibc
    /// ships, computed (its entries are the correctly rounded powers).
    fn table() -> &'static [u64; 32] {
        static TABLE: OnceLock<[u64; 32]> = OnceLock::new();
        TABLE.get_or_init(|| std::array::from_fn(|i| ((i as f64) / 32.0).exp2().to_bits().wrapping_sub((i as u64) << 47)))
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn pd(bits: u64) -> __m512d {
        _mm512_set1_pd(f64::from_bits(bits))
    }

    /// Those lanes (`slow`, as bits) from the C library itself. Rare: only
    /// arguments of magnitude 88 or more, and NaN, take it.
    #[cold]
    fn finish_slow(x: &mut [f32; 16], original: &[f32; 16], slow: u32) {
        for (i, v) in x.iter_mut().enumerate() {
            if slow & (1 << i) != 0 {
                *v = original[i].exp();
            }
        }
    }

    /// The same with AVX2: four doubles at a time, the table gathered.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp_avx2(x: &mut [f32; 16]) {
        let t = table();
        // Lanes whose exponent field is above LAST_FAST_TOP12's, as bits.
        let fast_top = _mm256_set1_epi32(LAST_FAST_TOP12 << 20 | 0xfffff);
        let slow_half = |at: usize| {
            let bits = _mm256_and_si256(_mm256_loadu_si256(x.as_ptr().add(at) as *const __m256i), _mm256_set1_epi32(0x7fff_ffff));
            _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(bits, fast_top))) as u32
        };
        let slow = slow_half(0) | slow_half(8) << 8;
        let original = if slow != 0 { *x } else { [0.0; 16] };
        let p = |bits: u64| _mm256_set1_pd(f64::from_bits(bits));
        for quarter in 0..4 {
            let xd = _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr().add(4 * quarter)));
            let kd = _mm256_fmadd_pd(xd, p(INV_LN2_SCALED), p(SHIFT));
            let ki = _mm256_castpd_si256(kd);
            let kd = _mm256_sub_pd(kd, p(SHIFT));
            let r = _mm256_fmsub_pd(p(INV_LN2_SCALED), xd, kd);
            let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
            let entry = _mm256_i64gather_epi64::<8>(t.as_ptr() as *const i64, index);
            let s = _mm256_add_epi64(entry, _mm256_slli_epi64::<47>(ki));
            let z = _mm256_fmadd_pd(r, p(C0), p(C1));
            let r2 = _mm256_mul_pd(r, r);
            let y = _mm256_fmadd_pd(r, p(C2), _mm256_set1_pd(1.0));
            let y = _mm256_mul_pd(_mm256_fmadd_pd(z, r2, y), _mm256_castsi256_pd(s));
            _mm_storeu_ps(x.as_mut_ptr().add(4 * quarter), _mm256_cvtpd_ps(y));
        }
        if slow != 0 {
            finish_slow(x, &original, slow);
        }
    }

    /// `x[i] = expf(x[i])` for all sixteen.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn exp(x: &mut [f32; 16]) {
        let t = table();
        let tab: [__m512i; 4] = std::array::from_fn(|j| _mm512_loadu_si512(t.as_ptr().add(8 * j) as *const __m512i));
        let all = _mm512_loadu_ps(x.as_ptr());
        let top12 = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(all), 20), _mm512_set1_epi32(0x7ff));
        let slow = _mm512_cmpgt_epi32_mask(top12, _mm512_set1_epi32(LAST_FAST_TOP12)) as u32;
        let original = if slow != 0 { *x } else { [0.0; 16] };
        for half in 0..2 {
            let xd = _mm512_cvtps_pd(_mm256_loadu_ps(x.as_ptr().add(8 * half)));
            // The same fused operations as the compiled C, in its order.
            let kd = _mm512_fmadd_pd(xd, pd(INV_LN2_SCALED), pd(SHIFT));
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, pd(SHIFT));
            let r = _mm512_fmsub_pd(pd(INV_LN2_SCALED), xd, kd);
            let index = _mm512_and_si512(ki, _mm512_set1_epi64(31));
            let low = _mm512_permutex2var_epi64(tab[0], index, tab[1]);
            let high = _mm512_permutex2var_epi64(tab[2], index, tab[3]);
            let upper = _mm512_test_epi64_mask(index, _mm512_set1_epi64(16));
            let s = _mm512_add_epi64(_mm512_mask_blend_epi64(upper, low, high), _mm512_slli_epi64(ki, 47));
            let z = _mm512_fmadd_pd(r, pd(C0), pd(C1));
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(r, pd(C2), _mm512_set1_pd(1.0));
            let y = _mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), _mm512_castsi512_pd(s));
            _mm256_storeu_ps(x.as_mut_ptr().add(8 * half), _mm512_cvtpd_ps(y));
        }
        if slow != 0 {
            finish_slow(x, &original, slow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_true_exponential_and_overflowing_as_the_hardware_does() {
        let mut x = -87.0f32;
        while x < 88.7 {
            let (got, want) = (ggml_expf(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
            x += 0.37;
        }
        // Past f32's range, as `vscalefps` gives it (2^n applied in one
        // rounding, not clamped to 2^127); below it, into the subnormals,
        // within one step of 2^-149, then zero.
        for x in [88.8f32, 95.0, 132.9, 133.5, 200.0] {
            assert_eq!(ggml_expf(x), f32::INFINITY, "exp({x})");
        }
        let edge = ggml_expf(88.5) as f64;
        assert!((edge / 88.5f64.exp() - 1.0).abs() < 1e-6, "exp(88.5) = {edge}: 2^128 times a factor below 1");
        let tiny = ggml_expf(-100.0) as f64;
        assert!((tiny - (-100f64).exp()).abs() <= 2f64.powi(-149), "exp(-100) = {tiny}");
        assert_eq!(ggml_expf(-200.0), 0.0);
    }

    /// Arguments over the whole f32 line (every 4,099th bit pattern, both
    /// signs), and the edges of the polynomial's range.
    fn sweep() -> Vec<f32> {
        let mut values: Vec<f32> = (0..u32::MAX).step_by(4099).map(f32::from_bits).filter(|v| !v.is_nan()).collect();
        values.extend([87.0, 88.38, 88.5, 88.72, 89.0, 95.0, 126.5, 133.0, 133.2, -87.3, -103.9, -104.0, -126.0, -133.0, -140.0]);
        values
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn one_lane_of_each_vector_expf_is_the_scalar_form() {
        use std::arch::x86_64::*;
        let isas = Isa::available();
        let has = |kind| isas.iter().any(|i| i.kind() == kind);
        for chunk in sweep().chunks_exact(16) {
            let x: [f32; 16] = chunk.try_into().unwrap();
            let want = x.map(|v| ggml_expf(v).to_bits());
            if has(IsaKind::Avx2) {
                for (half, want) in x.chunks_exact(8).zip(want.chunks_exact(8)) {
                    // SAFETY: AVX2 and FMA were detected.
                    if let Some(e) = unsafe { ggml_expf_avx2(_mm256_loadu_ps(half.as_ptr())) } {
                        let mut got = [0f32; 8];
                        // SAFETY: as above.
                        unsafe { _mm256_storeu_ps(got.as_mut_ptr(), e) };
                        assert_eq!(got.map(f32::to_bits), want, "avx2 expf({half:?})");
                    }
                }
            }
            if has(IsaKind::Avx512Vnni) {
                let mut got = [0f32; 16];
                // SAFETY: AVX-512F was detected.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), expf_avx512(_mm512_loadu_ps(x.as_ptr()))) };
                assert_eq!(got.map(f32::to_bits), want, "avx512 expf({x:?})");
            }
        }
    }

    #[test]
    fn silu_times_up() {
        let mut out = [0f32; 3];
        silu_mul(Isa::PORTABLE, &[0.0f32, 2.0, -3.0], &[1.0, 0.5, 2.0], &mut out);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for (got, want) in out.iter().zip([0.0, silu(2.0) * 0.5, silu(-3.0) * 2.0]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_wide_expf_equals_the_c_library() {
        type Exp16 = unsafe fn(&mut [f32; 16]);
        let mut widths: Vec<(&str, Exp16)> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            widths.push(("avx2", libm16::exp_avx2));
        }
        if is_x86_feature_detected!("avx512f") {
            widths.push(("avx512", libm16::exp));
        }
        // Every 61st float from -104 to 0 (the softmax's arguments), then
        // the edges: zeros, tiny, huge, infinities, NaN.
        let mut values: Vec<f32> = ((-0f32).to_bits()..=(-104f32).to_bits()).step_by(61).map(f32::from_bits).collect();
        values.extend((0..(88f32).to_bits()).step_by(997).map(f32::from_bits));
        values.extend([0.0, -0.0, 1e-45, -1e-45, 88.7, 89.0, -87.5, -103.5, -104.0, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        for (name, exp16) in widths {
            for chunk in values.chunks(16) {
                let mut x = [0f32; 16];
                x[..chunk.len()].copy_from_slice(chunk);
                let want = x.map(f32::exp);
                // SAFETY: the width's features were detected above.
                unsafe { exp16(&mut x) };
                for (i, (got, want)) in x.iter().zip(want).enumerate().take(chunk.len()) {
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{name} expf({}) = {got}, want {want}",
                        chunk[i]
                    );
                }
            }
        }
        // The sampler's form: a whole slice, its last block partial.
        let mut x = values.clone();
        exp_in_place(&mut x);
        for (v, got) in values.iter().zip(&x) {
            let want = v.exp();
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "exp_in_place({v}) = {got}, want {want}");
        }
    }

    #[test]
    fn every_isa_gives_the_portable_bits() {
        // Both ends of the range, the arguments whose e^-gate overflows
        // (gate from -88.4 to -133) in full vectors, ordinary values, and a
        // ragged tail (207 = 12 x 16 + 15).
        let ends = [-150.0, 150.0, -95.0, 95.0, -88.5, -89.0, -100.0, -120.0, -132.9, -133.5, 88.5, 104.0, 120.0, 0.0, -0.0, 1e-30];
        let gate: Vec<f32> = ends.into_iter().chain((0..191).map(|i| (i as f32 - 95.0) * 0.71)).collect();
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + i as f32 * 0.01).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut want = vec![0f32; gate.len()];
        silu_mul(Isa::PORTABLE, &gate, &up, &mut want);
        assert_eq!(want[2].to_bits(), (-0f32).to_bits(), "silu(-95) is -0: e^95 overflows");
        for isa in Isa::available() {
            let mut got = vec![0f32; gate.len()];
            silu_mul(isa, &gate, &up, &mut got);
            assert_eq!(bits(&got), bits(&want), "{isa}");
        }
    }
}
