//! Picking the best logits out of a whole vocabulary without sorting it:
//! the argmax, and the top k in the sampler's order (larger first, ties to
//! the lower id, by `f32::total_cmp`). Both go through the logits in
//! blocks of `LANES`, a block's maximum taken in lanes the compiler
//! vectorizes: most blocks hold nothing better than what is already kept,
//! and are passed over whole.

const LANES: usize = 16;

/// `f32::total_cmp`'s order as a signed integer.
#[inline(always)]
fn key(x: f32) -> i32 {
    let bits = x.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The largest key of a block.
#[inline(always)]
fn block_max(block: &[f32; LANES]) -> i32 {
    let mut m = [i32::MIN; LANES];
    for (m, &x) in m.iter_mut().zip(block) {
        *m = (*m).max(key(x));
    }
    m.into_iter().fold(i32::MIN, i32::max)
}

/// `m` raised lane by lane to the logits of a whole block (NaNs passed over).
#[inline(always)]
fn raise_lanes(m: &mut [f32; LANES], block: &[f32; LANES]) {
    for (m, &x) in m.iter_mut().zip(block) {
        *m = if x > *m { x } else { *m };
    }
}

/// A whole block's logits as `LANES` lanes, each the largest of its own:
/// compared with a bar lane by lane, with no horizontal step.
#[inline(always)]
fn block_lanes(block: &[f32; LANES]) -> [f32; LANES] {
    let mut m = [f32::NEG_INFINITY; LANES];
    raise_lanes(&mut m, block);
    m
}

/// The id of the largest logit, the first among equals (a NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    let blocks = logits.chunks_exact(LANES);
    let tail = blocks.remainder();
    for (b, block) in blocks.enumerate() {
        if block_lanes(block.try_into().unwrap()).iter().any(|&m| m > best.1) {
            best = first_above(block, b * LANES, best);
        }
    }
    first_above(tail, logits.len() - tail.len(), best).0 as u32
}

