//! Offline compaction of a node's data directory.
//!
//! sled 0.34 keeps its data file at its high-water mark: it reuses freed
//! segments but truncates only free segments at the very end of the file,
//! and it cleans a segment only once half of it is garbage. After heavy
//! overwrite and delete churn a data directory can be many times larger
//! than its live data (docs/BENCHMARKS.md). Compaction copies every live
//! key of every tree into a fresh directory, syncs it, and swaps it in, so
//! the directory shrinks to about its live size. The node must be stopped.

use std::io;
use std::path::Path;
use std::path::PathBuf;

use super::engine::StorageEngine;
use super::engine::Tree;
use super::engine::WriteBatch;
use super::sled_engine::SledEngine;

/// Key-value pairs copied per batch.
const COPY_BATCH_KEYS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    pub keys: u64,
    pub value_bytes: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Bytes a directory occupies on disk (allocated blocks).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// If a compaction of `dir` was interrupted, what happened and the exact
/// commands that recover (`None`: no trace of one). A node refuses to
/// start beside an interrupted compaction: with the data directory
/// missing it would otherwise bootstrap or join as a new node, a voter
/// that forgot its vote.
pub fn interrupted(dir: &Path) -> Option<String> {
    let fresh = sibling(dir, ".compacting");
    let old = sibling(dir, ".before-compaction");
    let (d, f, o) = (dir.display(), fresh.display(), old.display());
    match (dir.exists(), fresh.exists(), old.exists()) {
        (_, false, false) => None,
        (false, _, true) => Some(format!(
            "a compaction of {d} stopped between its two renames: the original data is in {o}. Restore it with \
             `mv {o} {d} && rm -rf {f}`, then start the node"
        )),
        (true, _, true) => Some(format!(
            "a compaction of {d} finished its swap but did not remove the original: {d} holds the verified copy. \
             Remove the original with `rm -rf {o}{}`, then start the node",
            if fresh.exists() { format!(" {f}") } else { String::new() }
        )),
        (true, true, false) => Some(format!(
            "a compaction of {d} stopped while copying: {d} is untouched. Remove the partial copy with \
             `rm -rf {f}`, then start the node"
        )),
        (false, true, false) => Some(format!(
            "{d} is missing and a partial compaction copy {f} is beside it: the original data is gone from this \
             path; do not start the node here (it would join as a new node). Restore {d} from wherever it was \
             moved, then `rm -rf {f}`"
        )),
    }
}

/// Whether the trees of `a` and `b` hold the same keys and values.
fn same_contents(a: &SledEngine, b: &SledEngine) -> io::Result<Result<(), String>> {
    for tree in Tree::ALL {
        let mut start: Vec<u8> = Vec::new();
        loop {
            let left = a.range(tree, &start, &[0xff; 64], COPY_BATCH_KEYS)?;
            let right = b.range(tree, &start, &[0xff; 64], COPY_BATCH_KEYS)?;
            if left != right {
                let at = left.iter().zip(&right).position(|(l, r)| l != r).unwrap_or(left.len().min(right.len()));
                return Ok(Err(format!("tree {} differs at entry {at} after key {start:x?}", tree.name())));
            }
            let Some((last, _)) = left.last() else { break };
            start = last.clone();
            start.push(0);
        }
    }
    Ok(Ok(()))
}

