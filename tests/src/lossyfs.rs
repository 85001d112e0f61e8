//! A filesystem that forgets what was not synced, for power-loss tests of
//! real node processes.
//!
//! [`LossyFs`] is a FUSE filesystem held in the test process's memory and
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

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::os::raw::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::SystemTime;

use fuser::FileAttr;
use fuser::FileType;
use fuser::Filesystem;
use fuser::MountOption;
use fuser::ReplyAttr;
use fuser::ReplyCreate;
use fuser::ReplyData;
use fuser::ReplyDirectory;
use fuser::ReplyEmpty;
use fuser::ReplyEntry;
use fuser::ReplyOpen;
use fuser::ReplyStatfs;
use fuser::ReplyWrite;
use fuser::Request;
use fuser::TimeOrNow;

/// Granularity of the undo log: what a cut restores is whole pages.
const PAGE_BYTES: usize = 4096;
/// Nothing is cached by the kernel, so a cut shows at once.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = fuser::FUSE_ROOT_ID;
/// Largest file the filesystem accepts (it lives in memory): sled's data
/// file passed 1 GiB in a 5-minute run of the power-loss test.
const FILE_BYTES_MAX: usize = 8 << 30;
/// `rename(2)` flag: fail if the target exists.
const RENAME_NOREPLACE: u32 = 1;

struct File {
    data: Vec<u8>,
    /// Length as of the last successful sync.
    synced_len: usize,
    /// The synced content of every page below `synced_len` changed since.
    undo: HashMap<usize, Vec<u8>>,
    /// Pages whose write-back failed: their undo entries outlive later
    /// syncs, since the kernel marked them clean without writing them.
    lost: HashSet<usize>,
    /// Bumped by every failed write-back (Linux's errseq).
    write_errors: u64,
}

impl File {
    fn new() -> File {
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

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        self.save_pages(offset, end);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
    }

    fn truncate(&mut self, len: usize) {
        if len < self.data.len() {
            self.save_pages(len, self.data.len());
        }
        self.data.resize(len, 0);
    }

    fn sync(&mut self) {
        let lost = &self.lost;
        self.undo.retain(|page, _| lost.contains(page));
        self.synced_len = self.data.len();
    }

    /// A failed write-back: what is dirty now will never be written.
    fn fail_write_back(&mut self) {
        self.lost.extend(self.undo.keys().copied());
        self.write_errors += 1;
    }

    /// Back to the synced state; returns the bytes that differed.
    fn restore(&mut self) -> u64 {
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

enum Body {
    File(File),
    Dir(BTreeMap<OsString, u64>),
}

struct Inode {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

struct Handle {
    ino: u64,
    /// The inode's write errors already reported to this description.
    errors_seen: u64,
}

/// What the filesystem did, for a test to report and check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub syncs: u64,
    pub failed_syncs: u64,
    pub cuts: u64,
    /// File bytes a cut took back (changed, added or removed since synced).
    pub bytes_dropped: u64,
    /// Names a cut took back (created, renamed or removed since committed).
    pub names_dropped: u64,
    /// File bytes held now (the filesystem's memory).
    pub bytes_held: u64,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Every directory's entries as of the last committed sync.
    committed_names: HashMap<u64, BTreeMap<OsString, u64>>,
    names_changed: bool,
    /// Syncs that succeed before the next `syncs_to_fail` fail.
    syncs_to_pass: u32,
    syncs_to_fail: u32,
    stats: Stats,
}

type Errno = c_int;

impl State {
    fn new() -> State {
        let root = Inode { body: Body::Dir(BTreeMap::new()), perm: 0o755, uid: 0, gid: 0, mtime: SystemTime::now() };
        let mut state = State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            committed_names: HashMap::new(),
            names_changed: true,
            syncs_to_pass: 0,
            syncs_to_fail: 0,
            stats: Stats::default(),
        };
        state.commit_names();
        state
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let inode = self.inodes.get(&ino).ok_or(libc::ENOENT)?;
        let (kind, size, nlink) = match &inode.body {
            Body::File(f) => (FileType::RegularFile, f.data.len() as u64, 1),
            Body::Dir(_) => (FileType::Directory, 0, 2),
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: inode.mtime,
            mtime: inode.mtime,
            ctime: inode.mtime,
            crtime: inode.mtime,
            kind,
            perm: inode.perm,
            nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: 0,
            blksize: PAGE_BYTES as u32,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.body {
            Body::Dir(entries) => Ok(entries),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut File, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(libc::EISDIR),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(libc::ENOENT)
    }

    fn add(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, body: Body, mode: u32) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let entries = self.dir(parent)?;
        if entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        entries.insert(name.to_os_string(), ino);
        self.next_ino += 1;
        let inode =
            Inode { body, perm: (mode & 0o7777) as u16, uid: req.uid(), gid: req.gid(), mtime: SystemTime::now() };
        self.inodes.insert(ino, inode);
        self.names_changed = true;
        Ok(ino)
    }

    fn open(&mut self, ino: u64) -> Result<u64, Errno> {
        let errors_seen = match &self.inodes.get(&ino).ok_or(libc::ENOENT)?.body {
            Body::File(f) => f.write_errors,
            Body::Dir(_) => 0,
        };
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, errors_seen });
        Ok(fh)
    }

