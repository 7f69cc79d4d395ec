//! The paged KV pool: one allocation of `num_blocks` blocks of `block_size`
//! token slots, each slot holding K and V for every layer, in f16
//! (half the memory of f32, and the precision llama.cpp's default cache has). A sequence owns a
//! block table mapping its positions to blocks; memory follows the tokens a
//! sequence actually holds.

use anyhow::{bail, Result};
use half::f16;

pub struct KvPool {
    block_size: usize,
    layers: usize,
    kv_dim: usize,
    num_blocks: usize,
    data: Vec<f16>,
    free: Vec<u32>,
}

impl KvPool {
    pub fn new(layers: usize, kv_dim: usize, block_size: usize, num_blocks: usize) -> KvPool {
        assert!(block_size > 0 && num_blocks > 0);
        KvPool {
            block_size,
            layers,
            kv_dim,
            num_blocks,
            data: vec![f16::ZERO; num_blocks * layers * 2 * block_size * kv_dim],
            // Reversed so that blocks are handed out from 0 upwards.
            free: (0..num_blocks as u32).rev().collect(),
        }
    }

    pub fn total_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Grows `table` so that it covers `tokens` positions, or fails leaving
    /// it as it was.
    pub fn reserve(&mut self, table: &mut Vec<u32>, tokens: usize) -> Result<()> {
        let needed = tokens.div_ceil(self.block_size).saturating_sub(table.len());
        if needed > self.free.len() {
            bail!("KV pool exhausted: {needed} more blocks needed, {} free", self.free.len());
        }
        for _ in 0..needed {
            table.push(self.free.pop().expect("checked above"));
        }
        Ok(())
    }

    /// Returns every block of `table` to the pool.
    pub fn release(&mut self, table: &mut Vec<u32>) {
        self.free.extend(table.drain(..));
    }

    fn offset(&self, block: u32, layer: usize, value: bool, slot: usize) -> usize {
        (((block as usize * self.layers + layer) * 2 + value as usize) * self.block_size + slot) * self.kv_dim
    }

    /// K and V rows of position `pos` of the sequence with `table`.
    pub fn slot(&self, table: &[u32], layer: usize, pos: usize) -> (&[f16], &[f16]) {
        let (block, slot) = (table[pos / self.block_size], pos % self.block_size);
        let k = self.offset(block, layer, false, slot);
        let v = self.offset(block, layer, true, slot);
        (&self.data[k..k + self.kv_dim], &self.data[v..v + self.kv_dim])
    }

    pub fn write(&mut self, table: &[u32], layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (block, slot) = (table[pos / self.block_size], pos % self.block_size);
        let ko = self.offset(block, layer, false, slot);
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut self.data[ko..ko + self.kv_dim], k);
        let vo = self.offset(block, layer, true, slot);
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut self.data[vo..vo + self.kv_dim], v);
    }
}
