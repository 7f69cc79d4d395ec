//! GGML tensor types and their block layouts, and the repacking of each into
//! the few internal weight formats the matmul kernels are written for.
//!
//! Quantized weights are stored in panels of 16 rows: for each block of 32
//! inputs, 32-bit lane r of a 512-bit register holds four consecutive codes
//! of row r, so one `vpdpbusd` against four broadcast activation bytes
//! advances 16 rows' dot products at once, and the 16 rows' block scales
//! are one vector. No horizontal sums are needed, whatever the row length.
//!
//! Block scales are kept as f16, as ggml stores them: weight bytes are what
//! a decode step waits for. Repacking Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q6_K is
//! exact (every weight equals ggml's dequantization bit for bit). For the
//! fast order Q4_K's scales, products of two scales, are rounded to f16
//! (relative error 2^-11, far below the 4-bit quantization's own); for
//! ggml's order the K-quants keep their integer scales and super-blocks,
//! exact too, because ggml's dot products sum with them.

use half::{bf16, f16};

use super::Arithmetic;
pub use crate::gguf::TensorType;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The largest of `Packed::Int16`'s codes: 32 products with 13-bit
/// activations stay within an i32.
pub const INT16_MAX: i16 = 8191;

/// Weight rows per panel: one per 32-bit lane of a 512-bit register.
pub const PANEL: usize = 16;
/// Bytes of one block of 32 codes of a whole panel: 4-bit and 8-bit codes.
pub const NIBBLE_BLOCK: usize = PANEL * 16;
pub const BYTE_BLOCK: usize = PANEL * 32;

/// Where code `e` (0..32) of panel row `lane` sits in its 8-bit panel block:
/// step e / 4 (64 bytes each), the lane's four bytes, byte e % 4.
#[inline(always)]
pub fn byte_offset(lane: usize, e: usize) -> usize {
    (e / 4) * 64 + lane * 4 + e % 4
}

/// Where 14-bit code `e` (0..32) of row `lane` of panel block `blk` sits in
/// `Packed::Int16`'s codes.
#[inline(always)]
pub fn int16_offset(blk: usize, lane: usize, e: usize) -> usize {
    (blk * 16 + e / 2) * 2 * PANEL + 2 * lane + e % 2
}

/// Where code `e` of row `lane` sits within a 4-bit panel block in the fast
/// order's layout (see `nibble_offset`), and whether it is the high nibble.
#[inline(always)]
fn nibble_in_block(lane: usize, e: usize) -> (usize, bool) {
    ((e / 8) * 64 + lane * 4 + e % 4, e % 8 >= 4)
}

/// Where the bit of code `e` of row `lane` sits in a plane of bits above
/// the 4-bit block (see `CodeLayout::Five`): its byte and the bit in it.
#[inline(always)]
fn plane_bit(lane: usize, e: usize) -> (usize, usize) {
    let bit = 4 * lane + e % 4;
    ((e / 4) * 8 + bit / 8, bit % 8)
}

/// How `Packed::Int8` and `Packed::Int6` store their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLayout {
    /// A byte per code, value + 128 (unsigned, for `vpdpbusd`), at
    /// `byte_offset` in blocks of `BYTE_BLOCK`.
    Eight,
    /// Six bits per code (Q6_K's), value + 32: as `Five`, with a second
    /// plane of bits (the sixth) after the first.
    Six,
    /// Five bits per code (Q5_0's, Q5_1's and Q5_K's), so that a decode
    /// step reads the file's 5.5 bits a weight rather than 8.5: the low
    /// four bits as a fast-order 4-bit block (`NIBBLE_BLOCK` bytes), then a
    /// plane of the fifth bits: for each step t (codes 4t..4t+4 of every
    /// row) a 64-bit word whose bit 4 * lane + e % 4 is code e's, as a
    /// 64-bit mask (AVX-512) or the half of one (AVX2) takes it. Code q
    /// stands for the value q - zero (16 for Q5_0, 0 for codes above a
    /// minimum).
    Five { zero: i32 },
    /// Four bits per code (Q2_K's and Q3_K's few), value + zero, in a
    /// fast-order 4-bit block.
    Four { zero: i32 },
}

impl CodeLayout {
    /// The planes of bits above the 4-bit block (none for bytes).
    fn planes(self) -> usize {
        match self {
            CodeLayout::Eight | CodeLayout::Four { .. } => 0,
            CodeLayout::Five { .. } => 1,
            CodeLayout::Six => 2,
        }
    }

    /// The code that stands for the value 0.
    fn zero(self) -> i32 {
        match self {
            CodeLayout::Eight => 128,
            CodeLayout::Six => 32,
            CodeLayout::Five { zero } | CodeLayout::Four { zero } => zero,
        }
    }

    /// Bytes of one panel block of 32 codes.
    pub fn block_bytes(self) -> usize {
        match self {
            CodeLayout::Eight => BYTE_BLOCK,
            _ => NIBBLE_BLOCK + 64 * self.planes(),
        }
    }