    /// `fsync`/`fdatasync` of `ino` through description `fh` (`None`: a
    /// directory sync, which only commits names).
    fn sync(&mut self, ino: u64, fh: Option<u64>) -> Result<(), Errno> {
        self.stats.syncs += 1;
        let fail = self.syncs_to_fail > 0 && self.syncs_to_pass == 0;
        if fail {
            self.syncs_to_fail -= 1;
        } else if self.syncs_to_fail > 0 {
            self.syncs_to_pass -= 1;
        }
        let errors_seen = fh.and_then(|fh| self.handles.get(&fh)).map(|h| h.errors_seen);
        let reported = match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.body {
            Body::File(f) => {
                if fail {
                    f.fail_write_back();
                }
                let unseen = errors_seen.is_some_and(|seen| seen < f.write_errors);
                if !fail && !unseen {
                    f.sync();
                }
                let errors = f.write_errors;
                if let Some(h) = fh.and_then(|fh| self.handles.get_mut(&fh)) {
                    h.errors_seen = errors;
                }
                fail || unseen
            }
            Body::Dir(_) => fail,
        };
        if reported {
            self.stats.failed_syncs += 1;
            return Err(libc::EIO);
        }
        self.commit_names();
        Ok(())
    }

    /// One journal commit: every name as it is now becomes durable.
    fn commit_names(&mut self) {
        if !self.names_changed {
            return;
        }
        self.committed_names = self
            .inodes
            .iter()
            .filter_map(|(ino, inode)| match &inode.body {
                Body::Dir(entries) => Some((*ino, entries.clone())),
                Body::File(_) => None,
            })
            .collect();
        self.names_changed = false;
        self.collect_garbage();
    }

    /// Forgets inodes no name reaches, now or as committed, and no open
    /// description holds.
    fn collect_garbage(&mut self) {
        let mut reachable = HashSet::new();
        let mut stack: Vec<u64> = self.handles.values().map(|h| h.ino).collect();
        stack.push(ROOT);
        while let Some(ino) = stack.pop() {
            if !reachable.insert(ino) {
                continue;
            }
            if let Some(Inode { body: Body::Dir(entries), .. }) = self.inodes.get(&ino) {
                stack.extend(entries.values().copied());
            }
            if let Some(entries) = self.committed_names.get(&ino) {
                stack.extend(entries.values().copied());
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
    }

    /// The power goes out: every file back to its synced bytes, every
    /// directory back to its committed names; open descriptions are gone
    /// with the process that held them.
    fn cut(&mut self) {
        self.handles.clear();
        for (ino, inode) in &mut self.inodes {
            match &mut inode.body {
                Body::File(f) => self.stats.bytes_dropped += f.restore(),
                Body::Dir(entries) => {
                    let committed = self.committed_names.get(ino).cloned().unwrap_or_default();
                    let differ = entries.iter().filter(|(k, v)| committed.get(*k) != Some(*v)).count()
                        + committed.keys().filter(|k| !entries.contains_key(*k)).count();
                    self.stats.names_dropped += differ as u64;
                    *entries = committed;
                }
            }
        }
        self.names_changed = false;
        self.syncs_to_pass = 0;
        self.syncs_to_fail = 0;
        self.stats.cuts += 1;
        self.collect_garbage();
    }
}

/// The FUSE side of the filesystem; the test keeps a [`PowerSwitch`].
pub struct LossyFs {
    state: Arc<Mutex<State>>,
}

/// The test's handle on a mounted [`LossyFs`].
#[derive(Clone)]
pub struct PowerSwitch {
    state: Arc<Mutex<State>>,
}

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
        let mut state = lock(&self.state);
        state.syncs_to_pass = ok;
        state.syncs_to_fail = n;
    }

    pub fn stats(&self) -> Stats {
        let state = lock(&self.state);
        let bytes_held = state
            .inodes
            .values()
            .map(|i| match &i.body {
                Body::File(f) => f.data.len() as u64,
                Body::Dir(_) => 0,
            })
            .sum();
        Stats { bytes_held, ..state.stats }
    }
}

/// A mounted [`LossyFs`]; unmounted when dropped.
pub struct Mount {
    _session: fuser::BackgroundSession,
    pub switch: PowerSwitch,
}

/// Mounts an empty [`LossyFs`] on `dir` (which must exist). Needs
/// `/dev/fuse` and the right to mount (root, or fusermount3).
pub fn mount(dir: &Path) -> std::io::Result<Mount> {
    let state = Arc::new(Mutex::new(State::new()));
    let fs = LossyFs { state: state.clone() };
    let options = [MountOption::FSName("lossyfs".into()), MountOption::Subtype("lossyfs".into())];
    let session = fuser::spawn_mount2(fs, dir, &options)?;
    Ok(Mount { _session: session, switch: PowerSwitch { state } })
}

