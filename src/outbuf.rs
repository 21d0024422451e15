//! Pending output of a connection: a queue of byte chunks and file ranges, written
//! with `writev` and `sendfile` when the socket takes them. Small replies share one
//! buffer; large bodies are moved in, not copied; file bodies never enter memory;
//! a chat push fanned out to many connections is one reference-counted frame.

use crate::bufpool;
use crate::net::{IoClass, Stream, classify};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

/// Owned or shared output chunks smaller than this are copied into the tail
/// buffer (one iovec for many frames: a burst of small chat pushes leaves in one
/// `writev` entry, and a few hundred bytes copy faster than a refcount and an
/// iovec cost); larger ones are queued as they are (no copy).
const COPY_MAX: usize = 4 * 1024;
/// The tail buffer stops growing here and a new one starts.
const TAIL_MAX: usize = 64 * 1024;
/// Chunks handed to one `writev`.
const IOV_MAX: usize = 64;

/// A writer that can also send a range of a file (a socket: `sendfile(2)`, which
/// moves page-cache pages to the socket without copying them through user space).
pub trait Sink: Write {
    /// Sends up to `len` bytes of `file` from `offset`. The default reads and writes
    /// (for writers that are not sockets, e.g. in tests).
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut buf = vec![0; len.min(64 * 1024)];
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.write(buf.get(..n).unwrap_or_default())
    }
}

/// A range of an open file, queued as a reply body.
#[derive(Debug)]
pub struct FileRange {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug)]
enum Chunk {
    Mem(Vec<u8>),
    /// A frame shared with other connections' queues (a chat push): never copied per
    /// connection, freed when the last queue has written it.
    Shared(Rc<[u8]>),
    File(FileRange),
}

impl Chunk {
    /// The bytes of a memory chunk (`None` for a file range).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Chunk::Mem(bytes) => Some(bytes),
            Chunk::Shared(bytes) => Some(bytes),
            Chunk::File(_) => None,
        }
    }
}

/// What one [`OutBuf::write_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub bytes: usize,
    /// Stopped because the socket was full: its writable edge will bring us back.
    /// False with output left means the per-turn file budget ran out: no edge will
    /// come, so the caller must come back by itself.
    pub blocked: bool,
}

impl Sink for Stream {
    /// `sendfile(2)`: the kernel moves page-cache pages to the socket, no copy
    /// through user space. Works for TCP and Unix sockets alike.
    fn send_file(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            // sendfile cannot encrypt: the file passes through TLS in user space.
            Stream::Tls(s) => return s.send_file(file, offset, len),
        };
        // SAFETY: both descriptors are open for the duration of the call and `off`
        // is a valid, exclusively borrowed off_t.
        let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut off, len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 && len > 0 {
            // The file shrank under us: the reply promised bytes we cannot send.
            return Err(io::Error::other("file truncated while being sent"));
        }
        Ok(n as usize)
    }
}

/// Memory as a socket stand-in (tests, the fuzz harness): `send_file` reads the file.
impl Sink for Vec<u8> {}

/// Where a frame is written: a connection's [`OutBuf`], or a `Vec` holding one
/// datagram (UDP), so a reply is serialized by one piece of code for both.
pub trait FrameOut {
    /// Appends one frame's header (or a whole small frame) written by `write`.
    fn append(&mut self, write: impl FnOnce(&mut Vec<u8>));
    /// Appends bytes of the frame's body.
    fn push_body(&mut self, body: Vec<u8>);
}

impl FrameOut for Vec<u8> {
    fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(self);
    }

    fn push_body(&mut self, body: Vec<u8>) {
        self.extend_from_slice(&body);
        bufpool::give(body);
    }
}

impl FrameOut for OutBuf {
    fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        OutBuf::append(self, write);
    }

    fn push_body(&mut self, body: Vec<u8>) {
        OutBuf::push_body(self, body);
    }
}

