//! Batched matmul `out[m][n] = x[m][k] · W[n][k]ᵀ` over packed weights.
//!
//! Activations are quantized once per matmul to 8-bit blocks of 32, so each
//! weight panel (16 rows, see `quant`) is loaded and unpacked once per block
//! and reused against up to TILE_ACTS activation rows. Integer sums are
//! exact; each output then accumulates `isum * (w_scale * x_scale)` terms
//! with fused multiply-adds in a fixed order (`portable_dot` spells it out)
//! that does not depend on the ISA or on how many rows are in the batch:
//! every kernel gives the portable reference's bits, and a sequence's
//! results are the same alone or batched.

pub use super::acts::{QuantizedActs, RowBatch, Tile, TILE_ACTS};
use super::bf16_tiles;
use super::pool::{ComputePool, SharedOut};
use super::quant::{byte_offset, int16_offset, nibble_offset, Packed, BYTE_BLOCK, PANEL};
use super::{Arithmetic, Isa, IsaKind};

/// A weight matrix: `rows` output features of `cols` inputs each.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub w: Packed,
}

/// The weights a kernel reads and the activations it reads them against:
/// for `Packed::OnSuperBlocks`, its inner weights and the activations'
/// super-blocks in blocks of 32.
#[derive(Clone, Copy)]
struct Weights<'a> {
    rows: usize,
    cols: usize,
    w: &'a Packed,
}

impl Matrix {
    fn against<'a>(&'a self, q: &'a QuantizedActs) -> (Weights<'a>, &'a QuantizedActs) {
        match &self.w {
            Packed::OnSuperBlocks(inner) => (Weights { rows: self.rows, cols: self.cols, w: inner }, q.super_blocks_as_blocks()),
            w => (Weights { rows: self.rows, cols: self.cols, w }, q),
        }
    }
}

impl QuantizedActs {
    /// Quantizes `x` (`rows` x `cols`, cols a multiple of 32), reusing
    /// buffers; rows are shared out over the pool.
    pub fn quantize(&mut self, pool: &ComputePool, isa: Isa, x: &[f32], rows: usize, cols: usize) {
        assert!(cols.is_multiple_of(32) && x.len() == rows * cols);
        let blocks = rows * cols / 32;
        self.rows = rows;
        self.cols = cols;
        self.qs.resize(rows * cols, 0);
        self.scale.resize(blocks, 0.0);
        self.sum.resize(blocks, 0.0);
        self.isum16.resize(2 * blocks, 0);
        self.isum4.resize(8 * blocks, 0);
        // Super-blocks, 13-bit codes and bf16 tiles are made on request, for these rows.
        self.sb.d.clear();
        self.q16.clear();
        self.bf16.clear();
        self.sb_as_blocks = Default::default();
        let nb = cols / 32;
        let (qs, scale, sum, isum16, isum4) = (
            SharedOut::new(&mut self.qs),
            SharedOut::new(&mut self.scale),
            SharedOut::new(&mut self.sum),
            SharedOut::new(&mut self.isum16),
            SharedOut::new(&mut self.isum4),
        );
        pool.run_rows(rows, &|range| {
            // SAFETY: each task writes the blocks of its own rows only.
            let (qs, scale, sum, isum16, isum4) = unsafe {
                (
                    qs.rows(range.clone(), cols),
                    scale.rows(range.clone(), nb),
                    sum.rows(range.clone(), nb),
                    isum16.rows(range.clone(), 2 * nb),
                    isum4.rows(range.clone(), 8 * nb),
                )
            };
            let x = &x[range.start * cols..range.end * cols];
            for (b, xb) in x.chunks_exact(32).enumerate() {
                let q: &mut [i8; 32] = (&mut qs[b * 32..(b + 1) * 32]).try_into().unwrap();
                let (d, lo, hi) = quantize_block(isa, xb.try_into().unwrap(), q);
                isum16[2 * b] = lo;
                isum16[2 * b + 1] = hi;
                for (s, four) in isum4[8 * b..8 * b + 8].iter_mut().zip(q.chunks_exact(4)) {
                    *s = four.iter().map(|&c| c as i32).sum();
                }
                // Scales are kept at f16 precision, as ggml's Q8_1 blocks
                // keep them: greedy outputs then match llama.cpp's.
                let f16 = |v: f32| half::f16::from_f32(v).to_f32();
                scale[b] = f16(d);
                sum[b] = f16(d * (lo + hi) as f32);
            }
        });
    }
}

