//! The prefix cache: full KV blocks of already computed token prefixes, found again by a chain
//! hash of their tokens, so a request that repeats a prefix (system prompt, catalog, earlier
//! turns) adopts those blocks instead of recomputing them.
//!
//! The cache holds one reference on every block it knows (`KvPool::retain`); sequences that
//! adopt a block hold their own. A block only the cache references is idle and can be evicted,
//! least recently used first, deepest first among equals so chains shrink from their tails.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::kv::{BlockId, KvPool};

/// Hash of the empty prefix, the parent of every first block.
const ROOT_HASH: u64 = 0x736f_7572_6365_0000;

/// One cached block: where it lives and the exact tokens it holds (to rule out collisions).
#[derive(Debug)]
struct Entry {
    block: BlockId,
    parent: u64,
    tokens: Box<[u32]>,
    depth: usize,
    last_used: u64,
}

/// Counters of the cache's work, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Full prompt blocks looked up.
    pub lookup_blocks: u64,
    /// Blocks found (their tokens are not recomputed).
    pub hit_blocks: u64,
    /// Blocks added to the cache.
    pub inserted_blocks: u64,
    /// Tokens copied from the head of a cached block after the full-block hits.
    pub partial_hit_tokens: u64,
    /// Blocks dropped to make room.
    pub evicted_blocks: u64,
}

/// Block-level prefix cache over one [`KvPool`].
#[derive(Debug)]
pub struct PrefixCache {
    block_tokens: usize,
    entries: HashMap<u64, Entry>,
    /// Hashes of the cached blocks that follow each prefix hash (for partial-block hits).
    children: HashMap<u64, Vec<u64>>,
    tick: u64,
    stats: PrefixCacheStats,
}

