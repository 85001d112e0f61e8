//! The FUSE side: each kernel request becomes one call on the [`State`]
//! under its lock, and its result one reply. Files are opened with direct
//! I/O and nothing is cached by the kernel (TTL 0), so a cut shows at once.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::SystemTime;

use fuser::FileAttr;
use fuser::Filesystem;
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

use super::file::File;
use super::file::PAGE_BYTES;
use super::lock;
use super::state::Body;
use super::state::Errno;
use super::state::State;

/// Nothing is cached by the kernel, so a cut shows at once.
const TTL: Duration = Duration::ZERO;
/// Largest file the filesystem accepts (it lives in memory): sled's data
/// file passed 1 GiB in a 5-minute run of the power-loss test.
const FILE_BYTES_MAX: usize = 8 << 30;

/// The FUSE side of the filesystem; the test keeps a [`super::PowerSwitch`].
pub(super) struct LossyFs {
    pub(super) state: Arc<Mutex<State>>,
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
            let mtime = match mtime {
                Some(TimeOrNow::SpecificTime(t)) => Some(t),
                _ => None,
            };
            state.set_attr(ino, mode, (uid, gid), mtime)?;
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
            state.add(parent, name, Body::File(File::new()), mode & !umask, (req.uid(), req.gid()))
        } else {
            Err(libc::EPERM)
        };
        reply_entry(&state, ino, reply);
    }

    fn mkdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut state = lock(&self.state);
        let ino = state.add(parent, name, Body::Dir(BTreeMap::new()), mode & !umask, (req.uid(), req.gid()));
        reply_entry(&state, ino, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(lock(&self.state).remove(parent, name, false), reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(lock(&self.state).remove(parent, name, true), reply);
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
        reply_empty(lock(&self.state).rename(parent, name, newparent, newname, flags), reply);
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
        let created = state.add(parent, name, Body::File(File::new()), mode & !umask, (req.uid(), req.gid()));
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
            Ok(f) => reply.data(f.read(usize::try_from(offset).unwrap_or(usize::MAX), size as usize)),
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
        lock(&self.state).release(fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(lock(&self.state).sync(ino, Some(fh)), reply);
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let entries = match lock(&self.state).list(ino) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(usize::try_from(offset).unwrap_or(0)) {
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