impl QuantizedActs {
    /// The shape of `rows` x `cols` activations and no codes: what float
    /// weights, which read the float input, take.
    pub fn shape_only(&mut self, rows: usize, cols: usize) {
        (self.rows, self.cols) = (rows, cols);
        self.qs.clear();
        self.scale.clear();
        self.sum.clear();
        self.isum16.clear();
        self.isum4.clear();
        self.sb.d.clear();
        self.q16.clear();
        self.bf16.clear();
        self.sb_as_blocks = Default::default();
    }

    /// The rows `quantize` or `shape_only` took (`x` again) in 13-bit codes
    /// as well, a scale per block of 32, for `Packed::Int16` weights: the
    /// same codes on every ISA (nearest, ties to even).
    pub fn quantize_16(&mut self, pool: &ComputePool, isa: Isa, x: &[f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(cols.is_multiple_of(32) && x.len() == rows * cols);
        let nb = cols / 32;
        self.q16.resize(rows * cols, 0);
        self.scale16.resize(rows * nb, 0.0);
        let (qs, scale) = (SharedOut::new(&mut self.q16), SharedOut::new(&mut self.scale16));
        pool.run_rows(rows, &|range| {
            // SAFETY: each task writes the blocks of its own rows only.
            let (qs, scale) = unsafe { (qs.rows(range.clone(), cols), scale.rows(range.clone(), nb)) };
            let x = &x[range.start * cols..range.end * cols];
            for ((xb, qb), scale) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).zip(scale) {
                *scale = quantize_block_16(isa, xb.try_into().unwrap(), qb.try_into().unwrap());
            }
        });
    }

    /// The rows `quantize` or `shape_only` took (`x` again) in bf16 as well,
    /// for `Packed::Bf16` weights.
    pub fn tile_bf16(&mut self, pool: &ComputePool, isa: Isa, x: &[f32]) {
        bf16_tiles::tile_acts(pool, isa, x, self.rows, self.cols, &mut self.bf16);
    }

    /// Quantizes the rows `quantize` took (`x` again) to super-blocks as
    /// well, for K-quant weights in ggml's order (`Packed::reads_super_blocks`);
    /// `batches`: for each row, the batch llama.cpp would multiply it in.
    pub fn quantize_super_blocks(&mut self, pool: &ComputePool, x: &[f32], batches: &[RowBatch]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(cols.is_multiple_of(256) && x.len() == rows * cols && batches.len() == rows);
        let sbs = cols / 256;
        let sb = &mut self.sb;
        sb.batches.clear();
        sb.batches.extend_from_slice(batches);
        sb.qs.resize(rows * cols, 0);
        sb.d.resize(rows * sbs, 0.0);
        sb.bsum16.resize(rows * sbs * 16, 0);
        let (qs, d, bsum16) = (SharedOut::new(&mut sb.qs), SharedOut::new(&mut sb.d), SharedOut::new(&mut sb.bsum16));
        pool.run_rows(rows, &|range| {
            // SAFETY: each task writes the super-blocks of its own rows only.
            let (qs, d, bsum16) =
                unsafe { (qs.rows(range.clone(), cols), d.rows(range.clone(), sbs), bsum16.rows(range.clone(), 16 * sbs)) };
            let x = &x[range.start * cols..range.end * cols];
            for (s, xs) in x.chunks_exact(256).enumerate() {
                d[s] = quantize_super_block(xs, &mut qs[s * 256..(s + 1) * 256], &mut bsum16[s * 16..(s + 1) * 16]);
            }
        });
    }
}

