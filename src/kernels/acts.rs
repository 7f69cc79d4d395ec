//! What a panel kernel takes and gives: activations quantized to 8-bit
//! blocks, and the tile of sums it fills. `matmul` makes the first and
//! drives the kernels; the kernels (`x86`) read and write these alone.

use std::sync::OnceLock;

use super::quant::PANEL;

/// The most activation rows a kernel call takes against one weight panel.
pub const TILE_ACTS: usize = 8;
/// A kernel's output: `tile[act][lane]`.
pub type Tile = [[f32; PANEL]; TILE_ACTS];

/// Activations quantized to blocks of 32: `qs[row * cols + i]`,
/// `scale[row * blocks + b]`, `sum[...] = scale * Σ qs` over the block,
/// `isum16[row * cols / 16 + h]`, the integer sum of each 16 codes (for
/// weight codes stored with an offset), and `isum4[row * cols / 4 + j]`,
/// that of each 4 (for 8-bit weights summed four at a time, in ggml's
/// order). `sb` holds the same rows as super-blocks where a matrix asks
/// for them.
#[derive(Default)]
pub struct QuantizedActs {
    pub rows: usize,
    pub cols: usize,
    pub qs: Vec<i8>,
    pub scale: Vec<f32>,
    pub sum: Vec<f32>,
    pub isum16: Vec<i32>,
    pub isum4: Vec<i32>,
    pub sb: SuperBlockActs,
    /// The same rows in 13-bit codes, `q16[row * cols + i]`, with
    /// `scale16[row * blocks + b]` per block of 32, where a matrix asks
    /// for them (`Packed::Int16`).
    pub q16: Vec<i16>,
    pub scale16: Vec<f32>,
    /// The same rows in bf16 in AMX's tile layout (`amx::acts_offset`),
    /// where a matrix asks for them (`Packed::Bf16`).
    pub bf16: Vec<u16>,
    /// `sb` as blocks of 32 (made when first asked for, after `sb`).
    pub(super) sb_as_blocks: OnceLock<Box<QuantizedActs>>,
}

impl QuantizedActs {
    /// The rows' super-blocks (`sb`, made already) in this layout, for
    /// weights whose ggml dot products take Q8_K activations: each block of
    /// 32 with its super-block's scale, the codes and sums as they are.
    pub fn super_blocks_as_blocks(&self) -> &QuantizedActs {
        self.sb_as_blocks.get_or_init(|| {
            let (sb, blocks) = (&self.sb, self.rows * self.cols / 32);
            assert_eq!(sb.d.len() * 8, blocks, "activations not quantized to super-blocks");
            let scale: Vec<f32> = (0..blocks).map(|b| sb.d[b / 8]).collect();
            let isum16 = sb.bsum16.clone();
            let sum = (0..blocks).map(|b| scale[b] * (isum16[2 * b] + isum16[2 * b + 1]) as f32).collect();
            let isum4 = sb.qs.chunks_exact(4).map(|four| four.iter().map(|&c| c as i32).sum()).collect();
            Box::new(QuantizedActs { rows: self.rows, cols: self.cols, qs: sb.qs.clone(), scale, sum, isum16, isum4, ..Default::default() })
        })
    }
}

/// Activations quantized as ggml's Q8_K, the form its K-quant dot products
/// take: super-blocks of 256 with one f32 scale, `qs[row * cols + i]`,
/// `d[row * super_blocks + s]`, and `bsum16[(row * super_blocks + s) * 16 +
/// j]`, the integer sum of codes 16j..16j+16 of the super-block; and for
/// each row the batch llama.cpp would multiply it in.
#[derive(Default)]
pub struct SuperBlockActs {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub bsum16: Vec<i32>,
    pub batches: Vec<RowBatch>,
}

/// The batch llama.cpp would multiply a row in: how many rows it has and
/// the row's index there. llama.cpp picks its K-quant kernels by the
/// batch, and they sum in different orders (see `portable_dot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBatch {
    pub rows: usize,
    pub index: usize,
}

impl RowBatch {
    /// A row on its own, as a decode step's token or a logits row.
    pub const ALONE: RowBatch = RowBatch { rows: 1, index: 0 };

    /// Whether Q4_K multiplies it in a group of four (its repacked
    /// `gemm_q4_K_8x8_q8_K`): the batch's rows up to its last multiple of four.
    pub fn in_fours(self) -> bool {
        self.index < self.rows / 4 * 4
    }

    /// Whether Q6_K multiplies it in tiles (its tiled matmul, which takes
    /// batches of eight rows or more).
    pub fn tiled(self) -> bool {
        self.rows >= 8
    }
}
