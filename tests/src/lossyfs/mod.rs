//! A filesystem that forgets what was not synced, for power-loss tests of
//! real node processes.
//!
//! `LossyFs` is a FUSE filesystem held in the test process's memory and
//! mounted over a node's data directory. Reads see every write, as they
//! would through a page cache; a [`PowerSwitch::cut`] keeps only what a
//! disk would still hold after the power went out:
//! - a file's bytes as of its last successful `fsync` or `fdatasync`
//!   (tracked per 4 KiB page: the first change to a page after a sync
//!   saves the page's synced content, a cut puts it back);
//! - names (create, mkdir, rename, unlink) as of the last successful sync
//!   of anything on the mount, the way a journaling filesystem commits its
//!   metadata in order (ext4's data=ordered). A file whose name was
//!   committed but whose bytes never were comes back empty, as the
//!   zero-length files of delayed allocation do.
//!
//! `sync_file_range` reaches no FUSE operation, so it makes nothing durable
//! here, which is what it promises on a real disk.
//!
//! [`PowerSwitch::fail_syncs`] makes the next syncs fail with EIO the way
//! Linux fails them since 4.13: the pages that were dirty are marked clean
//! without being written, so no later sync saves them, and the error is
//! reported once to every file description that was open when it happened
//! (errseq). A program that treats the failure as transient and syncs
//! again gets a success for data that is gone.
//!
//! Files are opened with direct I/O and no attribute or name is cached by
//! the kernel, so after a cut nothing of the lost state shows. The mount is
//! meant for one node process at a time, which must be dead when the
//! power is cut.
//!
//! The parts: `file.rs` (one file's bytes and its undo log), `state.rs`
//! (names, descriptions, syncs and cuts), `fuse.rs` (kernel requests to
//! state calls); this file is what a test uses.

mod file;
mod fuse;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use fuser::MountOption;

use fuse::LossyFs;
use state::State;
pub use state::Stats;

/// The test's handle on a mounted lossy filesystem.
#[derive(Clone)]
pub struct PowerSwitch {
    state: Arc<Mutex<State>>,
}

/// The state, also after a panic while it was held (a test reports the
/// panic; the filesystem goes on).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl PowerSwitch {
    /// Drops everything not synced (see the module docs). The process
    /// using the mount must be dead.
    pub fn cut(&self) {
        lock(&self.state).cut();
    }

    /// Makes the next `n` syncs on the mount fail with EIO (0: none).
    pub fn fail_syncs(&self, n: u32) {
        self.fail_syncs_after(0, n);
    }

    /// Lets `ok` syncs succeed, then makes the `n` after them fail.
    pub fn fail_syncs_after(&self, ok: u32, n: u32) {
        lock(&self.state).fail_syncs_after(ok, n);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats()
    }
}

/// A mounted lossy filesystem; unmounted when dropped.
pub struct Mount {
    _session: fuser::BackgroundSession,
    pub switch: PowerSwitch,
}

/// Mounts an empty lossy filesystem on `dir` (which must exist). Needs
/// `/dev/fuse` and the right to mount (root, or fusermount3).
pub fn mount(dir: &Path) -> std::io::Result<Mount> {
    let state = Arc::new(Mutex::new(State::new()));
    let fs = LossyFs { state: state.clone() };
    let options = [MountOption::FSName("lossyfs".into()), MountOption::Subtype("lossyfs".into())];
    let session = fuser::spawn_mount2(fs, dir, &options)?;
    Ok(Mount { _session: session, switch: PowerSwitch { state } })
}

/// Whether this machine can mount a lossy filesystem: `Err` says why not.
pub fn available() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mounted = mount(dir.path()).map_err(|e| format!("mounting a FUSE filesystem: {e}"))?;
    std::fs::write(dir.path().join("probe"), b"probe").map_err(|e| format!("writing through FUSE: {e}"))?;
    drop(mounted);
    Ok(())
}