/// Pending output: a queue of chunks written with `writev` (memory) and
/// `sendfile` (files). Written memory chunks go back to the buffer pool, so a
/// drained `OutBuf` holds no buffer.
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front memory chunk already written.
    pos: usize,
    /// Bytes pending in all chunks (files included).
    len: u64,
    /// Bytes pending in memory chunks.
    mem: usize,
    /// Whether the back chunk is our own tail buffer, which replies may extend.
    tail_open: bool,
    /// Frames queued since [`OutBuf::take_frames`] last asked (for `frames_out`).
    frames: u64,
    /// File ranges pending: each holds an open descriptor until sent.
    files: usize,
}

impl OutBuf {
    /// Bytes pending, file ranges included (what backpressure counts).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes pending in memory (what a slow chat receiver costs the server).
    pub fn mem_len(&self) -> usize {
        self.mem
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a file range is pending (all pending bytes not in memory are file bytes).
    pub fn has_file(&self) -> bool {
        self.len > self.mem as u64
    }

    /// File bodies pending, each holding an open descriptor.
    pub fn file_bodies(&self) -> usize {
        self.files
    }

    /// Drops everything pending (a connection evicted to free memory): buffers
    /// go back to the pool, file descriptors are closed.
    pub fn clear(&mut self) {
        for chunk in self.chunks.drain(..) {
            if let Chunk::Mem(buf) = chunk {
                bufpool::give(buf);
            }
        }
        self.pos = 0;
        self.len = 0;
        self.mem = 0;
        self.files = 0;
        self.tail_open = false;
    }

    /// Queues one frame: its header (and its body, when small) written by
    /// `write` into the tail buffer. A body that follows goes in with
    /// [`OutBuf::push_body`] or [`OutBuf::push_file`].
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.frames += 1;
        self.extend_tail(write);
    }

    /// Frames queued since the last call (replies and pushes alike).
    pub fn take_frames(&mut self) -> u64 {
        std::mem::take(&mut self.frames)
    }

    fn extend_tail(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let tail_full = match self.chunks.back() {
            Some(Chunk::Mem(c)) => c.len() >= TAIL_MAX,
            _ => true,
        };
        if !self.tail_open || tail_full {
            self.chunks.push_back(Chunk::Mem(bufpool::take()));
            self.tail_open = true;
        }
        if let Some(Chunk::Mem(tail)) = self.chunks.back_mut() {
            let before = tail.len();
            write(tail);
            let added = tail.len() - before;
            self.len += added as u64;
            self.mem += added;
        }
    }

    /// Queues a file range as a body: sent straight from the file, never read into memory.
    pub fn push_file(&mut self, range: FileRange) {
        if range.len == 0 {
            return;
        }
        self.len += range.len;
        self.files += 1;
        self.chunks.push_back(Chunk::File(range));
        self.tail_open = false;
    }

    /// Queues a body: copied when small, moved in as its own chunk when large.
    pub fn push_body(&mut self, body: Vec<u8>) {
        if body.is_empty() {
            return bufpool::give(body);
        }
        if body.len() < COPY_MAX {
            self.extend_tail(|tail| tail.extend_from_slice(&body));
            bufpool::give(body);
        } else {
            self.len += body.len() as u64;
            self.mem += body.len();
            self.chunks.push_back(Chunk::Mem(body));
            self.tail_open = false;
        }
    }

    /// Queues a frame shared with other connections (a chat push): small ones are
    /// copied into the tail like any reply, larger ones cost this queue a reference.
    pub fn push_shared(&mut self, frame: &Rc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        self.frames += 1;
        if frame.len() < COPY_MAX {
            self.extend_tail(|tail| tail.extend_from_slice(frame));
        } else {
            self.len += frame.len() as u64;
            self.mem += frame.len();
            self.chunks.push_back(Chunk::Shared(Rc::clone(frame)));
            self.tail_open = false;
        }
    }