    /// The value of code `e` of row `lane` of panel block `blk`.
    #[inline(always)]
    pub fn value(self, qs: &[u8], blk: usize, lane: usize, e: usize) -> i32 {
        let block = &qs[blk * self.block_bytes()..];
        let code = match self {
            CodeLayout::Eight => block[byte_offset(lane, e)],
            _ => {
                let (at, high) = nibble_in_block(lane, e);
                let (byte, bit) = plane_bit(lane, e);
                let low = if high { block[at] >> 4 } else { block[at] & 0xF };
                (0..self.planes()).fold(low, |q, p| q | ((block[NIBBLE_BLOCK + 64 * p + byte] >> bit) & 1) << (4 + p))
            }
        };
        code as i32 - self.zero()
    }

    /// Stores `value` as code `e` of row `lane` of panel block `blk` (its
    /// bits still zero).
    fn store(self, qs: &mut [u8], blk: usize, lane: usize, e: usize, value: i32) {
        let block = &mut qs[blk * self.block_bytes()..];
        let q = (value + self.zero()) as u8;
        match self {
            CodeLayout::Eight => block[byte_offset(lane, e)] = q,
            _ => {
                debug_assert!(q >> (4 + self.planes()) == 0, "a code of {} bits", 4 + self.planes());
                let (at, high) = nibble_in_block(lane, e);
                block[at] |= if high { (q & 0xF) << 4 } else { q & 0xF };
                let (byte, bit) = plane_bit(lane, e);
                for p in 0..self.planes() {
                    block[NIBBLE_BLOCK + 64 * p + byte] |= ((q >> (4 + p)) & 1) << bit;
                }
            }
        }
    }
}

/// Where code `e` of row `lane` of block `blk` (numbered `panel * nb + b`
/// for rows of `nb` blocks) sits in a 4-bit panel array laid out for
/// `order`, and whether it is the high nibble. A block's 64-byte vector t
/// holds codes 8t..8t+4 (low nibbles) and 8t+4..8t+8 (high) of every row,
/// so one load and two masks give two steps. For ggml's order a panel
/// stores vector 0 of all its blocks, then vector 1, ..., because its
/// kernels sweep the blocks once per vector (a float lane each); for the
/// fast order blocks follow one another, each summed whole.
#[inline(always)]
pub fn nibble_offset(order: Arithmetic, nb: usize, blk: usize, lane: usize, e: usize) -> (usize, bool) {
    match order {
        Arithmetic::Ggml => {
            let (panel, b) = (blk / nb, blk % nb);
            (panel * nb * NIBBLE_BLOCK + (e / 8) * nb * 64 + b * 64 + lane * 4 + e % 4, e % 8 >= 4)
        }
        Arithmetic::Fast => {
            let (at, high) = nibble_in_block(lane, e);
            (blk * NIBBLE_BLOCK + at, high)
        }
    }
}

