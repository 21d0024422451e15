//! A small pool of blocking-work threads beside the loop (Redis's background
//! threads, libuv's threadpool): file system work that can block or take long
//! (fsync, a listing of 100,000 entries, hashing a file) runs here; results come
//! back in a queue, and `wake` tells the loop (the server passes a `mio::Waker`).
//! Socket I/O never comes here. Without threads (before the loop starts, and in
//! tests and the fuzz harness that drive services with no loop) tasks run inline
//! when submitted, so results are there at once and in order.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// A unit of blocking work, and what it gives back.
pub type Task<T> = Box<dyn FnOnce() -> T + Send>;

/// Tasks waiting for a thread at most: past it, `submit` hands the task back and
/// the requester tries again next turn (backpressure, not unbounded memory).
pub const QUEUE: usize = 256;
/// Threads of the pool (the machine has few cores, and the work is mostly waiting
/// on the disk).
pub const THREADS: usize = 4;

/// The number a submitted task's result comes back with.
pub type Ticket = u64;

pub struct Pool<T> {
    mode: Mode<T>,
    next: Ticket,
}

enum Mode<T> {
    /// No threads: tasks run when submitted.
    Inline(VecDeque<(Ticket, T)>),
    Threads {
        todo: Option<SyncSender<(Ticket, Task<T>)>>,
        done: Receiver<(Ticket, T)>,
    },
}

impl<T: Send + 'static> Default for Pool<T> {
    fn default() -> Pool<T> {
        Pool {
            mode: Mode::Inline(VecDeque::new()),
            next: 0,
        }
    }
}

impl<T: Send + 'static> Pool<T> {
    /// Starts the threads; each finished task calls `wake` (from its thread).
    pub fn start(&mut self, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<()> {
        let (todo, tasks) = mpsc::sync_channel::<(Ticket, Task<T>)>(QUEUE);
        let (results, done) = mpsc::channel();
        let tasks = Arc::new(Mutex::new(tasks));
        for i in 0..THREADS {
            let (tasks, results, wake) = (Arc::clone(&tasks), results.clone(), Arc::clone(&wake));
            // Detached: a thread ends when the pool's queues close (see `Drop`).
            std::thread::Builder::new()
                .name(format!("frameloop-pool-{i}"))
                .spawn(move || work(&tasks, &results, &*wake))?;
        }
        self.mode = Mode::Threads {
            todo: Some(todo),
            done,
        };
        Ok(())
    }

    /// Whether tasks run on threads (else inline, when submitted).
    pub fn has_threads(&self) -> bool {
        matches!(self.mode, Mode::Threads { .. })
    }

    /// Queues `task`; `Err` gives it back when the queue is full.
    pub fn submit(&mut self, task: Task<T>) -> Result<Ticket, Task<T>> {
        let ticket = self.next;
        match &mut self.mode {
            Mode::Inline(finished) => finished.push_back((ticket, task())),
            Mode::Threads {
                todo: Some(todo), ..
            } => match todo.try_send((ticket, task)) {
                Ok(()) => {}
                Err(TrySendError::Full((_, task)) | TrySendError::Disconnected((_, task))) => {
                    return Err(task);
                }
            },
            Mode::Threads { todo: None, .. } => return Err(task),
        }
        self.next += 1;
        Ok(ticket)
    }

    /// The next finished task's result, if any.
    pub fn finished(&mut self) -> Option<(Ticket, T)> {
        match &mut self.mode {
            Mode::Inline(finished) => finished.pop_front(),
            Mode::Threads { done, .. } => done.try_recv().ok(),
        }
    }
}

/// Nice value of the pool's threads: when they share a core with the loop, the
/// loop wins it at once (a ping answered while a hash runs), and the pool gets
/// what the loop leaves.
const NICE: libc::c_int = 10;

/// A thread's life: take a task, run it, hand the result back, wake the loop.
fn work<T>(
    tasks: &Mutex<Receiver<(Ticket, Task<T>)>>,
    results: &Sender<(Ticket, T)>,
    wake: &dyn Fn(),
) {
    // SAFETY: setpriority of this thread's own id (Linux threads have their own
    // nice value); a failure leaves the default priority, which is only slower.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
    loop {
        let next = match tasks.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return, // another thread panicked holding the lock
        };
        let Ok((ticket, task)) = next else {
            return; // the pool is gone
        };
        if results.send((ticket, task())).is_err() {
            return;
        }
        wake();
    }
}

impl<T> Drop for Pool<T> {
    /// Closes both queues: each thread ends after the task in hand (its result
    /// has nowhere to go), and the tasks still queued never run. Nobody waits
    /// for them: the process is exiting, and a second signal must not wait for
    /// a long hash.
    fn drop(&mut self) {
        if let Mode::Threads { todo, .. } = &mut self.mode {
            drop(todo.take());
        }
        self.mode = Mode::Inline(VecDeque::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn inline_runs_at_once_in_order() {
        let mut pool = Pool::<u32>::default();
        let a = pool.submit(Box::new(|| 1)).ok().unwrap();
        let b = pool.submit(Box::new(|| 2)).ok().unwrap();
        assert_eq!(pool.finished(), Some((a, 1)));
        assert_eq!(pool.finished(), Some((b, 2)));
        assert_eq!(pool.finished(), None);
    }

    #[test]
    fn threads_run_tasks_and_wake_the_loop() {
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        let mut pool = Pool::<u64>::default();
        pool.start(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        let tickets: Vec<Ticket> = (0..20u64)
            .map(|i| pool.submit(Box::new(move || i * i)).ok().unwrap())
            .collect();
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 20 {
            assert!(start.elapsed() < Duration::from_secs(5));
            match pool.finished() {
                Some(result) => got.push(result),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got.sort();
        assert_eq!(got, tickets.iter().map(|t| (*t, t * t)).collect::<Vec<_>>());
        assert_eq!(woken.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn a_full_queue_gives_the_task_back() {
        let mut pool = Pool::<()>::default();
        pool.start(Arc::new(|| {})).unwrap();
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let mut refused = 0;
        for _ in 0..(QUEUE + THREADS + 10) {
            let gate = Arc::clone(&gate);
            let task: Task<()> = Box::new(move || drop(gate.lock()));
            if pool.submit(task).is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 10, "{refused} refused");
        drop(held);
    }
}
