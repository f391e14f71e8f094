//! The paged KV cache: fixed-size blocks of key/value vectors in one pool shared by all
//! sequences. A sequence owns a table of block ids; blocks are reference-counted so identical
//! prefixes can later be shared between sequences without copying.

use crate::{EngineError, Result};

/// Index of a block in the pool.
pub type BlockId = u32;

/// A pool of KV blocks for every layer of one model.
pub struct KvPool {
    block_tokens: usize,
    n_blocks: usize,
    n_layers: usize,
    kv_dim: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
    free: Vec<BlockId>,
    refcount: Vec<u32>,
}

impl KvPool {
    /// A pool of `n_blocks` blocks of `block_tokens` tokens, each holding `kv_dim` key and value
    /// floats per layer.
    pub fn new(n_layers: usize, kv_dim: usize, block_tokens: usize, n_blocks: usize) -> Self {
        let floats = n_layers * n_blocks * block_tokens * kv_dim;
        Self {
            block_tokens,
            n_blocks,
            n_layers,
            kv_dim,
            keys: vec![0.0; floats],
            values: vec![0.0; floats],
            // Popped from the end: hand out low ids first.
            free: (0..n_blocks as BlockId).rev().collect(),
            refcount: vec![0; n_blocks],
        }
    }

    /// Bytes of KV storage per token across all layers (keys and values).
    pub fn bytes_per_token(n_layers: usize, kv_dim: usize) -> usize {
        2 * n_layers * kv_dim * std::mem::size_of::<f32>()
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Total blocks in the pool.
    pub fn total_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Blocks not referenced by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Takes a free block (reference count 1).
    pub fn allocate(&mut self) -> Result<BlockId> {
        let b = self
            .free
            .pop()
            .ok_or(EngineError::KvExhausted { needed: 1, free: 0 })?;
        self.refcount[b as usize] = 1;
        Ok(b)
    }

    /// Adds a reference to a block already in use (prefix sharing).
    pub fn retain(&mut self, b: BlockId) {
        debug_assert!(self.refcount[b as usize] > 0, "retain of a free block");
        self.refcount[b as usize] += 1;
    }

    /// Drops a reference; the block returns to the free list when none remain.
    pub fn release(&mut self, b: BlockId) {
        let rc = &mut self.refcount[b as usize];
        debug_assert!(*rc > 0, "release of a free block");
        *rc -= 1;
        if *rc == 0 {
            self.free.push(b);
        }
    }

    /// References held on block `b`.
    pub fn refcount(&self, b: BlockId) -> u32 {
        self.refcount[b as usize]
    }

    fn offset(&self, layer: usize, block: BlockId, slot: usize) -> usize {
        debug_assert!(layer < self.n_layers && slot < self.block_tokens);
        ((layer * self.n_blocks + block as usize) * self.block_tokens + slot) * self.kv_dim
    }

    /// The key vector stored for (`layer`, `block`, `slot`).
    #[inline]
    pub fn key(&self, layer: usize, block: BlockId, slot: usize) -> &[f32] {
        let o = self.offset(layer, block, slot);
        &self.keys[o..o + self.kv_dim]
    }

    /// The value vector stored for (`layer`, `block`, `slot`).
    #[inline]
    pub fn value(&self, layer: usize, block: BlockId, slot: usize) -> &[f32] {
        let o = self.offset(layer, block, slot);
        &self.values[o..o + self.kv_dim]
    }

    /// The keys of slots `slot..slot + n` of one block, `n × kv_dim` floats back to back.
    #[inline]
    pub fn keys_run(&self, layer: usize, block: BlockId, slot: usize, n: usize) -> &[f32] {
        debug_assert!(slot + n <= self.block_tokens);
        let o = self.offset(layer, block, slot);
        &self.keys[o..o + n * self.kv_dim]
    }

    /// The values of slots `slot..slot + n` of one block, as [`Self::keys_run`].
    #[inline]
    pub fn values_run(&self, layer: usize, block: BlockId, slot: usize, n: usize) -> &[f32] {
        debug_assert!(slot + n <= self.block_tokens);
        let o = self.offset(layer, block, slot);
        &self.values[o..o + n * self.kv_dim]
    }

    /// Copies the keys and values of slots `0..n` of block `src` into block `dst`, every layer
    /// (a cached block's head reused by a sequence that then writes past it).
    pub fn copy_slots(&mut self, src: BlockId, dst: BlockId, n: usize) {
        assert!(n <= self.block_tokens && src != dst, "copy_slots range");
        for layer in 0..self.n_layers {
            let (from, to) = (self.offset(layer, src, 0), self.offset(layer, dst, 0));
            let len = n * self.kv_dim;
            self.keys.copy_within(from..from + len, to);
            self.values.copy_within(from..from + len, to);
        }
    }

    /// Stores one token's key and value.
    pub fn write(&mut self, layer: usize, block: BlockId, slot: usize, key: &[f32], value: &[f32]) {
        let o = self.offset(layer, block, slot);
        self.keys[o..o + self.kv_dim].copy_from_slice(key);
        self.values[o..o + self.kv_dim].copy_from_slice(value);
    }
}

/// The KV state of one sequence: its block table and how many tokens are stored.
#[derive(Debug, Default, Clone)]
pub struct SeqKv {
    pub blocks: Vec<BlockId>,
    pub tokens: usize,
}

impl SeqKv {
    /// Block and slot of position `pos`.
    #[inline]
    pub fn locate(&self, pos: usize, block_tokens: usize) -> (BlockId, usize) {
        (self.blocks[pos / block_tokens], pos % block_tokens)
    }

    /// Blocks that must be allocated to hold `extra` more tokens.
    pub fn blocks_needed(&self, extra: usize, block_tokens: usize) -> usize {
        (self.tokens + extra)
            .div_ceil(block_tokens)
            .saturating_sub(self.blocks.len())
    }

    /// Returns all blocks to the pool.
    pub fn release(&mut self, pool: &mut KvPool) {
        for b in self.blocks.drain(..) {
            pool.release(b);
        }
        self.tokens = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_recycled_by_refcount() {
        let mut pool = KvPool::new(2, 4, 16, 3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(pool.free_blocks(), 1);
        pool.retain(a);
        pool.release(a);
        assert_eq!(pool.free_blocks(), 1, "a still referenced once");
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.free_blocks(), 3);
        pool.allocate().unwrap();
        pool.allocate().unwrap();
        pool.allocate().unwrap();
        assert!(matches!(
            pool.allocate(),
            Err(EngineError::KvExhausted { .. })
        ));
    }

    #[test]
    fn writes_land_in_their_own_slot() {
        let mut pool = KvPool::new(2, 3, 4, 2);
        pool.write(1, 1, 3, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(pool.key(1, 1, 3), &[1.0, 2.0, 3.0]);
        assert_eq!(pool.value(1, 1, 3), &[4.0, 5.0, 6.0]);
        assert_eq!(pool.key(0, 1, 3), &[0.0; 3]);
        assert_eq!(pool.key(1, 0, 3), &[0.0; 3]);
    }

    #[test]
    fn seq_block_math() {
        let s = SeqKv {
            blocks: vec![7, 9],
            tokens: 20,
        };
        assert_eq!(s.locate(17, 16), (9, 1));
        assert_eq!(s.blocks_needed(12, 16), 0);
        assert_eq!(s.blocks_needed(13, 16), 1);
    }
}