/// The hash of a block given its parent's hash: equal only for equal token prefixes.
fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    // Fixed keys: the same within a process, which is all an in-memory cache needs; hits
    // still compare the tokens, so a collision can never alias two prefixes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl PrefixCache {
    /// An empty cache for blocks of `block_tokens` tokens.
    pub fn new(block_tokens: usize) -> Self {
        Self {
            block_tokens: block_tokens.max(1),
            entries: HashMap::new(),
            children: HashMap::new(),
            tick: 0,
            stats: Default::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Blocks the cache references.
    pub fn cached_blocks(&self) -> usize {
        self.entries.len()
    }

    /// The cached blocks holding the longest prefix of `tokens`, at most `max_blocks` of them,
    /// in order. The caller must `retain` each block it keeps.
    pub fn lookup(&mut self, tokens: &[u32], max_blocks: usize) -> Vec<BlockId> {
        self.tick += 1;
        let mut found = Vec::new();
        let mut parent = ROOT_HASH;
        let full = (tokens.len() / self.block_tokens).min(max_blocks);
        for chunk in tokens.chunks_exact(self.block_tokens).take(full) {
            let h = chain_hash(parent, chunk);
            match self.entries.get_mut(&h) {
                Some(e) if e.parent == parent && *e.tokens == *chunk => {
                    e.last_used = self.tick;
                    found.push(e.block);
                }
                _ => break,
            }
            parent = h;
        }
        self.stats.lookup_blocks += full as u64;
        self.stats.hit_blocks += found.len() as u64;
        found
    }

    /// After `full` blocks of `tokens` found by [`Self::lookup`], the cached block that follows
    /// them and whose head matches most of the next tokens, at most `max` of them: (block,
    /// matching tokens ≥ 1). The block is not adopted: the caller copies that head
    /// (`Engine::adopt_partial`), since its sequence writes its own tokens after it.
    pub fn lookup_partial(
        &mut self,
        tokens: &[u32],
        full: usize,
        max: usize,
    ) -> Option<(BlockId, usize)> {
        let bt = self.block_tokens;
        let rest = tokens.get(full * bt..)?;
        let max = max.min(bt - 1).min(rest.len());
        if max == 0 {
            return None;
        }
        let parent = tokens[..full * bt]
            .chunks_exact(bt)
            .fold(ROOT_HASH, chain_hash);
        let (mut best, mut best_len) = (None, 0);
        for h in self.children.get(&parent)? {
            let Some(e) = self.entries.get(h) else {
                continue;
            };
            let len = e
                .tokens
                .iter()
                .zip(&rest[..max])
                .take_while(|(a, b)| a == b)
                .count();
            if len > best_len {
                (best, best_len) = (Some(*h), len);
            }
        }
        let e = self.entries.get_mut(&best?)?;
        self.tick += 1;
        e.last_used = self.tick;
        self.stats.partial_hit_tokens += best_len as u64;
        Some((e.block, best_len))
    }

    /// Records the blocks of a finished sequence, its last partial block too: nothing writes
    /// into that block again (the sequence is gone), and a later prompt that continues the same
    /// text (a conversation's next turn) copies its head by [`Self::lookup_partial`].
    pub fn insert_finished(&mut self, tokens: &[u32], blocks: &[BlockId], pool: &mut KvPool) {
        let bt = self.block_tokens;
        let full = tokens.len() / bt;
        if !self.insert(tokens, blocks, pool) {
            return;
        }
        let (tail, Some(&block)) = (&tokens[full * bt..], blocks.get(full)) else {
            return;
        };
        if tail.is_empty() {
            return;
        }
        let parent = tokens[..full * bt]
            .chunks_exact(bt)
            .fold(ROOT_HASH, chain_hash);
        let h = chain_hash(parent, tail);
        match self.entries.get_mut(&h) {
            Some(e) => e.last_used = self.tick,
            None => {
                pool.retain(block);
                self.stats.inserted_blocks += 1;
                self.children.entry(parent).or_default().push(h);
                self.entries.insert(
                    h,
                    Entry {
                        block,
                        parent,
                        tokens: tail.into(),
                        depth: full,
                        last_used: self.tick,
                    },
                );
            }
        }
    }

    /// Records the full blocks of a sequence: `blocks[i]` holds `tokens[i*bt..(i+1)*bt]`, all
    /// computed. Blocks already cached for the same prefix are left as they are. False when a
    /// hash collision stopped it before the last full block.
    pub fn insert(&mut self, tokens: &[u32], blocks: &[BlockId], pool: &mut KvPool) -> bool {
        self.tick += 1;
        let mut parent = ROOT_HASH;
        for (depth, (chunk, &block)) in tokens
            .chunks_exact(self.block_tokens)
            .zip(blocks)
            .enumerate()
        {
            let h = chain_hash(parent, chunk);
            match self.entries.get_mut(&h) {
                Some(e) if e.parent == parent && *e.tokens == *chunk => e.last_used = self.tick,
                // A 64-bit collision with a different prefix: stop rather than alias it.
                Some(_) => return false,
                None => {
                    pool.retain(block);
                    self.stats.inserted_blocks += 1;
                    self.children.entry(parent).or_default().push(h);
                    let tokens = chunk.into();
                    self.entries.insert(
                        h,
                        Entry {
                            block,
                            parent,
                            tokens,
                            depth,
                            last_used: self.tick,
                        },
                    );
                }
            }
            parent = h;
        }
        true
    }

    /// Cached blocks no sequence uses (only the cache holds them), which eviction can free.
    pub fn evictable_blocks(&self, pool: &KvPool) -> usize {
        self.entries
            .values()
            .filter(|e| pool.refcount(e.block) == 1)
            .count()
    }

    /// Frees up to `want` idle blocks, least recently used and deepest first; returns how many.
    pub fn evict(&mut self, pool: &mut KvPool, want: usize) -> usize {
        if want == 0 {
            return 0;
        }
        let mut idle: Vec<(u64, usize, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| pool.refcount(e.block) == 1)
            .map(|(&h, e)| (e.last_used, e.depth, h))
            .collect();
        idle.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut freed = 0;
        for (_, _, h) in idle.into_iter().take(want) {
            if let Some(e) = self.entries.remove(&h) {
                if let Some(c) = self.children.get_mut(&e.parent) {
                    c.retain(|&x| x != h);
                    if c.is_empty() {
                        self.children.remove(&e.parent);
                    }
                }
                pool.release(e.block);
                freed += 1;
            }
        }
        self.stats.evicted_blocks += freed as u64;
        freed
    }

    /// Drops every reference the cache holds.
    pub fn clear(&mut self, pool: &mut KvPool) {
        self.children.clear();
        for (_, e) in self.entries.drain() {
            pool.release(e.block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(blocks: usize) -> KvPool {
        KvPool::new(1, 2, 4, blocks)
    }

    /// Allocates blocks for `tokens` as a sequence would.
    fn seq_blocks(pool: &mut KvPool, tokens: usize) -> Vec<BlockId> {
        (0..tokens.div_ceil(4))
            .map(|_| pool.allocate().unwrap())
            .collect()
    }

    #[test]
    fn a_finished_sequences_partial_tail_is_reused_by_copy_only() {
        let mut p = pool(8);
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..10).collect(); // two full blocks and a tail of 2
        let blocks = seq_blocks(&mut p, a.len());
        c.insert_finished(&a, &blocks, &mut p);
        assert_eq!(
            p.refcount(blocks[2]),
            2,
            "the tail block is held by the cache"
        );
        // The next turn continues the text: full blocks by lookup, the tail by copy.
        let next: Vec<u32> = (0..14).collect();
        assert_eq!(c.lookup(&next, 3), blocks[..2].to_vec());
        assert_eq!(c.lookup_partial(&next, 2, 3), Some((blocks[2], 2)));
        // A prompt whose third block starts like the tail but is full never adopts it whole.
        let other: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51, 52];
        assert_eq!(c.lookup(&other, 3), blocks[..2].to_vec());
        // Inserting the same finished text again changes nothing.
        c.insert_finished(&a, &blocks, &mut p);
        assert_eq!(p.refcount(blocks[2]), 2);
        assert_eq!(c.cached_blocks(), 3);
    }

    #[test]
    fn partial_lookup_finds_the_longest_head_after_the_full_hits() {
        let mut p = pool(8);
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..10).collect();
        let blocks = seq_blocks(&mut p, a.len());
        assert!(c.insert(&a, &blocks, &mut p));
        let b: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 9, 9];
        assert_eq!(c.lookup(&b, 2), vec![blocks[0]]);
        assert_eq!(c.lookup_partial(&b, 1, 3), Some((blocks[1], 2)));
        assert_eq!(
            c.lookup_partial(&b, 1, 1),
            Some((blocks[1], 1)),
            "capped at max"
        );
        assert_eq!(c.lookup_partial(&b, 1, 0), None);
        assert_eq!(
            c.lookup_partial(&[0, 1, 2, 3, 9], 1, 3),
            None,
            "no common head"
        );
        assert_eq!(
            c.lookup_partial(&[7, 1, 2], 0, 2),
            None,
            "no cached first block"
        );
        assert_eq!(c.stats().partial_hit_tokens, 3);
        // Once evicted, the block is no longer offered.
        for b in &blocks {
            p.release(*b);
        }
        assert_eq!(c.evict(&mut p, 8), 2);
        assert_eq!(c.lookup_partial(&b, 1, 3), None);
    }

    #[test]
    fn finds_the_longest_cached_prefix_only() {
        let mut p = pool(8);
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..10).collect();
        let blocks = seq_blocks(&mut p, a.len());
        assert!(c.insert(&a, &blocks, &mut p));
        assert_eq!(c.cached_blocks(), 2, "only full blocks are cached");
        assert_eq!(p.refcount(blocks[0]), 2);
        assert_eq!(p.refcount(blocks[2]), 1, "partial block untouched");

        assert_eq!(c.lookup(&a, 10), blocks[..2]);
        let mut b = a.clone();
        b[5] = 99; // differs inside the second block
        assert_eq!(c.lookup(&b, 10), blocks[..1]);
        assert_eq!(c.lookup(&a, 1), blocks[..1], "max_blocks bounds the hit");
        let mut shifted = a.clone();
        shifted.insert(0, 7);
        assert!(
            c.lookup(&shifted, 10).is_empty(),
            "same tokens at other positions never match"
        );
        assert_eq!(c.stats().lookup_blocks, 2 + 2 + 1 + 2);
        assert_eq!(c.stats().hit_blocks, 2 + 1 + 1);
    }

    #[test]
    fn evicts_only_idle_blocks_lru_and_tails_first() {
        let mut p = pool(8);
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..8).collect();
        let b: Vec<u32> = (100..108).collect();
        let ba = seq_blocks(&mut p, 8);
        let bb = seq_blocks(&mut p, 8);
        assert!(c.insert(&a, &ba, &mut p));
        assert!(c.insert(&b, &bb, &mut p));
        // Sequence `a` ends; `b` is still running.
        ba.iter().for_each(|&x| p.release(x));
        assert_eq!(c.evictable_blocks(&p), 2);
        assert_eq!(p.free_blocks(), 4);
        assert_eq!(c.evict(&mut p, 1), 1);
        assert_eq!(c.lookup(&a, 10), ba[..1], "the tail went first");
        assert_eq!(
            c.evict(&mut p, 10),
            1,
            "blocks of the running sequence stay"
        );
        assert_eq!(p.free_blocks(), 6);
        assert_eq!(c.lookup(&b, 10), bb);
        c.clear(&mut p);
        bb.iter().for_each(|&x| p.release(x));
        assert_eq!(p.free_blocks(), 8);
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut p = pool(8);
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..4).collect();
        let b: Vec<u32> = (10..14).collect();
        let ba = seq_blocks(&mut p, 4);
        let bb = seq_blocks(&mut p, 4);
        assert!(c.insert(&a, &ba, &mut p));
        assert!(c.insert(&b, &bb, &mut p));
        p.release(ba[0]);
        p.release(bb[0]);
        c.lookup(&a, 1); // a is now the most recent
        c.evict(&mut p, 1);
        assert_eq!(c.lookup(&a, 1), ba);
        assert!(c.lookup(&b, 1).is_empty());
    }
}
