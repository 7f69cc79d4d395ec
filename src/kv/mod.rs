//! The paged KV pool: one allocation of `num_blocks` blocks of `block_size`
//! token slots, each slot holding K and V for every layer, in f16 (half the
//! memory of f32, and the precision llama.cpp's default cache has). A
//! sequence holds a block table mapping its positions to blocks; memory
//! follows the tokens a sequence actually holds. Blocks are reference
//! counted: sequences forked from one prompt, and sequences whose prompts
//! start alike (the prefix cache), share them, and a shared block is copied
//! before it is written.

mod blocks;

use std::hash::{Hash, Hasher};

use half::f16;
use half::vec::HalfBitsVecExt;

use blocks::Blocks;

/// A change to what the prefix cache holds, for routers that send a
/// request where its prefix already is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Full blocks became findable: their chained hashes, the hash of the
    /// block before the first (None: they start a sequence), and the
    /// tokens they hold, `block_size` a block.
    Stored { hashes: Vec<u64>, parent: Option<u64>, tokens: Vec<u32> },
    /// Cached blocks were evicted to make room.
    Removed { hashes: Vec<u64> },
    /// The whole pool is gone: its model was unloaded.
    Cleared,
}

/// Not enough free blocks for a reservation: the scheduler preempts or
/// waits, so it needs only the fact, not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFull;

pub struct KvPool {
    block_size: usize,
    layers: usize,
    kv_dim: usize,
    /// The cache from `data[start]`, the first element on a cache line.
    data: Vec<f16>,
    start: usize,
    blocks: Blocks,
}

/// Bytes of a cache line. The allocator places large buffers 16 bytes past
/// one, so every head's K or V row (128 bytes at the default model's head
/// size) spanned three lines instead of two: attention for 32 sequences
/// decoding at 1,025 positions took about 0.6 of the time once aligned.
const LINE: usize = 64;

impl KvPool {
    pub fn new(layers: usize, kv_dim: usize, block_size: usize, num_blocks: usize) -> KvPool {
        assert!(block_size > 0 && num_blocks > 0);
        let elems_per_line = LINE / std::mem::size_of::<f16>();
        // Zeroed u16s come from the allocator's zeroed pages, touched only
        // when written: memory follows the tokens actually held. A line's
        // worth more leaves room to start on a line.
        let data: Vec<f16> = vec![0u16; num_blocks * layers * 2 * block_size * kv_dim + elems_per_line].reinterpret_into();
        // (`align_offset` may decline: the cache is then only slower.)
        let start = Some(data.as_ptr().align_offset(LINE)).filter(|&s| s < elems_per_line).unwrap_or(0);
        KvPool { block_size, layers, kv_dim, data, start, blocks: Blocks::new(num_blocks) }
    }

    /// Bytes of one block: K and V of `block_size` tokens in every layer.
    pub fn bytes_per_block(layers: usize, kv_dim: usize, block_size: usize) -> usize {
        layers * 2 * block_size * kv_dim * std::mem::size_of::<f16>()
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// From now on, what enters and leaves the prefix cache is logged.
    pub fn log_events(&mut self) {
        self.blocks.log_events();
    }

    /// The events logged since the last call, in order.
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.blocks.take_events()
    }

    pub fn total_blocks(&self) -> usize {
        self.blocks.total()
    }

    /// Blocks a new sequence could get: free ones, and cached ones nobody
    /// uses (they are evicted when needed).
    pub fn free_blocks(&self) -> usize {
        self.blocks.available()
    }

    /// Unused blocks still holding a cached prefix.
    pub fn cached_blocks(&self) -> usize {
        self.blocks.cached_unused()
    }

    /// Grows `table` so that it covers `tokens` positions, or fails leaving
    /// it as it was.
    pub fn reserve(&mut self, table: &mut Vec<u32>, tokens: usize) -> Result<(), PoolFull> {
        let needed = tokens.div_ceil(self.block_size).saturating_sub(table.len());
        if needed > self.blocks.available() {
            return Err(PoolFull);
        }
        for _ in 0..needed {
            table.push(self.blocks.allocate().expect("checked above"));
        }
        Ok(())
    }

    /// Drops the sequence's hold on every block of `table`.
    pub fn release(&mut self, table: &mut Vec<u32>) {
        for b in table.drain(..) {
            self.blocks.release(b);
        }
    }

    /// A second table sharing every block of `table` (n completions of one
    /// prompt): nothing is copied until one of them writes.
    pub fn fork(&mut self, table: &[u32]) -> Vec<u32> {
        table.iter().for_each(|&b| self.blocks.retain(b));
        table.to_vec()
    }