/// Weights as the kernels read them; one row per output feature. The
/// quantized formats are in panels (rows padded with zero weights to a
/// multiple of PANEL); per-block scales are indexed `(panel * nb + block) *
/// PANEL + lane` (Q6_K: per half block, `((panel * nb + block) * 2 + half)
/// * PANEL + lane`).
#[derive(Debug, Clone)]
pub enum Packed {
    /// 4-bit codes q in 0..=15, w = scale * q + min, laid out and summed in
    /// `order`. From Q4_0, Q4_1, Q4_K.
    Nibble { qs: Vec<u8>, scale: Vec<f16>, min: Vec<f16>, order: Arithmetic },
    /// Codes of values q in -128..=127 stored as `codes` says, w = scale *
    /// q (+ min where there are minimums), summed in `order`. From Q8_0 and
    /// IQ4_NL, IQ4_XS (bytes), Q5_0 (five bits, values -16..=15: ggml's Q5_0
    /// dot product is Q8_0's, step for step, once the fifth bit is in
    /// place), Q5_1 (five bits, values 0..=31 and a minimum per block:
    /// its dot product is Q4_1's with a fifth bit) and Q5_K in the fast
    /// order (as Q5_1, its products of two scales rounded to f16, as
    /// Q4_K's are).
    Int8 { qs: Vec<u8>, scale: Vec<f16>, min: Option<Vec<f16>>, order: Arithmetic, codes: CodeLayout },
    /// Codes of values q in -32..=31 stored as `codes` says, w = scale * q
    /// (+ min), a scale (and a minimum where there are minimums) per 16
    /// weights. From Q6_K (six bits), Q3_K (four bits, values -4..=3), Q2_K
    /// (four bits, values 0..=3, a minimum per 16) and in ggml's order
    /// Q5_K (six bits, values 0..=31, a scale and minimum per 32 kept for
    /// both halves): every weight ggml's dequantization exactly, each scale
    /// and minimum being an f16 times a small integer.
    Int6 { qs: Vec<u8>, scale: Vec<f32>, min: Option<Vec<f32>>, codes: CodeLayout },
    /// 4-bit codes in super-blocks of 256, w = d * scale * q - dmin * min,
    /// with Q4_K's own integers: a 6-bit scale and minimum per 32 weights
    /// (`scale`, `min`, indexed as other per-block scales) and f16 `d`,
    /// `dmin` per super-block (`(panel * super_blocks + s) * PANEL +
    /// lane`). Codes in the fast order's layout. From Q4_K in ggml's order,
    /// whose dot products take the integer scales into the integer sums.
    SuperNibble { qs: Vec<u8>, scale: Vec<u8>, min: Vec<u8>, d: Vec<f16>, dmin: Vec<f16> },
    /// 6-bit codes q (weights d * scale * (q - 32)) with Q6_K's own signed
    /// 8-bit scale per 16 weights (indexed as `Int6`'s) and f16 `d` per
    /// super-block (as `SuperNibble`'s). From Q6_K in ggml's order.
    SuperInt6 { qs: Vec<u8>, scale: Vec<i8>, d: Vec<f16> },
    /// Weights multiplied, in ggml's order, against the activations as
    /// ggml's dot products for these types take them: Q8_K super-blocks
    /// (one scale per 256), read as blocks of 32 that share it. From Q2_K,
    /// Q3_K, Q5_K and IQ4_XS in ggml's order.
    OnSuperBlocks(Box<Packed>),
    /// 14-bit codes (-8191..=8191) of float weights, w = scale * q with a
    /// scale per row: step t (0..16) of block b holds each panel row's
    /// elements 2t and 2t + 1, `((panel * nb + b) * 16 + t) * 2 * PANEL +
    /// 2 * lane + j`, as `vpdpwssd` takes pairs; `scale[panel * PANEL +
    /// lane]`. How the fast order runs F32, F16 and BF16 matrices: twice
    /// the multiply-adds per instruction of floats, and within 1/16382 of
    /// the row's largest weight (f16 keeps 1/2048 of each weight's own).
    Int16 { qs: Vec<i16>, scale: Vec<f32> },
    /// Floats rounded to bf16 (to nearest, ties to even), in `Int16`'s
    /// layout, which is the one AMX tiles take. How an embedding model's
    /// F32, F16 and BF16 matrices run in the fast order where the CPU has
    /// AMX (`repack_bf16`).
    Bf16(Vec<u16>),
    /// Plain floats in panels: weight (row r, input k) at `(r / PANEL *
    /// cols + k) * PANEL + r % PANEL`, so that one vector holds a panel's
    /// 16 rows at one input. From F32, F16 and BF16.
    Float(Vec<f32>),
}

/// One row decoded from ggml blocks: a code per weight and the scales
/// (per 32 weights; per 16 for the 6-bit format) and minimums (per 32;
/// per 16 for the 6-bit format) that apply.
struct RowCodes {
    codes: Vec<u8>,
    scale: Vec<f32>,
    min: Vec<f32>,
}

