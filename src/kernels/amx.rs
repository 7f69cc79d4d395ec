//! Float matrices multiplied as bf16 on AMX tiles (Intel's TMUL, from
//! Sapphire Rapids on): one `tdpbf16ps` takes 16 activation rows by 16
//! weight rows by 32 inputs, eight times the multiply-adds of a
//! `vpdpwssd`, summing in f32 all along a row. Weights and activations are
//! rounded to bf16 (to nearest, ties to even), so this path is held to a
//! tolerance, not to bits: it serves embedding models in the fast order,
//! whose answer is a normalized mean of the last hidden states.
//!
//! Weights are `Packed::Bf16` (`int16_offset`'s order: a tile of 16 pairs
//! of inputs by 16 rows per panel block, as `tdpbf16ps` takes B), the
//! activations `bf16_tiles`'.

use std::arch::asm;
use std::cell::Cell;
use std::sync::OnceLock;

use super::bf16_tiles::{padded_rows, GROUP};
use super::pool::{ComputePool, SharedOut};
use super::quant::PANEL;

/// u16 values in one tile (16 rows of 64 bytes).
const TILE: usize = 512;

/// Whether this CPU has AMX with bf16 and the kernel lets this process use
/// its tile registers (Linux asks each process to request them).
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: cpuid leaf 7 exists on every x86-64 CPU with AVX-512
        // (checked first); arch_prctl only answers whether it granted.
        unsafe {
            if !is_x86_feature_detected!("avx512f") || !is_x86_feature_detected!("avx512bw") {
                return false;
            }
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            let (bf16, tile) = (leaf.edx & (1 << 22) != 0, leaf.edx & (1 << 24) != 0);
            bf16 && tile && request_tile_data()
        }
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted.
///
/// # Safety
/// x86-64 Linux (elsewhere the call fails and AMX stays unused).
unsafe fn request_tile_data() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    const ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    asm!("syscall", inlateout("rax") ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
         lateout("rcx") _, lateout("r11") _, options(nostack));
    ret == 0
}

/// Loads the tile configuration on this thread once: all eight tiles 16
/// rows of 64 bytes. No other code on these threads uses tiles, so it
/// stays loaded.
///
/// # Safety
/// `supported()` is true.
unsafe fn configure_thread() {
    thread_local!(static CONFIGURED: Cell<bool> = const { Cell::new(false) });
    if CONFIGURED.get() {
        return;
    }
    let mut config = [0u8; 64];
    config[0] = 1; // palette 1
    for t in 0..8 {
        config[16 + 2 * t] = 64;
        config[48 + t] = GROUP as u8;
    }
    asm!("ldtilecfg [{}]", in(reg) config.as_ptr(), options(nostack, readonly));
    CONFIGURED.set(true);
}

/// `out[i * rows + r] = Σ_k x[i][k] · W[r][k]` for `m` activation rows in
/// bf16 tiles (`bf16_tiles::tile_acts`) and bf16 weights (`Packed::Bf16`).
///
/// # Panics
/// Where `supported()` is false, or the shapes disagree.
pub fn matmul(pool: &ComputePool, w: &[u16], rows: usize, cols: usize, acts: &[u16], m: usize, out: &mut [f32]) {
    assert!(supported(), "AMX is not available");
    let (nb, panels) = (cols / 32, rows.div_ceil(PANEL));
    assert!(w.len() >= panels * nb * TILE && acts.len() >= padded_rows(m) * cols && out.len() == m * rows);
    let shared = SharedOut::new(out);
    // Tasks of whole panel pairs, a few per thread: each task's weights
    // stay in its core's L2 while every activation group passes by.
    let pairs = panels.div_ceil(2);
    let per_task = pairs.div_ceil(4 * pool.threads()).max(1);
    pool.run(pairs.div_ceil(per_task), &|t| {
        // SAFETY: each task writes only its own panels' columns.
        let out = unsafe { shared.slice() };
        let (first, last) = (2 * t * per_task, (2 * (t + 1) * per_task).min(panels));
        // SAFETY: supported() was checked; the bounds above cover every
        // tile read, and `store` checks every write.
        unsafe {
            configure_thread();
            for g in (0..m.div_ceil(GROUP)).step_by(2) {
                let a = [acts[g * nb * TILE..].as_ptr(), acts[(g + 1) * nb * TILE..].as_ptr()];
                for p in (first..last).step_by(2) {
                    let both = p + 1 < last;
                    let b = [w[p * nb * TILE..].as_ptr(), w[(p + usize::from(both)) * nb * TILE..].as_ptr()];
                    dot_tiles(a, b, nb);
                    let at = Place { m, rows, g, p };
                    store::<0>(out, at);
                    store::<2>(out, Place { g: g + 1, ..at });
                    if both {
                        store::<1>(out, Place { p: p + 1, ..at });
                        store::<3>(out, Place { g: g + 1, p: p + 1, ..at });
                    }
                }
            }
        }
    });
}

/// Tiles 0..4 = (acts a[0], a[1]) x (weights b[0], b[1]) over `nb` blocks:
/// tile 0 a0·b0, 1 a0·b1, 2 a1·b0, 3 a1·b1.
///
/// # Safety
/// The thread is configured; each pointer has `nb` tiles behind it.
#[inline(always)]
unsafe fn dot_tiles(a: [*const u16; 2], b: [*const u16; 2], nb: usize) {
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    for blk in 0..nb {
        let at = blk * TILE;
        asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a[0].add(at), a1 = in(reg) a[1].add(at), b0 = in(reg) b[0].add(at), b1 = in(reg) b[1].add(at),
            s = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
}

/// Where one output tile goes: activation group `g`, weight panel `p`.
#[derive(Clone, Copy)]
struct Place {
    m: usize,
    rows: usize,
    g: usize,
    p: usize,
}

/// Writes tile `T` into `out` at `at`, straight when the tile is whole,
/// else its rows and lanes that exist.
///
/// # Safety
/// The thread is configured and tile `T` holds sums.
#[inline(always)]
unsafe fn store<const T: usize>(out: &mut [f32], at: Place) {
    let Place { m, rows, g, p } = at;
    let (act, lane) = (g * GROUP, p * PANEL);
    if act >= m {
        return;
    }
    let (acts, lanes) = (GROUP.min(m - act), PANEL.min(rows - lane));
    let mut tile = [0f32; GROUP * PANEL];
    let (dst, stride) = if acts == GROUP && lanes == PANEL {
        (out[act * rows + lane..(act + GROUP - 1) * rows + lane + PANEL].as_mut_ptr(), rows * 4)
    } else {
        (tile.as_mut_ptr(), PANEL * 4)
    };
    match T {
        0 => asm!("tilestored [{d} + {s}*1], tmm0", d = in(reg) dst, s = in(reg) stride, options(nostack)),
        1 => asm!("tilestored [{d} + {s}*1], tmm1", d = in(reg) dst, s = in(reg) stride, options(nostack)),
        2 => asm!("tilestored [{d} + {s}*1], tmm2", d = in(reg) dst, s = in(reg) stride, options(nostack)),
        _ => asm!("tilestored [{d} + {s}*1], tmm3", d = in(reg) dst, s = in(reg) stride, options(nostack)),
    }
    if dst == tile.as_mut_ptr() {
        for (r, row) in tile.chunks_exact(PANEL).take(acts).enumerate() {
            let at = (act + r) * rows + lane;
            out[at..at + lanes].copy_from_slice(&row[..lanes]);
        }
    }
}