    /// Makes the blocks that positions `from..to` fall in this sequence's
    /// own, copying any it shares, so that writing them disturbs nobody.
    pub fn make_writable(&mut self, table: &mut [u32], from: usize, to: usize) -> Result<(), PoolFull> {
        if from >= to {
            return Ok(());
        }
        for slot in &mut table[from / self.block_size..=(to - 1) / self.block_size] {
            let old = *slot;
            if self.blocks.refs(old) > 1 {
                let new = self.blocks.allocate().ok_or(PoolFull)?;
                let (src, end, dst) = (self.offset(old, 0, false, 0), self.offset(old + 1, 0, false, 0), self.offset(new, 0, false, 0));
                self.data.copy_within(src..end, dst);
                self.blocks.release(old);
                *slot = new;
            }
        }
        Ok(())
    }

    /// The hash of each full block of `tokens`, chained: a block's hash
    /// covers every token before it too.
    pub fn block_hashes(&self, tokens: &[u32]) -> Vec<u64> {
        let mut parent = 0u64;
        tokens
            .chunks_exact(self.block_size)
            .map(|chunk| {
                let mut h = std::hash::DefaultHasher::new();
                (parent, chunk).hash(&mut h);
                parent = h.finish();
                parent
            })
            .collect()
    }

    /// Starts `table` (empty) with the cached blocks holding the longest
    /// prefix of `tokens`, leaving at least the last token to compute (its
    /// logits are needed). Returns how many tokens are covered.
    pub fn match_prefix(&mut self, tokens: &[u32], table: &mut Vec<u32>) -> usize {
        debug_assert!(table.is_empty());
        let usable = tokens.len().saturating_sub(1) / self.block_size * self.block_size;
        for h in self.block_hashes(&tokens[..usable]) {
            match self.blocks.lookup(h) {
                Some(b) => table.push(b),
                None => break,
            }
        }
        table.len() * self.block_size
    }

    /// Makes the full blocks of `table` holding `tokens` findable by later
    /// sequences that start with the same tokens.
    pub fn register_prefix(&mut self, tokens: &[u32], table: &[u32]) {
        let mut parent = None;
        for ((&b, h), chunk) in table.iter().zip(self.block_hashes(tokens)).zip(tokens.chunks_exact(self.block_size)) {
            self.blocks.register(b, h, parent, chunk);
            parent = Some(h);
        }
    }

    fn offset(&self, block: u32, layer: usize, value: bool, slot: usize) -> usize {
        self.start + (((block as usize * self.layers + layer) * 2 + value as usize) * self.block_size + slot) * self.kv_dim
    }