/// ggml's get_scale_min_k4: the j-th 6-bit (scale, min) pair of a Q4_K block.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// IQ4_NL's and IQ4_XS's sixteen values, which their 4-bit codes index.
const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Q3_K's sixteen 6-bit scales from their 12 bytes, as ggml unpacks them
/// (before subtracting 32).
fn q3k_scales(b: &[u8]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("four bytes"));
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (low, high) = (0x0f0f_0f0fu32, 0x0303_0303u32);
    let words = [
        (a0 & low) | ((tmp & high) << 4),
        (a1 & low) | (((tmp >> 2) & high) << 4),
        ((a0 >> 4) & low) | (((tmp >> 4) & high) << 4),
        ((a1 >> 4) & low) | (((tmp >> 6) & high) << 4),
    ];
    let mut out = [0u8; 16];
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Decodes one row's ggml blocks (`ttype` quantized) following ggml's dequantization.
fn decode_row(ttype: TensorType, data: &[u8], cols: usize) -> RowCodes {
    let mut row = RowCodes { codes: Vec::with_capacity(cols), scale: Vec::new(), min: Vec::new() };
    for b in data.chunks_exact(ttype.block_bytes()) {
        match ttype {
            TensorType::Q4_0 | TensorType::Q4_1 => {
                let d = f16_at(b, 0);
                let (min, qs) = if ttype == TensorType::Q4_0 { (-8.0 * d, &b[2..18]) } else { (f16_at(b, 2), &b[4..20]) };
                row.codes.extend(qs.iter().map(|&q| q & 0xF));
                row.codes.extend(qs.iter().map(|&q| q >> 4));
                row.scale.push(d);
                row.min.push(min);
            }
            TensorType::Q8_0 => {
                row.codes.extend(b[2..34].iter().map(|&q| (q as i8 as i16 + 128) as u8));
                row.scale.push(f16_at(b, 0));
            }
            TensorType::Q5_0 | TensorType::Q5_1 => {
                // Five bits: the nibble, and bit j of qh (j + 16 for the
                // block's high half) above it. Q5_0: w = d * (q - 16), an
                // 8-bit code as Q8_0's, so q - 16 + 128; Q5_1: w = d * q +
                // m, stored as q + 128.
                let (offset, at) = if ttype == TensorType::Q5_0 { (112, 2) } else { (128, 4) };
                let (qh, qs) = (u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes")), &b[at + 4..at + 20]);
                let high = |j: usize| ((qh >> j) & 1) as u8 * 16;
                row.codes.extend(qs.iter().enumerate().map(|(j, &q)| (q & 0xF) + high(j) + offset));
                row.codes.extend(qs.iter().enumerate().map(|(j, &q)| (q >> 4) + high(j + 16) + offset));
                row.scale.push(f16_at(b, 0));
                if ttype == TensorType::Q5_1 {
                    row.min.push(f16_at(b, 2));
                }
            }
            TensorType::Q4K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                // Each 32-byte group holds two sub-blocks: low nibbles, then high.
                for (g, group) in b[16..144].chunks_exact(32).enumerate() {
                    for high in [false, true] {
                        let (sc, m) = q4k_scale_min(2 * g + high as usize, &b[4..16]);
                        row.codes.extend(group.iter().map(|&q| if high { q >> 4 } else { q & 0xF }));
                        // Products of two scales: rounded to f16 as the panel stores them.
                        row.scale.push(f16::from_f32(d * sc as f32).to_f32());
                        row.min.push(f16::from_f32(-dmin * m as f32).to_f32());
                    }
                }
            }
            TensorType::Q6K => {
                let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
                let mut y = [0u8; 256];
                for half in 0..2 {
                    let (ql, qh, y) = (&ql[half * 64..], &qh[half * 32..], &mut y[half * 128..]);
                    for l in 0..32 {
                        y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                row.codes.extend_from_slice(&y);
                row.scale.extend(sc.iter().map(|&s| d * (s as i8) as f32));
            }
            TensorType::Q2K | TensorType::Q3K => {
                // In each 128: four shifts of two bits, each over two
                // groups of 16 bytes, a scale per group of 16 weights.
                let (qs, d) = if ttype == TensorType::Q2K { (&b[16..80], f16_at(b, 80)) } else { (&b[32..96], f16_at(b, 108)) };
                for e in 0..256 {
                    let (n, j, half, l) = (e / 128, e % 128 / 32, e % 32 / 16, e % 16);
                    let q = (qs[n * 32 + half * 16 + l] >> (2 * j)) & 3;
                    row.codes.push(if ttype == TensorType::Q2K {
                        q + 32
                    } else {
                        // The high bit set means no 4 taken off.
                        let high = b[half * 16 + l] & (1 << (4 * n + j)) != 0;
                        q + if high { 32 } else { 28 }
                    });
                }
                for g in 0..16 {
                    if ttype == TensorType::Q2K {
                        row.scale.push(d * (b[g] & 0xF) as f32);
                        row.min.push(-(f16_at(b, 82) * (b[g] >> 4) as f32));
                    } else {
                        row.scale.push(d * (q3k_scales(&b[96..108])[g] as i32 - 32) as f32);
                    }
                }
            }
            TensorType::Q5K => {
                let (d, dmin, qh) = (f16_at(b, 0), f16_at(b, 2), &b[16..48]);
                for (g, group) in b[48..176].chunks_exact(32).enumerate() {
                    for high in [false, true] {
                        let bit = 1u8 << (2 * g + high as usize);
                        let (sc, m) = q4k_scale_min(2 * g + high as usize, &b[4..16]);
                        row.codes.extend(group.iter().zip(qh).map(|(&q, &h)| {
                            let low = if high { q >> 4 } else { q & 0xF };
                            low + if h & bit != 0 { 16 } else { 0 } + 128
                        }));
                        row.scale.push(d * sc as f32);
                        row.min.push(-(dmin * m as f32));
                    }
                }
            }
            TensorType::IQ4NL => {
                let code = |q: u8| (IQ4_VALUES[q as usize] as i16 + 128) as u8;
                row.codes.extend(b[2..18].iter().map(|&q| code(q & 0xF)));
                row.codes.extend(b[2..18].iter().map(|&q| code(q >> 4)));
                row.scale.push(f16_at(b, 0));
            }
            TensorType::IQ4XS => {
                let (d, high) = (f16_at(b, 0), u16::from_le_bytes([b[2], b[3]]));
                let code = |q: u8| (IQ4_VALUES[q as usize] as i16 + 128) as u8;
                for (ib, qs) in b[8..136].chunks_exact(16).enumerate() {
                    let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((high >> (2 * ib)) & 3) as i32) << 4);
                    row.codes.extend(qs.iter().map(|&q| code(q & 0xF)));
                    row.codes.extend(qs.iter().map(|&q| code(q >> 4)));
                    // A product of two scales: rounded to f16 as the panel stores them.
                    row.scale.push(f16::from_f32(d * (ls - 32) as f32).to_f32());
                }
            }
            TensorType::F32 | TensorType::F16 | TensorType::BF16 => unreachable!("float rows are not decoded to codes"),
        }
    }
    debug_assert_eq!(row.codes.len(), cols);
    row
}

