//! A free list of byte buffers shared by every connection of the loop's thread:
//! output chunks go back here once written, and request bodies and reply
//! buffers come from here. A busy server allocates nothing per frame, and an
//! idle connection holds no buffer at all.

use std::cell::RefCell;

/// Buffers kept at most; a burst beyond this frees the extras.
const POOL_MAX: usize = 64;
/// Larger buffers (a 16 MiB echo body) are freed, not kept.
const KEEP_MAX: usize = 128 * 1024;

thread_local! {
    // The server runs on one thread, so a thread-local list is a global pool without locks.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Makes a freed large buffer go back to the operating system at once. glibc
/// serves big allocations with `mmap` but raises that threshold each time one
/// is freed (up to 32 MiB), after which 16 MiB bodies come from the heap and
/// freeing them does not lower the RSS: `--max-memory` evicting a client would
/// then free nothing the system can see. Called once, before serving.
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_MAX as libc::c_int);
    }
}

/// An empty buffer, with whatever capacity it had when it was given back.
pub fn take() -> Vec<u8> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default()
}

/// Gives a buffer back for reuse (or frees it, when it is too big or the pool is full).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_MAX {
        return;
    }
    buf.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_capacity() {
        let mut b = take();
        b.extend_from_slice(&[1; 1000]);
        let cap = b.capacity();
        give(b);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
        give(vec![0; KEEP_MAX + 1]);
        assert_eq!(take().capacity(), 0, "oversized buffers are freed");
    }
}
