//! Attention over the paged KV pool for a ragged batch: every token attends
//! to its own sequence's cached positions 0..=pos (causal within its chunk,
//! since the chunk's K and V were written before this runs), or on a
//! sliding-window layer to the last `window` of them.
//!
//! In ggml's order (the default, `Arithmetic::Ggml`) the arithmetic is that
//! of llama.cpp's CPU flash attention over an f16 cache, operation for
//! operation: the query rounded to f16, Q·K summed in four 16-lane fused
//! accumulators and reduced as a tree, an online softmax with the C
//! library's `expf`, and the weighted V sum kept in f16. Together with the
//! matmul, RoPE and SiLU orders this makes greedy outputs equal llama.cpp's
//! bit for bit (see tests/golden.rs). The fast order keeps the V sums in
//! f32 with one maximum per run, which lets its scores and V sums run as
//! register tiles over the run's rows converted once (`scores_fast`,
//! `softmax_block`, `weigh_values`).
//!
//! What is ours is the schedule: positions go in runs of `RUN`, first every
//! score of the run, then the softmax bookkeeping and its `expf` calls, then
//! the V sums. Each stage's operations are independent of one another, so
//! the core overlaps them, where position by position every step waited on
//! the one before (score, compare, `expf`, multiply-add, round).

use std::mem::MaybeUninit;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kernels::expf::ggml_expf;
use crate::kernels::pool::{ComputePool, SharedOut};
use crate::kernels::{prefetch, Arithmetic, Isa, IsaKind};
use crate::kv::KvPool;

use super::batch::{SeqChunk, TokenSlot};

/// What attention computes with: the heads' shape (`heads` query heads of
/// `head_dim` over `kv_heads` KV heads), the instruction set and the order
/// of arithmetic, the scores' scale and soft cap, and the window.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub isa: Isa,
    pub arithmetic: Arithmetic,
    /// Each Q·K times this: 1/sqrt(head_dim), or 1 where the model scaled
    /// its queries itself (Gemma).
    pub scale: f32,
    /// Scores as `cap * tanh(score / cap)` (Gemma 2), ggml's way: the
    /// scale divided by the cap first.
    pub softcap: Option<f32>,
    /// Positions a token sees, itself included: `usize::MAX` for all.
    pub window: usize,
}

impl Attention {
    /// Full causal attention scaled by 1/sqrt(head_dim), uncapped.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize, isa: Isa, arithmetic: Arithmetic) -> Attention {
        let scale = 1.0 / (head_dim as f32).sqrt();
        Attention { heads, kv_heads, head_dim, isa, arithmetic, scale, softcap: None, window: usize::MAX }
    }

    /// Width of a token's queries (and of its attention output).
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Head dimensions up to this fit the per-task stack buffers.
pub const MAX_HEAD_DIM: usize = 256;
/// Query heads sharing one KV head, at most (grouped-query attention).
pub const MAX_GROUP: usize = 16;
/// Positions per run: one 16-wide `expf` call per query head.
const RUN: usize = 16;