/// The integer scales of one K-quant super-block and its f16 scales:
/// Q4_K's eight (scale, min) pairs and (d, dmin); Q6_K's sixteen signed
/// scales (as bytes) and d.
fn super_block_scales(ttype: TensorType, b: &[u8]) -> ([(u8, u8); 16], f16, f16) {
    let f16_bits = |i: usize| f16::from_le_bytes([b[i], b[i + 1]]);
    let mut pairs = [(0u8, 0u8); 16];
    if ttype == TensorType::Q4K {
        for (j, pair) in pairs.iter_mut().enumerate().take(8) {
            *pair = q4k_scale_min(j, &b[4..16]);
        }
        (pairs, f16_bits(0), f16_bits(2))
    } else {
        for (j, pair) in pairs.iter_mut().enumerate() {
            *pair = (b[192 + j], 0);
        }
        (pairs, f16_bits(208), f16::ZERO)
    }
}

/// Q4_K or Q6_K blocks repacked for ggml's order, keeping their integer
/// scales (see `Packed::SuperNibble`).
fn repack_super_blocks(ttype: TensorType, data: &[u8], rows: usize, cols: usize) -> Packed {
    let (nb, sbs, panels) = (cols / 32, cols / 256, rows.div_ceil(PANEL));
    let slots = panels * nb * PANEL;
    let row_bytes = data.len() / rows.max(1);
    let nibbles = ttype == TensorType::Q4K;
    let mut qs = vec![0u8; slots * if nibbles { 16 } else { 32 }];
    let (mut scale, mut min) = (vec![0u8; slots * if nibbles { 1 } else { 2 }], vec![0u8; slots]);
    let (mut d, mut dmin) = (vec![f16::ZERO; panels * sbs * PANEL], vec![f16::ZERO; panels * sbs * PANEL]);
    for r in 0..rows {
        let (first_block, lane) = (r / PANEL * nb, r % PANEL);
        let data = &data[r * row_bytes..(r + 1) * row_bytes];
        let codes = decode_row(ttype, data, cols).codes;
        for (s, b) in data.chunks_exact(ttype.block_bytes()).enumerate() {
            let (pairs, ds, dmins) = super_block_scales(ttype, b);
            let at = (r / PANEL * sbs + s) * PANEL + lane;
            (d[at], dmin[at]) = (ds, dmins);
            for j in 0..8 {
                let blk = first_block + s * 8 + j;
                let block_codes = &codes[(s * 8 + j) * 32..(s * 8 + j + 1) * 32];
                if nibbles {
                    for (e, &code) in block_codes.iter().enumerate() {
                        let (at, high) = nibble_offset(Arithmetic::Fast, nb, blk, lane, e);
                        qs[at] |= if high { code << 4 } else { code };
                    }
                    (scale[blk * PANEL + lane], min[blk * PANEL + lane]) = pairs[j];
                } else {
                    for (e, &code) in block_codes.iter().enumerate() {
                        qs[blk * BYTE_BLOCK + byte_offset(lane, e)] = code;
                    }
                    for h in 0..2 {
                        scale[(blk * 2 + h) * PANEL + lane] = pairs[2 * j + h].0;
                    }
                }
            }
        }
    }
    if nibbles {
        Packed::SuperNibble { qs, scale, min, d, dmin }
    } else {
        Packed::SuperInt6 { qs, scale: scale.into_iter().map(|s| s as i8).collect(), d }
    }
}