/// The largest logit (NaNs passed over), lane by lane.
pub fn max(logits: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let blocks = logits.chunks_exact(LANES);
    let tail = blocks.remainder();
    for block in blocks {
        raise_lanes(&mut m, block.try_into().unwrap());
    }
    tail.iter().chain(&m).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Fills `out` with every logit of at least `floor` as (id, logit), in id order.
pub fn at_least(logits: &[f32], floor: f32, out: &mut Vec<(u32, f32)>) {
    out.clear();
    let blocks = logits.chunks_exact(LANES);
    let tail = blocks.remainder();
    for (b, block) in blocks.enumerate() {
        if block_lanes(block.try_into().unwrap()).iter().any(|&m| m >= floor) {
            out.extend(block.iter().enumerate().filter(|x| *x.1 >= floor).map(|(i, &x)| ((b * LANES + i) as u32, x)));
        }
    }
    let first = logits.len() - tail.len();
    out.extend(tail.iter().enumerate().filter(|x| *x.1 >= floor).map(|(i, &x)| ((first + i) as u32, x)));
}

/// `best` replaced by each element of `block` (ids from `first`) above it.
fn first_above(block: &[f32], first: usize, mut best: (usize, f32)) -> (usize, f32) {
    for (i, &x) in block.iter().enumerate() {
        if x > best.1 {
            best = (first + i, x);
        }
    }
    best
}

/// Larger logits first by `f32::total_cmp`, as an ascending word.
#[inline(always)]
fn rank(x: f32) -> u32 {
    (!key(x)) as u32 ^ 0x8000_0000
}

/// The sampler's order (larger logits first by `f32::total_cmp`, ties to
/// the lower id) as one integer, ascending: a sort on it compares words,
/// not floats then ids.
#[inline(always)]
pub fn rank_key(&(id, x): &(u32, f32)) -> u64 {
    (rank(x) as u64) << 32 | id as u64
}

/// Bits of the rank a radix pass sorts on: three passes cover a word, and
/// a pass's counts (2048) stay in L1.
const RADIX_BITS: u32 = 11;
const BUCKETS: usize = 1 << RADIX_BITS;

/// Sorts `c`, given in id order, into the sampler's order (`rank_key`):
/// a stable radix sort on the logits' ranks, lowest digits first, so ties
/// keep their id order; `scratch` is the second buffer. A model's top-p
/// cut looks at some 20,000 logits (those within `NEGLIGIBLE` of the
/// best), which a comparison sort took over a millisecond a token to order.
pub fn sort_ranked(c: &mut Vec<(u32, f32)>, scratch: &mut Vec<(u32, f32)>) {
    let digit = |x: f32, pass: usize| (rank(x) >> (RADIX_BITS * pass as u32)) as usize & (BUCKETS - 1);
    // Every pass's counts in one read.
    let mut counts = [[0u32; BUCKETS]; 3];
    for &(_, x) in c.iter() {
        for (pass, count) in counts.iter_mut().enumerate() {
            count[digit(x, pass)] += 1;
        }
    }
    scratch.clear();
    scratch.resize(c.len(), (0, 0.0));
    for (pass, count) in counts.iter().enumerate() {
        // A digit that all share (the top one, for logits of one sign and
        // a few exponents) leaves the order as it is.
        if count.iter().any(|&n| n as usize == c.len()) {
            continue;
        }
        let mut next = [0u32; BUCKETS];
        let mut at = 0;
        for (next, &n) in next.iter_mut().zip(count) {
            *next = at;
            at += n;
        }
        for &item in c.iter() {
            let slot = &mut next[digit(item.1, pass)];
            scratch[*slot as usize] = item;
            *slot += 1;
        }
        std::mem::swap(c, scratch);
    }
}

/// Fills `out` with the `k` best logits (`0 < k < logits.len()`) as
/// (id, logit), in no particular order. Kept ones gather until there are
/// `2k`, then the best `k` stay and the k-th's key becomes the bar: a
/// later logit (a higher id) must beat it strictly to rank among them.
pub fn top_k(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    debug_assert!(k > 0 && k < logits.len());
    out.clear();
    let mut bar = i32::MIN;
    let keep = |out: &mut Vec<(u32, f32)>, first: usize, block: &[f32], bar: &mut i32| {
        for (i, &x) in block.iter().enumerate() {
            // Until the first cut every logit is kept (the bar is below all keys).
            if key(x) > *bar || out.len() < k {
                out.push(((first + i) as u32, x));
                if out.len() == 2 * k {
                    out.select_nth_unstable_by_key(k - 1, rank_key);
                    out.truncate(k);
                    *bar = key(out[k - 1].1);
                }
            }
        }
    };
    let blocks = logits.chunks_exact(LANES);
    let tail = blocks.remainder();
    for (b, block) in blocks.enumerate() {
        let block: &[f32; LANES] = block.try_into().unwrap();
        if out.len() < k || block_max(block) > bar {
            keep(out, b * LANES, block, &mut bar);
        }
    }
    keep(out, logits.len() - tail.len(), tail, &mut bar);
    if out.len() > k {
        out.select_nth_unstable_by_key(k - 1, rank_key);
        out.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Rng;

    /// Logits with many ties (a few values), signed zeros, infinities and
    /// NaNs of both signs, over lengths that leave a partial block.
    fn logit_sets() -> Vec<Vec<f32>> {
        let mut rng = Rng(3);
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1e-30, -1e-30];
        let mut sets = Vec::new();
        for len in [1usize, 15, 16, 17, 100, 49152] {
            let random: Vec<f32> = (0..len).map(|_| rng.next_f32() * 20.0 - 10.0).collect();
            let tied: Vec<f32> = (0..len).map(|_| (rng.next_f32() * 4.0).floor()).collect();
            let special: Vec<f32> = (0..len).map(|i| if i % 7 == 3 { specials[i % specials.len()] } else { rng.next_f32() }).collect();
            // Best at the very end, then the same values ascending.
            let rising: Vec<f32> = (0..len).map(|i| i as f32).collect();
            sets.extend([random, tied, special, rising]);
        }
        sets
    }

    #[test]
    fn argmax_is_the_first_largest() {
        for logits in logit_sets() {
            let want = logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0;
            assert_eq!(argmax(&logits), want as u32, "{} logits", logits.len());
        }
    }

    #[test]
    fn at_least_keeps_every_logit_from_the_floor_up_in_order() {
        for logits in logit_sets() {
            for floor in [f32::NEG_INFINITY, -5.0, 0.0, 2.0, 1e9] {
                let mut got = Vec::new();
                at_least(&logits, floor, &mut got);
                let want: Vec<(u32, f32)> = logits.iter().enumerate().filter(|x| *x.1 >= floor).map(|(i, &x)| (i as u32, x)).collect();
                let bits = |v: &[(u32, f32)]| v.iter().map(|&(i, x)| (i, x.to_bits())).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{} logits, floor {floor}", logits.len());
            }
        }
    }

    #[test]
    fn sort_ranked_orders_as_rank_key() {
        let mut scratch = Vec::new();
        for logits in logit_sets() {
            let mut got: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
            let mut want = got.clone();
            want.sort_by_key(rank_key);
            sort_ranked(&mut got, &mut scratch);
            let bits = |v: &[(u32, f32)]| v.iter().map(|&(i, x)| (i, x.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{} logits", logits.len());
        }
    }

    #[test]
    fn top_k_is_the_sorted_prefix() {
        for logits in logit_sets() {
            let mut all: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for k in [1usize, 2, 40, 100, logits.len() - 1].into_iter().filter(|&k| k > 0 && k < logits.len()) {
                let mut got = Vec::new();
                top_k(&logits, k, &mut got);
                got.sort_by_key(rank_key);
                let bits = |v: &[(u32, f32)]| v.iter().map(|&(i, x)| (i, x.to_bits())).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&all[..k]), "{} logits, k {k}", logits.len());
            }
        }
    }
}
