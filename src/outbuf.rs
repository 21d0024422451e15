//! Pending output of a connection: a queue of byte chunks, written with `writev`
//! when the socket takes them. Small replies share one buffer; large bodies are moved in, not copied.

use crate::bufpool;
use crate::net::{IoClass, classify};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Owned output chunks smaller than this are copied into the shared tail buffer
/// (one write for many replies); larger ones are queued as they are (no copy).
const COPY_MAX: usize = 4 * 1024;
/// The tail buffer stops growing here and a new one starts.
const TAIL_MAX: usize = 64 * 1024;
/// Chunks handed to one `writev`.
const IOV_MAX: usize = 64;

/// Pending output: a queue of byte chunks written with `writev`. Written chunks
/// go back to the buffer pool, so a drained `OutBuf` holds no buffer.
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    pos: usize,
    /// Bytes pending in all chunks.
    len: usize,
    /// Whether the back chunk is our own tail buffer, which replies may extend.
    tail_open: bool,
}

impl OutBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes through `write` (reply headers, small bodies) to the tail buffer.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.tail_open || self.chunks.back().is_none_or(|c| c.len() >= TAIL_MAX) {
            self.chunks.push_back(bufpool::take());
            self.tail_open = true;
        }
        if let Some(tail) = self.chunks.back_mut() {
            let before = tail.len();
            write(tail);
            self.len += tail.len() - before;
        }
    }

    /// Queues a body: copied when small, moved in as its own chunk when large.
    pub fn push_body(&mut self, body: Vec<u8>) {
        if body.is_empty() {
            return bufpool::give(body);
        }
        if body.len() < COPY_MAX {
            self.append(|tail| tail.extend_from_slice(&body));
            bufpool::give(body);
        } else {
            self.len += body.len();
            self.chunks.push_back(body);
            self.tail_open = false;
        }
    }

    /// Writes until everything is sent or the socket is full. Returns the bytes
    /// written; `Err` only for a fatal error. Short writes are normal, not errors.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while self.len > 0 {
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(IOV_MAX).enumerate() {
                let from = if i == 0 { self.pos } else { 0 };
                iov[i] = IoSlice::new(chunk.get(from..).unwrap_or_default());
                n = i + 1;
            }
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    written += k;
                    self.consume(k);
                }
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => break,
                    IoClass::Retry => continue,
                    IoClass::Fatal => return Err(e),
                },
            }
        }
        if self.len == 0 {
            self.consume(0); // drop chunks that were appended to but stayed empty
        }
        Ok(written)
    }

    /// Drops `k` written bytes from the front, and any chunk left empty.
    fn consume(&mut self, mut k: usize) {
        self.len = self.len.saturating_sub(k);
        while let Some(front) = self.chunks.front() {
            let left = front.len().saturating_sub(self.pos);
            if k < left {
                self.pos += k;
                return;
            }
            // Fully written (an empty chunk counts as written too).
            k -= left;
            self.pos = 0;
            if let Some(done) = self.chunks.pop_front() {
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
        assert_eq!(out.write_to(&mut pipe).unwrap(), 7);
        assert_eq!(out.len(), 100_001);
        pipe.room = usize::MAX;
        out.write_to(&mut pipe).unwrap();
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
        assert_eq!(out.write_to(&mut pipe).unwrap(), TAIL_MAX);
        assert!(out.is_empty());
        assert!(out.chunks.is_empty());
        out.append(|t| t.extend_from_slice(b"z"));
        assert_eq!(out.write_to(&mut pipe).unwrap(), 1);
    }

    #[test]
    fn drained_buffers_go_back_to_the_pool() {
        let mut out = OutBuf::default();
        out.append(|t| t.extend_from_slice(&[b'a'; 3000]));
        let mut pipe = Pipe {
            got: Vec::new(),
            room: usize::MAX,
        };
        out.write_to(&mut pipe).unwrap();
        assert!(out.chunks.is_empty());
        // The next reply reuses that buffer: no allocation.
        let reused = bufpool::take();
        assert!(reused.capacity() >= 3000);
        bufpool::give(reused);
    }
}