/// The values of a float tensor (F32, F16 or BF16), in order.
pub fn floats(ttype: TensorType, data: &[u8]) -> Option<Vec<f32>> {
    Some(match ttype {
        TensorType::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        TensorType::F16 => data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        TensorType::BF16 => data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Repacks a float matrix (F32, F16 or BF16; `rows` of `cols`) as
/// `Packed::Bf16`.
pub fn repack_bf16(ttype: TensorType, data: &[u8], rows: usize, cols: usize) -> Packed {
    let values = floats(ttype, data).expect("a float type");
    assert!(values.len() == rows * cols && cols.is_multiple_of(32), "tensor size mismatch");
    let nb = cols / 32;
    let mut w = vec![0u16; rows.div_ceil(PANEL) * cols * PANEL];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (e, &v) in row.iter().enumerate() {
            w[int16_offset(r / PANEL * nb + e / 32, r % PANEL, e % 32)] = bf16::from_f32(v).to_bits();
        }
    }
    Packed::Bf16(w)
}

/// Repacks ggml blocks (whole rows of `cols` elements, `rows` of them), for
/// the kernels of `order`.
pub fn repack(ttype: TensorType, data: &[u8], rows: usize, cols: usize, order: Arithmetic) -> Packed {
    let n = rows * cols;
    assert_eq!(data.len(), n / ttype.block_elems() * ttype.block_bytes(), "tensor size mismatch");
    if order == Arithmetic::Ggml && matches!(ttype, TensorType::Q4K | TensorType::Q6K) {
        return repack_super_blocks(ttype, data, rows, cols);
    }
    if order == Arithmetic::Ggml && matches!(ttype, TensorType::Q2K | TensorType::Q3K | TensorType::Q5K | TensorType::IQ4XS) {
        // Q5_K's scales stay exact here, where the fast order rounds them
        // to f16 in five-bit blocks: this order is held close to
        // llama.cpp's arithmetic, and rounded scales put the tiny Q5_K
        // file's log-probabilities 0.033 off on average, exact ones 0.009
        // (tests/tiny.rs).
        let inner = if ttype == TensorType::Q5K {
            repack_per_16(ttype, data, rows, cols)
        } else {
            repack(ttype, data, rows, cols, Arithmetic::Fast)
        };
        return Packed::OnSuperBlocks(Box::new(inner));
    }
    let (nb, panels) = (cols / 32, rows.div_ceil(PANEL));
    let slots = panels * nb * PANEL;
    let row_bytes = data.len() / rows.max(1);
    let rows_of = || (0..rows).map(|r| (r / PANEL * nb, r % PANEL, decode_row(ttype, &data[r * row_bytes..(r + 1) * row_bytes], cols)));
    match ttype {
        TensorType::F32 | TensorType::F16 | TensorType::BF16 if order == Arithmetic::Fast => {
            let (mut qs, mut scale) = (vec![0i16; panels * cols * PANEL], vec![0f32; panels * PANEL]);
            for (r, row) in floats(ttype, data).expect("a float type").chunks_exact(cols).enumerate() {
                let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = amax / INT16_MAX as f32;
                let inv = if amax > 0.0 { INT16_MAX as f32 / amax } else { 0.0 };
                scale[r] = s;
                let (panel, lane) = (r / PANEL, r % PANEL);
                for (e, &v) in row.iter().enumerate() {
                    qs[int16_offset(panel * nb + e / 32, lane, e % 32)] = (v * inv).round() as i16;
                }
            }
            Packed::Int16 { qs, scale }
        }
        TensorType::F32 | TensorType::F16 | TensorType::BF16 => {
            let mut w = vec![0f32; panels * cols * PANEL];
            for (r, row) in floats(ttype, data).expect("a float type").chunks_exact(cols).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    w[(r / PANEL * cols + k) * PANEL + r % PANEL] = v;
                }
            }
            Packed::Float(w)
        }
        TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q4K => {
            let (mut qs, mut scale, mut min) = (vec![0u8; slots * 16], vec![f16::ZERO; slots], vec![f16::ZERO; slots]);
            for (first_block, lane, row) in rows_of() {
                for b in 0..nb {
                    let blk = first_block + b;
                    for (e, &code) in row.codes[b * 32..(b + 1) * 32].iter().enumerate() {
                        let (at, high) = nibble_offset(order, nb, blk, lane, e);
                        qs[at] |= if high { code << 4 } else { code };
                    }
                    scale[blk * PANEL + lane] = f16::from_f32(row.scale[b]);
                    min[blk * PANEL + lane] = f16::from_f32(row.min[b]);
                }
            }
            Packed::Nibble { qs, scale, min, order }
        }
        TensorType::Q8_0 | TensorType::Q5_0 | TensorType::Q5_1 | TensorType::Q5K | TensorType::IQ4NL | TensorType::IQ4XS => {
            let codes = match ttype {
                TensorType::Q5_0 => CodeLayout::Five { zero: 16 },
                TensorType::Q5_1 | TensorType::Q5K => CodeLayout::Five { zero: 0 },
                _ => CodeLayout::Eight,
            };
            // Padding rows: code 0 with scale 0.
            let mut qs = vec![0u8; panels * nb * codes.block_bytes()];
            let mut scale = vec![f16::ZERO; slots];
            let mut mins = matches!(ttype, TensorType::Q5_1 | TensorType::Q5K).then(|| vec![f16::ZERO; slots]);
            for (first_block, lane, row) in rows_of() {
                for b in 0..nb {
                    let blk = first_block + b;
                    for (e, &code) in row.codes[b * 32..(b + 1) * 32].iter().enumerate() {
                        codes.store(&mut qs, blk, lane, e, code as i32 - 128);
                    }
                    scale[blk * PANEL + lane] = f16::from_f32(row.scale[b]);
                    if let Some(mins) = &mut mins {
                        mins[blk * PANEL + lane] = f16::from_f32(row.min[b]);
                    }
                }
            }
            Packed::Int8 { qs, scale, min: mins, order, codes }
        }
        TensorType::Q2K | TensorType::Q3K | TensorType::Q6K => repack_per_16(ttype, data, rows, cols),
    }
}

