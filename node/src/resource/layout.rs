//! Where every byte of a blob goes.
//!
//! Stripe `s` covers bytes `[s * stripe_size, min((s + 1) * stripe_size, size))`.
//! Its data is split into k equal shards (the last zero-padded), parity adds
//! m more of the same length. Each shard is split into chunks of
//! `chunk_size` bytes (the last shorter). Chunks are numbered for the
//! manifest's crc list as if every stripe had full-size shards, so the
//! position of a chunk's crc is a closed formula; the few slots the short
//! last stripe does not use hold 0.

use serde::Deserialize;
use serde::Serialize;

/// Default stripe size.
pub const STRIPE_SIZE_DEFAULT: u32 = 1024 * 1024;
/// Largest chunk stored as one sled value.
pub const CHUNK_SIZE: u32 = shadowstore_base::limits::STORED_PIECE_BYTES as u32;

/// Chunk slots per shard: a full stripe's shard, in chunks. Depends only on
/// the stripe size and k, so a writer knows it before the blob's size.
pub fn chunk_slots_per_shard(stripe_size: u32, k: u8, chunk_size: u32) -> u32 {
    stripe_size.div_ceil(k as u32).div_ceil(chunk_size)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub size: u64,
    pub stripe_size: u32,
    pub k: u8,
    pub m: u8,
    pub chunk_size: u32,
}

impl Layout {
    pub fn new(size: u64, stripe_size: u32, k: u8, m: u8) -> Layout {
        assert!(k >= 1, "at least one data shard");
        assert!(stripe_size >= k as u32, "stripe smaller than its shard count");
        Layout { size, stripe_size, k, m, chunk_size: CHUNK_SIZE }
    }

    pub fn shards(&self) -> usize {
        self.k as usize + self.m as usize
    }

    pub fn stripes(&self) -> u32 {
        self.size.div_ceil(self.stripe_size as u64) as u32
    }

    /// Data bytes in stripe `s`.
    pub fn stripe_len(&self, s: u32) -> u32 {
        let start = s as u64 * self.stripe_size as u64;
        assert!(start < self.size, "stripe {s} beyond a blob of {} bytes", self.size);
        (self.size - start).min(self.stripe_size as u64) as u32
    }

    /// Bytes of every shard of stripe `s`.
    pub fn shard_len(&self, s: u32) -> u32 {
        self.stripe_len(s).div_ceil(self.k as u32)
    }

    /// Chunk slots per shard in the crc list.
    pub fn chunk_slots_per_shard(&self) -> u32 {
        chunk_slots_per_shard(self.stripe_size, self.k, self.chunk_size)
    }

    /// Chunks actually used by a shard of stripe `s`.
    pub fn chunks_in_shard(&self, s: u32) -> u32 {
        self.shard_len(s).div_ceil(self.chunk_size)
    }

    /// Length of chunk `c` of a shard of stripe `s`.
    pub fn chunk_len(&self, s: u32, c: u32) -> u32 {
        let shard_len = self.shard_len(s);
        let start = c * self.chunk_size;
        assert!(start < shard_len, "chunk {c} beyond shard of {shard_len} bytes");
        (shard_len - start).min(self.chunk_size)
    }

    /// Position of the crc of (stripe, shard, chunk) in the manifest.
    pub fn crc_index(&self, s: u32, shard: usize, c: u32) -> usize {
        let per_shard = self.chunk_slots_per_shard() as usize;
        (s as usize * self.shards() + shard) * per_shard + c as usize
    }

    pub fn crc_slots(&self) -> usize {
        self.stripes() as usize * self.shards() * self.chunk_slots_per_shard() as usize
    }

    /// Bytes of one shard over the whole blob (the shards of a stripe are
    /// equally long): what a holder receives. More than `size / k` when a
    /// stripe's length is not a multiple of k.
    pub fn shard_bytes(&self) -> u64 {
        let stripe = self.stripe_size as u64;
        let (full, rest) = (self.size / stripe, self.size % stripe);
        full * stripe.div_ceil(self.k as u64) + rest.div_ceil(self.k as u64)
    }

    /// Bytes stored over all holders (what erasure coding costs).
    pub fn encoded_bytes(&self) -> u64 {
        self.shard_bytes() * self.shards() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_bytes_are_the_shards_stripe_by_stripe() {
        for (size, stripe, k) in [(163_855, 1 << 20, 2), (200_001, 1 << 20, 2), ((3 << 20) + 7, 1 << 20, 3), (10, 4, 3)]
        {
            let l = Layout::new(size, stripe, k, 1);
            let by_stripe: u64 = (0..l.stripes()).map(|s| l.shard_len(s) as u64).sum();
            assert_eq!(l.shard_bytes(), by_stripe, "{size} bytes in stripes of {stripe}, k = {k}");
            assert!(l.shard_bytes() * k as u64 >= size);
        }
        // Not size / k: the reason a holder's bound must come from here.
        assert_eq!(Layout::new(163_855, 1 << 20, 2, 1).shard_bytes(), 81_928);
    }

    #[test]
    fn every_byte_is_covered_once() {
        for (size, stripe, k, m) in
            [(1u64, 1024, 2, 1), (3_000_000, 1 << 20, 2, 1), (5 << 20, 1 << 20, 3, 2), (65_537, 65_536, 4, 2)]
        {
            let l = Layout::new(size, stripe, k, m);
            let covered: u64 = (0..l.stripes()).map(|s| l.stripe_len(s) as u64).sum();
            assert_eq!(covered, size);
            for s in 0..l.stripes() {
                assert!(l.shard_len(s) as u64 * k as u64 >= l.stripe_len(s) as u64);
                let chunked: u32 = (0..l.chunks_in_shard(s)).map(|c| l.chunk_len(s, c)).sum();
                assert_eq!(chunked, l.shard_len(s));
                assert!(l.chunks_in_shard(s) <= l.chunk_slots_per_shard());
            }
        }
    }

    #[test]
    fn crc_indexes_are_distinct_and_in_range() {
        let l = Layout::new(3 * (1 << 20) + 10, 1 << 20, 2, 1);
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..l.stripes() {
            for shard in 0..l.shards() {
                for c in 0..l.chunks_in_shard(s) {
                    let i = l.crc_index(s, shard, c);
                    assert!(i < l.crc_slots());
                    assert!(seen.insert(i));
                }
            }
        }
    }

    #[test]
    fn two_plus_one_costs_one_and_a_half() {
        let l = Layout::new(8 << 20, 1 << 20, 2, 1);
        assert_eq!(l.encoded_bytes(), 12 << 20);
    }
}
