//! ggml's vectorized `expf` and the SiLU built on it: one value at a time
//! (the reference) and 16 at a time with AVX-512.
//!
//! llama.cpp computes SiLU with this polynomial (Arm's optimized routine,
//! max error 1.45 ulp) rather than the C library's `expf`. SiLU feeds the
//! 8-bit quantization of the down projection's input, where a last-bit
//! difference can flip a rounding; using the same formula, operation for
//! operation (each `mul_add` is one fused multiply-add), keeps greedy
//! outputs with llama.cpp's.

use super::Isa;

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

/// e^x as ggml's AVX-512 `ggml_v_expf` computes it.
#[inline(always)]
pub fn ggml_expf(x: f32) -> f32 {
    let z = x.mul_add(c(LOG2_E), SHIFT);
    let n = z - SHIFT;
    // fnmadd(a, b, c) = c - a*b, fused: (-a)*b + c with the negation exact.
    let b = (-n).mul_add(c(LN2_LO), (-n).mul_add(c(LN2_HI), x));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = c(C5).mul_add(b, c(C4)).mul_add(u, c(C3).mul_add(b, c(C2))).mul_add(u, c(C1).mul_add(b, 1.0));
    scalef(j, n)
}

/// `j * 2^n` for integral `n` with one rounding, like `vscalefps`.
#[inline(always)]
fn scalef(j: f32, n: f32) -> f32 {
    let n = n as i32;
    if n >= -126 {
        j * pow2(n.min(127))
    } else {
        // Two steps into the subnormal range; j is in [0.5, 2], so the
        // first product is exact and only the second rounds.
        (j * pow2(-126)) * pow2(n + 126)
    }
}

#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + ggml_expf(-g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn silu_mul_fma(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_body(gate, up, out)
}

/// ggml's `ggml_v_expf` (AVX-512), of which `ggml_expf` is the scalar copy.
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

/// SiLU times up, 16 values at a time (ggml's `ggml_v_silu`): the same
/// operations as `silu_mul_body`, so the same bits.
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
    silu_mul_body(&gate[n..], &up[n..], &mut out[n..]);
}

/// `out = silu(gate) * up`. The fused multiply-adds are exact either way;
/// compiled for FMA hardware they are also fast.
pub fn silu_mul(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len());
    // SAFETY: each Isa implies the features its path is compiled for, and
    // the CPU has FMA where that is checked.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if isa == Isa::Avx512Vnni {
            return silu_mul_avx512(gate, up, out);
        }
        if is_x86_feature_detected!("fma") {
            return silu_mul_fma(gate, up, out);
        }
    }
    let _ = isa;
    silu_mul_body(gate, up, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_true_exponential_over_the_useful_range() {
        let mut x = -87.0f32;
    while x < 88.0 {
            let (got, want) = (ggml_expf(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
            x += 0.37;
        }
        assert_eq!(ggml_expf(-200.0), 0.0);
        assert_eq!(ggml_expf(200.0), f32::INFINITY);
    }

    #[test]
    fn silu_times_up() {
        let mut out = [0f32; 3];
        silu_mul(Isa::Portable, &[0.0f32, 2.0, -3.0], &[1.0, 0.5, 2.0], &mut out);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for (got, want) in out.iter().zip([0.0, silu(2.0) * 0.5, silu(-3.0) * 2.0]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn every_isa_gives_the_portable_bits() {
        // Ordinary values, both ends of the range, and a ragged tail.
        let gate: Vec<f32> = (0..203).map(|i| (i as f32 - 101.0) * 0.37).chain([-150.0, 150.0, -95.0, 95.0]).collect();
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut want = vec![0f32; gate.len()];
        silu_mul(Isa::Portable, &gate, &up, &mut want);
        for isa in Isa::available() {
            let mut got = vec![0f32; gate.len()];
            silu_mul(isa, &gate, &up, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{isa}");
        }
    }
}