/// The largest 13-bit activation code (see `quant::INT16_MAX`).
pub(super) const ACT16_MAX: f32 = 4095.0;

/// One super-block of 256 to 8 bits as ggml's `quantize_row_q8_K` does it:
/// the value of largest magnitude (the first, on ties) becomes -127, the
/// rest are rounded to nearest even; the scale, and the sums of each 16.
fn quantize_super_block(x: &[f32], q: &mut [i8], bsum16: &mut [i32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    if amax == 0.0 {
        q.fill(0);
        bsum16.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (round_ties_even(iscale * v) as i32).min(127) as i8;
    }
    for (sum, codes) in bsum16.iter_mut().zip(q.chunks_exact(16)) {
        *sum = codes.iter().map(|&c| c as i32).sum();
    }
    1.0 / iscale
}

/// One block of 32 to 13-bit codes (see `QuantizedActs::quantize_16`): the scale.
fn quantize_block_16(isa: Isa, x: &[f32; 32], q: &mut [i16; 32]) -> f32 {
    // SAFETY: the Isa was detected on this CPU.
    #[cfg(target_arch = "x86_64")]
    match isa.kind() {
        IsaKind::Avx512Vnni => return unsafe { super::x86::quantize_block_16_avx512(x, q) },
        IsaKind::Avx2 => return unsafe { super::x86::quantize_block_16_avx2(x, q) },
        IsaKind::Portable => {}
    }
    let _ = isa;
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let inv = if amax > 0.0 { ACT16_MAX / amax } else { 0.0 };
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = round_ties_even(v * inv) as i16;
    }
    amax / ACT16_MAX
}

/// One block of 32 to 8 bits, as ggml's `quantize_row_q8_1` rounds it:
/// the scale, and the integer sums of each half.
fn quantize_block(isa: Isa, x: &[f32; 32], q: &mut [i8; 32]) -> (f32, i32, i32) {
    // SAFETY: the Isa was detected on this CPU.
    #[cfg(target_arch = "x86_64")]
    match isa.kind() {
        IsaKind::Avx512Vnni => return unsafe { super::x86::quantize_block_avx512(x, q) },
        IsaKind::Avx2 => return unsafe { super::x86::quantize_block_avx2(x, q) },
        IsaKind::Portable => {}
    }
    let _ = isa;
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = round_ties_even(v * inv) as i8;
    }
    let half = |h: usize| q[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum::<i32>();
    (amax / 127.0, half(0), half(1))
}

