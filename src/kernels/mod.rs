//! CPU compute: quantized matmul over batches of activations, elementwise
//! ops, the compute pool. SIMD paths are chosen at run time; the portable
//! path is the reference the tests hold the others to.

mod acts;
#[cfg(target_arch = "x86_64")]
mod amx;
pub mod bf16_tiles;
pub mod expf;
pub mod gelu;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;

/// Asks the CPU to bring the cache line at `p` into L1: a hint, harmless
/// past the end of an allocation, and a no-op where there is no such
/// instruction.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    // SAFETY: a prefetch never faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The largest of eight lanes.
///
/// # Safety
/// Only for functions compiled with AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn max_lane8(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// How a quantized model's float arithmetic is ordered. Integer sums are
/// exact either way; the orders differ in how they are combined in float,
/// and activations quantized to 8 bits before every matmul turn last-bit
/// differences into whole steps, so the two give different tokens where a
/// model's top two are close. Both are batch invariant: a sequence's
/// results do not depend on what it runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arithmetic {
    /// llama.cpp's CPU order, operation for operation: 4-bit weights in
    /// sums of four codes each fused into one of eight float lanes, and
    /// attention's weighted V sums rounded to f16 at every position. Greedy
    /// outputs equal llama.cpp's bit for bit.
    Ggml,
    /// A 4-bit block's 32 codes in one integer sum (half the instructions
    /// of ggml's order), attention's V sums kept in f32. The default: faster
    /// everywhere, as close to llama.cpp as another order of ggml's own.
    #[default]
    Fast,
}

impl fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arithmetic::Ggml => "ggml",
            Arithmetic::Fast => "fast",
        })
    }
}

impl std::str::FromStr for Arithmetic {
    type Err = String;
    fn from_str(s: &str) -> Result<Arithmetic, String> {
        match s {
            "ggml" => Ok(Arithmetic::Ggml),
            "fast" => Ok(Arithmetic::Fast),
            _ => Err(format!("unknown arithmetic {s:?} (ggml or fast)")),
        }
    }
}

/// The instruction sets kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsaKind {
    Portable,
    Avx2,
    /// AVX-512 with VNNI (`vpdpbusd`).
    Avx512Vnni,
}

/// An instruction set this CPU was found to run, and with AVX-512 whether
/// AMX's bf16 tiles as well (for `Packed::Bf16`). Only detection
/// (`available`, `select`) or the `unsafe` `assume` make one, so the safe
/// functions that dispatch on it never run an instruction the CPU lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Isa(IsaKind, bool);

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            IsaKind::Portable => "portable",
            IsaKind::Avx2 => "avx2",
            IsaKind::Avx512Vnni if self.1 => "avx512-amx",
            IsaKind::Avx512Vnni => "avx512-vnni",
        })
    }
}

impl Isa {
    /// Plain Rust: every CPU runs it.
    pub const PORTABLE: Isa = Isa(IsaKind::Portable, false);

    /// Takes `kind` (without AMX) as available without checking.
    ///
    /// # Safety
    /// The CPU must have every feature `available` checks for `kind`.
    pub unsafe fn assume(kind: IsaKind) -> Isa {
        Isa(kind, false)
    }

    pub fn kind(self) -> IsaKind {
        self.0
    }

    /// Whether AMX's bf16 tiles are available to this process, with AVX-512.
    pub fn amx(self) -> bool {
        self.1
    }

    /// Every instruction set this CPU can run, portable first.
    pub fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::PORTABLE];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                isas.push(Isa(IsaKind::Avx2, false));
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    isas.push(Isa(IsaKind::Avx512Vnni, false));
                    if amx::supported() {
                        isas.push(Isa(IsaKind::Avx512Vnni, true));
                    }
                }
            }
        }
        isas
    }

    /// The best available, unless `CARAVAN_ISA` names another available one.
    pub fn select() -> anyhow::Result<Isa> {
        let available = Isa::available();
        match std::env::var("CARAVAN_ISA") {
            Ok(name) if !name.is_empty() => available.iter().copied().find(|i| i.to_string() == name).ok_or_else(|| {
                let names: Vec<String> = available.iter().map(Isa::to_string).collect();
                anyhow::anyhow!("CARAVAN_ISA={name} is not available on this CPU (available: {})", names.join(", "))
            }),
            _ => Ok(*available.last().expect("portable is always available")),
        }
    }
}