    /// K and V rows of positions `start..start + k.len()` of the sequence
    /// with `table`, into `k` and `v`: one division for the whole run.
    pub fn rows<'a>(&'a self, table: &[u32], layer: usize, start: usize, k: &mut [&'a [f16]], v: &mut [&'a [f16]]) {
        let (mut block, mut slot) = (start / self.block_size, start % self.block_size);
        for (kr, vr) in k.iter_mut().zip(v.iter_mut()) {
            let ko = self.offset(table[block], layer, false, slot);
            let vo = ko + self.block_size * self.kv_dim;
            (*kr, *vr) = (&self.data[ko..ko + self.kv_dim], &self.data[vo..vo + self.kv_dim]);
            slot += 1;
            if slot == self.block_size {
                (block, slot) = (block + 1, 0);
            }
        }
    }

    pub fn write(&mut self, table: &[u32], layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (block, slot) = (table[pos / self.block_size], pos % self.block_size);
        let ko = self.offset(block, layer, false, slot);
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut self.data[ko..ko + self.kv_dim], k);
        let vo = self.offset(block, layer, true, slot);
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut self.data[vo..vo + self.kv_dim], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(blocks: usize) -> KvPool {
        KvPool::new(1, 2, 4, blocks)
    }

    #[test]
    fn forks_share_until_written_then_copy() {
        let mut kv = pool(4);
        let mut a = Vec::new();
        kv.reserve(&mut a, 6).unwrap();
        kv.write(&a, 0, 1, &[1.0, 2.0], &[3.0, 4.0]);
        let mut b = kv.fork(&a);
        assert_eq!((a.clone(), kv.free_blocks()), (b.clone(), 2));
        // b writes position 5: only the second block is copied.
        kv.make_writable(&mut b, 5, 6).unwrap();
        assert_eq!(b[0], a[0]);
        assert_ne!(b[1], a[1]);
        assert_eq!(kv.free_blocks(), 1);
        // b writes position 1: the first block is copied with its contents.
        kv.make_writable(&mut b, 1, 2).unwrap();
        assert_ne!(b[0], a[0]);
        let row = |kv: &KvPool, table: &[u32]| {
            let (mut k, mut v) = ([&[][..]], [&[][..]]);
            kv.rows(table, 0, 1, &mut k, &mut v);
            (k[0][0].to_f32(), v[0][1].to_f32())
        };
        assert_eq!(row(&kv, &b), (1.0, 4.0));
        kv.write(&b, 0, 1, &[9.0, 9.0], &[9.0, 9.0]);
        assert_eq!(row(&kv, &a).0, 1.0, "the original is untouched");
        kv.release(&mut a);
        kv.release(&mut b);
        assert_eq!(kv.free_blocks(), kv.total_blocks());
    }

    #[test]
    fn a_prompt_prefix_is_found_in_whole_blocks_leaving_the_last_token() {
        let mut kv = pool(8);
        let prompt: Vec<u32> = (0..10).collect();
        let mut first = Vec::new();
        kv.reserve(&mut first, prompt.len()).unwrap();
        kv.register_prefix(&prompt, &first);
        // The same prompt: two full blocks (8 tokens) come from the cache.
        let mut second = Vec::new();
        assert_eq!(kv.match_prefix(&prompt, &mut second), 8);
        assert_eq!(second[..], first[..2]);
        // A prompt of exactly 8 tokens keeps its last block to compute.
        let mut third = Vec::new();
        assert_eq!(kv.match_prefix(&prompt[..8], &mut third), 4);
        // A different second block stops the match after the first.
        let mut other: Vec<u32> = prompt.clone();
        other[5] = 99;
        let mut fourth = Vec::new();
        assert_eq!(kv.match_prefix(&other, &mut fourth), 4);
        for t in [&mut first, &mut second, &mut third, &mut fourth] {
            kv.release(t);
        }
        assert_eq!(kv.free_blocks(), kv.total_blocks(), "cached blocks count as free");
        assert_eq!(kv.cached_blocks(), 2);
        // Still findable after everyone left.
        let mut fifth = Vec::new();
        assert_eq!(kv.match_prefix(&prompt, &mut fifth), 8);
        kv.release(&mut fifth);
    }

    #[test]
    fn the_log_holds_each_block_stored_once_in_runs_and_each_eviction() {
        let mut kv = pool(4);
        kv.log_events();
        let prompt: Vec<u32> = (0..9).collect();
        let hashes = kv.block_hashes(&prompt);
        let mut first = Vec::new();
        kv.reserve(&mut first, prompt.len()).unwrap();
        kv.register_prefix(&prompt[..4], &first);
        kv.register_prefix(&prompt[..8], &first);
        // Registering what is registered already announces nothing.
        kv.register_prefix(&prompt[..8], &first);
        assert_eq!(
            kv.take_events(),
            [KvEvent::Stored { hashes: hashes.clone(), parent: None, tokens: prompt[..8].to_vec() }],
            "the second block continues the run of the first"
        );
        kv.release(&mut first);
        // A prompt sharing the first block stores only its own second one.
        let mut other: Vec<u32> = prompt[..8].to_vec();
        other[6] = 99;
        let mut second = Vec::new();
        assert_eq!(kv.match_prefix(&other, &mut second), 4);
        kv.reserve(&mut second, 8).unwrap();
        kv.register_prefix(&other, &second);
        let other_hash = kv.block_hashes(&other)[1];
        assert_eq!(kv.take_events(), [KvEvent::Stored { hashes: vec![other_hash], parent: Some(hashes[0]), tokens: other[4..].to_vec() }]);
        kv.release(&mut second);
        assert_eq!(kv.take_events(), [], "released blocks stay cached");
        // Four blocks wanted: the free one, then the three cached, oldest
        // released first.
        let mut big = Vec::new();
        kv.reserve(&mut big, 16).unwrap();
        assert_eq!(kv.take_events(), [KvEvent::Removed { hashes: vec![hashes[1], hashes[0], other_hash] }]);
        kv.release(&mut big);
    }

    #[test]
    fn every_row_starts_on_a_cache_line() {
        // The default model's shape: 30 layers of 3 KV heads of 64.
        let mut kv = KvPool::new(30, 192, 16, 4);
        let mut t = Vec::new();
        kv.reserve(&mut t, 40).unwrap();
        let (mut k, mut v) = ([&[][..]; 40], [&[][..]; 40]);
        for layer in [0, 17, 29] {
            kv.rows(&t, layer, 0, &mut k, &mut v);
            for row in k.iter().chain(&v) {
                assert_eq!(row.as_ptr() as usize % LINE, 0);
            }
        }
        kv.release(&mut t);
    }

    #[test]
    fn a_failed_reservation_changes_nothing() {
        let mut kv = pool(2);
        let mut t = Vec::new();
        kv.reserve(&mut t, 4).unwrap();
        assert!(kv.reserve(&mut t, 13).is_err());
        assert_eq!((t.len(), kv.free_blocks()), (1, 1));
        kv.release(&mut t);
    }
}