/// `out[i * w.rows + r] = Σ_k x[i][k] · W[r][k]` for all activation rows i.
/// `x` is the float input (used by float weights) and `q` its quantized form.
pub fn matmul(pool: &ComputePool, isa: Isa, w: &Matrix, x: &[f32], q: &QuantizedActs, out: &mut [f32]) {
    let m = q.rows;
    assert_eq!(q.cols, w.cols);
    assert_eq!(out.len(), m * w.rows);
    assert!(!w.w.reads_super_blocks() || q.sb.d.len() * 256 == m * w.cols, "activations not quantized to super-blocks");
    assert!(!w.w.reads_16bit_acts() || q.q16.len() == m * w.cols, "activations not quantized to 13 bits");
    assert!(!w.w.reads_bf16_acts() || q.bf16.len() == bf16_tiles::padded_rows(m) * w.cols, "activations not in bf16");
    #[cfg(target_arch = "x86_64")]
    if let (Packed::Bf16(wb), true) = (&w.w, isa.amx()) {
        super::amx::matmul(pool, wb, w.rows, w.cols, &q.bf16, m, out);
        return;
    }
    let panels = w.rows.div_ceil(PANEL);
    let (w, q) = w.against(q);
    let shared = SharedOut::new(out);
    // Float and 16-bit panels two at a time where the CPU has the registers
    // for it (AVX-512: each activation loaded then feeds two multiply-adds).
    let pairs = matches!(w.w, Packed::Float(_) | Packed::Int16 { .. }) && isa.kind() == IsaKind::Avx512Vnni;
    let panel_range = |range: std::ops::Range<usize>| {
        // SAFETY: each call writes only its own panels' columns of every output row.
        let out = unsafe { shared.slice() };
        let mut tiles = [[[0f32; PANEL]; TILE_ACTS]; 2];
        let mut p = range.start;
        while p < range.end {
            if pairs && p + 1 < range.end {
                pair_rows(isa, w, x, q, p, &mut tiles, out);
                p += 2;
            } else {
                panel_rows(isa, w, x, q, p, &mut tiles[0], out);
                p += 1;
            }
        }
    };
    if m <= 4 {
        // A few rows (decode of a few sequences) are bound by reading the
        // weights: each thread streams a contiguous run of panels, so that
        // its prefetches (a panel ahead, see x86) land on panels it reads
        // next itself. Every task boundary restarts a stream from memory:
        // at m=1 the decode step's matrices took 0.84 of the time of four
        // runs per thread, at m=2 and 4 about 0.9. Claims of four panels:
        // each sets up a tile, which one panel a claim paid for every time.
        pool.run_streams(panels, 4, &panel_range);
        return;
    }
    // About a dozen tasks per thread balances the cores; at most 8 panels
    // per task keeps the hand-off cost small against the work.
    let per_task = (panels / (12 * pool.threads())).clamp(1, 8);
    let per_task = if pairs { per_task.max(2).next_multiple_of(2) } else { per_task };
    pool.run(panels.div_ceil(per_task), &|t| panel_range(t * per_task..((t + 1) * per_task).min(panels)));
}

/// Weight panel `p` against every activation row, TILE_ACTS rows at a time
/// through `tile` (the task's, set up once rather than for every panel).
fn panel_rows(isa: Isa, w: Weights, x: &[f32], q: &QuantizedActs, p: usize, tile: &mut Tile, out: &mut [f32]) {
    for i in (0..q.rows).step_by(TILE_ACTS) {
        let acts = TILE_ACTS.min(q.rows - i);
        tile_dot(isa, w, x, q, p, i, acts, tile);
        write_tile(w.rows, p, i, acts, tile, out);
    }
}

/// `panel_rows` for panels `p` and `p + 1` of float or 16-bit weights
/// together.
fn pair_rows(isa: Isa, w: Weights, x: &[f32], q: &QuantizedActs, p: usize, tiles: &mut [Tile; 2], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..q.rows).step_by(TILE_ACTS) {
        let acts = TILE_ACTS.min(q.rows - i);
        super::x86::pair_dot(isa, w.w, x, q, p, i, acts, tiles);
        write_tile(w.rows, p, i, acts, &tiles[0], out);
        write_tile(w.rows, p + 1, i, acts, &tiles[1], out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("panel pairs are x86 kernels");
}

/// Panel `p`'s sums with activation rows `i..i + acts` into their places.
fn write_tile(rows: usize, p: usize, i: usize, acts: usize, tile: &Tile, out: &mut [f32]) {
    let lanes = PANEL.min(rows - p * PANEL);
    for (a, row) in tile.iter().enumerate().take(acts) {
        let at = (i + a) * rows + p * PANEL;
        // A whole panel's copy has a fixed size, which is inlined: a
        // call to memmove per row took 2% of a batched decode step.
        if lanes == PANEL {
            out[at..at + PANEL].copy_from_slice(row);
        } else {
            out[at..at + lanes].copy_from_slice(&row[..lanes]);
        }
    }
}

/// Dots of panel `p` with activation rows `i..i+acts` into `tile[act][lane]`.
#[allow(clippy::too_many_arguments)]
fn tile_dot(isa: Isa, w: Weights, x: &[f32], q: &QuantizedActs, p: usize, i: usize, acts: usize, tile: &mut Tile) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::PORTABLE && super::x86::tile_dot(isa, w.w, x, q, p, i, acts, tile) {
        return;
    }
    let _ = isa;
    let lanes = PANEL.min(w.rows - p * PANEL);
    for (a, row) in tile.iter_mut().enumerate().take(acts) {
        for (lane, v) in row.iter_mut().enumerate().take(lanes) {
            *v = dot(w, x, q, p * PANEL + lane, i + a);
        }
    }
}

