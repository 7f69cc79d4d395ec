//! x86-64 panel kernels for the matmul. One generic body per weight format,
//! instantiated for AVX-512 VNNI (a panel's 16 rows in one register,
//! `vpdpbusd`) and for AVX2 (8 rows per register, two passes per panel,
//! `vpmaddubsw` + `vpmaddwd`). Integer block sums are exact and the float
//! accumulation is the portable reference's, lane by lane: same bits.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use half::f16;

use super::acts::{QuantizedActs, Tile};
use super::matmul::ACT16_MAX;
use super::quant::{CodeLayout, Packed, BYTE_BLOCK, NIBBLE_BLOCK, PANEL};
use super::{max_lane8, prefetch, Arithmetic, Isa, IsaKind};

/// The vector operations the kernels are written in; `N` rows per register.
trait Lanes {
    type I: Copy;
    type F: Copy;
    const N: usize;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn load(p: *const u8) -> Self::I;
    /// The low and high nibbles of every byte.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn nibbles(v: Self::I) -> (Self::I, Self::I);
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn splat(v: i32) -> Self::I;
    /// `acc` plus, per 32-bit lane, the dot of four unsigned weight bytes
    /// with the four signed activation bytes at `x`.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn dot(acc: Self::I, w: Self::I, x: *const i8) -> Self::I;
    /// `dot` for 4-bit codes, summed in a form `widen_nibbles` turns into
    /// 32-bit lanes: room for the eight steps of one block.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn dot_nibbles(acc: Self::I, w: Self::I, x: *const i8) -> Self::I;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn widen_nibbles(acc: Self::I) -> Self::I;
    /// The same for 8-bit weights stored as q + 128: with `dot` that is
    /// Σ(q + 128)x, and `int8_start` supplies the -128Σx that makes it Σqx;
    /// without `vpdpbusd` the signed product is formed directly instead.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn dot_int8(acc: Self::I, w: Self::I, x: *const i8) -> Self::I;
    fn int8_start(isum: i32) -> i32;
    /// Codes `v` with `add` added to every byte whose bit is set in the
    /// `4 * N` bits at `bits` (a plane of `CodeLayout::Five`'s or `Six`'s
    /// high bits).
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `bits` is valid for `N / 2` bytes.
    unsafe fn add_where_set(v: Self::I, bits: *const u8, add: i8) -> Self::I;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn scales_f16(p: *const f16) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn scales_f32(p: *const f32) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn zero() -> Self::F;
    /// A block's combined scale, `w_scale * x_scale`.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn block_scale(w_scale: Self::F, x_scale: f32) -> Self::F;
    /// `acc + float(isum) * scale`, fused.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn fma_scaled(acc: Self::F, isum: Self::I, scale: Self::F) -> Self::F;
    /// `acc + float(isum) * (w_scale * x_scale)`, fused.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn fma_block(acc: Self::F, isum: Self::I, w_scale: Self::F, x_scale: f32) -> Self::F {
        Self::fma_scaled(acc, isum, Self::block_scale(w_scale, x_scale))
    }
    /// `acc + v * s`, fused.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn fma_splat(acc: Self::F, v: Self::F, s: f32) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn add_f(a: Self::F, b: Self::F) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn sub_f(a: Self::F, b: Self::F) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    unsafe fn store(v: Self::F, out: *mut f32);
    /// `N` unsigned bytes, one per 32-bit lane.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    unsafe fn bytes_u32(p: *const u8) -> Self::I;
    /// `N` signed bytes, one per 32-bit lane.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    unsafe fn bytes_i32(p: *const i8) -> Self::I;
    /// `acc + a * b` in 32-bit lanes.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    unsafe fn mul_add_i(acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    unsafe fn to_float(v: Self::I) -> Self::F;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F;
}

/// # Safety
/// `x` is valid for a read of four bytes.
#[inline(always)]
unsafe fn four_bytes(x: *const i8) -> i32 {
    (x as *const i32).read_unaligned()
}

struct Vnni512;

