//! The filesystem's model: inodes, names and open descriptions, and what
//! survives a cut. File bytes become durable per file at its sync
//! ([`File`]); names become durable all at once at any successful sync
//! (one journal commit, as ext4's data=ordered); a sync can be made to
//! fail, and its error then reaches every description open at the time.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::os::raw::c_int;
use std::time::SystemTime;

use fuser::FileAttr;
use fuser::FileType;

use super::file::File;
use super::file::PAGE_BYTES;

pub(super) const ROOT: u64 = fuser::FUSE_ROOT_ID;
/// `rename(2)` flag: fail if the target exists.
const RENAME_NOREPLACE: u32 = 1;

pub(super) enum Body {
    File(File),
    Dir(BTreeMap<OsString, u64>),
}

pub(super) struct Inode {
    pub(super) body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

pub(super) struct Handle {
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

pub(super) struct State {
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

pub(super) type Errno = c_int;

impl State {
    pub(super) fn new() -> State {
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

    pub(super) fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
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

    pub(super) fn file(&mut self, ino: u64) -> Result<&mut File, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(libc::EISDIR),
        }
    }

    pub(super) fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// A new file or directory `name` in `parent`, owned by `(uid, gid)`.
    pub(super) fn add(
        &mut self,
        parent: u64,
        name: &OsStr,
        body: Body,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let entries = self.dir(parent)?;
        if entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        entries.insert(name.to_os_string(), ino);
        self.next_ino += 1;
        let (uid, gid) = owner;
        let inode = Inode { body, perm: (mode & 0o7777) as u16, uid, gid, mtime: SystemTime::now() };
        self.inodes.insert(ino, inode);
        self.names_changed = true;
        Ok(ino)
    }

    pub(super) fn open(&mut self, ino: u64) -> Result<u64, Errno> {
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
    pub(super) fn sync(&mut self, ino: u64, fh: Option<u64>) -> Result<(), Errno> {
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
    pub(super) fn cut(&mut self) {
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

    /// Removes name `name` from `parent`: a directory (`dir`), which must be
    /// empty, or a file.
    pub(super) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let state = self;
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

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        to_parent: u64,
        to_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        let state = self;
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

    pub(super) fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    /// Mode, owner and modification time (`None` leaves one as it is; the
    /// time defaults to now).
    pub(super) fn set_attr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        mtime: Option<SystemTime>,
    ) -> Result<(), Errno> {
        let inode = self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?;
        if let Some(mode) = mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        inode.uid = owner.0.unwrap_or(inode.uid);
        inode.gid = owner.1.unwrap_or(inode.gid);
        inode.mtime = mtime.unwrap_or_else(SystemTime::now);
        Ok(())
    }

    /// The entries of directory `ino`, with `.` and `..` first.
    pub(super) fn list(&mut self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let children: Vec<(OsString, u64)> = self.dir(ino)?.iter().map(|(n, c)| (n.clone(), *c)).collect();
        let mut all =
            vec![(ino, FileType::Directory, OsString::from(".")), (ino, FileType::Directory, OsString::from(".."))];
        for (name, child) in children {
            let kind = match self.inodes.get(&child).map(|i| &i.body) {
                Some(Body::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((child, kind, name));
        }
        Ok(all)
    }

    /// Lets `ok` syncs succeed, then makes the `n` after them fail.
    pub(super) fn fail_syncs_after(&mut self, ok: u32, n: u32) {
        self.syncs_to_pass = ok;
        self.syncs_to_fail = n;
    }

    /// What the filesystem did, and the file bytes it holds now.
    pub(super) fn stats(&self) -> Stats {
        Stats { bytes_held: self.bytes_held(), ..self.stats }
    }

    /// File bytes held (the filesystem's memory).
    fn bytes_held(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| match &i.body {
                Body::File(f) => f.data.len() as u64,
                Body::Dir(_) => 0,
            })
            .sum()
    }
}