/// Q2_K, Q3_K, Q6_K (and for ggml's order Q5_K, its scales kept exact)
/// repacked with a scale per 16 weights (see `Packed::Int6`).
fn repack_per_16(ttype: TensorType, data: &[u8], rows: usize, cols: usize) -> Packed {
    let (nb, panels) = (cols / 32, rows.div_ceil(PANEL));
    let slots = panels * nb * PANEL;
    let row_bytes = data.len() / rows.max(1);
    let codes = match ttype {
        TensorType::Q2K => CodeLayout::Four { zero: 0 },
        TensorType::Q3K => CodeLayout::Four { zero: 4 },
        _ => CodeLayout::Six,
    };
    // Q5_K's rows decode as 8-bit codes with a scale and minimum per 32.
    let (offset, halves_per_scale) = if ttype == TensorType::Q5K { (128, 2) } else { (32, 1) };
    let mut qs = vec![0u8; panels * nb * codes.block_bytes()];
    let mut scale = vec![0f32; slots * 2];
    let mut mins = matches!(ttype, TensorType::Q2K | TensorType::Q5K).then(|| vec![0f32; slots * 2]);
    for r in 0..rows {
        let (first_block, lane) = (r / PANEL * nb, r % PANEL);
        let row = decode_row(ttype, &data[r * row_bytes..(r + 1) * row_bytes], cols);
        for b in 0..nb {
            let blk = first_block + b;
            for (e, &code) in row.codes[b * 32..(b + 1) * 32].iter().enumerate() {
                codes.store(&mut qs, blk, lane, e, code as i32 - offset);
            }
            for h in 0..2 {
                let at = (b * 2 + h) / halves_per_scale;
                scale[(blk * 2 + h) * PANEL + lane] = row.scale[at];
                if let Some(mins) = &mut mins {
                    mins[(blk * 2 + h) * PANEL + lane] = row.min[at];
                }
            }
        }
    }
    Packed::Int6 { qs, scale, min: mins, codes }
}