impl Lanes for Vnni512 {
    type I = __m512i;
    type F = __m512;
    const N: usize = 16;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p as *const __m512i)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn nibbles(v: __m512i) -> (__m512i, __m512i) {
        let low = _mm512_set1_epi8(0x0F);
        (_mm512_and_si512(v, low), _mm512_and_si512(_mm512_srli_epi16(v, 4), low))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot(acc: __m512i, w: __m512i, x: *const i8) -> __m512i {
        _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(four_bytes(x)))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot_nibbles(acc: __m512i, w: __m512i, x: *const i8) -> __m512i {
        Self::dot(acc, w, x)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn widen_nibbles(acc: __m512i) -> __m512i {
        acc
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot_int8(acc: __m512i, w: __m512i, x: *const i8) -> __m512i {
        Self::dot(acc, w, x)
    }
    fn int8_start(isum: i32) -> i32 {
        -128 * isum
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `bits` is valid for `N / 2` bytes.
    #[inline(always)]
    unsafe fn add_where_set(v: __m512i, bits: *const u8, add: i8) -> __m512i {
        let mask = (bits as *const u64).read_unaligned();
        _mm512_mask_add_epi8(v, mask, v, _mm512_set1_epi8(add))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn scales_f16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn scales_f32(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn block_scale(w_scale: __m512, x_scale: f32) -> __m512 {
        _mm512_mul_ps(w_scale, _mm512_set1_ps(x_scale))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn fma_scaled(acc: __m512, isum: __m512i, scale: __m512) -> __m512 {
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn fma_splat(acc: __m512, v: __m512, s: f32) -> __m512 {
        _mm512_fmadd_ps(v, _mm512_set1_ps(s), acc)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn add_f(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn store(v: __m512, out: *mut f32) {
        _mm512_storeu_ps(out, v)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn sub_f(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    #[inline(always)]
    unsafe fn bytes_u32(p: *const u8) -> __m512i {
        _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    #[inline(always)]
    unsafe fn bytes_i32(p: *const i8) -> __m512i {
        _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn mul_add_i(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(acc, _mm512_mullo_epi32(a, b))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn to_float(v: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(v)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn mul_f(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
}

struct Avx2;

impl Avx2 {
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn pair_sums(w: __m256i, x: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    }
}

impl Lanes for Avx2 {
    type I = __m256i;
    type F = __m256;
    const N: usize = 8;
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn nibbles(v: __m256i) -> (__m256i, __m256i) {
        let low = _mm256_set1_epi8(0x0F);
        (_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    /// Codes here are at most 63, so the 16-bit pair sums cannot saturate.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: *const i8) -> __m256i {
        _mm256_add_epi32(acc, Self::pair_sums(w, _mm256_set1_epi32(four_bytes(x))))
    }
    /// 16-bit sums: a block's eight steps of 4-bit codes stay within
    /// 8 * 2 * 15 * 127 = 30480, so one `vpmaddwd` per block widens them
    /// instead of one per step.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot_nibbles(acc: __m256i, w: __m256i, x: *const i8) -> __m256i {
        _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, _mm256_set1_epi32(four_bytes(x))))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn widen_nibbles(acc: __m256i) -> __m256i {
        _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
    }
    /// |q| times x with q's sign: pair sums stay within 2 * 128 * 127.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn dot_int8(acc: __m256i, w: __m256i, x: *const i8) -> __m256i {
        let q = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
        let x = _mm256_set1_epi32(four_bytes(x));
        _mm256_add_epi32(acc, Self::pair_sums(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q)))
    }
    fn int8_start(_isum: i32) -> i32 {
        0
    }
    /// Each byte takes the byte of bits holding its own (bytes 0-7 from
    /// the first, 8-15 from the second, ... of the four), keeps that bit,
    /// and becomes `add` where it is set.
    ///
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `bits` is valid for `N / 2` bytes.
    #[inline(always)]
    unsafe fn add_where_set(v: __m256i, bits: *const u8, add: i8) -> __m256i {
        let word = _mm256_set1_epi32((bits as *const i32).read_unaligned());
        #[rustfmt::skip]
        let spread = _mm256_shuffle_epi8(word, _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ));
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
        _mm256_add_epi8(v, _mm256_and_si256(set, _mm256_set1_epi8(add)))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn scales_f16(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn scales_f32(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn block_scale(w_scale: __m256, x_scale: f32) -> __m256 {
        _mm256_mul_ps(w_scale, _mm256_set1_ps(x_scale))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn fma_scaled(acc: __m256, isum: __m256i, scale: __m256) -> __m256 {
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn fma_splat(acc: __m256, v: __m256, s: f32) -> __m256 {
        _mm256_fmadd_ps(v, _mm256_set1_ps(s), acc)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn add_f(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn store(v: __m256, out: *mut f32) {
        _mm256_storeu_ps(out, v)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; a pointer is valid for one register's width.
    #[inline(always)]
    unsafe fn sub_f(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    #[inline(always)]
    unsafe fn bytes_u32(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found; `p` is valid for `N` bytes.
    #[inline(always)]
    unsafe fn bytes_i32(p: *const i8) -> __m256i {
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn mul_add_i(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_mullo_epi32(a, b))
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn to_float(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(v)
    }
    /// # Safety
    /// The CPU has these lanes' instruction set (AVX-512 VNNI, or AVX2), as
    /// `Isa::available` found.
    #[inline(always)]
    unsafe fn mul_f(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
}

/// What one accumulator of a kernel covers: the `L::N` panel rows from
/// `lane` against activation row `act` of the tile. A tile of five to
/// eight activation rows has a unit per row, all on the same lanes (a pass
/// over the panel per register's width of lanes); one to four rows (decode
/// of a few sequences) have a unit per row and register's width, so each
/// weight line is read in one go.
#[derive(Clone, Copy)]
struct Unit {
    act: usize,
    lane: usize,
}

// Weights are asked for (`prefetch`) ahead of the kernel, once per line
// (in the pass over a panel's first lanes): 4-bit codes a panel ahead,
// 8-bit ones and the scales half a panel. A decode step streams every
// weight from memory once, and the hardware prefetcher alone leaves the
// loads waiting: `cargo bench --bench kernels -- stream` drew about a
// fifth more bandwidth with it, and the 4-bit codes another twentieth
// from a whole panel rather than half. Past the last panel the hint does
// nothing.

/// The prefetches of a 4-bit panel's block `b` (panel blocks from `first`,
/// codes from `ahead`, a panel on) for the pass over vector `t`: its code
/// line, and with the first pass, on even blocks, the line of scales and
/// the line of minimums that hold it and the next block (half a panel on).
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn prefetch_nibbles(ahead: *const u8, scale: &[f16], min: &[f16], first: usize, nb: usize, b: usize, t: usize) {
    if t == 0 && b.is_multiple_of(2) {
        prefetch_scale_lines(scale, min, first + b + nb / 2);
    }
    prefetch(ahead.wrapping_add((t * nb + b) * 64));
}

/// The line of 4-bit scales and the line of minimums that hold block
/// `blk` (and the next one: a line holds two blocks' worth of a panel).
#[inline(always)]
fn prefetch_scale_lines(scale: &[f16], min: &[f16], blk: usize) {
    prefetch(scale.as_ptr().wrapping_add(blk * PANEL) as *const u8);
    prefetch(min.as_ptr().wrapping_add(blk * PANEL) as *const u8);
}

/// Blocks per chunk of a 4-bit panel: their combined scales are computed
/// once for all the passes and stay in L1.
const NIBBLE_CHUNK: usize = 16;

/// 4-bit panels in ggml's order (see `portable_dot`), for the `units` of a
/// tile: several activation rows against `L::N` panel rows, or a few rows
/// against the whole panel. Float lane j of every unit (the low nibbles of
/// vector j / 2 of each block for even j, the high ones for odd j) sums its
/// blocks in order. A pass over the blocks reads vector j / 2 of each in
/// memory order and advances `SIDES` lanes (the low nibbles' and, with 2,
/// the high ones') of every unit: with more than four units one accumulator
/// each is what fits the registers (eight fill them), with up to four both
/// sides share the loads. Blocks go in chunks: each block's combined scales
/// (weight scale times activation scale, per unit) are computed once per
/// chunk for all the passes, and its minimum terms with them.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn nibble_panel<L: Lanes, const U: usize, const SIDES: usize>(
    (qs, scale, min): (&[u8], &[f16], &[f16]),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let (k, nb) = (q.cols, q.cols / 32);
    let first = p * nb;
    let w = qs.as_ptr().add(first * NIBBLE_BLOCK);
    let x = q.qs.as_ptr().add(i * k);
    let ahead = w.wrapping_add(nb * NIBBLE_BLOCK);
    // Float lane j of unit u: lanes[j / 2][j % 2][u]. Written by the first
    // chunk's passes before any pass reads it: zeroing its 2 KB (eight
    // units) was a call to memset per panel.
    let mut lanes = MaybeUninit::<[[[L::F; U]; 2]; 4]>::uninit();
    let lanes = lanes.as_mut_ptr() as *mut [[L::F; U]; 2];
    let mut mins = [L::zero(); U];
    // Chunks of equal size (18 blocks: two of 9, not 16 and a lone 2).
    let chunk = nb.div_ceil(nb.div_ceil(NIBBLE_CHUNK));
    for c in (0..nb).step_by(chunk) {
        let blocks = c..nb.min(c + chunk);
        // Written for this chunk's blocks before the passes read them.
        let mut scales = [[MaybeUninit::<L::F>::uninit(); U]; NIBBLE_CHUNK];
        for b in blocks.clone() {
            for (u, unit) in units.iter().enumerate() {
                let (at, xb) = ((first + b) * PANEL + unit.lane, (i + unit.act) * nb + b);
                scales[b - c][u].write(L::block_scale(L::scales_f16(scale.as_ptr().add(at)), *q.scale.get_unchecked(xb)));
            }
            min_step::<L, U>(&mut mins, min, q, (p, i), units, b);
        }
        for t in 0..4 {
            // Lines are asked for once: by the panel's first pass over them.
            let pass = Pass { w: w.add(t * nb * 64), x: x.add(8 * t), k, fetch: units[0].lane == 0 };
            let ahead = |b| prefetch_nibbles(ahead, scale, min, first, nb, b, t);
            let sides = lanes.add(t);
            if SIDES == 2 {
                nibble_pass::<L, U, 2, 0>(pass, units, &scales, blocks.clone(), sides, ahead);
            } else {
                let low = sides as *mut [[L::F; U]; 1];
                nibble_pass::<L, U, 1, 0>(pass, units, &scales, blocks.clone(), low, ahead);
                nibble_pass::<L, U, 1, 1>(Pass { fetch: false, ..pass }, units, &scales, blocks.clone(), low.add(1), ahead);
            }
        }
    }
    // SAFETY: every lane was written by the first chunk's passes (nb > 0).
    let lanes = &*lanes.cast::<[[[L::F; U]; 2]; 4]>();
    for (u, unit) in units.iter().enumerate() {
        nibble_sum::<L>(std::array::from_fn(|j| lanes[j / 2][j % 2][u]), mins[u], tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// One pass of `nibble_panel` over vector t of the blocks: weights from
/// `w`, activations from `x` (rows `k` apart); `fetch`: this pass asks for
/// the lines ahead.
#[derive(Clone, Copy)]
struct Pass {
    w: *const u8,
    x: *const i8,
    k: usize,
    fetch: bool,
}

/// The blocks of one `pass` fused into `acc` (a lane per nibble side from
/// `FIRST`, 0 low and 1 high; a sum per unit) with the chunk's combined
/// `scales`; `ahead(b)` prefetches. The first chunk (from block 0) starts
/// the sums at zero, later ones from what `acc` holds.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn nibble_pass<L: Lanes, const U: usize, const SIDES: usize, const FIRST: usize>(
    pass: Pass,
    units: [Unit; U],
    scales: &[[MaybeUninit<L::F>; U]; NIBBLE_CHUNK],
    blocks: std::ops::Range<usize>,
    acc: *mut [[L::F; U]; SIDES],
    ahead: impl Fn(usize),
) {
    // A copy in registers: through `acc` itself every sum went to memory.
    let mut sums = if blocks.start == 0 { [[L::zero(); U]; SIDES] } else { acc.read() };
    let c = blocks.start;
    for b in blocks {
        if pass.fetch {
            ahead(b);
        }
        let scales = scales.get_unchecked(b - c);
        for (u, unit) in units.iter().enumerate() {
            let (low, high) = L::nibbles(L::load(pass.w.add(b * 64 + 4 * unit.lane)));
            for (s, sum) in sums.iter_mut().enumerate() {
                let side = FIRST + s;
                let xa = pass.x.add(unit.act * pass.k + b * 32 + 4 * side);
                let codes = if side == 0 { low } else { high };
                sum[u] = L::fma_scaled(sum[u], L::dot(L::splat(0), codes, xa), scales[u].assume_init());
            }
        }
    }
    acc.write(sums);
}

/// A 4-bit panel's eight float lanes and minimum terms, summed in ggml's
/// fixed tree, stored at `out`.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn nibble_sum<L: Lanes>(l: [L::F; 8], mins: L::F, out: *mut f32) {
    L::store(L::add_f(tree8::<L>(l), mins), out);
}

/// Eight float lanes in ggml's fixed tree (`hsum_float_8`): the halves,
/// then pairs two apart, then the last two.
///
/// # Safety
/// The CPU has `L`'s instruction set.
#[inline(always)]
unsafe fn tree8<L: Lanes>(l: [L::F; 8]) -> L::F {
    let r = [L::add_f(l[0], l[4]), L::add_f(l[1], l[5]), L::add_f(l[2], l[6]), L::add_f(l[3], l[7])];
    L::add_f(L::add_f(r[0], r[2]), L::add_f(r[1], r[3]))
}

/// Block `b`'s minimum terms (weight minimum times the activations'
/// scaled sum) fused into each unit's `mins`, in block order.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn min_step<L: Lanes, const U: usize>(
    mins: &mut [L::F; U],
    min: &[f16],
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    b: usize,
) {
    let nb = q.cols / 32;
    for (m, unit) in mins.iter_mut().zip(units) {
        let (at, xb) = ((p * nb + b) * PANEL + unit.lane, (i + unit.act) * nb + b);
        *m = L::fma_splat(*m, L::scales_f16(min.as_ptr().add(at)), *q.sum.get_unchecked(xb));
    }
}

/// 4-bit panels in the fast order (see `portable_dot`): per block the
/// exact integer dot of its 32 codes, fused into the unit's sum with the
/// block's combined scale, block by block; the minimum terms in a second
/// sum, added last. Blocks follow one another in memory, a block's four
/// lines each giving two steps (low and high nibbles): the instructions
/// per code are half those of ggml's order, which needs a conversion and
/// a fused multiply-add for every four codes.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn nibble_blocks_panel<L: Lanes, const U: usize>(
    (qs, scale, min): (&[u8], &[f16], &[f16]),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let (k, nb) = (q.cols, q.cols / 32);
    // More than four units' minimum terms go in a loop of their own: beside
    // the sums' chains their accumulators overflowed the registers (a tile
    // of eight activation rows ran a tenth faster apart); with fewer, the
    // fused loop reads each line of minimums once (a decode step's
    // matrices ran a twelfth slower apart).
    let apart = U > 4;
    let (mut acc, mut mins) = ([L::zero(); U], [L::zero(); U]);
    for b in 0..nb {
        let blk = p * nb + b;
        let w = qs.as_ptr().add(blk * NIBBLE_BLOCK);
        if units[0].lane == 0 {
            (0..NIBBLE_BLOCK).step_by(64).for_each(|line| prefetch(w.wrapping_add(nb * NIBBLE_BLOCK + line)));
            if b % 2 == 0 {
                prefetch_scale_lines(scale, min, blk + nb / 2);
            }
        }
        let x = q.qs.as_ptr().add(i * k + b * 32);
        let mut sums = [L::splat(0); U];
        for t in 0..4 {
            for (sum, unit) in sums.iter_mut().zip(units) {
                let (low, high) = L::nibbles(L::load(w.add(64 * t + 4 * unit.lane)));
                let xa = x.add(unit.act * k + 8 * t);
                *sum = L::dot_nibbles(L::dot_nibbles(*sum, low, xa), high, xa.add(4));
            }
        }
        for (u, unit) in units.iter().enumerate() {
            let (at, xb) = (blk * PANEL + unit.lane, (i + unit.act) * nb + b);
            acc[u] = L::fma_block(acc[u], L::widen_nibbles(sums[u]), L::scales_f16(scale.as_ptr().add(at)), *q.scale.get_unchecked(xb));
        }
        if !apart {
            min_step::<L, U>(&mut mins, min, q, (p, i), units, b);
        }
    }
    if apart {
        // A loop, not `for_each`: a closure loses the target features.
        for b in 0..nb {
            min_step::<L, U>(&mut mins, min, q, (p, i), units, b);
        }
    }
    for (u, unit) in units.iter().enumerate() {
        L::store(L::add_f(acc[u], mins[u]), tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// How the 8-bit kernels read `Packed::Int8`'s codes (see `CodeLayout`):
/// one step of a block (four codes of each of `L::N` rows), dotted with
/// the activations, and the start of a sum of such steps that turns the
/// codes into their values.
trait StepCodes: Copy {
    /// Bytes of one panel block.
    const BLOCK: usize;
    /// Step `t`'s four codes of each row from `lane` of the panel block at `w`.
    ///
    /// # Safety
    /// The CPU has `L`'s instruction set; `w` holds a whole panel block.
    unsafe fn step<L: Lanes>(self, w: *const u8, t: usize, lane: usize) -> L::I;
    /// The code that stands for the value 0.
    fn zero(self) -> i32;
    /// `acc` plus, per 32-bit lane, the dot of a step's four codes with the
    /// four activation bytes at `x`: unsigned codes of at most 63 by
    /// default, whose pair sums cannot saturate AVX2's 16 bits.
    ///
    /// # Safety
    /// The CPU has `L`'s instruction set; `x` is valid for four bytes.
    #[inline(always)]
    unsafe fn dot<L: Lanes>(self, acc: L::I, codes: L::I, x: *const i8) -> L::I {
        L::dot(acc, codes, x)
    }
    /// The integer a sum starts from for activations summing to `isum`.
    fn start<L: Lanes>(self, isum: i32) -> i32 {
        -self.zero() * isum
    }
}

/// `CodeLayout::Eight`: a step is one register of bytes (value + 128).
#[derive(Clone, Copy)]
struct EightBits;

impl StepCodes for EightBits {
    const BLOCK: usize = BYTE_BLOCK;
    #[inline(always)]
    unsafe fn step<L: Lanes>(self, w: *const u8, t: usize, lane: usize) -> L::I {
        L::load(w.add(64 * t + 4 * lane))
    }
    fn zero(self) -> i32 {
        128
    }
    #[inline(always)]
    unsafe fn dot<L: Lanes>(self, acc: L::I, codes: L::I, x: *const i8) -> L::I {
        L::dot_int8(acc, codes, x)
    }
    fn start<L: Lanes>(self, isum: i32) -> i32 {
        L::int8_start(isum)
    }
}

/// `CodeLayout::Six`: a step is one side of a 4-bit line with its fifth
/// and sixth bits added.
#[derive(Clone, Copy)]
struct SixBits;

impl StepCodes for SixBits {
    const BLOCK: usize = NIBBLE_BLOCK + 128;
    #[inline(always)]
    unsafe fn step<L: Lanes>(self, w: *const u8, t: usize, lane: usize) -> L::I {
        let five = FiveBits::<32>.step::<L>(w, t, lane);
        L::add_where_set(five, w.add(NIBBLE_BLOCK + 64 + 8 * t + lane / 2), 32)
    }
    fn zero(self) -> i32 {
        32
    }
}

/// `CodeLayout::Five`: a step is one side of a 4-bit line with its fifth
/// bits added. The zero is a constant, so that a sum's start costs a shift
/// (or nothing) in the kernels' inner loops.
#[derive(Clone, Copy)]
struct FiveBits<const ZERO: i32>;

impl<const ZERO: i32> StepCodes for FiveBits<ZERO> {
    const BLOCK: usize = NIBBLE_BLOCK + 64;
    #[inline(always)]
    unsafe fn step<L: Lanes>(self, w: *const u8, t: usize, lane: usize) -> L::I {
        L::add_where_set(FourBits::<ZERO>.step::<L>(w, t, lane), w.add(NIBBLE_BLOCK + 8 * t + lane / 2), 16)
    }
    fn zero(self) -> i32 {
        ZERO
    }
}

/// `CodeLayout::Four`: a step is one side of a 4-bit line.
#[derive(Clone, Copy)]
struct FourBits<const ZERO: i32>;

impl<const ZERO: i32> StepCodes for FourBits<ZERO> {
    const BLOCK: usize = NIBBLE_BLOCK;
    #[inline(always)]
    unsafe fn step<L: Lanes>(self, w: *const u8, t: usize, lane: usize) -> L::I {
        let (low, high) = L::nibbles(L::load(w.add(64 * (t / 2) + 4 * lane)));
        if t.is_multiple_of(2) {
            low
        } else {
            high
        }
    }
    fn zero(self) -> i32 {
        ZERO
    }
}

/// Asks for the 8-bit block half a panel ahead of block `blk` (at `w`,
/// `block` bytes each) and, every other block, for its scales' line: the
/// panel's first unit does, once for all.
#[inline(always)]
fn prefetch_byte_block(w: *const u8, block: usize, scale: &[f16], nb: usize, blk: usize) {
    (0..block).step_by(64).for_each(|line| prefetch(w.wrapping_add(nb * block / 2 + line)));
    if blk.is_multiple_of(2) {
        prefetch(scale.as_ptr().wrapping_add((blk + nb / 2) * PANEL) as *const u8);
    }
}

/// 8-bit panels (codes read as `C` reads them) in the fast order: a
/// block's whole integer sum fused at once; minimums (Q5_1's) summed apart
/// and added last.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn int8_panel<L: Lanes, C: StepCodes, const U: usize>(
    codes: C,
    (qs, scale, min): (&[u8], &[f16], Option<&[f16]>),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let (k, nb) = (q.cols, q.cols / 32);
    let mut acc = [L::zero(); U];
    for b in 0..nb {
        let blk = p * nb + b;
        let w = qs.as_ptr().add(blk * C::BLOCK);
        if units[0].lane == 0 {
            prefetch_byte_block(w, C::BLOCK, scale, nb, blk);
        }
        let x = q.qs.as_ptr().add(i * k + b * 32);
        // One integer chain per unit: eight units' chains are enough to
        // overlap, and with two each the AVX2 registers overflowed.
        let mut sums = [L::splat(0); U];
        for (sum, unit) in sums.iter_mut().zip(units) {
            let xb = (i + unit.act) * nb + b;
            *sum = L::splat(codes.start::<L>(*q.isum16.get_unchecked(2 * xb) + *q.isum16.get_unchecked(2 * xb + 1)));
        }
        for t in 0..8 {
            // Units on the first unit's lanes share its codes: decoded once.
            let first = codes.step::<L>(w, t, units[0].lane);
            for (sum, unit) in sums.iter_mut().zip(units) {
                let step = if unit.lane == units[0].lane { first } else { codes.step::<L>(w, t, unit.lane) };
                *sum = codes.dot::<L>(*sum, step, x.add(unit.act * k + 4 * t));
            }
        }
        for (u, unit) in units.iter().enumerate() {
            let sw = L::scales_f16(scale.as_ptr().add(blk * PANEL + unit.lane));
            acc[u] = L::fma_block(acc[u], sums[u], sw, *q.scale.get_unchecked((i + unit.act) * nb + b));
        }
    }
    int8_store::<L, U>(acc, min, q, (p, i), units, tile);
}

/// An 8-bit panel's sums stored to the tile, with the minimum terms (Q5_1's,
/// summed in block order as Q4_1's) added where there are minimums.
///
/// # Safety
/// The CPU has `L`'s instruction set; `q` holds the activation rows the
/// units read, as `tile_dot`'s callers guarantee.
#[inline(always)]
unsafe fn int8_store<L: Lanes, const U: usize>(
    sums: [L::F; U],
    min: Option<&[f16]>,
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let mut sums = sums;
    if let Some(min) = min {
        let mut mins = [L::zero(); U];
        // A loop, not `for_each`: a closure loses the target features.
        for b in 0..q.cols / 32 {
            min_step::<L, U>(&mut mins, min, q, (p, i), units, b);
        }
        for (sum, mins) in sums.iter_mut().zip(mins) {
            *sum = L::add_f(*sum, mins);
        }
    }
    for (sum, unit) in sums.iter().zip(units) {
        L::store(*sum, tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// 8-bit panels in ggml's order (see `portable_dot`): float lane t of a
/// unit fuses, block by block, the integer sum of elements 4t..4t+4
/// (step t of the block), and the eight lanes end in ggml's tree, then
/// the minimums are added. Eight accumulators a unit: the units go over
/// the panel two at a time with 32 registers (AVX-512), one at a time with
/// 16 (AVX2); all of them at once spilled every accumulator to the stack
/// (a tile of eight rows ran at a quarter of the fast order's speed).
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn int8_lanes_panel<L: Lanes, C: StepCodes, const U: usize>(
    codes: C,
    (qs, scale, min): (&[u8], &[f16], Option<&[f16]>),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let mut sums = [L::zero(); U];
    let mut u = 0;
    while u < U {
        let fetch = u == 0 && units[0].lane == 0;
        if L::N == 16 && u + 2 <= U {
            let pair = int8_lanes_units::<L, C, 2>(codes, (qs, scale), q, (p, i), [units[u], units[u + 1]], fetch);
            (sums[u], sums[u + 1]) = (pair[0], pair[1]);
            u += 2;
        } else {
            sums[u] = int8_lanes_units::<L, C, 1>(codes, (qs, scale), q, (p, i), [units[u]], fetch)[0];
            u += 1;
        }
    }
    int8_store::<L, U>(sums, min, q, (p, i), units, tile);
}

/// `int8_lanes_panel`'s sums for `G` units, in ggml's tree; `fetch`: this
/// pass asks for the lines ahead.
///
/// # Safety
/// As `int8_lanes_panel`.
#[inline(always)]
unsafe fn int8_lanes_units<L: Lanes, C: StepCodes, const G: usize>(
    codes: C,
    (qs, scale): (&[u8], &[f16]),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; G],
    fetch: bool,
) -> [L::F; G] {
    let (k, nb) = (q.cols, q.cols / 32);
    let mut lanes = [[L::zero(); 8]; G];
    for b in 0..nb {
        let blk = p * nb + b;
        let w = qs.as_ptr().add(blk * C::BLOCK);
        if fetch {
            prefetch_byte_block(w, C::BLOCK, scale, nb, blk);
        }
        let x = q.qs.as_ptr().add(i * k + b * 32);
        let mut ws = [L::zero(); G];
        for (ws, unit) in ws.iter_mut().zip(units) {
            let sw = L::scales_f16(scale.as_ptr().add(blk * PANEL + unit.lane));
            *ws = L::block_scale(sw, *q.scale.get_unchecked((i + unit.act) * nb + b));
        }
        for t in 0..8 {
            // Units on the first unit's lanes share its codes: decoded once.
            let first = codes.step::<L>(w, t, units[0].lane);
            for ((lanes, unit), ws) in lanes.iter_mut().zip(units).zip(ws) {
                let step = if unit.lane == units[0].lane { first } else { codes.step::<L>(w, t, unit.lane) };
                let start = codes.start::<L>(*q.isum4.get_unchecked(((i + unit.act) * nb + b) * 8 + t));
                let isum = codes.dot::<L>(L::splat(start), step, x.add(unit.act * k + 4 * t));
                lanes[t] = L::fma_scaled(lanes[t], isum, ws);
            }
        }
    }
    // A loop, not `map`: a closure loses the target features.
    let mut sums = [L::zero(); G];
    for (sum, lanes) in sums.iter_mut().zip(lanes) {
        *sum = tree8::<L>(lanes);
    }
    sums
}

/// Panels with a scale per 16 (codes read as `C` reads them, plus a minimum
/// where there are minimums): a chain and a scale per half block.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn int6_panel<L: Lanes, C: StepCodes, const U: usize>(
    codes: C,
    (qs, scale, min): (&[u8], &[f32], Option<&[f32]>),
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let (k, nb) = (q.cols, q.cols / 32);
    let mut acc = [L::zero(); U];
    for b in 0..nb {
        let blk = p * nb + b;
        let w = qs.as_ptr().add(blk * C::BLOCK);
        let x = q.qs.as_ptr().add(i * k + b * 32);
        let (mut first, mut second) = ([L::splat(0); U], [L::splat(0); U]);
        for (u, unit) in units.iter().enumerate() {
            let xb = (i + unit.act) * nb + b;
            first[u] = L::splat(codes.start::<L>(q.isum16[2 * xb]));
            second[u] = L::splat(codes.start::<L>(q.isum16[2 * xb + 1]));
        }
        for t in 0..4 {
            // Units on the first unit's lanes share its codes: decoded once.
            let (lead0, lead1) = (codes.step::<L>(w, t, units[0].lane), codes.step::<L>(w, t + 4, units[0].lane));
            for (u, unit) in units.iter().enumerate() {
                let (w0, w1) = if unit.lane == units[0].lane {
                    (lead0, lead1)
                } else {
                    (codes.step::<L>(w, t, unit.lane), codes.step::<L>(w, t + 4, unit.lane))
                };
                let xa = x.add(unit.act * k + 4 * t);
                first[u] = codes.dot::<L>(first[u], w0, xa);
                second[u] = codes.dot::<L>(second[u], w1, xa.add(16));
            }
        }
        for (u, unit) in units.iter().enumerate() {
            let s = blk * 2 * PANEL + unit.lane;
            let (s0, s1) = (L::scales_f32(scale.as_ptr().add(s)), L::scales_f32(scale.as_ptr().add(s + PANEL)));
            let xb = (i + unit.act) * nb + b;
            let xs = *q.scale.get_unchecked(xb);
            acc[u] = L::fma_block(acc[u], first[u], s0, xs);
            // Each half's minimum times its activations' integer sum.
            if let Some(min) = min {
                acc[u] = L::fma_block(acc[u], L::splat(q.isum16[2 * xb]), L::scales_f32(min.as_ptr().add(s)), xs);
            }
            acc[u] = L::fma_block(acc[u], second[u], s1, xs);
            if let Some(min) = min {
                acc[u] = L::fma_block(acc[u], L::splat(q.isum16[2 * xb + 1]), L::scales_f32(min.as_ptr().add(s + PANEL)), xs);
            }
        }
    }
    for (acc, unit) in acc.iter().zip(units) {
        L::store(*acc, tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// Q4_K super-block panels in ggml's order (see `portable_dot`): per
/// super-block, each block's exact integer dot times its integer scale,
/// and its minimum times the activations' integer sum, summed in integers
/// and fused once with the super-block's combined scales.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, with super-blocks, as
/// `tile_dot`'s callers guarantee.
#[inline(always)]
unsafe fn super_nibble_panel<L: Lanes, const U: usize>(
    w: &Packed,
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let Packed::SuperNibble { qs, scale, min, d, dmin } = w else { unreachable!("a Q4_K super-block panel") };
    let (k, nb, sbs, sb) = (q.cols, q.cols / 32, q.cols / 256, &q.sb);
    let (mut acc, mut mins) = ([L::zero(); U], [L::zero(); U]);
    let in_fours = units.map(|unit| sb.batches.get_unchecked(i + unit.act).in_fours());
    for s in 0..sbs {
        let mut scales = [(L::zero(), L::zero()); U];
        for (u, unit) in units.iter().enumerate() {
            let (at, x_scale) = ((p * sbs + s) * PANEL + unit.lane, *sb.d.get_unchecked((i + unit.act) * sbs + s));
            scales[u] =
                (L::block_scale(L::scales_f16(d.as_ptr().add(at)), x_scale), L::block_scale(L::scales_f16(dmin.as_ptr().add(at)), x_scale));
        }
        let (mut isum, mut imin) = ([L::splat(0); U], [L::splat(0); U]);
        for j in 0..8 {
            let (b, blk) = (s * 8 + j, p * nb + s * 8 + j);
            let w = qs.as_ptr().add(blk * NIBBLE_BLOCK);
            if units[0].lane == 0 {
                (0..NIBBLE_BLOCK).step_by(64).for_each(|line| prefetch(w.wrapping_add(nb * NIBBLE_BLOCK + line)));
            }
            let x = sb.qs.as_ptr().add(i * k + b * 32);
            let mut sums = [L::splat(0); U];
            for t in 0..4 {
                for (sum, unit) in sums.iter_mut().zip(units) {
                    let (low, high) = L::nibbles(L::load(w.add(64 * t + 4 * unit.lane)));
                    let xa = x.add(unit.act * k + 8 * t);
                    *sum = L::dot_nibbles(L::dot_nibbles(*sum, low, xa), high, xa.add(4));
                }
            }
            for (u, unit) in units.iter().enumerate() {
                let at = blk * PANEL + unit.lane;
                let bsum = sb.bsum16.as_ptr().add(((i + unit.act) * sbs + s) * 16 + 2 * j);
                isum[u] = L::mul_add_i(isum[u], L::widen_nibbles(sums[u]), L::bytes_u32(scale.as_ptr().add(at)));
                imin[u] = L::mul_add_i(imin[u], L::bytes_u32(min.as_ptr().add(at)), L::splat(*bsum + *bsum.add(1)));
                if j == 7 || (in_fours[u] && j % 2 == 1) {
                    acc[u] = L::fma_scaled(acc[u], isum[u], scales[u].0);
                    mins[u] = L::fma_scaled(mins[u], imin[u], scales[u].1);
                    (isum[u], imin[u]) = (L::splat(0), L::splat(0));
                }
            }
        }
    }
    for (u, unit) in units.iter().enumerate() {
        L::store(L::sub_f(acc[u], mins[u]), tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// Q6_K super-block panels in ggml's order (see `portable_dot`): float
/// lane t of a unit fuses, super-block by super-block, the integer sum of
/// elements 4t..4t+4 of every block times its scale, less the offset
/// term, and the eight lanes end in ggml's tree; a tiled row's unit adds
/// the super-block's whole integer sum, scaled, instead. Lanes go one at a
/// time over the super-block's blocks, so only one integer sum per unit is
/// live.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, with super-blocks, as
/// `tile_dot`'s callers guarantee.
#[inline(always)]
unsafe fn super_int6_panel<L: Lanes, const U: usize>(
    w: &Packed,
    q: &QuantizedActs,
    (p, i): (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) {
    let Packed::SuperInt6 { qs, scale, d } = w else { unreachable!("a Q6_K super-block panel") };
    let (k, nb, sbs, sb) = (q.cols, q.cols / 32, q.cols / 256, &q.sb);
    let scales = |blk: usize, half: usize, lane: usize| L::bytes_i32(scale.as_ptr().add((blk * 2 + half) * PANEL + lane));
    let tiled = units.map(|unit| sb.batches.get_unchecked(i + unit.act).tiled());
    let (mut lanes, mut tiles) = ([[L::zero(); 8]; U], [L::zero(); U]);
    for s in 0..sbs {
        let first = p * nb + s * 8;
        let (mut ds, mut x_scales) = ([L::zero(); U], [0f32; U]);
        for (u, unit) in units.iter().enumerate() {
            x_scales[u] = *sb.d.get_unchecked((i + unit.act) * sbs + s);
            ds[u] = L::block_scale(L::scales_f16(d.as_ptr().add((p * sbs + s) * PANEL + unit.lane)), x_scales[u]);
        }
        let mut totals = [L::splat(0); U];
        for t in 0..8 {
            let mut isum = [L::splat(0); U];
            for (u, unit) in units.iter().enumerate() {
                let bsum = sb.bsum16.as_ptr().add(((i + unit.act) * sbs + s) * 16 + 2 * t);
                let offset = L::mul_add_i(L::splat(0), scales(first + t, 0, unit.lane), L::splat(-32 * *bsum));
                isum[u] = L::mul_add_i(offset, scales(first + t, 1, unit.lane), L::splat(-32 * *bsum.add(1)));
            }
            for g in 0..8 {
                let w = qs.as_ptr().add((first + g) * BYTE_BLOCK + 64 * t);
                if units[0].lane == 0 && t == 0 {
                    (0..BYTE_BLOCK).step_by(64).for_each(|line| prefetch(w.wrapping_add(nb * BYTE_BLOCK / 2 + line)));
                }
                let x = sb.qs.as_ptr().add(i * k + (s * 8 + g) * 32 + 4 * t);
                for (sum, unit) in isum.iter_mut().zip(units) {
                    let dot = L::dot(L::splat(0), L::load(w.add(4 * unit.lane)), x.add(unit.act * k));
                    *sum = L::mul_add_i(*sum, dot, scales(first + g, t / 4, unit.lane));
                }
            }
            for (u, lanes) in lanes.iter_mut().enumerate() {
                if tiled[u] {
                    totals[u] = L::mul_add_i(totals[u], isum[u], L::splat(1));
                } else {
                    lanes[t] = L::fma_scaled(lanes[t], isum[u], ds[u]);
                }
            }
        }
        for (u, unit) in units.iter().enumerate() {
            if tiled[u] {
                let w_scale = L::scales_f16(d.as_ptr().add((p * sbs + s) * PANEL + unit.lane));
                tiles[u] = L::fma_splat(tiles[u], L::mul_f(L::to_float(totals[u]), w_scale), x_scales[u]);
            }
        }
    }
    for (u, unit) in units.iter().enumerate() {
        let sums = if tiled[u] { tiles[u] } else { tree8::<L>(lanes[u]) };
        L::store(sums, tile[unit.act].as_mut_ptr().add(unit.lane));
    }
}

/// Panel `p` against the tile's activation rows from `i`, in units of `L`
/// (see `Unit`); false for formats without a kernel.
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn panel<L: Lanes, const AR: usize>(w: &Packed, q: &QuantizedActs, p: usize, i: usize, tile: &mut Tile) -> bool {
    // Up to eight units cover the whole panel for a few rows; with up to
    // four, a 4-bit pass takes both nibble sides.
    let whole = PANEL / L::N;
    match (whole, AR) {
        (1, 1) => return units_dot::<L, 1, 2>(w, q, (p, i), units::<L, 1>(whole, 0), tile),
        (2, 1) => return units_dot::<L, 2, 2>(w, q, (p, i), units::<L, 2>(whole, 0), tile),
        (2, 2) => return units_dot::<L, 4, 2>(w, q, (p, i), units::<L, 4>(whole, 0), tile),
        (2, 3) => return units_dot::<L, 6, 1>(w, q, (p, i), units::<L, 6>(whole, 0), tile),
        (2, 4) => return units_dot::<L, 8, 1>(w, q, (p, i), units::<L, 8>(whole, 0), tile),
        _ => {}
    }
    // A loop, not a closure: a closure here is compiled without the
    // caller's target features, and its intrinsics are not inlined.
    for lane in (0..PANEL).step_by(L::N) {
        if !units_dot::<L, AR, 1>(w, q, (p, i), units::<L, AR>(1, lane), tile) {
            return false;
        }
    }
    true
}

/// `U` units: `widths` registers' width of lanes from `lane0` for each
/// activation row in turn.
#[inline(always)]
fn units<L: Lanes, const U: usize>(widths: usize, lane0: usize) -> [Unit; U] {
    let mut units = [Unit { act: 0, lane: 0 }; U];
    for (u, unit) in units.iter_mut().enumerate() {
        *unit = Unit { act: u / widths, lane: lane0 + u % widths * L::N };
    }
    units
}

/// The dots of `units` with the kernel of `w`'s format; `SIDES`: how many
/// of a 4-bit line's nibble sides one pass takes (see `nibble_panel`).
///
/// # Safety
/// The CPU has `L`'s instruction set; `w` holds whole panels through the one
/// read and `q` the activation rows it reads, as `tile_dot`'s callers
/// guarantee.
#[inline(always)]
unsafe fn units_dot<L: Lanes, const U: usize, const SIDES: usize>(
    w: &Packed,
    q: &QuantizedActs,
    at: (usize, usize),
    units: [Unit; U],
    tile: &mut Tile,
) -> bool {
    match w {
        Packed::Nibble { qs, scale, min, order: Arithmetic::Ggml } => nibble_panel::<L, U, SIDES>((qs, scale, min), q, at, units, tile),
        Packed::Nibble { qs, scale, min, order: Arithmetic::Fast } => nibble_blocks_panel::<L, U>((qs, scale, min), q, at, units, tile),
        Packed::Int8 { qs, scale, min, order, codes } => {
            let w = (qs.as_slice(), scale.as_slice(), min.as_deref());
            match (order, *codes) {
                (Arithmetic::Ggml, CodeLayout::Eight) => int8_lanes_panel::<L, _, U>(EightBits, w, q, at, units, tile),
                (Arithmetic::Ggml, CodeLayout::Five { zero: 16 }) => int8_lanes_panel::<L, _, U>(FiveBits::<16>, w, q, at, units, tile),
                (Arithmetic::Ggml, CodeLayout::Five { zero: 0 }) => int8_lanes_panel::<L, _, U>(FiveBits::<0>, w, q, at, units, tile),
                (Arithmetic::Fast, CodeLayout::Eight) => int8_panel::<L, _, U>(EightBits, w, q, at, units, tile),
                (Arithmetic::Fast, CodeLayout::Five { zero: 16 }) => int8_panel::<L, _, U>(FiveBits::<16>, w, q, at, units, tile),
                (Arithmetic::Fast, CodeLayout::Five { zero: 0 }) => int8_panel::<L, _, U>(FiveBits::<0>, w, q, at, units, tile),
                // Formats repacking never makes for 8-bit panels.
                (_, CodeLayout::Five { .. } | CodeLayout::Six | CodeLayout::Four { .. }) => return false,
            }
        }
        Packed::Int6 { qs, scale, min, codes } => {
            let w = (qs.as_slice(), scale.as_slice(), min.as_deref());
            match *codes {
                CodeLayout::Six => int6_panel::<L, _, U>(SixBits, w, q, at, units, tile),
                CodeLayout::Four { zero: 0 } => int6_panel::<L, _, U>(FourBits::<0>, w, q, at, units, tile),
                CodeLayout::Four { zero: 4 } => int6_panel::<L, _, U>(FourBits::<4>, w, q, at, units, tile),
                // Formats repacking never makes for panels with a scale per 16.
                CodeLayout::Eight | CodeLayout::Five { .. } | CodeLayout::Four { .. } => return false,
            }
        }
        Packed::SuperNibble { .. } => super_nibble_panel::<L, U>(w, q, at, units, tile),
        Packed::SuperInt6 { .. } => super_int6_panel::<L, U>(w, q, at, units, tile),
        Packed::Float(_) | Packed::OnSuperBlocks(_) | Packed::Int16 { .. } | Packed::Bf16(_) => return false,
    }
    true
}

/// # Safety
/// The CPU has AVX-512 VNNI; `w` holds whole panels through the one read and
/// `q` the activation rows it reads, as `tile_dot`'s callers guarantee.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_vnni<const AR: usize>(w: &Packed, q: &QuantizedActs, p: usize, i: usize, tile: &mut Tile) -> bool {
    panel::<Vnni512, AR>(w, q, p, i, tile)
}

/// # Safety
/// The CPU has AVX2; `w` holds whole panels through the one read and `q` the
/// activation rows it reads, as `tile_dot`'s callers guarantee.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_avx2<const AR: usize>(w: &Packed, q: &QuantizedActs, p: usize, i: usize, tile: &mut Tile) -> bool {
    panel::<Avx2, AR>(w, q, p, i, tile)
}

/// Where a float kernel reads: panel `p` of `w` (rows of `cols`) and
/// activation rows from `i` of `x`.
#[derive(Clone, Copy)]
struct FloatAt<'a> {
    w: &'a [f32],
    x: &'a [f32],
    cols: usize,
    p: usize,
    i: usize,
}

/// Float weights against AR activation rows, a 512-bit register of the
/// panel's 16 rows per activation row: per lane, one fused multiply-add per
/// input in input order, as `matmul::portable_dot` does.
///
/// # Safety
/// The CPU has AVX-512 F; `w` holds panel `p` whole and `x` rows `i..i + AR`.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn float_panel_avx512<const AR: usize>(at: FloatAt, tile: &mut Tile) {
    let (cols, wp) = (at.cols, at.w.as_ptr().add(at.p * at.cols * PANEL));
    let xp = at.x.as_ptr().add(at.i * cols);
    let mut acc = [_mm512_setzero_ps(); AR];
    for k in 0..cols {
        let w = _mm512_loadu_ps(wp.add(k * PANEL));
        for (a, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(w, _mm512_set1_ps(*xp.add(a * cols + k)), *acc);
        }
    }
    for (row, acc) in tile.iter_mut().zip(acc) {
        _mm512_storeu_ps(row.as_mut_ptr(), acc);
    }
}

/// `float_panel_avx512` for panels `p` and `p + 1` at once: each broadcast
/// activation feeds both panels' FMAs, the same chains as one at a time.
///
/// # Safety
/// The CPU has AVX-512 F; `w` holds panels `p` and `p + 1` whole and `x`
/// rows `i..i + AR`.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn float_pair_avx512<const AR: usize>(at: FloatAt, tiles: &mut [Tile; 2]) {
    let (cols, wp) = (at.cols, at.w.as_ptr().add(at.p * at.cols * PANEL));
    let wq = wp.add(cols * PANEL);
    let xp = at.x.as_ptr().add(at.i * cols);
    let mut acc = [[_mm512_setzero_ps(); 2]; AR];
    for k in 0..cols {
        let (w0, w1) = (_mm512_loadu_ps(wp.add(k * PANEL)), _mm512_loadu_ps(wq.add(k * PANEL)));
        for (a, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*xp.add(a * cols + k));
            acc[0] = _mm512_fmadd_ps(w0, x, acc[0]);
            acc[1] = _mm512_fmadd_ps(w1, x, acc[1]);
        }
    }
    let [t0, t1] = tiles;
    for ((r0, r1), acc) in t0.iter_mut().zip(t1.iter_mut()).zip(acc) {
        _mm512_storeu_ps(r0.as_mut_ptr(), acc[0]);
        _mm512_storeu_ps(r1.as_mut_ptr(), acc[1]);
    }
}

/// Where a 16-bit kernel reads: panel `p` of `Packed::Int16`'s codes and
/// scales, against activation rows from `i` of `q`'s 13-bit codes.
#[derive(Clone, Copy)]
struct Int16At<'a> {
    qs: &'a [i16],
    scale: &'a [f32],
    q: &'a QuantizedActs,
    p: usize,
    i: usize,
}

/// `vpdpwssd` of `a` and `b` into `acc`, written out as `dpwssd_broadcast` says.
///
/// # Safety
/// The CPU has AVX-512 VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    std::arch::asm!("vpdpwssd {acc}, {a}, {b}", acc = inout(zmm_reg) acc, a = in(zmm_reg) a, b = in(zmm_reg) b, options(pure, nomem, nostack, preserves_flags));
    acc
}

/// `vpdpwssd` against the pair of 16-bit values `offset` bytes from `row`,
/// broadcast to every lane by the instruction's own load. Written out:
/// LLVM splits `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` unless it
/// tunes for a CPU it knows runs the fused instruction fast, and on a Xeon
/// with AVX-512 VNNI that does, the split cost the one-panel kernel a fifth
/// of its speed (137 against 171 GMAC/s at 64 rows, `cargo bench --bench
/// kernels -- matmul --format F16`); the load folded in took it to 189.
///
/// # Safety
/// The CPU has AVX-512 VNNI; `row + offset` points at 4 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd_broadcast(mut acc: __m512i, a: __m512i, row: *const i32, offset: usize) -> __m512i {
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, dword ptr [{row} + {offset}]{{1to16}}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        row = in(reg) row,
        offset = in(reg) offset,
        options(pure, readonly, nostack, preserves_flags)
    );
    acc
}

/// NP 16-bit weight panels (from `p`) against AR activation rows: per block
/// of 32, the exact integer dot (`vpdpwssd`, two inputs a lane a step),
/// then one fused multiply-add with the row's and the block's scales, as
/// `matmul::portable_dot` does. With two panels each activation pair
/// loaded feeds two multiply-adds: the loads, not the multiply-adds, are
/// what one panel waits for (`cargo bench --bench kernels -- matmul
/// --format F16`, 32 to 512 rows: two panels 235-249 GMAC/s against
/// 181-190 for one; three were no faster). Two panels' float sums for
/// eight rows do not all fit beside the integer ones; the compiler's
/// spills of them, touched once a block, cost less than summing into the
/// tiles did (269-281 against 235-249).
///
/// # Safety
/// The CPU has AVX-512 VNNI; `qs` holds panels `p..p + NP` whole and `q`
/// 13-bit rows `i..i + AR`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn int16_panels_vnni<const NP: usize, const AR: usize>(at: Int16At, tiles: &mut [Tile; NP]) {
    let (cols, q) = (at.q.cols, at.q);
    let nb = cols / 32;
    let w: [*const i16; NP] = std::array::from_fn(|n| at.qs.as_ptr().add((at.p + n) * nb * 32 * PANEL));
    let ws: [__m512; NP] = std::array::from_fn(|n| _mm512_loadu_ps(at.scale.as_ptr().add((at.p + n) * PANEL)));
    let rows: [*const i32; AR] = std::array::from_fn(|a| q.q16.as_ptr().add((at.i + a) * cols) as *const i32);
    let mut acc = [[_mm512_setzero_ps(); AR]; NP];
    for b in 0..nb {
        let mut isum = [[_mm512_setzero_si512(); AR]; NP];
        for t in 0..16 {
            let wv: [__m512i; NP] = std::array::from_fn(|n| _mm512_loadu_si512(w[n].add((b * 16 + t) * 2 * PANEL) as *const __m512i));
            for (a, row) in rows.iter().enumerate() {
                if NP == 1 {
                    isum[0][a] = dpwssd_broadcast(isum[0][a], wv[0], *row, 4 * (b * 16 + t));
                } else {
                    // One load for all the panels' multiply-adds.
                    let pair = _mm512_set1_epi32(row.add(b * 16 + t).read_unaligned());
                    for (isum, wv) in isum.iter_mut().zip(wv) {
                        isum[a] = dpwssd(isum[a], wv, pair);
                    }
                }
            }
        }
        for a in 0..AR {
            let xs = _mm512_set1_ps(*q.scale16.get_unchecked((at.i + a) * nb + b));
            for ((acc, isum), ws) in acc.iter_mut().zip(&isum).zip(ws) {
                acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[a]), _mm512_mul_ps(ws, xs), acc[a]);
            }
        }
    }
    for (tile, acc) in tiles.iter_mut().zip(acc) {
        for (row, acc) in tile.iter_mut().zip(acc) {
            _mm512_storeu_ps(row.as_mut_ptr(), acc);
        }
    }
}

/// `int16_panels_vnni` with AVX2, one panel: `vpmaddwd` into each half panel's sums.
///
/// # Safety
/// The CPU has AVX2 and FMA; `qs` holds panel `p` whole and `q` 13-bit
/// rows `i..i + AR`.
#[target_feature(enable = "avx2,fma")]
unsafe fn int16_panel_avx2<const AR: usize>(at: Int16At, tile: &mut [[f32; PANEL]]) {
    let (cols, q) = (at.q.cols, at.q);
    let nb = cols / 32;
    let w = at.qs.as_ptr().add(at.p * nb * 32 * PANEL);
    let ws = [_mm256_loadu_ps(at.scale.as_ptr().add(at.p * PANEL)), _mm256_loadu_ps(at.scale.as_ptr().add(at.p * PANEL + 8))];
    let mut acc = [[_mm256_setzero_ps(); 2]; AR];
    for b in 0..nb {
        let wb = w.add(b * 32 * PANEL);
        let mut isum = [[_mm256_setzero_si256(); 2]; AR];
        for t in 0..16 {
            let step = wb.add(t * 2 * PANEL);
            let wv = [_mm256_loadu_si256(step as *const __m256i), _mm256_loadu_si256(step.add(PANEL) as *const __m256i)];
            for (a, isum) in isum.iter_mut().enumerate() {
                let pair = (q.q16.as_ptr().add((at.i + a) * cols + b * 32 + 2 * t) as *const i32).read_unaligned();
                let x = _mm256_set1_epi32(pair);
                isum[0] = _mm256_add_epi32(isum[0], _mm256_madd_epi16(wv[0], x));
                isum[1] = _mm256_add_epi32(isum[1], _mm256_madd_epi16(wv[1], x));
            }
        }
        for (a, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
            let xs = _mm256_set1_ps(*q.scale16.get_unchecked((at.i + a) * nb + b));
            for h in 0..2 {
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]), _mm256_mul_ps(ws[h], xs), acc[h]);
            }
        }
    }
    for (row, acc) in tile.iter_mut().zip(acc) {
        _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
    }
}

/// `float_panel_avx512` with two 256-bit registers per activation row.
///
/// # Safety
/// The CPU has AVX2 and FMA; `w` holds panel `p` whole and `x` rows `i..i + AR`.
#[target_feature(enable = "avx2,fma")]
unsafe fn float_panel_avx2<const AR: usize>(at: FloatAt, tile: &mut [[f32; PANEL]]) {
    let (cols, wp) = (at.cols, at.w.as_ptr().add(at.p * at.cols * PANEL));
    let xp = at.x.as_ptr().add(at.i * cols);
    let mut acc = [[_mm256_setzero_ps(); 2]; AR];
    for k in 0..cols {
        let (lo, hi) = (_mm256_loadu_ps(wp.add(k * PANEL)), _mm256_loadu_ps(wp.add(k * PANEL + 8)));
        for (a, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_broadcast_ss(&*xp.add(a * cols + k));
            acc[0] = _mm256_fmadd_ps(lo, x, acc[0]);
            acc[1] = _mm256_fmadd_ps(hi, x, acc[1]);
        }
    }
    for (row, acc) in tile.iter_mut().zip(acc) {
        _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
    }
}

/// `f::<AR>(args)`, or `f::<N, AR>(args)` for `f::<N, _>`, with AR the
/// tile's activation rows (1..=8) as a constant.
macro_rules! by_acts {
    ($acts:expr, $f:ident ( $($arg:expr),* )) => {
        by_acts!(@ $acts, $f, [], ($($arg),*))
    };
    ($acts:expr, $f:ident::<$n:literal, _> ( $($arg:expr),* )) => {
        by_acts!(@ $acts, $f, [$n,], ($($arg),*))
    };
    (@ $acts:expr, $f:ident, [$($n:tt)*], $args:tt) => {
        match $acts {
            1 => $f::<$($n)* 1> $args,
            2 => $f::<$($n)* 2> $args,
            3 => $f::<$($n)* 3> $args,
            4 => $f::<$($n)* 4> $args,
            5 => $f::<$($n)* 5> $args,
            6 => $f::<$($n)* 6> $args,
            7 => $f::<$($n)* 7> $args,
            _ => $f::<$($n)* 8> $args,
        }
    };
}

/// `kernel(first, rows)` over the tile's first `acts` rows in groups of at
/// most `n`, `first` the group's first row.
fn in_groups(tile: &mut Tile, acts: usize, n: usize, mut kernel: impl FnMut(usize, &mut [[f32; PANEL]])) {
    for (g, rows) in tile[..acts].chunks_mut(n).enumerate() {
        kernel(g * n, rows);
    }
}

/// Fills `tiles` for panels `p` and `p + 1` of float or 16-bit weights
/// and activation rows `i..i + acts` (at most TILE_ACTS), with AVX-512.
#[allow(clippy::too_many_arguments)]
pub(super) fn pair_dot(isa: Isa, w: &Packed, x: &[f32], q: &QuantizedActs, p: usize, i: usize, acts: usize, tiles: &mut [Tile; 2]) {
    assert_eq!(isa.kind(), IsaKind::Avx512Vnni, "panel pairs take AVX-512");
    let cols = q.cols;
    match w {
        Packed::Float(w) => {
            assert!(w.len() >= (p + 2) * cols * PANEL && x.len() >= (i + acts) * cols, "out of bounds");
            // SAFETY: the Isa was detected on this CPU; the bounds are checked above.
            unsafe { by_acts!(acts, float_pair_avx512(FloatAt { w, x, cols, p, i }, tiles)) }
        }
        Packed::Int16 { qs, scale } => {
            assert!(qs.len() >= (p + 2) * cols * PANEL && q.q16.len() >= (i + acts) * cols, "out of bounds");
            // SAFETY: as above.
            unsafe { by_acts!(acts, int16_panels_vnni::<2, _>(Int16At { qs, scale, q, p, i }, tiles)) }
        }
        _ => panic!("panel pairs are for float and 16-bit weights"),
    }
}

/// Fills `tile` for panel `p` and activation rows `i..i + acts` (at most
/// TILE_ACTS) with SIMD if this weight format has a kernel; returns false
/// (leaving the tile to the portable path) otherwise.
#[allow(clippy::too_many_arguments)]
pub(super) fn tile_dot(isa: Isa, w: &Packed, x: &[f32], q: &QuantizedActs, p: usize, i: usize, acts: usize, tile: &mut Tile) -> bool {
    // SAFETY: callers pass only an Isa that Isa::available() detected on
    // this CPU; packed arrays hold whole panels, activations `acts` rows.
    unsafe {
        if let Packed::Int16 { qs, scale } = w {
            let at = Int16At { qs, scale, q, p, i };
            match isa.kind() {
                IsaKind::Avx512Vnni => by_acts!(acts, int16_panels_vnni::<1, _>(at, std::array::from_mut(tile))),
                // Three rows at a time: their integer and float sums in
                // registers beside the panel's two halves.
                IsaKind::Avx2 => in_groups(tile, acts, 3, |first, rows| {
                    let at = Int16At { i: i + first, ..at };
                    match rows.len() {
                        1 => int16_panel_avx2::<1>(at, rows),
                        2 => int16_panel_avx2::<2>(at, rows),
                        _ => int16_panel_avx2::<3>(at, rows),
                    }
                }),
                IsaKind::Portable => return false,
            }
            return true;
        }
        if let Packed::Float(w) = w {
            let at = FloatAt { w, x, cols: q.cols, p, i };
            match isa.kind() {
                IsaKind::Avx512Vnni => by_acts!(acts, float_panel_avx512(at, tile)),
                // Four rows at a time: two registers each, eight chains in
                // flight, and room left for the weights.
                IsaKind::Avx2 => in_groups(tile, acts, 4, |first, rows| {
                    let at = FloatAt { i: i + first, ..at };
                    match rows.len() {
                        1 => float_panel_avx2::<1>(at, rows),
                        2 => float_panel_avx2::<2>(at, rows),
                        3 => float_panel_avx2::<3>(at, rows),
                        _ => float_panel_avx2::<4>(at, rows),
                    }
                }),
                IsaKind::Portable => return false,
            }
            return true;
        }
        match isa.kind() {
            IsaKind::Avx512Vnni => by_acts!(acts, panel_vnni(w, q, p, i, tile)),
            IsaKind::Avx2 => by_acts!(acts, panel_avx2(w, q, p, i, tile)),
            IsaKind::Portable => false,
        }
    }
}

/// `matmul::quantize_block` with 512-bit registers: the same scale and
/// products, rounded to nearest even by the conversion (as the portable
/// path rounds), so the same bytes.
///
/// # Safety
/// The CPU has AVX-512 (F and BW).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn quantize_block_avx512(x: &[f32; 32], q: &mut [i8; 32]) -> (f32, i32, i32) {
    let (v0, v1) = (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(x.as_ptr().add(16)));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let inv = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let (q0, q1) = (_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv)));
    _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(q.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(q1));
    (amax / 127.0, _mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1))
}

/// `matmul::quantize_block_16` with 512-bit registers: the same scale and
/// products, rounded to nearest even by the conversion, so the same codes.
///
/// # Safety
/// The CPU has AVX-512 (F and BW).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn quantize_block_16_avx512(x: &[f32; 32], q: &mut [i16; 32]) -> f32 {
    let (v0, v1) = (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(x.as_ptr().add(16)));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let inv = _mm512_set1_ps(if amax > 0.0 { ACT16_MAX / amax } else { 0.0 });
    let (q0, q1) = (_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv)));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, _mm512_cvtepi32_epi16(q0));
    _mm256_storeu_si256(q.as_mut_ptr().add(16) as *mut __m256i, _mm512_cvtepi32_epi16(q1));
    amax / ACT16_MAX
}

/// `quantize_block_16_avx512` with 256-bit registers: the same codes.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_block_16_avx2(x: &[f32; 32], q: &mut [i16; 32]) -> f32 {
    let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(x.as_ptr().add(8 * j)));
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let amax = max_lane8(_mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3]))));
    let inv = _mm256_set1_ps(if amax > 0.0 { ACT16_MAX / amax } else { 0.0 });
    let i: [__m256i; 4] = std::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv)));
    // Packing works within 128-bit halves: quadwords come out as [a0 b0 a1 b1].
    for h in 0..2 {
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[2 * h], i[2 * h + 1]));
        _mm256_storeu_si256(q.as_mut_ptr().add(16 * h) as *mut __m256i, packed);
    }
    amax / ACT16_MAX
}

/// `quantize_block_avx512` with 256-bit registers: the same bytes.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_block_avx2(x: &[f32; 32], q: &mut [i8; 32]) -> (f32, i32, i32) {
    let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(x.as_ptr().add(8 * j)));
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let amax = max_lane8(_mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3]))));
    let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
    let i: [__m256i; 4] = std::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv)));
    // Packing works within 128-bit halves: dwords come out as rows
    // [0 1 2 3 | 0 1 2 3] of the four vectors' low and high halves.
    let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, ordered);
    let sum = |v: __m256i| {
        let h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
        _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32::<0b00_00_00_01>(h)))
    };
    (amax / 127.0, sum(_mm256_add_epi32(i[0], i[1])), sum(_mm256_add_epi32(i[2], i[3])))
}