/// The vector arithmetic on one head's row of `hd` values.
trait HeadMath {
    type Row: Copy;
    fn zero() -> Self::Row;
    /// An f16 cache row as f32, into `row`.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn load(src: &[f16], hd: usize, row: &mut Self::Row);
    /// A query row rounded to f16 precision, as ggml converts it.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn load_query(src: &[f32], hd: usize, row: &mut Self::Row);
    /// ggml's V sums of one token's query heads (they see the same `seen`
    /// positions of the run), position by position in f16 precision: where
    /// position p set head i's new maximum (bit p of `new_max[i]`),
    /// `acc[i] = f16(acc[i] * factor[i][p])` and then `f16(v[p] + acc[i])`,
    /// otherwise `acc[i] = f16(v[p] * factor[i][p] + acc[i])`, fused.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn weigh_values_ggml(
        acc: &mut [Self::Row],
        v: &[Self::Row; RUN],
        factor: &[[f32; RUN]],
        new_max: &[u32],
        seen: usize,
        hd: usize,
    );
    /// The fast order's V sums of one token's query heads (they see the
    /// same `seen` positions of the run): each `acc[i] * rescale[i]`, then
    /// `weight[i][p] * v[p]` added for every p < seen in order, fused, in
    /// f32.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn weigh_values(acc: &mut [Self::Row], v: &[Self::Row; RUN], weight: &[[f32; RUN]], rescale: &[f32], seen: usize, hd: usize);
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn store(acc: &Self::Row, scale: f32, out: &mut [f32], hd: usize);
    /// `score[i][p] = dot(k_p, q_i) * scale` for every pair i and at least
    /// the positions p < seen[i] of the run (the rest are never read), the
    /// dot in ggml's `vec_dot_f16` order: per 64 elements four 16-lane fused
    /// accumulators, then a fixed tree.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    unsafe fn scores(k_rows: &[&[f16]], kv_off: usize, hd: usize, q: &[Self::Row], seen: &[usize], scale: f32, score: &mut [[f32; RUN]]);
    /// The online softmax over the first `seen` scores of a run: for each
    /// position, a new maximum rescales what came before by e^(old - new)
    /// and weighs the position 1; otherwise the position weighs e^(s - max)
    /// (`expf` as the C library computes it). Returns the positions that
    /// set a new maximum as bits, with their rescale factors, and the other
    /// positions' weights, in `factor`. Position by position here; the
    /// vector rows do the same steps a run at a time.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn softmax_run(score: &[f32; RUN], seen: usize, state: &mut Softmax, factor: &mut [f32; RUN]) -> u32 {
        let mut new_max = 0u32;
        for p in 0..seen {
            let x = score[p];
            if x > state.max {
                new_max |= 1 << p;
                factor[p] = std::mem::replace(&mut state.max, x) - x;
            } else {
                factor[p] = x - state.max;
            }
        }
        factor[..seen].iter_mut().for_each(|v| *v = v.exp());
        for (p, &f) in factor.iter().enumerate().take(seen) {
            let (rescale, weight) = if new_max & (1 << p) != 0 { (f, 1.0) } else { (1.0, f) };
            state.sum = state.sum.mul_add(rescale, weight);
        }
        new_max
    }
    /// The fast order's scores: `score[i][p] = dot(k[p], q[i]) * scale`
    /// for every pair and at least the run's `run` positions, the dot in
    /// eight lanes (lane l fusing elements 8c + l, c in order) summed in
    /// `sum_lanes8`'s tree.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn scores_fast(k: &[Self::Row; RUN], run: usize, q: &[Self::Row], hd: usize, scale: f32, score: &mut [[f32; RUN]]) {
        for (i, q) in q.iter().enumerate() {
            let q = Self::floats(q);
            for (p, k) in k[..run].iter().enumerate() {
                let k = Self::floats(k);
                let mut lanes = [0f32; 8];
                for c in (0..hd).step_by(8) {
                    for (l, lane) in lanes.iter_mut().enumerate().take(hd - c) {
                        *lane = q[c + l].mul_add(k[c + l], *lane);
                    }
                }
                score[i][p] = sum_lanes8(&lanes) * scale;
            }
        }
    }
    /// A row's values: every `Row` is plain f32 lanes, `MAX_HEAD_DIM` or
    /// the head dimension of them.
    #[inline(always)]
    fn floats(row: &Self::Row) -> &[f32] {
        // SAFETY: see above; the slice covers exactly the row's bytes.
        unsafe { std::slice::from_raw_parts(row as *const Self::Row as *const f32, size_of::<Self::Row>() / 4) }
    }
    /// The fast order's `x[i] = e^x[i]`: ggml's polynomial (`ggml_expf`,
    /// within 1.5 ulp), a fraction of the C library's cost vectorized.
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn exp_run(x: &mut [f32; RUN]) {
        x.iter_mut().for_each(|v| *v = ggml_expf(*v));
    }
    /// The fast order's softmax over the first `seen` scores of a run: the
    /// run's largest raises the maximum once, each position weighs
    /// e^(s - max) (into `weight`, zeros past `seen`), and the sum of what
    /// came before, rescaled by e^(old - new) (returned), grows by the
    /// weights' fixed tree (`sum_run`).
    ///
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn softmax_block(score: &[f32; RUN], seen: usize, state: &mut Softmax, weight: &mut [f32; RUN]) -> f32 {
        let max = score[..seen].iter().fold(state.max, |m, &s| m.max(s));
        for (w, &s) in weight.iter_mut().zip(score) {
            *w = s - max;
        }
        Self::exp_run(weight);
        weight[seen..].fill(0.0);
        let rescale = rescale_factor(state.max, max);
        state.max = max;
        state.sum = state.sum.mul_add(rescale, sum_run(weight));
        rescale
    }
}