/// The reference dot product of weight row `r` with activation row `a`,
/// in the order every SIMD kernel uses: exact integer sums of 4 (4-bit
/// weights in ggml's order) or 32 (4-bit in the fast order, 8-bit) or 16
/// (6-bit) weights, each fused into a float accumulator in block order.
pub fn portable_dot(w: &Matrix, x: &[f32], q: &QuantizedActs, r: usize, a: usize) -> f32 {
    let (w, q) = w.against(q);
    dot(w, x, q, r, a)
}

/// Row `a` (of `n` values) of one of the activations' forms; empty where
/// that form was not made.
fn act_row<T>(v: &[T], a: usize, n: usize) -> &[T] {
    v.get(a * n..(a + 1) * n).unwrap_or(&[])
}

fn dot(w: Weights, x: &[f32], q: &QuantizedActs, r: usize, a: usize) -> f32 {
    let k = w.cols;
    let nb = k / 32;
    let (panel, lane) = (r / PANEL, r % PANEL);
    // The 8-bit forms, where they were made: 16-bit and float weights
    // have only the shape (`shape_only`), and read none of them.
    let xq = act_row(&q.qs, a, k);
    let (xs, xsum, xisum) = (act_row(&q.scale, a, nb), act_row(&q.sum, a, nb), act_row(&q.isum16, a, 2 * nb));
    // Σ code * x over elements `range` of block b, codes read by `code`.
    let isum = |b: usize, range: std::ops::Range<usize>, code: &dyn Fn(usize) -> i32| -> i32 {
        range.map(|e| code(e) * xq[b * 32 + e] as i32).sum()
    };
    let mut acc = 0f32;
    match w.w {
        Packed::OnSuperBlocks(_) => unreachable!("resolved by Matrix::against"),
        // One fused multiply-add per input, in input order (AMX's tiles
        // sum in an order of their own: they are held to a tolerance).
        Packed::Bf16(wb) => {
            for e in 0..k {
                let (wv, xv) = (wb[int16_offset(panel * nb + e / 32, lane, e % 32)], q.bf16[bf16_tiles::acts_offset(k, a, e)]);
                acc = bf16_tiles::from_bf16(wv).mul_add(bf16_tiles::from_bf16(xv), acc);
            }
        }
        // Exact integer sums of each block, fused in block order.
        Packed::Int16 { qs, scale } => {
            let (x16, xs16) = (&q.q16[a * k..(a + 1) * k], &q.scale16[a * nb..(a + 1) * nb]);
            for b in 0..nb {
                let isum: i32 = (0..32).map(|e| qs[int16_offset(panel * nb + b, lane, e)] as i32 * x16[b * 32 + e] as i32).sum();
                acc = (isum as f32).mul_add(scale[r] * xs16[b], acc);
            }
        }
        // One fused multiply-add per input, in input order: each SIMD lane
        // of the float kernels is one row's such chain.
        Packed::Float(wf) => {
            let first = panel * k * PANEL + lane;
            for (i, &xv) in x[a * k..(a + 1) * k].iter().enumerate() {
                acc = wf[first + i * PANEL].mul_add(xv, acc);
            }
        }
        Packed::Nibble { qs, scale, min, order } => {
            let code = |blk: usize, e: usize| {
                let (at, high) = nibble_offset(*order, nb, blk, lane, e);
                let byte = qs[at];
                (if high { byte >> 4 } else { byte & 0xF }) as i32
            };
            // ggml's order for 4-bit weights (its AVX2 `vec_dot_q4_1_q8_1`):
            // eight lanes, lane j fusing the sum of elements 4j..4j+4 of
            // each block in block order; the fast order fuses each block's
            // whole sum into one. The minimums are summed apart, then added
            // (ggml: after a fixed tree over the lanes). Greedy outputs in
            // ggml's order match llama.cpp's bit for bit, where any other
            // order drifts within a few tokens (activation quantization
            // turns last-bit differences into whole steps).
            let steps = match order {
                Arithmetic::Ggml => 8,
                Arithmetic::Fast => 1,
            };
            let mut lanes = [0f32; 8];
            let mut mins = 0f32;
            for b in 0..nb {
                let blk = panel * nb + b;
                let ws = scale[blk * PANEL + lane].to_f32() * xs[b];
                let width = 32 / steps;
                for (j, l) in lanes.iter_mut().enumerate().take(steps) {
                    *l = (isum(b, width * j..width * (j + 1), &|e| code(blk, e)) as f32).mul_add(ws, *l);
                }
                mins = min[blk * PANEL + lane].to_f32().mul_add(xsum[b], mins);
            }
            acc = match order {
                Arithmetic::Ggml => ggml_tree8(&lanes) + mins,
                Arithmetic::Fast => lanes[0] + mins,
            };
        }
        Packed::Int8 { qs, scale, min, order, codes } => {
            // ggml's order (its AVX2 `vec_dot_q8_0_q8_0`, and llamafile's
            // tinyBLAS, which llama.cpp runs for Q8_0 and Q5_0): eight
            // lanes, lane j fusing the sum of elements 4j..4j+4 of each
            // block, then ggml's tree; the fast order fuses whole blocks.
            let steps = match order {
                Arithmetic::Ggml => 8,
                Arithmetic::Fast => 1,
            };
            let width = 32 / steps;
            let mut lanes = [0f32; 8];
            for (b, &x_scale) in xs.iter().enumerate() {
                let blk = panel * nb + b;
                let code = |e: usize| codes.value(qs, blk, lane, e);
                let ws = scale[blk * PANEL + lane].to_f32() * x_scale;
                for (j, l) in lanes.iter_mut().enumerate().take(steps) {
                    *l = (isum(b, width * j..width * (j + 1), &code) as f32).mul_add(ws, *l);
                }
            }
            // Q5_1's minimums as Q4_1's (see the 4-bit weights above).
            let mins = min
                .as_ref()
                .map_or(0.0, |min| (0..nb).fold(0f32, |mins, b| min[(panel * nb + b) * PANEL + lane].to_f32().mul_add(xsum[b], mins)));
            acc = match order {
                Arithmetic::Ggml => ggml_tree8(&lanes),
                Arithmetic::Fast => lanes[0],
            };
            if min.is_some() {
                acc += mins;
            }
        }
        Packed::SuperNibble { qs, scale, min, d, dmin } => {
            // ggml's Q4_K against Q8_K (its repacked kernels, `gemv_` and
            // `gemm_q4_K_8x8_q8_K`): the exact integer Σ scale_j · (block
            // j's dot) and Σ min_j · (block j's activation sum), over a
            // super-block or (rows in fours) over two blocks, each fused
            // with the product of the two super-block scales; the
            // minimums' sum taken from the rest last.
            let (sb, sbs) = (&q.sb, k / 256);
            let mut mins = 0f32;
            for s in 0..sbs {
                let (at, x_scale) = ((panel * sbs + s) * PANEL + lane, sb.d[a * sbs + s]);
                let (mut isum_s, mut imin_s) = (0i32, 0i32);
                for j in 0..8 {
                    let (b, blk) = (s * 8 + j, panel * nb + s * 8 + j);
                    let code = |e: usize| {
                        let (at, high) = nibble_offset(Arithmetic::Fast, nb, blk, lane, e);
                        (if high { qs[at] >> 4 } else { qs[at] & 0xF }) as i32
                    };
                    let dot: i32 = (0..32).map(|e| code(e) * sb.qs[a * k + b * 32 + e] as i32).sum();
                    let bsum = &sb.bsum16[(a * sbs + s) * 16 + 2 * j..];
                    isum_s += scale[blk * PANEL + lane] as i32 * dot;
                    imin_s += min[blk * PANEL + lane] as i32 * (bsum[0] + bsum[1]);
                    // llama.cpp's four-row kernel (`gemm_q4_K_8x8_q8_K`)
                    // fuses the sums of every two blocks, its one-row kernel
                    // those of the whole super-block.
                    if j == 7 || (sb.batches[a].in_fours() && j % 2 == 1) {
                        acc = (isum_s as f32).mul_add(d[at].to_f32() * x_scale, acc);
                        mins = (imin_s as f32).mul_add(dmin[at].to_f32() * x_scale, mins);
                        (isum_s, imin_s) = (0, 0);
                    }
                }
            }
            acc -= mins;
        }
        Packed::SuperInt6 { qs, scale, d } => {
            // ggml's Q6_K against Q8_K. One row (its AVX2
            // `vec_dot_q6_K_q8_K`): eight lanes per super-block, lane t the
            // exact integer sum of elements 4t..4t+4 of each of its blocks
            // times their scale, less 32 times Σ scale · (activation sum)
            // over block t's two halves; each lane fused with the product
            // of the super-block scales, then ggml's tree. Tiled (its
            // AVX-512 VNNI tiled matmul): the lanes' integers summed, times
            // the weights' super-block scale, fused with the activations'
            // (GCC contracts the kernel's multiply and add).
            let (sb, sbs) = (&q.sb, k / 256);
            let scale_of = |blk: usize, half: usize| scale[(blk * 2 + half) * PANEL + lane] as i32;
            let tiled = sb.batches[a].tiled();
            let mut lanes = [0f32; 8];
            for s in 0..sbs {
                let bsum = &sb.bsum16[(a * sbs + s) * 16..];
                let (at, x_scale) = ((panel * sbs + s) * PANEL + lane, sb.d[a * sbs + s]);
                let ds = d[at].to_f32() * x_scale;
                let mut isum_s = 0i32;
                for (t, l) in lanes.iter_mut().enumerate() {
                    let own = panel * nb + s * 8 + t;
                    let mut isum_t = -32 * (bsum[2 * t] * scale_of(own, 0) + bsum[2 * t + 1] * scale_of(own, 1));
                    for g in 0..8 {
                        let (b, blk) = (s * 8 + g, panel * nb + s * 8 + g);
                        let dot: i32 = (4 * t..4 * t + 4)
                            .map(|e| qs[blk * BYTE_BLOCK + byte_offset(lane, e)] as i32 * sb.qs[a * k + b * 32 + e] as i32)
                            .sum();
                        isum_t += scale_of(blk, t / 4) * dot;
                    }
                    isum_s += isum_t;
                    *l = (isum_t as f32).mul_add(ds, *l);
                }
                acc = (isum_s as f32 * d[at].to_f32()).mul_add(x_scale, acc);
            }
            if !tiled {
                acc = ggml_tree8(&lanes);
            }
        }
        Packed::Int6 { qs, scale, min, codes } => {
            for b in 0..nb {
                let blk = panel * nb + b;
                let code = |e: usize| codes.value(qs, blk, lane, e);
                for h in 0..2 {
                    let s = (blk * 2 + h) * PANEL + lane;
                    let sum = isum(b, 16 * h..16 * h + 16, &code);
                    acc = (sum as f32).mul_add(scale[s] * xs[b], acc);
                    // A minimum times the half's activations: their integer sum.
                    if let Some(min) = min {
                        acc = (xisum[2 * b + h] as f32).mul_add(min[s] * xs[b], acc);
                    }
                }
            }
        }
    }
    acc
}

/// Eight float lanes summed as ggml's AVX2 `hsum_float_8` does: the
/// halves, then pairs two apart, then the last two.
fn ggml_tree8(l: &[f32; 8]) -> f32 {
    let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Rounds half to even like `f32::round_ties_even`, without the libm call
/// that baseline x86-64 compiles it to: adding 1.5 * 2^23 leaves no fraction
/// bits, so the FPU's default rounding does the work (|x| <= 2^22 here).
#[inline]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}