/// Compacts the stopped node's data directory `dir` in place: copies the
/// live data into `DIR.compacting`, verifies the copy against the
/// original, then swaps the two (`DIR.before-compaction` holds the
/// original between the renames) and deletes the original.
pub async fn compact(dir: &Path, cache_capacity_bytes: u64) -> io::Result<CompactReport> {
    if let Some(what) = interrupted(dir) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, what));
    }
    if !dir.join("db").exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} holds no node data", dir.display())));
    }
    let fresh = sibling(dir, ".compacting");
    let old = sibling(dir, ".before-compaction");
    let bytes_before = dir_bytes(dir);
    let (mut keys, mut value_bytes) = (0u64, 0u64);
    {
        let src = SledEngine::open(dir, cache_capacity_bytes)?;
        let dst = SledEngine::open(&fresh, cache_capacity_bytes)?;
        for tree in Tree::ALL {
            let mut start: Vec<u8> = Vec::new();
            loop {
                let kvs = src.range(tree, &start, &[0xff; 64], COPY_BATCH_KEYS)?;
                let Some((last, _)) = kvs.last() else { break };
                let mut next = last.clone();
                next.push(0);
                let mut b = WriteBatch::new(tree);
                for (k, v) in kvs {
                    keys += 1;
                    value_bytes += v.len() as u64;
                    b.put(k, v);
                }
                dst.write(b)?;
                start = next;
            }
        }
        dst.clone().sync().await?;
    }
    {
        // The copy as it is on disk, read back, against the original.
        let src = SledEngine::open(dir, cache_capacity_bytes)?;
        let copy = SledEngine::open(&fresh, cache_capacity_bytes)?;
        if let Err(diff) = same_contents(&src, &copy)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the copy in {} does not match {} ({diff}); the original is untouched, remove the copy",
                    fresh.display(),
                    dir.display()
                ),
            ));
        }
    }
    let sync_parent = || match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::File::open(parent)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    };
    // Swap: a crash between the renames leaves both directories, never
    // none, and start-up refuses to run beside them (`interrupted`).
    std::fs::rename(dir, &old)?;
    sync_parent()?;
    std::fs::rename(&fresh, dir)?;
    sync_parent()?;
    std::fs::remove_dir_all(&old)?;
    Ok(CompactReport { keys, value_bytes, bytes_before, bytes_after: dir_bytes(dir) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_compaction_is_named_with_its_recovery_command() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (fresh, old) = (tmp.path().join("data.compacting"), tmp.path().join("data.before-compaction"));
        assert_eq!(interrupted(&dir), None, "nothing there");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(interrupted(&dir), None, "a plain data directory");
        std::fs::create_dir_all(&fresh).unwrap();
        let m = interrupted(&dir).unwrap();
        assert!(m.contains("while copying") && m.contains(&format!("rm -rf {}", fresh.display())), "{m}");
        std::fs::rename(&dir, &old).unwrap();
        let m = interrupted(&dir).unwrap();
        assert!(m.contains(&format!("mv {} {}", old.display(), dir.display())), "{m}");
        std::fs::rename(&fresh, &dir).unwrap();
        let m = interrupted(&dir).unwrap();
        assert!(m.contains("verified copy") && m.contains(&format!("rm -rf {}", old.display())), "{m}");
        std::fs::remove_dir_all(&old).unwrap();
        assert_eq!(interrupted(&dir), None);
    }

    #[tokio::test]
    async fn compaction_keeps_every_key_and_shrinks_a_churned_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        {
            let e = SledEngine::open(&dir, 8 << 20).unwrap();
            for round in 0..4u8 {
                for i in 0..400u32 {
                    let mut b = WriteBatch::new(Tree::Shards);
                    b.put(i.to_be_bytes().to_vec(), vec![round; 40_000]);
                    e.write(b).unwrap();
                }
                e.clone().sync().await.unwrap();
            }
            let mut b = WriteBatch::new(Tree::Shards);
            b.delete_range(100u32.to_be_bytes().to_vec(), 400u32.to_be_bytes().to_vec());
            e.write(b).unwrap();
            let mut b = WriteBatch::new(Tree::Local);
            b.put(b"identity".to_vec(), b"me".to_vec());
            e.write(b).unwrap();
            e.clone().sync().await.unwrap();
        }
        let report = compact(&dir, 8 << 20).await.unwrap();
        assert_eq!(report.keys, 101, "100 shard chunks and the identity");
        assert!(report.bytes_after < report.bytes_before / 2, "{report:?}");
        let e = SledEngine::open(&dir, 8 << 20).unwrap();
        assert_eq!(e.get(Tree::Local, b"identity").unwrap(), Some(b"me".to_vec()));
        assert_eq!(e.get(Tree::Shards, &99u32.to_be_bytes()).unwrap(), Some(vec![3u8; 40_000]));
        assert_eq!(e.get(Tree::Shards, &100u32.to_be_bytes()).unwrap(), None);
        assert!(!tmp.path().join("data.before-compaction").exists());
    }
}
