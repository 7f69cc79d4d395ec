//! GGML tensor types and their block layouts, and the repacking of each into
//! the few internal weight formats the matmul kernels are written for.
//!
//! Block scales are kept as f16, as ggml stores them: weight bytes are what
//! a decode step waits for. Repacking Q4_0, Q4_1, Q8_0 and Q6_K is exact
//! (every weight equals ggml's dequantization bit for bit); Q4_K's scales are
//! products of two scales and are rounded to f16 (relative error 2^-11, far
//! below the 4-bit quantization's own).

use half::{bf16, f16};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl TensorType {
    pub fn from_ggml(id: u32) -> Option<TensorType> {
        Some(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            8 => TensorType::Q8_0,
            12 => TensorType::Q4K,
            14 => TensorType::Q6K,
            30 => TensorType::BF16,
            _ => return None,
        })
    }

    pub fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q4_1 => 3,
            TensorType::Q8_0 => 8,
            TensorType::Q4K => 12,
            TensorType::Q6K => 14,
            TensorType::BF16 => 30,
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            TensorType::F32 | TensorType::F16 | TensorType::BF16 => 1,
            TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q8_0 => 32,
            TensorType::Q4K | TensorType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 | TensorType::BF16 => 2,
            TensorType::Q4_0 => 18,
            TensorType::Q4_1 => 20,
            TensorType::Q8_0 => 34,
            TensorType::Q4K => 144,
            TensorType::Q6K => 210,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::BF16 => "BF16",
            TensorType::Q4_0 => "Q4_0",
            TensorType::Q4_1 => "Q4_1",
            TensorType::Q8_0 => "Q8_0",
            TensorType::Q4K => "Q4_K",
            TensorType::Q6K => "Q6_K",
        }
    }
}

fn f16_bits(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_bits(b, i).to_f32()
}

/// Rows whose block scales are stored together (the matmul's tile height).
pub const SCALE_TILE: usize = 4;

/// Where the scale of block `b` of row `r` lives, for rows of `nb` blocks:
/// tiles of four rows, block-major inside a tile, so a kernel gets the four
/// rows' scales of a block with one load. Arrays are padded to whole tiles.
#[inline(always)]
pub fn tile_index(r: usize, b: usize, nb: usize) -> usize {
    (r / SCALE_TILE) * nb * SCALE_TILE + b * SCALE_TILE + r % SCALE_TILE
}

fn tiled_len(rows: usize, nb: usize) -> usize {
    rows.div_ceil(SCALE_TILE) * SCALE_TILE * nb
}

/// Weights as the kernels read them; one row per output feature. Block
/// scales (and minimums) of the 8-bit-activation formats are in
/// `tile_index` order.
#[derive(Debug, Clone)]
pub enum Packed {
    /// Blocks of 32 four-bit values: w = scale * q + min, q in 0..=15.
    /// Byte j of a block holds element j (low nibble) and j + 16 (high nibble).
    /// Q4_0, Q4_1 and Q4_K all become this.
    Nibble32 { qs: Vec<u8>, scale: Vec<f16>, min: Vec<f16> },
    /// Blocks of 32 signed bytes: w = scale * q. From Q8_0.
    Int8x32 { qs: Vec<i8>, scale: Vec<f16> },
    /// Blocks of 16 signed bytes: w = scale * q. From Q6_K (q - 32 stored).
    Int8x16 { qs: Vec<i8>, scale: Vec<f32> },
    /// Plain floats. From F32, F16 and BF16.
    Float(Vec<f32>),
}

