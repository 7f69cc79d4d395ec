//! Block bookkeeping for the KV pool: reference counts, the free list, and
//! the prefix cache (full blocks findable by the hash of their tokens and
//! all tokens before them). A block nobody references but whose hash is
//! known stays findable until its memory is needed, least recently released
//! first. When asked, it logs what enters and leaves the prefix cache.

use std::collections::{BTreeMap, HashMap};

use super::KvEvent;

pub(super) struct Blocks {
    refs: Vec<u32>,
    hash: Vec<Option<u64>>,
    by_hash: HashMap<u64, u32>,
    /// Unreferenced blocks with no hash: handed out first.
    free: Vec<u32>,
    /// Unreferenced blocks with a hash, by release time (oldest first).
    evictable: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    clock: u64,
    /// What entered and left the cache since it was last taken; None when
    /// nobody listens.
    log: Option<Vec<KvEvent>>,
}

impl Blocks {
    pub fn new(n: usize) -> Blocks {
        Blocks {
            refs: vec![0; n],
            hash: vec![None; n],
            by_hash: HashMap::new(),
            // Reversed so that blocks are handed out from 0 upwards.
            free: (0..n as u32).rev().collect(),
            evictable: BTreeMap::new(),
            released_at: vec![0; n],
            clock: 0,
            log: None,
        }
    }

    pub fn log_events(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that can be handed out: free ones and evictable cached ones.
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks whose K/V are kept only as a prefix cache.
    pub fn cached_unused(&self) -> usize {
        self.evictable.len()
    }

    pub fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }

    /// A block with one reference, evicting the oldest cached one if no
    /// block is free.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                let h = self.hash[b as usize].take().expect("evictable blocks have a hash");
                self.by_hash.remove(&h);
                if let Some(log) = &mut self.log {
                    match log.last_mut() {
                        Some(KvEvent::Removed { hashes }) => hashes.push(h),
                        _ => log.push(KvEvent::Removed { hashes: vec![h] }),
                    }
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    pub fn retain(&mut self, b: u32) {
        let i = b as usize;
        if self.refs[i] == 0 {
            self.evictable.remove(&self.released_at[i]);
        }
        self.refs[i] += 1;
    }

    pub fn release(&mut self, b: u32) {
        let i = b as usize;
        assert!(self.refs[i] > 0, "block {b} released more often than retained");
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if self.hash[i].is_some() {
                self.clock += 1;
                self.released_at[i] = self.clock;
                self.evictable.insert(self.clock, b);
            } else {
                self.free.push(b);
            }
        }
    }

    /// The cached block holding the tokens that hash to `h`, retained.
    pub fn lookup(&mut self, h: u64) -> Option<u32> {
        let b = *self.by_hash.get(&h)?;
        self.retain(b);
        Some(b)
    }

    /// Makes a full block findable by its hash (first writer wins):
    /// `tokens` are its own, `parent` the hash of the block before it.
    pub fn register(&mut self, b: u32, h: u64, parent: Option<u64>, tokens: &[u32]) {
        if self.hash[b as usize].is_some() || self.by_hash.contains_key(&h) {
            return;
        }
        self.hash[b as usize] = Some(h);
        self.by_hash.insert(h, b);
        if let Some(log) = &mut self.log {
            // A run of blocks of one sequence is one event, as it is stored.
            match log.last_mut() {
                Some(KvEvent::Stored { hashes, tokens: held, .. }) if parent.is_some() && hashes.last() == parent.as_ref() => {
                    hashes.push(h);
                    held.extend_from_slice(tokens);
                }
                _ => log.push(KvEvent::Stored { hashes: vec![h], parent, tokens: tokens.to_vec() }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_blocks_return_and_cached_ones_stay_findable_until_evicted() {
        let mut b = Blocks::new(2);
        let (x, y) = (b.allocate().unwrap(), b.allocate().unwrap());
        assert_eq!(b.allocate(), None);
        b.register(x, 42, None, &[]);
        b.release(x);
        b.release(y);
        assert_eq!(b.available(), 2);
        assert_eq!(b.cached_unused(), 1);
        // The unhashed block goes out first; the cached one is still there.
        assert_eq!(b.allocate(), Some(y));
        assert_eq!(b.lookup(42), Some(x));
        assert_eq!(b.refs(x), 1);
        b.release(x);
        // Memory needed: the cached block is evicted and forgotten.
        assert_eq!(b.allocate(), Some(x));
        assert_eq!(b.lookup(42), None);
    }

    #[test]
    fn eviction_takes_the_least_recently_released() {
        let mut b = Blocks::new(3);
        let ids: Vec<u32> = (0..3).map(|_| b.allocate().unwrap()).collect();
        for (i, &id) in ids.iter().enumerate() {
            b.register(id, 100 + i as u64, None, &[]);
        }
        b.release(ids[1]);
        b.release(ids[0]);
        b.release(ids[2]);
        assert_eq!(b.allocate(), Some(ids[1]));
        assert_eq!(b.lookup(100), Some(ids[0]));
        assert_eq!(b.lookup(102), Some(ids[2]));
    }
}