/// The fast order's e^(old - new) for what a run's new maximum `new` rescales:
/// from no position yet (-inf) this is 0, and the sum starts afresh. Most
/// runs of a long prompt keep the maximum, and `ggml_expf(0)` is exactly 1:
/// that case skips the call, a scalar polynomial per pair and run.
#[inline(always)]
fn rescale_factor(old: f32, new: f32) -> f32 {
    let diff = old - new;
    if diff == 0.0 {
        1.0
    } else {
        ggml_expf(diff)
    }
}

/// Eight lanes summed as pairs, then pairs of pairs, then the halves: the
/// tree of the vector form's horizontal adds.
#[inline(always)]
fn sum_lanes8(x: &[f32; 8]) -> f32 {
    ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]))
}

/// A run's sixteen weights summed in a fixed tree: halves, then quarters,
/// eighths and the last pair, as 16-, 8- and 4-lane vectors fold.
#[inline(always)]
fn sum_run(w: &[f32; RUN]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|j| w[j] + w[j + 8]);
    let q: [f32; 4] = std::array::from_fn(|j| h[j] + h[j + 4]);
    let t: [f32; 2] = std::array::from_fn(|j| q[j] + q[j + 2]);
    t[0] + t[1]
}

/// Rounds floats to f16 precision in place.
trait HalfRound {
    fn round(x: &mut [f32]);
}

struct SoftwareRound;

impl HalfRound for SoftwareRound {
    #[inline(always)]
    fn round(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
    }
}

#[cfg(target_arch = "x86_64")]
struct F16cRound;

