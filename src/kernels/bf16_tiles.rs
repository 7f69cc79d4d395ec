//! Activations in bf16 in the layout AMX tiles take (`amx`): a tile of 16
//! rows by 32 inputs for each group of 16 rows and block of 32 inputs,
//! rows padded with zeros to a whole pair of groups (the kernel's unit).

use super::pool::{ComputePool, SharedOut};
use super::{Isa, IsaKind};

/// Activation rows in one tile.
pub const GROUP: usize = 16;

/// Activation rows padded to a whole pair of tile groups.
pub fn padded_rows(rows: usize) -> usize {
    rows.next_multiple_of(2 * GROUP)
}

/// Where input `k` of activation row `row` sits.
#[inline(always)]
pub fn acts_offset(cols: usize, row: usize, k: usize) -> usize {
    ((row / GROUP * (cols / 32) + k / 32) * GROUP + row % GROUP) * 32 + k % 32
}

/// f32 to bf16, to nearest, ties to even, as `half::bf16::from_f32` rounds
/// every value but NaN (which activations never are).
#[inline(always)]
fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub fn from_bf16(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// `x` (`rows` x `cols`) in bf16 in the tile layout, into `out`.
pub fn tile_acts(pool: &ComputePool, isa: Isa, x: &[f32], rows: usize, cols: usize, out: &mut Vec<u16>) {
    assert!(cols.is_multiple_of(32) && x.len() == rows * cols);
    out.clear();
    out.resize(padded_rows(rows) * cols, 0);
    let shared = SharedOut::new(out);
    pool.run_rows(rows, &|range| {
        // SAFETY: each task writes its own rows' places only.
        let out = unsafe { shared.slice() };
        for row in range {
            for (b, block) in x[row * cols..(row + 1) * cols].chunks_exact(32).enumerate() {
                let at = acts_offset(cols, row, b * 32);
                let (block, out) = (block.try_into().unwrap(), (&mut out[at..at + 32]).try_into().unwrap());
                match isa.kind() {
                    // SAFETY: the Isa was detected on this CPU.
                    #[cfg(target_arch = "x86_64")]
                    IsaKind::Avx512Vnni => unsafe { round_block_avx512(block, out) },
                    _ => round_block(block, out),
                }
            }
        }
    });
}

fn round_block(x: &[f32; 32], out: &mut [u16; 32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = to_bf16(v));
}

/// `round_block`, which the compiler vectorizes with AVX-512.
///
/// # Safety
/// The CPU has AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_block_avx512(x: &[f32; 32], out: &mut [u16; 32]) {
    round_block(x, out)
}
