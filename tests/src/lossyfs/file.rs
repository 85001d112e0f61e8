//! One file's bytes and what a power cut would leave of them: the
//! content as of the last successful sync, kept as an undo log of the
//! pages changed since (the first change to a page saves its synced
//! content), and the pages whose write-back failed, which no later sync
//! saves.

use std::collections::HashMap;
use std::collections::HashSet;

/// Granularity of the undo log: what a cut restores is whole pages.
pub(super) const PAGE_BYTES: usize = 4096;

pub(super) struct File {
    pub(super) data: Vec<u8>,
    /// Length as of the last successful sync.
    synced_len: usize,
    /// The synced content of every page below `synced_len` changed since.
    undo: HashMap<usize, Vec<u8>>,
    /// Pages whose write-back failed: their undo entries outlive later
    /// syncs, since the kernel marked them clean without writing them.
    lost: HashSet<usize>,
    /// Bumped by every failed write-back (Linux's errseq).
    pub(super) write_errors: u64,
}

impl File {
    pub(super) fn new() -> File {
        File { data: Vec::new(), synced_len: 0, undo: HashMap::new(), lost: HashSet::new(), write_errors: 0 }
    }

    /// Saves the synced content of the pages in `from..to` before they
    /// change (the first change after a sync only).
    fn save_pages(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        for page in from / PAGE_BYTES..=(to - 1) / PAGE_BYTES {
            let start = page * PAGE_BYTES;
            if start >= self.synced_len {
                break;
            }
            let data = &self.data;
            self.undo.entry(page).or_insert_with(|| {
                let end = (start + PAGE_BYTES).min(data.len());
                data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
            });
            // Dirty again: the next sync writes the page's new content.
            self.lost.remove(&page);
        }
    }

    pub(super) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        self.save_pages(offset, end);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file).
    pub(super) fn read(&self, offset: usize, size: usize) -> &[u8] {
        let start = offset.min(self.data.len());
        let end = start.saturating_add(size).min(self.data.len());
        &self.data[start..end]
    }

    pub(super) fn truncate(&mut self, len: usize) {
        if len < self.data.len() {
            self.save_pages(len, self.data.len());
        }
        self.data.resize(len, 0);
    }

    pub(super) fn sync(&mut self) {
        let lost = &self.lost;
        self.undo.retain(|page, _| lost.contains(page));
        self.synced_len = self.data.len();
    }

    /// A failed write-back: what is dirty now will never be written.
    pub(super) fn fail_write_back(&mut self) {
        self.lost.extend(self.undo.keys().copied());
        self.write_errors += 1;
    }

    /// Back to the synced state; returns the bytes that differed.
    pub(super) fn restore(&mut self) -> u64 {
        let mut dropped = self.data.len().abs_diff(self.synced_len) as u64;
        self.data.resize(self.synced_len, 0);
        for (page, old) in self.undo.drain() {
            let start = page * PAGE_BYTES;
            if start >= self.synced_len {
                continue;
            }
            let n = old.len().min(self.synced_len - start);
            let current = &mut self.data[start..start + n];
            dropped += current.iter().zip(&old[..n]).filter(|(a, b)| a != b).count() as u64;
            current.copy_from_slice(&old[..n]);
        }
        self.lost.clear();
        dropped
    }
}