impl Packed {
    /// Row `r` (of `cols` elements) as floats: embedding lookup and tests.
    pub fn row_f32(&self, r: usize, cols: usize, out: &mut [f32]) {
        let (nb, lane) = (cols / 32, r % PANEL);
        let block = |b: usize| r / PANEL * nb + b;
        match self {
            Packed::OnSuperBlocks(inner) => inner.row_f32(r, cols, out),
            Packed::Int16 { qs, scale } => {
                for (e, o) in out.iter_mut().enumerate() {
                    *o = scale[r] * qs[int16_offset(block(e / 32), lane, e % 32)] as f32;
                }
            }
            Packed::Bf16(w) => {
                for (e, o) in out.iter_mut().enumerate() {
                    *o = f32::from_bits((w[int16_offset(block(e / 32), lane, e % 32)] as u32) << 16);
                }
            }
            Packed::Float(w) => {
                let first = r / PANEL * cols * PANEL + lane;
                out.iter_mut().enumerate().for_each(|(k, o)| *o = w[first + k * PANEL]);
            }
            Packed::Nibble { qs, scale, min, order } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let blk = block(i / 32);
                    let (at, high) = nibble_offset(*order, nb, blk, lane, i % 32);
                    let byte = qs[at];
                    let q = if high { byte >> 4 } else { byte & 0xF };
                    *o = scale[blk * PANEL + lane].to_f32() * q as f32 + min[blk * PANEL + lane].to_f32();
                }
            }
            Packed::Int8 { qs, scale, min, codes, .. } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let blk = block(i / 32);
                    let q = codes.value(qs, blk, lane, i % 32);
                    *o = scale[blk * PANEL + lane].to_f32() * q as f32 + min.as_ref().map_or(0.0, |m| m[blk * PANEL + lane].to_f32());
                }
            }
            Packed::Int6 { qs, scale, min, codes } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let blk = block(i / 32);
                    let q = codes.value(qs, blk, lane, i % 32);
                    let s = (blk * 2 + i % 32 / 16) * PANEL + lane;
                    *o = scale[s] * q as f32 + min.as_ref().map_or(0.0, |m| m[s]);
                }
            }
            // As ggml's dequantize_row_q4_K and _q6_K compute them.
            Packed::SuperNibble { qs, scale, min, d, dmin } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let blk = block(i / 32);
                    let (at, high) = nibble_offset(Arithmetic::Fast, nb, blk, lane, i % 32);
                    let q = if high { qs[at] >> 4 } else { qs[at] & 0xF };
                    let s = (r / PANEL * (cols / 256) + i / 256) * PANEL + lane;
                    let (d1, m1) = (d[s].to_f32() * scale[blk * PANEL + lane] as f32, dmin[s].to_f32() * min[blk * PANEL + lane] as f32);
                    *o = d1 * q as f32 - m1;
                }
            }
            Packed::SuperInt6 { qs, scale, d } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let blk = block(i / 32);
                    let q = qs[blk * BYTE_BLOCK + byte_offset(lane, i % 32)] as i32 - 32;
                    let s = (r / PANEL * (cols / 256) + i / 256) * PANEL + lane;
                    *o = d[s].to_f32() * scale[(blk * 2 + i % 32 / 16) * PANEL + lane] as f32 * q as f32;
                }
            }
        }
    }

    /// Whether the matmul needs `QuantizedActs::quantize`'s 8-bit blocks
    /// for these weights (float and 14-bit weights read other forms).
    pub fn reads_8bit_acts(&self) -> bool {
        !matches!(self, Packed::Float(_) | Packed::Int16 { .. } | Packed::Bf16(_))
    }

    /// Whether the matmul needs `QuantizedActs::quantize_16` for these weights.
    pub fn reads_16bit_acts(&self) -> bool {
        matches!(self, Packed::Int16 { .. })
    }

    /// Whether the matmul needs `QuantizedActs::tile_bf16` for these weights.
    pub fn reads_bf16_acts(&self) -> bool {
        matches!(self, Packed::Bf16(_))
    }

    /// Whether the matmul needs `QuantizedActs::quantize_super_blocks` for these weights.
    pub fn reads_super_blocks(&self) -> bool {
        matches!(self, Packed::SuperNibble { .. } | Packed::SuperInt6 { .. } | Packed::OnSuperBlocks(_))
    }

    pub fn bytes(&self) -> usize {
        match self {
            Packed::OnSuperBlocks(inner) => inner.bytes(),
            Packed::Int16 { qs, scale } => qs.len() * 2 + scale.len() * 4,
            Packed::Bf16(w) => w.len() * 2,
            Packed::Float(w) => w.len() * 4,
            Packed::Int8 { qs, scale, min, .. } => qs.len() + (scale.len() + min.as_ref().map_or(0, Vec::len)) * 2,
            Packed::Int6 { qs, scale, min, .. } => qs.len() + (scale.len() + min.as_ref().map_or(0, Vec::len)) * 4,
            Packed::Nibble { qs, scale, min, .. } => qs.len() + (scale.len() + min.len()) * 2,
            Packed::SuperNibble { qs, scale, min, d, dmin } => qs.len() + scale.len() + min.len() + (d.len() + dmin.len()) * 2,
            Packed::SuperInt6 { qs, scale, d } => qs.len() + scale.len() + d.len() * 2,
        }
    }

    /// Whether rows of `other` can be stacked under rows of `self`.
    fn same_format(&self, other: &Packed) -> bool {
        match (self, other) {
            (Packed::Nibble { order: a, .. }, Packed::Nibble { order: b, .. }) => a == b,
            (Packed::Int8 { order: a, min: m, codes: c, .. }, Packed::Int8 { order: b, min: n, codes: d, .. }) => {
                a == b && m.is_some() == n.is_some() && c == d
            }
            (Packed::Int6 { min: m, codes: c, .. }, Packed::Int6 { min: n, codes: d, .. }) => m.is_some() == n.is_some() && c == d,
            (Packed::OnSuperBlocks(a), Packed::OnSuperBlocks(b)) => a.same_format(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// Stacks the rows of matrices of one format, or gives them back where
    /// the formats differ. Every part but the last must have whole panels
    /// of rows.
    pub fn concat(parts: Vec<Packed>) -> Result<Packed, Vec<Packed>> {
        if parts.is_empty() || !parts.iter().all(|p| p.same_format(&parts[0])) {
            return Err(parts);
        }
        if let Packed::OnSuperBlocks(_) = parts[0] {
            let inner = parts.into_iter().map(|p| match p {
                Packed::OnSuperBlocks(inner) => *inner,
                _ => unreachable!("formats checked above"),
            });
            return Ok(Packed::OnSuperBlocks(Box::new(Packed::concat(inner.collect()).expect("one format"))));
        }
        let mut it = parts.into_iter();
        let mut acc = it.next().expect("not empty");
        for p in it {
            match (&mut acc, p) {
                (Packed::Float(a), Packed::Float(b)) => a.extend(b),
                (Packed::Bf16(a), Packed::Bf16(b)) => a.extend(b),
                (Packed::Int16 { qs, scale }, Packed::Int16 { qs: q2, scale: s2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                }
                (Packed::Int8 { qs, scale, min, .. }, Packed::Int8 { qs: q2, scale: s2, min: m2, .. }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                    if let (Some(min), Some(m2)) = (min, m2) {
                        min.extend(m2);
                    }
                }
                (Packed::Int6 { qs, scale, min, .. }, Packed::Int6 { qs: q2, scale: s2, min: m2, .. }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                    if let (Some(min), Some(m2)) = (min, m2) {
                        min.extend(m2);
                    }
                }
                (Packed::Nibble { qs, scale, min, order }, Packed::Nibble { qs: q2, scale: s2, min: m2, order: o2 }) if *order == o2 => {
                    qs.extend(q2);
                    scale.extend(s2);
                    min.extend(m2);
                }
                (Packed::SuperNibble { qs, scale, min, d, dmin }, Packed::SuperNibble { qs: q2, scale: s2, min: m2, d: d2, dmin: dm2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                    min.extend(m2);
                    d.extend(d2);
                    dmin.extend(dm2);
                }
                (Packed::SuperInt6 { qs, scale, d }, Packed::SuperInt6 { qs: q2, scale: s2, d: d2 }) => {
                    qs.extend(q2);
                    scale.extend(s2);
                    d.extend(d2);
                }
                _ => unreachable!("formats checked above"),
            }
        }
        Ok(acc)
    }
}
