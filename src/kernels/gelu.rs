//! GELU (tanh form) gating as ggml computes it on the CPU: the gate
//! rounded to f16 and looked up in a table of f16 GELU values, with the
//! gate itself past 10 and zero below -10. The table is ggml's to the bit:
//! each entry is `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))` in f32
//! with `1 + 0.044715 x·x` fused (what GCC contracts it to with FMA, as
//! llama.cpp's native build is compiled), rounded to f16; NaNs in,
//! quiet NaNs out.

use std::sync::OnceLock;

use half::f16;

/// The f16 bits of GELU at every f16 value, indexed by its bits.
fn table() -> &'static [u16] {
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

/// `out = gelu(gate) * up`.
pub fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len());
    let table = table();
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu(table, g) * u;
    }
}

/// `x = gelu(x)`: BERT's feed-forward.
pub fn gelu_in_place(x: &mut [f32]) {
    let table = table();
    x.iter_mut().for_each(|v| *v = gelu(table, *v));
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The SHA-256 of ggml's own table (`ggml_table_gelu_f16`, 65,536
    /// little-endian f16 values) as llama.cpp's CPU backend fills it after
    /// `ggml_cpu_init`, dumped from its native x86-64 build.
    const GGML_TABLE_SHA256: &str = "5eceda6f287dec9dc0bcfa24516d6744a031a5c52d1984688b4558aeb1daf909";

    #[test]
    fn the_table_is_ggmls() {
        let bytes: Vec<u8> = super::table().iter().flat_map(|v| v.to_le_bytes()).collect();
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, GGML_TABLE_SHA256);
    }

    #[test]
    fn gating_follows_the_table_and_its_limits() {
        let gate = [-12.0, -1.0, 0.0, 0.5, 10.0, 11.0];
        let mut out = [0f32; 6];
        super::gelu_mul(&gate, &[2.0; 6], &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(&out[4..], &[20.0, 22.0]);
        // gelu(-1) = -0.1588, gelu(0.5) = 0.3457, each to f16 precision.
        assert!((out[1] + 2.0 * 0.158_8).abs() < 2e-3 && (out[3] - 2.0 * 0.345_7).abs() < 2e-3, "{out:?}");
    }
}
