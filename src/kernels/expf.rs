//! ggml's vectorized `expf` and the SiLU built on it, one value at a time.
//!
//! llama.cpp computes SiLU with this polynomial (Arm's optimized routine,
//! max error 1.45 ulp) rather than the C library's `expf`. SiLU feeds the
//! 8-bit quantization of the down projection's input, where a last-bit
//! difference can flip a rounding; using the same formula, operation for
//! operation (each `mul_add` is one fused multiply-add), keeps greedy
//! outputs with llama.cpp's.

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
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + ggml_expf(-*g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn silu_mul_fma(gate: &mut [f32], up: &[f32]) {
    silu_mul_body(gate, up)
}

/// `gate = silu(gate) * up`, in place. The fused multiply-adds are exact
/// either way; compiled for FMA hardware they are also fast.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, checked just above.
        return unsafe { silu_mul_fma(gate, up) };
    }
    silu_mul_body(gate, up)
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
        let mut g = [0.0f32, 2.0, -3.0];
        silu_mul(&mut g, &[1.0, 0.5, 2.0]);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for (got, want) in g.iter().zip([0.0, silu(2.0) * 0.5, silu(-3.0) * 2.0]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
