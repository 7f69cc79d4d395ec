//! Random weights for the kernel tests and microbenchmarks (shared with
//! benches/kernels.rs).

use caravan::gguf::TensorType;
use caravan::sampler::Rng;
use half::{bf16, f16};

/// Random ggml blocks of type `t` with sane scales (random bytes would make
/// NaNs and infinities): the weights of kernel tests and microbenchmarks.
pub fn random_blocks(rng: &mut Rng, t: TensorType, rows: usize, cols: usize) -> Vec<u8> {
    let mut float = || rng.next_f32() * 2.0 - 1.0;
    let f16 = |x: f32| f16::from_f32(x).to_le_bytes();
    let mut out = Vec::with_capacity(rows * cols / t.block_elems() * t.block_bytes());
    for _ in 0..rows * cols / t.block_elems() {
        let mut b: Vec<u8> = (0..t.block_bytes()).map(|_| (float() * 128.0 + 128.0) as u8).collect();
        match t {
            TensorType::F32 => b = float().to_le_bytes().to_vec(),
            TensorType::F16 => b = f16(float()).to_vec(),
            TensorType::BF16 => b = bf16::from_f32(float()).to_le_bytes().to_vec(),
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => b[0..2].copy_from_slice(&f16(float() * 0.05)),
            TensorType::Q4_1 | TensorType::Q5_1 => {
                b[0..2].copy_from_slice(&f16(float() * 0.05));
                b[2..4].copy_from_slice(&f16(float() * 0.1));
            }
            TensorType::Q4K => {
                b[0..2].copy_from_slice(&f16(float() * 0.01));
                b[2..4].copy_from_slice(&f16(float() * 0.01));
            }
            TensorType::Q6K => b[208..210].copy_from_slice(&f16(float() * 0.01)),
            TensorType::Q2K => {
                b[80..82].copy_from_slice(&f16(float() * 0.01));
                b[82..84].copy_from_slice(&f16(float() * 0.01));
            }
            TensorType::Q3K => b[108..110].copy_from_slice(&f16(float() * 0.01)),
            TensorType::Q5K => {
                b[0..2].copy_from_slice(&f16(float() * 0.01));
                b[2..4].copy_from_slice(&f16(float() * 0.01));
            }
            TensorType::IQ4NL | TensorType::IQ4XS => b[0..2].copy_from_slice(&f16(float() * 0.01)),
        }
        out.extend(b);
    }
    out
}
