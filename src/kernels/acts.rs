//! What a panel kernel takes and gives: activations quantized to 8-bit
//! blocks, and the tile of sums it fills. `matmul` makes the first and
//! drives the kernels; the kernels (`x86`) read and write these alone.

use super::quant::PANEL;

/// The most activation rows a kernel call takes against one weight panel.
pub const TILE_ACTS: usize = 8;
/// A kernel's output: `tile[act][lane]`.
pub type Tile = [[f32; PANEL]; TILE_ACTS];

/// Activations quantized to blocks of 32: `qs[row * cols + i]`,
/// `scale[row * blocks + b]`, `sum[...] = scale * Σ qs` over the block, and
/// `isum16[row * cols / 16 + h]`, the integer sum of each 16 codes (for
/// weight codes stored with an offset).
#[derive(Default)]
pub struct QuantizedActs {
    pub rows: usize,
    pub cols: usize,
    pub qs: Vec<i8>,
    pub scale: Vec<f32>,
    pub sum: Vec<f32>,
    pub isum16: Vec<i32>,
}