/// Repacks ggml blocks (whole rows of `cols` elements, `rows` of them).
pub fn repack(ttype: TensorType, data: &[u8], rows: usize, cols: usize) -> Packed {
    let n = rows * cols;
    assert_eq!(data.len(), n / ttype.block_elems() * ttype.block_bytes(), "tensor size mismatch");
    match ttype {
        TensorType::F32 => Packed::Float(data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
        TensorType::F16 => Packed::Float(data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        TensorType::BF16 => Packed::Float(data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        TensorType::Q8_0 => {
            let nb = cols / 32;
            let mut qs = Vec::with_capacity(n);
            let mut scale = vec![f16::ZERO; tiled_len(rows, nb)];
            for (i, b) in data.chunks_exact(34).enumerate() {
                scale[tile_index(i / nb, i % nb, nb)] = f16_bits(b, 0);
                qs.extend(b[2..].iter().map(|&x| x as i8));
            }
            Packed::Int8x32 { qs, scale }
        }
        TensorType::Q4_0 | TensorType::Q4_1 => {
            let nb = cols / 32;
            let mut qs = Vec::with_capacity(n / 2);
            let (mut scale, mut min) = (vec![f16::ZERO; tiled_len(rows, nb)], vec![f16::ZERO; tiled_len(rows, nb)]);
            for (i, b) in data.chunks_exact(ttype.block_bytes()).enumerate() {
                let at = tile_index(i / nb, i % nb, nb);
                let d = f16_bits(b, 0);
                scale[at] = d;
                if ttype == TensorType::Q4_0 {
                    // -8 d: a power-of-two multiple, exact in f16.
                    min[at] = f16::from_f32(-8.0 * d.to_f32());
                    qs.extend_from_slice(&b[2..18]);
                } else {
                    min[at] = f16_bits(b, 2);
                    qs.extend_from_slice(&b[4..20]);
                }
            }
            Packed::Nibble32 { qs, scale, min }
        }
        TensorType::Q4K => repack_q4k(data, rows, cols),
        TensorType::Q6K => repack_q6k(data, n),
    }
}

/// ggml's get_scale_min_k4: the j-th 6-bit (scale, min) pair of a Q4_K block.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

fn repack_q4k(data: &[u8], rows: usize, cols: usize) -> Packed {
    let nb = cols / 32;
    let mut qs = Vec::with_capacity(rows * cols / 2);
    let (mut scale, mut min) = (vec![f16::ZERO; tiled_len(rows, nb)], vec![f16::ZERO; tiled_len(rows, nb)]);
    for (sb, b) in data.chunks_exact(144).enumerate() {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let q = &b[16..144];
        // Each 32-byte group of q holds two 32-element sub-blocks: low nibbles
        // then high nibbles. Our layout pairs element j with j + 16 instead.
        for (g, group) in q.chunks_exact(32).enumerate() {
            for half in 0..2 {
                let (sc, m) = q4k_scale_min(2 * g + half, scales);
                // Sub-block 2g + half of super-block sb: block number in its row.
                let blk = sb * 8 + 2 * g + half;
                let at = tile_index(blk / nb, blk % nb, nb);
                scale[at] = f16::from_f32(d * sc as f32);
                min[at] = f16::from_f32(-dmin * m as f32);
                let nib = |l: usize| if half == 0 { group[l] & 0xF } else { group[l] >> 4 };
                qs.extend((0..16).map(|j| nib(j) | (nib(j + 16) << 4)));
            }
        }
    }
    Packed::Nibble32 { qs, scale, min }
}

fn repack_q6k(data: &[u8], n: usize) -> Packed {
    let mut qs = vec![0i8; n];
    let mut scale = vec![0f32; n / 16];
    for (bi, b) in data.chunks_exact(210).enumerate() {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        let out = &mut qs[bi * 256..(bi + 1) * 256];
        for half in 0..2 {
            let (ql, qh, y) = (&ql[half * 64..], &qh[half * 32..], &mut out[half * 128..]);
            for l in 0..32 {
                y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        for (i, &s) in sc.iter().enumerate() {
            scale[bi * 16 + i] = d * (s as i8) as f32;
        }
    }
    Packed::Int8x16 { qs, scale }
}

impl Packed {
    /// Row `r` (of `cols` elements) as floats: embedding lookup and tests.
    pub fn row_f32(&self, r: usize, cols: usize, out: &mut [f32]) {
        let base = r * cols;
        match self {
            Packed::Float(w) => out.copy_from_slice(&w[base..base + cols]),
            Packed::Int8x32 { qs, scale } => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = scale[tile_index(r, i / 32, cols / 32)].to_f32() * qs[base + i] as f32;
                }
            }
            Packed::Int8x16 { qs, scale } => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = scale[(base + i) / 16] * qs[base + i] as f32;
                }
            }
            Packed::Nibble32 { qs, scale, min } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let e = base + i;
                    let (blk, j) = (e / 32, e % 32);
                    let byte = qs[blk * 16 + j % 16];
                    let q = if j < 16 { byte & 0xF } else { byte >> 4 };
                    let at = tile_index(r, i / 32, cols / 32);
                    *o = scale[at].to_f32() * q as f32 + min[at].to_f32();
                }
            }
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Packed::Float(w) => w.len() * 4,
            Packed::Int8x32 { qs, scale } => qs.len() + scale.len() * 2,
            Packed::Int8x16 { qs, scale } => qs.len() + scale.len() * 4,
            Packed::Nibble32 { qs, scale, min } => qs.len() + (scale.len() + min.len()) * 2,
        }
    }
}

impl Packed {
    /// Stacks the rows of matrices of one format; None if formats differ.
    /// Every part but the last must have whole scale tiles of rows.
    pub fn concat(parts: Vec<Packed>) -> Option<Packed> {
        let mut it = parts.into_iter();
        let mut acc = it.next()?;
        for p in it {
            match (&mut acc, p) {
                (Packed::Float(a), Packed::Float(b)) => a.extend(b),
                (Packed::Int8x32 { qs, scale }, Packed::Int8x32 { qs: q2, scale: s2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                }
                (Packed::Int8x16 { qs, scale }, Packed::Int8x16 { qs: q2, scale: s2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                }
                (Packed::Nibble32 { qs, scale, min }, Packed::Nibble32 { qs: q2, scale: s2, min: m2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                    min.extend(m2);
                }
                _ => return None,
            }
        }
        Some(acc)
    }
}