/// Whether this machine can mount a [`LossyFs`]: `Err` says why not.
pub fn available() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mounted = mount(dir.path()).map_err(|e| format!("mounting a FUSE filesystem: {e}"))?;
    std::fs::write(dir.path().join("probe"), b"probe").map_err(|e| format!("writing through FUSE: {e}"))?;
    drop(mounted);
    Ok(())
}

fn reply_entry(state: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
    match ino.and_then(|ino| state.attr(ino)) {
        Ok(attr) => reply.entry(&TTL, &attr, 0),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(attr: Result<FileAttr, Errno>, reply: ReplyAttr) {
    match attr {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl LossyFs {
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut state = lock(&self.state);
        let ino = state.child(parent, name)?;
        match (&state.inodes.get(&ino).ok_or(libc::ENOENT)?.body, dir) {
            (Body::Dir(entries), true) if !entries.is_empty() => return Err(libc::ENOTEMPTY),
            (Body::Dir(_), false) => return Err(libc::EISDIR),
            (Body::File(_), true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        state.dir(parent)?.remove(name);
        state.names_changed = true;
        Ok(())
    }

    fn rename(&mut self, parent: u64, name: &OsStr, to_parent: u64, to_name: &OsStr, flags: u32) -> Result<(), Errno> {
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        let mut state = lock(&self.state);
        let ino = state.child(parent, name)?;
        if let Ok(target) = state.child(to_parent, to_name) {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(libc::EEXIST);
            }
            if let Some(Inode { body: Body::Dir(entries), .. }) = state.inodes.get(&target)
                && !entries.is_empty()
            {
                return Err(libc::ENOTEMPTY);
            }
        }
        state.dir(to_parent)?;
        state.dir(parent)?.remove(name);
        state.dir(to_parent)?.insert(to_name.to_os_string(), ino);
        state.names_changed = true;
        Ok(())
    }
}

impl Filesystem for LossyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut state = lock(&self.state);
        let ino = state.child(parent, name);
        reply_entry(&state, ino, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        reply_attr(lock(&self.state).attr(ino), reply);
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut state = lock(&self.state);
        let result = (|| {
            if let Some(size) = size {
                let size = usize::try_from(size).ok().filter(|s| *s <= FILE_BYTES_MAX).ok_or(libc::EFBIG)?;
                state.file(ino)?.truncate(size);
            }
            let inode = state.inodes.get_mut(&ino).ok_or(libc::ENOENT)?;
            if let Some(mode) = mode {
                inode.perm = (mode & 0o7777) as u16;
            }
            inode.uid = uid.unwrap_or(inode.uid);
            inode.gid = gid.unwrap_or(inode.gid);
            inode.mtime = match mtime {
                Some(TimeOrNow::SpecificTime(t)) => t,
                _ => SystemTime::now(),
            };
            state.attr(ino)
        })();
        reply_attr(result, reply);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut state = lock(&self.state);
        let ino = if mode & libc::S_IFMT == libc::S_IFREG {
            state.add(req, parent, name, Body::File(File::new()), mode & !umask)
        } else {
            Err(libc::EPERM)
        };
        reply_entry(&state, ino, reply);
    }

    fn mkdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut state = lock(&self.state);
        let ino = state.add(req, parent, name, Body::Dir(BTreeMap::new()), mode & !umask);
        reply_entry(&state, ino, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.remove(parent, name, false), reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.remove(parent, name, true), reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.rename(parent, name, newparent, newname, flags), reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match lock(&self.state).open(ino) {
            Ok(fh) => reply.opened(fh, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = lock(&self.state);
        let created = state.add(req, parent, name, Body::File(File::new()), mode & !umask);
        match created.and_then(|ino| Ok((state.attr(ino)?, state.open(ino)?))) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut state = lock(&self.state);
        match state.file(ino) {
            Ok(f) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(f.data.len());
                let end = start.saturating_add(size as usize).min(f.data.len());
                reply.data(&f.data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = lock(&self.state);
        let offset = match usize::try_from(offset) {
            Ok(o) if o.saturating_add(data.len()) <= FILE_BYTES_MAX => o,
            _ => return reply.error(libc::EFBIG),
        };
        match state.file(ino) {
            Ok(f) => {
                f.write(offset, data);
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(lock(&self.state).sync(ino, Some(fh)), reply);
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let mut state = lock(&self.state);
        let entries: Vec<(u64, FileType, OsString)> = match state.dir(ino) {
            Ok(entries) => entries.iter().map(|(name, child)| (*child, name.clone())).collect::<Vec<_>>(),
            Err(e) => return reply.error(e),
        }
        .into_iter()
        .map(|(child, name)| {
            let kind = match state.inodes.get(&child).map(|i| &i.body) {
                Some(Body::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name)
        })
        .collect();
        let all = [(ino, FileType::Directory, OsString::from(".")), (ino, FileType::Directory, OsString::from(".."))]
            .into_iter()
            .chain(entries);
        for (i, (child, kind, name)) in all.enumerate().skip(usize::try_from(offset).unwrap_or(0)) {
            if reply.add(child, i as i64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(lock(&self.state).sync(ino, None), reply);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let blocks = (64u64 << 30) / PAGE_BYTES as u64;
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, PAGE_BYTES as u32, 255, PAGE_BYTES as u32);
    }
}