#[cfg(target_arch = "x86_64")]
impl HalfRound for F16cRound {
    /// Only called from functions compiled with F16C enabled.
    #[inline(always)]
    fn round(x: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: 8 floats in bounds; the caller's target features include f16c.
            unsafe {
                let v = _mm256_loadu_ps(c.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        SoftwareRound::round(chunks.into_remainder());
    }
}

/// Rows as plain arrays: the reference, and (compiled with F16C and FMA)
/// the AVX2 path.
struct Scalar<R>(std::marker::PhantomData<R>);

impl<R: HalfRound> HeadMath for Scalar<R> {
    type Row = [f32; MAX_HEAD_DIM];
    fn zero() -> Self::Row {
        [0.0; MAX_HEAD_DIM]
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn load(src: &[f16], hd: usize, row: &mut Self::Row) {
        src[..hd].convert_to_f32_slice(&mut row[..hd]);
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn load_query(src: &[f32], hd: usize, row: &mut Self::Row) {
        row[..hd].copy_from_slice(&src[..hd]);
        R::round(&mut row[..hd]);
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn scores(k_rows: &[&[f16]], kv_off: usize, hd: usize, q: &[Self::Row], seen: &[usize], scale: f32, score: &mut [[f32; RUN]]) {
        let mut row = Self::zero();
        for (p, k) in k_rows.iter().enumerate() {
            Self::load(&k[kv_off..], hd, &mut row);
            for (i, q) in q.iter().enumerate() {
                if p < seen[i] {
                    score[i][p] = scalar_dot(&row, q, hd) * scale;
                }
            }
        }
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn weigh_values_ggml(
        acc: &mut [Self::Row],
        v: &[Self::Row; RUN],
        factor: &[[f32; RUN]],
        new_max: &[u32],
        seen: usize,
        hd: usize,
    ) {
        for (p, v) in v[..seen].iter().enumerate() {
            for ((acc, factor), &new_max) in acc.iter_mut().zip(factor).zip(new_max) {
                let acc = &mut acc[..hd];
                let w = if new_max & (1 << p) != 0 {
                    acc.iter_mut().for_each(|a| *a *= factor[p]);
                    R::round(acc);
                    1.0
                } else {
                    factor[p]
                };
                for (a, &x) in acc.iter_mut().zip(&v[..hd]) {
                    *a = x.mul_add(w, *a);
                }
                R::round(acc);
            }
        }
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn weigh_values(acc: &mut [Self::Row], v: &[Self::Row; RUN], weight: &[[f32; RUN]], rescale: &[f32], seen: usize, hd: usize) {
        for ((acc, weight), &r) in acc.iter_mut().zip(weight).zip(rescale) {
            for (e, a) in acc[..hd].iter_mut().enumerate() {
                *a = v[..seen].iter().zip(weight).fold(*a * r, |a, (v, &w)| w.mul_add(v[e], a));
            }
        }
    }
    /// # Safety
    /// The CPU has the instruction set the implementation is compiled for (any,
    /// for the scalar one); slices hold `hd` values.
    #[inline(always)]
    unsafe fn store(acc: &Self::Row, scale: f32, out: &mut [f32], hd: usize) {
        for (o, a) in out[..hd].iter_mut().zip(&acc[..hd]) {
            *o = a * scale;
        }
    }
}

/// One dot product in `HeadMath::scores`'s order; past the last whole 64
/// elements (head sizes with no vector rows) the rest is summed in f64.
#[inline(always)]
fn scalar_dot(k: &[f32; MAX_HEAD_DIM], q: &[f32; MAX_HEAD_DIM], hd: usize) -> f32 {
    let full = hd & !63;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..full).step_by(64) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *a = k[e].mul_add(q[e], *a);
            }
        }
    }
    let mut x = [0f32; 16];
    for l in 0..16 {
        x[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t8: [f32; 8] = std::array::from_fn(|i| x[8 + i] + x[i]);
    let t4: [f32; 4] = std::array::from_fn(|i| t8[4 + i] + t8[i]);
    let mut sum = ((t4[0] + t4[2]) + (t4[1] + t4[3])) as f64;
    for e in full..hd {
        sum += (k[e] * q[e]) as f64;
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
mod wide;
#[cfg(target_arch = "x86_64")]
use wide::{Simd, W256x2, W512};

struct Task<'a> {
    spec: &'a Attention,
    chunks: &'a [SeqChunk<'a>],
    slots: &'a [TokenSlot],
    layer: usize,
    qkv: &'a [f32],
    kv: &'a KvPool,
    out: SharedOut<f32>,
}

/// One query head's online-softmax state.
#[derive(Clone, Copy)]
struct Softmax {
    max: f32,
    sum: f32,
}

/// Query heads one task carries: consecutive tokens of one sequence times
/// the query heads of one KV head. Each has its own dependency chains, so
/// more of them keep the core busy, and each K and V row is fetched and
/// converted once for all of them: in a long prompt's attention, 64 pairs
/// per task took about 0.93 of the time 16 did. A chunk still makes a task
/// per KV head and 64 / group tokens, plenty for the pool.
const MAX_PAIRS: usize = 4 * MAX_GROUP;

/// Most heads one V sum call takes: whole tokens' heads up to this, so a
/// model with three query heads per KV head sums two tokens' six at once
/// (see `weigh_values` and `weigh_values_ggml`, whose tiles go up to this;
/// the vector rows' tiles are written out for 1 to 6).
const WEIGH_HEADS: usize = 6;

/// The first `n` rows of `buf`, each set to `value`.
#[inline(always)]
fn first_rows<T: Copy, const N: usize>(buf: &mut MaybeUninit<[T; N]>, n: usize, value: T) -> &mut [T] {
    assert!(n <= N);
    let rows = buf.as_mut_ptr() as *mut T;
    // SAFETY: rows 0..n are in bounds (n <= N) and written before the
    // slice over them is made.
    unsafe {
        for i in 0..n {
            rows.add(i).write(value);
        }
        std::slice::from_raw_parts_mut(rows, n)
    }
}

/// Attention of tokens `first..first + tokens` (one sequence's, in order)
/// for every query head sharing KV head `kvh`, in ggml's order (`GGML`)
/// or the fast one.
///
/// # Safety
/// The CPU has `M`'s instruction set; tokens `first..first + tokens` are one
/// chunk's, whose blocks cover their positions.
#[inline(always)]
unsafe fn attend_group<M: HeadMath, const GGML: bool>(t: &Task, first: usize, tokens: usize, kvh: usize) {
    let c = t.spec;
    let (dim, hd) = (c.dim(), c.head_dim);
    let qkv_dim = dim + 2 * c.kv_dim();
    let group = c.heads / c.kv_heads;
    let pairs = tokens * group;
    let scale = c.softcap.map_or(c.scale, |cap| c.scale / cap);
    let blocks = t.chunks[t.slots[first].chunk].blocks;
    let kv_off = kvh * hd;
    let positions = t.slots[first + tokens - 1].pos + 1;
    // The first position a token `limit` positions long sees.
    let window_start = |limit: usize| limit.saturating_sub(c.window);
    let lo = window_start(t.slots[first].pos + 1);
    // The K and V rows of the run from `start`, asked for (`prefetch`) a
    // run before they are read: a decode step reads every sequence's cache
    // once, mostly from memory, and waited on those loads. The first run's
    // are asked for before the task's setup, which then hides some of their
    // wait: one sequence decoding at 400 positions took about 0.92 of the
    // time in attention.
    let fetch_rows = |start: usize| {
        let run = RUN.min(positions - start);
        let (mut k_rows, mut v_rows): ([&[f16]; RUN], [&[f16]; RUN]) = ([&[]; RUN], [&[]; RUN]);
        t.kv.rows(blocks, t.layer, start, &mut k_rows[..run], &mut v_rows[..run]);
        for row in k_rows[..run].iter().chain(&v_rows[..run]) {
            (kv_off..kv_off + hd).step_by(32).for_each(|e| prefetch(row[e..].as_ptr() as *const u8));
        }
        (k_rows, v_rows)
    };
    let mut next_rows = fetch_rows(lo);
    // Pair i is query head i % group of token first + i / group.
    let head_at = |i: usize| (first + i / group) * qkv_dim + (kvh * group + i % group) * hd;
    // Buffers are sized for the most pairs (rows of up to MAX_HEAD_DIM):
    // only the task's own pairs' rows are set up, which for a decode's
    // three pairs saves clearing kilobytes per task.
    let (mut limit_buf, mut seen_buf, mut skip_buf) = (
        MaybeUninit::<[usize; MAX_PAIRS]>::uninit(),
        MaybeUninit::<[usize; MAX_PAIRS]>::uninit(),
        MaybeUninit::<[usize; MAX_PAIRS]>::uninit(),
    );
    let (mut q_buf, mut acc_buf) = (MaybeUninit::<[M::Row; MAX_PAIRS]>::uninit(), MaybeUninit::<[M::Row; MAX_PAIRS]>::uninit());
    let mut soft_buf = MaybeUninit::<[Softmax; MAX_PAIRS]>::uninit();
    let (mut score_buf, mut factor_buf) =
        (MaybeUninit::<[[f32; RUN]; MAX_PAIRS]>::uninit(), MaybeUninit::<[[f32; RUN]; MAX_PAIRS]>::uninit());
    let (mut new_max_buf, mut rescale_buf) = (MaybeUninit::<[u32; MAX_PAIRS]>::uninit(), MaybeUninit::<[f32; MAX_PAIRS]>::uninit());
    let limit = first_rows(&mut limit_buf, pairs, 0);
    for (i, l) in limit.iter_mut().enumerate() {
        *l = t.slots[first + i / group].pos + 1;
    }
    let q = first_rows(&mut q_buf, pairs, M::zero());
    for (i, row) in q.iter_mut().enumerate() {
        M::load_query(&t.qkv[head_at(i)..], hd, row);
    }
    let acc = first_rows(&mut acc_buf, pairs, M::zero());
    let soft = first_rows(&mut soft_buf, pairs, Softmax { max: f32::NEG_INFINITY, sum: 0.0 });
    // A run reads only the scores and factors, new maxima and rescale
    // factors it wrote itself (for pairs that see some of its positions):
    // set up once per task, not cleared for every run of 16 positions.
    let score = first_rows(&mut score_buf, pairs, [0.0; RUN]);
    let factor = first_rows(&mut factor_buf, pairs, [0.0; RUN]);
    let new_max = first_rows(&mut new_max_buf, pairs, 0);
    let rescale = first_rows(&mut rescale_buf, pairs, 0.0);
    let seen = first_rows(&mut seen_buf, pairs, 0);
    let skip = first_rows(&mut skip_buf, pairs, 0);
    let (mut k_run, mut v_run) = ([M::zero(); RUN], [M::zero(); RUN]);
    for start in (lo..positions).step_by(RUN) {
        let run = RUN.min(positions - start);
        // How much of this run each pair sees (causal: later tokens more),
        // and where in it a later token's window begins.
        for ((s, k), &l) in seen.iter_mut().zip(skip.iter_mut()).zip(&*limit) {
            (*s, *k) = (l.saturating_sub(start).min(run), window_start(l).saturating_sub(start));
            if *k >= *s {
                (*s, *k) = (0, 0);
            }
        }
        let (k_rows, v_rows) = next_rows;
        if start + RUN < positions {
            next_rows = fetch_rows(start + RUN);
        }
        if GGML {
            M::scores(&k_rows[..run], kv_off, hd, q, seen, scale, score);
        } else {
            for p in 0..run {
                M::load(&k_rows[p][kv_off..], hd, &mut k_run[p]);
            }
            M::scores_fast(&k_run, run, q, hd, scale, score);
        }
        if let Some(cap) = c.softcap {
            for (score, &n) in score.iter_mut().zip(&*seen) {
                score[..n].iter_mut().for_each(|s| *s = cap * s.tanh());
            }
        }
        for i in 0..pairs {
            match (seen[i], skip[i]) {
                (0, _) => {}
                (n, 0) if GGML => new_max[i] = M::softmax_run(&score[i], n, &mut soft[i], &mut factor[i]),
                (n, 0) => rescale[i] = M::softmax_block(&score[i], n, &mut soft[i], &mut factor[i]),
                (n, k) => (new_max[i], rescale[i]) = softmax_from::<M, GGML>(&score[i], k, n, &mut soft[i], &mut factor[i]),
            }
        }
        // The run's V rows in f32 once for all the pairs, then per token
        // (its heads see the same positions) one tile of sums. Consecutive
        // tokens that see the same positions (all but the chunk's diagonal
        // runs) go together, up to WEIGH_HEADS heads.
        for p in 0..run {
            M::load(&v_rows[p][kv_off..], hd, &mut v_run[p]);
        }
        let mut first = 0;
        while first < pairs {
            let n = seen[first];
            let mut end = first + group;
            while end + group <= pairs && end + group - first <= WEIGH_HEADS && seen[end] == n {
                end += group;
            }
            match (n, GGML) {
                (0, _) => {}
                (_, true) => M::weigh_values_ggml(&mut acc[first..end], &v_run, &factor[first..end], &new_max[first..end], n, hd),
                (_, false) => M::weigh_values(&mut acc[first..end], &v_run, &factor[first..end], &rescale[first..end], n, hd),
            }
            first = end;
        }
    }
    // SAFETY: each task writes only its own tokens' heads of its group.
    let out = t.out.slice();
    for i in 0..pairs {
        let inv = if soft[i].sum == 0.0 { 0.0 } else { 1.0 / soft[i].sum };
        let at = (first + i / group) * dim + (kvh * group + i % group) * hd;
        M::store(&acc[i], inv, &mut out[at..at + hd], hd);
    }
}

/// The softmax of a run for a pair whose window begins `skip` positions
/// into it: its scores from there shifted to the front, then its factors
/// (or weights) shifted back behind zeros, with no new maximum there. A
/// zero weight adds nothing to the sum or the V sums, not even a rounding,
/// so this is the run as if it began at the window: what ggml computes,
/// which skips masked positions. Returns the new maxima (ggml's order) and
/// the rescale factor (the fast one's).
///
/// # Safety
/// As for `HeadMath::softmax_run`.
#[inline(always)]
unsafe fn softmax_from<M: HeadMath, const GGML: bool>(
    score: &[f32; RUN],
    skip: usize,
    seen: usize,
    state: &mut Softmax,
    factor: &mut [f32; RUN],
) -> (u32, f32) {
    let (mut shifted, mut out) = ([0f32; RUN], [0f32; RUN]);
    shifted[..seen - skip].copy_from_slice(&score[skip..seen]);
    let got = if GGML {
        (M::softmax_run(&shifted, seen - skip, state, &mut out) << skip, 1.0)
    } else {
        (0, M::softmax_block(&shifted, seen - skip, state, &mut out))
    };
    factor.fill(0.0);
    factor[skip..seen].copy_from_slice(&out[..seen - skip]);
    got
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; the tokens as for `attend_group`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_avx2<const GGML: bool>(t: &Task, first: usize, tokens: usize, kvh: usize) {
    match t.spec.head_dim {
        64 => attend_group::<Simd<W256x2, 4>, GGML>(t, first, tokens, kvh),
        128 => attend_group::<Simd<W256x2, 8>, GGML>(t, first, tokens, kvh),
        256 => attend_group::<Simd<W256x2, 16>, GGML>(t, first, tokens, kvh),
        _ => attend_group::<Scalar<F16cRound>, GGML>(t, first, tokens, kvh),
    }
}

/// # Safety
/// The CPU has AVX-512F besides; the tokens as for `attend_group`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn attend_group_avx512<const GGML: bool>(t: &Task, first: usize, tokens: usize, kvh: usize) {
    match t.spec.head_dim {
        64 => attend_group::<Simd<W512, 4>, GGML>(t, first, tokens, kvh),
        128 => attend_group::<Simd<W512, 8>, GGML>(t, first, tokens, kvh),
        256 => attend_group::<Simd<W512, 16>, GGML>(t, first, tokens, kvh),
        _ => attend_group::<Scalar<F16cRound>, GGML>(t, first, tokens, kvh),
    }
}

/// One task's `attend_group` on the model's instruction set.
///
/// # Safety
/// The Isa was detected on this CPU; each Isa implies the features
/// its path is compiled for.
unsafe fn attend_group_on<const GGML: bool>(t: &Task, first: usize, tokens: usize, kvh: usize) {
    match t.spec.isa.kind() {
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512Vnni => attend_group_avx512::<GGML>(t, first, tokens, kvh),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => attend_group_avx2::<GGML>(t, first, tokens, kvh),
        _ => attend_group::<Scalar<SoftwareRound>, GGML>(t, first, tokens, kvh),
    }
}

/// The tasks of one `attend` call, kept from call to call: runs of
/// consecutive tokens of one chunk, `(first token, tokens)`.
#[derive(Default)]
pub struct AttentionTasks(Vec<(usize, usize)>);

/// Writes every token's attention output (heads concatenated) into `out`;
/// `tasks` is the caller's buffer for the task list.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    spec: &Attention,
    pool: &ComputePool,
    chunks: &[SeqChunk],
    slots: &[TokenSlot],
    layer: usize,
    qkv: &[f32],
    kv: &KvPool,
    out: &mut [f32],
    tasks: &mut AttentionTasks,
) {
    let c = spec;
    let per_task = (MAX_PAIRS / (c.heads / c.kv_heads)).max(1);
    // Runs of up to `per_task` consecutive tokens of one chunk.
    let runs = &mut tasks.0;
    runs.clear();
    let mut first = 0;
    for ch in chunks {
        for offset in (0..ch.tokens.len()).step_by(per_task) {
            runs.push((first + offset, per_task.min(ch.tokens.len() - offset)));
        }
        first += ch.tokens.len();
    }
    // The biggest first (a token's work grows with its position): the
    // pool hands tasks out in order, and the small ones left at the end
    // keep the threads finishing together. Unstable (a stable sort takes
    // a buffer), ties in token order.
    runs.sort_unstable_by_key(|&(first, tokens)| {
        (std::cmp::Reverse(slots[first..first + tokens].iter().map(|s| s.pos + 1).sum::<usize>()), first)
    });
    let task = Task { spec, chunks, slots, layer, qkv, kv, out: SharedOut::new(out) };
    pool.run(runs.len() * c.kv_heads, &|i| {
        let ((first, tokens), kvh) = (runs[i / c.kv_heads], i % c.kv_heads);
        // SAFETY: an Isa is only had where the CPU has it.
        unsafe {
            match spec.arithmetic {
                Arithmetic::Ggml => attend_group_on::<true>(&task, first, tokens, kvh),
                Arithmetic::Fast => attend_group_on::<false>(&task, first, tokens, kvh),
            }
        }
    });
}