    /// Writes until everything is sent, the socket is full, or `file_budget` bytes
    /// of files went out (fairness: one big download must not hold the loop).
    /// `Err` only for a fatal error; short writes are normal.
    pub fn write_to<W: Sink>(&mut self, w: &mut W, file_budget: usize) -> io::Result<Flushed> {
        let mut done = Flushed {
            bytes: 0,
            blocked: false,
        };
        let mut file_sent = 0;
        while self.len > 0 {
            let result = match self.chunks.front() {
                Some(Chunk::File(range)) => {
                    if file_sent >= file_budget {
                        break;
                    }
                    let want = usize::try_from(range.len)
                        .unwrap_or(usize::MAX)
                        .min(file_budget - file_sent);
                    let r = w.send_file(&range.file, range.offset, want);
                    if let Ok(k) = r {
                        file_sent += k;
                    }
                    r
                }
                _ => {
                    let mut iov = [IoSlice::new(&[]); IOV_MAX];
                    let mut n = 0;
                    for (i, chunk) in self.chunks.iter().take(IOV_MAX).enumerate() {
                        let Some(bytes) = chunk.bytes() else { break };
                        let from = if i == 0 { self.pos } else { 0 };
                        iov[i] = IoSlice::new(bytes.get(from..).unwrap_or_default());
                        n = i + 1;
                    }
                    match iov.get(..n).unwrap_or_default() {
                        // One chunk (a turn's replies share the tail buffer): a plain
                        // `write`, which the kernel serves with less setup than `writev`.
                        [one] => w.write(one),
                        many => w.write_vectored(many),
                    }
                }
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    done.bytes += k;
                    self.consume(k);
                }
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => {
                        done.blocked = true;
                        break;
                    }
                    IoClass::Retry => continue,
                    IoClass::Fatal => return Err(e),
                },
            }
        }
        if self.len == 0 {
            self.consume(0); // drop chunks that were appended to but stayed empty
        }
        Ok(done)
    }

    /// Drops `k` written bytes from the front, and any chunk left empty.
    fn consume(&mut self, mut k: usize) {
        self.len = self.len.saturating_sub(k as u64);
        while let Some(front) = self.chunks.front_mut() {
            match front {
                Chunk::File(range) => {
                    let k64 = k as u64;
                    if k64 < range.len {
                        range.offset += k64;
                        range.len -= k64;
                        return;
                    }
                    k -= range.len as usize; // range.len <= k here
                    self.files = self.files.saturating_sub(1);
                }
                Chunk::Mem(_) | Chunk::Shared(_) => {
                    let len = front.bytes().map_or(0, <[u8]>::len);
                    let left = len.saturating_sub(self.pos);
                    if k < left {
                        self.pos += k;
                        self.mem = self.mem.saturating_sub(k);
                        return;
                    }
                    // Fully written (an empty chunk counts as written too).
                    k -= left;
                    self.mem = self.mem.saturating_sub(left);
                    self.pos = 0;
                }
            }
            if let Some(Chunk::Mem(done)) = self.chunks.pop_front() {
                bufpool::give(done);
            }
        }
        self.tail_open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then would block.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Pipe {}

    #[test]
    fn short_writes_resume_where_they_stopped() {
        let mut out = OutBuf::default();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        out.append(|t| t.extend_from_slice(b"head"));
        out.push_body(big.clone());
        out.append(|t| t.extend_from_slice(b"tail"));
        assert_eq!(out.len(), 100_008);
        let mut pipe = Pipe {
            got: Vec::new(),
            room: 7,
        };
        assert_eq!(out.write_to(&mut pipe, usize::MAX).unwrap().bytes, 7);
        assert_eq!(out.len(), 100_001);
        pipe.room = usize::MAX;
        out.write_to(&mut pipe, usize::MAX).unwrap();
        assert!(out.is_empty());
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert_eq!(pipe.got, want);
    }

    #[test]
    fn empty_chunks_never_stall_a_write() {
        // Fill the tail exactly to TAIL_MAX, then append nothing: a new, empty tail
        // chunk is queued. Writing must still finish cleanly.
        let mut out = OutBuf::default();
        out.append(|t| t.resize(TAIL_MAX, b'a'));
        out.append(|_| {});
        out.push_body(Vec::new());
        out.append(|_| {});
        let mut pipe = Pipe {
            got: Vec::new(),
            room: usize::MAX,
        };
        assert_eq!(out.write_to(&mut pipe, usize::MAX).unwrap().bytes, TAIL_MAX);
        assert!(out.is_empty());
        assert!(out.chunks.is_empty());
        out.append(|t| t.extend_from_slice(b"z"));
        assert_eq!(out.write_to(&mut pipe, usize::MAX).unwrap().bytes, 1);
    }

    #[test]
    fn file_ranges_go_out_in_order_within_the_budget() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let mut out = OutBuf::default();
        out.append(|t| t.extend_from_slice(b"head"));
        out.push_file(FileRange {
            file,
            offset: 10,
            len: 150_000,
        });
        out.append(|t| t.extend_from_slice(b"tail"));
        assert_eq!(out.len(), 150_008);
        assert_eq!(out.mem_len(), 8);
        let mut pipe = Pipe {
            got: Vec::new(),
            room: usize::MAX,
        };
        // A budget of 100,000 file bytes: stops with output left, not blocked.
        let done = out.write_to(&mut pipe, 100_000).unwrap();
        assert!(!done.blocked);
        assert_eq!(done.bytes, 100_004);
        let done = out.write_to(&mut pipe, 100_000).unwrap();
        assert_eq!(done.bytes, 50_004);
        assert!(out.is_empty());
        let mut want = b"head".to_vec();
        want.extend_from_slice(&data[10..150_010]);
        want.extend_from_slice(b"tail");
        assert_eq!(pipe.got, want);
    }

    #[test]
    fn shared_frames_are_referenced_not_copied_and_interleave_in_order() {
        let big: Rc<[u8]> = (0..10_000u32).map(|i| i as u8).collect();
        let small: Rc<[u8]> = Rc::from(&b"small"[..]);
        let mut queues: Vec<OutBuf> = (0..3).map(|_| OutBuf::default()).collect();
        for out in &mut queues {
            out.append(|t| t.extend_from_slice(b"head"));
            out.push_shared(&big);
            out.push_shared(&small);
        }
        // Three queues hold the big frame by reference; the small one was copied.
        assert_eq!(Rc::strong_count(&big), 4);
        assert_eq!(Rc::strong_count(&small), 1);
        assert_eq!(queues[0].mem_len(), 4 + 10_000 + 5);
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"small");
        for out in &mut queues {
            let mut pipe = Pipe {
                got: Vec::new(),
                room: 6000,
            };
            out.write_to(&mut pipe, usize::MAX).unwrap();
            pipe.room = usize::MAX;
            out.write_to(&mut pipe, usize::MAX).unwrap();
            assert_eq!(pipe.got, want);
            assert!(out.is_empty() && out.mem_len() == 0);
        }
        // Written everywhere: the last reference is ours again.
        assert_eq!(Rc::strong_count(&big), 1);
    }

    #[test]
    fn drained_buffers_go_back_to_the_pool() {
        let mut out = OutBuf::default();
        out.append(|t| t.extend_from_slice(&[b'a'; 3000]));
        let mut pipe = Pipe {
            got: Vec::new(),
            room: usize::MAX,
        };
        out.write_to(&mut pipe, usize::MAX).unwrap();
        assert!(out.chunks.is_empty());
        // The next reply reuses that buffer: no allocation.
        let reused = bufpool::take();
        assert!(reused.capacity() >= 3000);
        bufpool::give(reused);
    }
}
