//! GELU (tanh form) gating as ggml computes it on the CPU: the gate
//! rounded to f16 and looked up in a table of f16 GELU values, with the
//! gate itself past 10 and zero below -10. The table is ggml's to the bit:
//! each entry is `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))` in f32
//! with `1 + 0.044715 x·x` fused (what GCC contracts it to with FMA, as
//! llama.cpp's native build is compiled), rounded to f16; NaNs in,
//! quiet NaNs out.

use std::sync::OnceLock;

use half::f16;

use super::{Isa, IsaKind};

/// The f16 bits of GELU at every f16 value, indexed by its bits, and one
/// entry past them: the vector paths gather 32 bits at each index.
fn padded_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt() as f32;
        const COEF_A: f32 = 0.044715;
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                let inner = sqrt_2_over_pi * x * (COEF_A * x).mul_add(x, 1.0);
                let y = 0.5 * x * (1.0 + inner.tanh());
                // A NaN comes out of the C library's tanhf without its
                // payload: the quiet NaN of the input's sign.
                if y.is_nan() {
                    0x7e00 | (bits & 0x8000)
                } else {
                    f16::from_f32(y).to_bits()
                }
            })
            .chain([0])
            .collect()
    })
}

/// GELU of one value.
#[inline]
fn gelu(table: &[u16], g: f32) -> f32 {
    if g <= -10.0 {
        0.0
    } else if g >= 10.0 {
        g
    } else {
        f16::from_bits(table[f16::from_f32(g).to_bits() as usize]).to_f32()
    }
}

/// `gelu` of sixteen values with AVX-512: the same rounding to f16 (to
/// nearest, as `f16::from_f32`), the same table entry, the same limits.
///
/// # Safety
/// The CPU has AVX-512 F; `table` is `padded_table()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn gelu_avx512(table: &[u16], x: &mut [f32]) {
    use std::arch::x86_64::*;
    let v = _mm512_loadu_ps(x.as_ptr());
    let bits = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let entry = _mm512_i32gather_epi32::<2>(bits, table.as_ptr() as *const i32);
    let y = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(entry));
    let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, _mm512_set1_ps(10.0)), y, v);
    let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, _mm512_set1_ps(-10.0)), y, _mm512_setzero_ps());
    _mm512_storeu_ps(x.as_mut_ptr(), y);
}

/// `gelu_avx512` for eight values with AVX2.
///
/// # Safety
/// The CPU has AVX2 and F16C; `table` is `padded_table()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn gelu_avx2(table: &[u16], x: &mut [f32]) {
    use std::arch::x86_64::*;
    let v = _mm256_loadu_ps(x.as_ptr());
    let bits = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let entry = _mm256_and_si256(_mm256_i32gather_epi32::<2>(table.as_ptr() as *const i32, bits), _mm256_set1_epi32(0xffff));
    let y = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(entry), _mm256_extracti128_si256::<1>(entry)));
    let y = _mm256_blendv_ps(y, v, _mm256_cmp_ps::<_CMP_GE_OQ>(v, _mm256_set1_ps(10.0)));
    let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_set1_ps(-10.0)));
    _mm256_storeu_ps(x.as_mut_ptr(), y);
}

/// `x = gelu(x)` (BERT's feed-forward), the same bits on every ISA.
pub fn gelu_in_place(isa: Isa, x: &mut [f32]) {
    let table = padded_table();
    let rest = match isa.kind() {
        // SAFETY: the Isa was detected on this CPU (AVX2 with F16C, or
        // AVX-512 besides); each block holds the lanes its path reads.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512Vnni => {
            let mut blocks = x.chunks_exact_mut(16);
            blocks.by_ref().for_each(|block| unsafe { gelu_avx512(table, block) });
            blocks.into_remainder()
        }
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => {
            let mut blocks = x.chunks_exact_mut(8);
            blocks.by_ref().for_each(|block| unsafe { gelu_avx2(table, block) });
            blocks.into_remainder()
        }
        _ => x,
    };
    rest.iter_mut().for_each(|v| *v = gelu(table, *v));
}

/// `out = gelu(gate) * up`.
pub fn gelu_mul(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len());
    out.copy_from_slice(gate);
    gelu_in_place(isa, out);
    out.iter_mut().zip(up).for_each(|(o, &u)| *o *= u);
}

#[cfg(test)]
mod tests {
    use half::f16;
    use sha2::{Digest, Sha256};

    use crate::kernels::Isa;

    /// The SHA-256 of ggml's own table (`ggml_table_gelu_f16`, 65,536
    /// little-endian f16 values) as llama.cpp's CPU backend fills it after
    /// `ggml_cpu_init`, dumped from its native x86-64 build.
    const GGML_TABLE_SHA256: &str = "5eceda6f287dec9dc0bcfa24516d6744a031a5c52d1984688b4558aeb1daf909";

    #[test]
    fn the_table_is_ggmls() {
        let bytes: Vec<u8> = super::padded_table()[..1 << 16].iter().flat_map(|v| v.to_le_bytes()).collect();
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, GGML_TABLE_SHA256);
    }

    /// Every f16 value, the limits and values between f16 steps, through
    /// each vector path in whole vectors and a remainder.
    #[test]
    fn every_isa_gives_the_same_bits() {
        let mut x: Vec<f32> = (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect();
        x.extend([-10.0, 10.0, -10.001, 10.001, 9.999, -9.999, 1.0 + 1.0 / 4096.0, -0.333_333]);
        x.extend((0..1003).map(|i| (i as f32 - 501.0) * 0.023_7));
        let mut want = x.clone();
        super::gelu_in_place(Isa::PORTABLE, &mut want);
        for isa in Isa::available() {
            let mut got = x.clone();
            super::gelu_in_place(isa, &mut got);
            let differ = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(differ, None, "{isa} at {:?}", differ.map(|i| x[i]));
        }
    }

    #[test]
    fn gating_follows_the_table_and_its_limits() {
        let gate = [-12.0, -1.0, 0.0, 0.5, 10.0, 11.0];
        let mut out = [0f32; 6];
        super::gelu_mul(Isa::PORTABLE, &gate, &[2.0; 6], &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(&out[4..], &[20.0, 22.0]);
        // gelu(-1) = -0.1588, gelu(0.5) = 0.3457, each to f16 precision.
        assert!((out[1] + 2.0 * 0.158_8).abs() < 2e-3 && (out[3] - 2.0 * 0.345_7).abs() < 2e-3, "{out:?}");
    }
}
